"""Launching a send: who gets which variant (the audience planned from the subscribers'
topics and the issue's segments), and the snapshot of that audience into the outbox, one row
per (issue, subscriber), in the transaction that marks the send launched.
"""

from __future__ import annotations

import json
import operator
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import reduce
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    String,
    case,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from dispatch.compose.models import Brief, Issue
from dispatch.compose.variants import (
    ID_PREFIX,
    ID_SEPARATOR,
    Variant,
    fullest_first,
    matched_briefs,
    variant_by_id,
    variant_for,
)
from dispatch.config import Segment, Settings
from dispatch.errors import DispatchError, Problem
from dispatch.states import (
    RowState,
    SendStatus,
    SendStep,
    SubscriberStatus,
)
from dispatch.store import topic_masks
from dispatch.store.schema import (
    UTCDateTime,
    outbox,
    send_variants,
    sends,
    subscribers,
    suppressions,
)
from dispatch.store.segments import segment_condition, segment_topics
from dispatch.store.sends import change_status

INSERT_BATCH = 5_000


@dataclass
class Audience:
    """Who gets which variant of an issue, and who does not and why: counts only. The
    people themselves stay in the database; `launch` copies them into the outbox with one
    INSERT … SELECT built from the same query."""

    variants: dict[str, Variant] = field(default_factory=dict)
    per_variant: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> count
    selection: _Selection | None = field(default=None, repr=False)  # the SQL it was counted by
    masks: dict[int, str] = field(default_factory=dict)  # issue's bits of a mask -> variant

    @property
    def recipients(self) -> int:
        return sum(self.per_variant.values())


NO_TOPICS = "no topics chosen"
NO_MATCH = "no brief matches their topics"
MAX_TOPICS = 62


@dataclass(frozen=True)
class _Selection:
    """An issue's audience as conditions on the subscribers table alone: status, segments
    and topics all read from `topic_mask` (store/topic_masks.py), in the index the launch
    scans. `key` is a subscriber's mask cut down to the issue's topics (NULL: no topic at
    all); `variant` gives a key's variant id, computed by the database."""

    issue: Issue
    segments: tuple[Segment, ...]
    values: dict[str, int]  # topic -> its bit value, for the issue's and segments' topics

    @property
    def issue_mask(self) -> int:
        return topic_masks.mask_of(self.values, (t for t in _issue_topics(self.issue)
                                                 if t in self.values))

    def brief_mask(self, brief: Brief) -> int:
        return topic_masks.mask_of(self.values, (t for t in brief.topics if t in self.values))

    def where(self) -> list[Any]:
        conditions = [subscribers.c.status == SubscriberStatus.ACTIVE]
        if self.segments:
            conditions.append(or_(*(segment_condition(segment, self.values)
                                    for segment in self.segments)))
        return conditions

    def key(self) -> Any:
        mask = subscribers.c.topic_mask
        return case((mask == 0, null()), else_=mask.bitwise_and(self.issue_mask))

    def topics_of(self, key: int | None) -> list[str]:
        return [t for t in _issue_topics(self.issue) if (key or 0) & self.values.get(t, 0)]

    def variant(self, planned: Mapping[int, str]) -> Any:
        """The variant id of each subscriber: the planned keys by a CASE, any other (someone
        changed topics since the plan) as compose.variants.variant_id writes it, from the
        briefs whose topics meet the mask."""
        if not self.issue.personalize:
            return literal(variant_for(self.issue, self.issue.briefs).id, String)
        mask = subscribers.c.topic_mask
        parts = [case((mask.bitwise_and(self.brief_mask(brief)) != 0,
                       literal(f"{ID_SEPARATOR}{i}", String)), else_=literal("", String))
                 for i, brief in enumerate(self.issue.briefs, 1) if self.brief_mask(brief)]
        joined = reduce(operator.add, parts) if parts else literal("", String)
        computed = literal(ID_PREFIX, String) + func.substr(joined, len(ID_SEPARATOR) + 1,
                                                            type_=String)
        if not planned:
            return computed
        return case({m: literal(vid, String) for m, vid in planned.items()},
                    value=mask.bitwise_and(self.issue_mask), else_=computed)

    def reached(self) -> list[Any]:
        """The conditions on subscribers of everyone the issue goes to: not suppressed (the
        few active subscribers on the suppression list found once, from the list's side, by
        the indexed hash), and for a personalised issue following one of its topics."""
        other = subscribers.alias("listed")
        listed = (select(other.c.id).join(suppressions,
                                          suppressions.c.email_hash == other.c.email_hash)
                  .where(other.c.status == SubscriberStatus.ACTIVE))
        conditions = [*self.where(), subscribers.c.id.not_in(listed)]
        if self.issue.personalize:
            conditions.append(subscribers.c.topic_mask.bitwise_and(self.issue_mask) != 0)
        return conditions


def _issue_topics(issue: Issue) -> list[str]:
    if not issue.personalize:
        return []
    return list(dict.fromkeys(t for brief in issue.briefs for t in brief.topics))


def _selection(conn: Connection, issue: Issue, segments: tuple[Segment, ...]) -> _Selection:
    topics = _issue_topics(issue)
    if len(topics) > MAX_TOPICS:
        raise DispatchError(Problem(issue.slug, f"{len(topics)} topics across the briefs; "
                                                f"one issue can personalise on {MAX_TOPICS}"))
    values = topic_masks.bits(conn, {*topics, *segment_topics(segments)})
    return _Selection(issue, segments, values)


@contextmanager
def _audience_scan(conn: Connection) -> Iterator[None]:
    """Settings for one pass over every subscriber. PostgreSQL: no JIT (compiling the
    query takes longer than the simple per-row work it would speed). SQLite: a 32 MB page
    cache while it lasts (the default 2 MB thrashes between the subscribers read and the
    outbox written)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL jit = off")
        yield
        return
    if conn.dialect.name != "sqlite":
        yield
        return
    before = conn.exec_driver_sql("PRAGMA cache_size").scalar()
    conn.exec_driver_sql("PRAGMA cache_size = -32768")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size = {int(before or -2000)}")


def plan_audience(engine: Engine, issue: Issue, settings: Settings) -> Audience:
    """Read-only: how many active, unsuppressed subscribers in the issue's segments get each
    variant, and everyone else counted under the reason they are left out (grouped queries
    over one index: no subscriber is read into Python)."""
    segments = tuple(settings.segments[name] for name in issue.segments)
    active = subscribers.c.status == SubscriberStatus.ACTIVE
    with engine.connect() as conn:
        selection = _selection(conn, issue, segments)
        audience = Audience(selection=selection)
        for status, n in conn.execute(select(subscribers.c.status, func.count())
                                      .where(subscribers.c.status != SubscriberStatus.ACTIVE)
                                      .group_by(subscribers.c.status)):
            audience.skipped[f"status {status}"] = n
        key = selection.key().label("key")
        with _audience_scan(conn):
            if segments:
                inside = conn.execute(select(func.count()).where(*selection.where())
                                      ).scalar_one()
                everyone = conn.execute(select(func.count()).where(active)).scalar_one()
                if everyone - inside:
                    audience.skipped["outside the issue's segments"] = everyone - inside
            groups = conn.execute(select(key, func.count()).where(*selection.where())
                                  .group_by(key)).all()
            listed: dict[int | None, int] = dict(conn.execute(
                select(key, func.count()).select_from(subscribers.join(
                    suppressions, suppressions.c.email_hash == subscribers.c.email_hash))
                .where(*selection.where()).group_by(key)).all())
    by_key: dict[int | None, Variant | None] = {}
    for mask, n in groups:
        if listed.get(mask):
            audience.skipped["suppressed"] += listed[mask]
            n -= listed[mask]
        if not n:
            continue
        if mask not in by_key:
            briefs = matched_briefs(issue, selection.topics_of(mask))
            by_key[mask] = variant_for(issue, briefs) if briefs else None
        variant = by_key[mask]
        if variant is None:
            audience.skipped[NO_TOPICS if mask is None else NO_MATCH] += n
            continue
        audience.per_variant[variant.id] += n
        if mask is not None:
            audience.masks[mask] = variant.id
    for vid in sorted(audience.per_variant, key=fullest_first):
        audience.variants[vid] = variant_by_id(issue, vid)
    return audience


def audience_rows(engine: Engine, issue: Issue, settings: Settings
                  ) -> Iterator[tuple[int, str, str, str | None]]:
    """(subscriber id, variant id, email, name) of each recipient, streamed: for dry runs,
    which build every message without touching the outbox."""
    audience = plan_audience(engine, issue, settings)
    assert audience.selection is not None
    with engine.connect() as conn, _audience_scan(conn):
        selection = _selection(conn, issue, audience.selection.segments)
        rows = (select(subscribers.c.id, selection.variant(audience.masks).label("variant"),
                       subscribers.c.email, subscribers.c.name)
                .where(*selection.reached()).order_by(subscribers.c.id))
        yield from conn.execution_options(stream_results=True, yield_per=2000).execute(rows)


def launch(engine: Engine, issue: Issue, audience: Audience,
           rendered: Mapping[str, tuple[str, str]], now: datetime, *,
           render: Callable[[dict[str, Variant]], Mapping[str, tuple[str, str]]] | None = None,
           scheduled_for: datetime | None = None,
           release: Callable[[str | None], datetime] | None = None) -> bool:
    """Snapshot the audience into the outbox in one transaction and mark the send "sending".

    The rows are copied by one INSERT … SELECT: the database picks the recipients and each
    one's variant. A variant the plan did not foresee (someone changed topics since) is
    rendered by `render` within the transaction. `scheduled_for` launches a scheduled issue
    only if it is still scheduled for that time (not moved, cancelled or fired by another
    process meanwhile); without it, an issue with no row or one that never launched
    (cancelled, failed, missed) is sent now. `release` gives a time zone's first delivery
    time (local-time sends; None: subscribers without a zone); everyone else is due at once.
    False when the issue was launched already or is no longer due: nothing is added."""
    values: dict[str, Any] = {"subject": issue.subject, "recipients": audience.recipients,
                              "launched_at": now,
                              "skipped": json.dumps(dict(sorted(audience.skipped.items())))}
    selection = audience.selection
    if selection is None:
        raise ValueError("launch needs an audience from plan_audience")
    try:
        with engine.begin() as conn:
            where = [sends.c.issue == issue.slug, sends.c.launched_at.is_(None)]
            if scheduled_for is not None:
                changed = change_status(conn, SendStep.FIRE, *where,
                                        sends.c.send_at == scheduled_for, **values)
            else:
                changed = change_status(conn, SendStep.LAUNCH, *where, **values)
            if not changed:
                if scheduled_for is not None:
                    return False
                conn.execute(insert(sends).values(issue=issue.slug, created_at=now,
                                                  status=SendStatus.SENDING, **values))
            # The bits as this transaction sees them (a topic may have got its first
            # follower since the plan).
            selection = _selection(conn, issue, selection.segments)
            reached = selection.reached()
            variant = selection.variant(audience.masks)
            with _audience_scan(conn):
                due: Any = literal(now, UTCDateTime())
                if release is not None:
                    zones = conn.execute(select(subscribers.c.timezone).distinct().where(
                        subscribers.c.status == SubscriberStatus.ACTIVE)).scalars().all()
                    due = case({zone: literal(max(release(zone), now), UTCDateTime())
                                for zone in zones if zone is not None},
                               value=subscribers.c.timezone,
                               else_=literal(max(release(None), now), UTCDateTime()))
                copy = insert(outbox).from_select(
                    ["issue", "subscriber_id", "variant", "state", "attempts", "next_attempt_at",
                     "updated_at"],
                    select(literal(issue.slug, String), subscribers.c.id, variant,
                           literal(RowState.QUEUED.value, String), literal(0, Integer), due,
                           literal(now, UTCDateTime())).where(*reached))
                # The rows as inserted, per variant: the recipients count, and any variant the
                # plan did not foresee, rendered now.
                if conn.dialect.name == "postgresql":
                    added_rows = copy.returning(outbox.c.variant).cte("added")
                    counted = select(added_rows.c.variant, func.count()).group_by(
                        added_rows.c.variant)
                else:
                    # SQLite: this transaction holds the write lock from the INSERT on, so
                    # the same selection counted again is exactly what went in (a pass over
                    # the index, cheaper than reading the outbox rows back).
                    conn.execute(copy)
                    label = variant.label("variant")
                    counted = select(label, func.count()).where(*reached).group_by(label)
                found: dict[str, int] = {vid: n for vid, n in conn.execute(counted)}
            variants = dict(rendered)
            unforeseen = {vid: variant_by_id(issue, vid) for vid in found
                          if vid not in variants}
            if unforeseen:
                if render is None:
                    raise ValueError(f"variants not rendered: {', '.join(unforeseen)}")
                variants.update(render(unforeseen))
            conn.execute(insert(send_variants), [
                {"issue": issue.slug, "variant": vid, "html": html, "text": text}
                for vid, (html, text) in variants.items() if vid in found])
            added = sum(found.values())  # (the INSERT's rowcount is not portable)
            if added != audience.recipients:
                conn.execute(update(sends).where(sends.c.issue == issue.slug)
                             .values(recipients=added))
    except IntegrityError:
        return False
    return True
