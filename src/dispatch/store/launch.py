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
    or_,
    select,
    true,
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
    and topics all read from `topic_mask` (store/topic_masks.py), which the indexes hold.
    A subscriber's key is their mask cut down to the issue's topics (None: no topic at all);
    `variant_of` gives a key's variant in Python, `variant` the same in SQL."""

    issue: Issue
    segments: tuple[Segment, ...]
    values: dict[str, int]  # topic -> its bit value, for the issue's and segments' topics

    @property
    def issue_mask(self) -> int:
        return topic_masks.mask_of(self.values, (t for t in _issue_topics(self.issue)
                                                 if t in self.values))

    def brief_mask(self, brief: Brief) -> int:
        return topic_masks.mask_of(self.values, (t for t in brief.topics if t in self.values))

    def inside(self) -> Any:
        """In one of the issue's segments (everyone when it names none)."""
        if not self.segments:
            return true()
        return or_(*(segment_condition(segment, self.values) for segment in self.segments))

    def key(self, mask: int) -> int | None:
        return None if mask == 0 else mask & self.issue_mask

    def variant_of(self, key: int | None) -> Variant | None:
        """The variant a key gets (None: no brief for them), as compose.variants picks it."""
        topics = [t for t in _issue_topics(self.issue) if (key or 0) & self.values.get(t, 0)]
        briefs = matched_briefs(self.issue, topics)
        return variant_for(self.issue, briefs) if briefs else None

    def variant(self, planned: Mapping[int, str]) -> Any:
        """The variant id of each subscriber in SQL: the planned keys by a CASE, any other
        (someone changed topics since the plan) as compose.variants.variant_id writes it,
        from the briefs whose topics meet the mask."""
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
        """The conditions on subscribers of everyone the issue goes to: active, inside its
        segments, not listed, and for a personalised issue following one of its topics."""
        listed = subscribers.alias("listed")
        conditions = [subscribers.c.status == SubscriberStatus.ACTIVE, self.inside(),
                      subscribers.c.id.not_in(select(listed.c.id).where(*_on_list(listed)))]
        if self.issue.personalize:
            conditions.append(subscribers.c.topic_mask.bitwise_and(self.issue_mask) != 0)
        return conditions

    def count(self, conn: Connection, audience: Audience) -> None:
        """Everyone counted into `audience`, by status, segments, suppression and variant:
        one grouped pass over the (status, topic_mask) index and one probe per suppression;
        no subscriber is read into Python."""
        mask = subscribers.c.topic_mask
        groups = conn.execute(select(subscribers.c.status, mask, self.inside(), func.count())
                              .group_by(subscribers.c.status, mask)).all()
        listed: Counter[int] = Counter(
            listed_mask for listed_mask, inside in conn.execute(
                select(mask, self.inside()).where(*_on_list(subscribers))) if inside)
        by_key: dict[int | None, Variant | None] = {}
        for status, mask_value, inside, n in groups:
            if status != SubscriberStatus.ACTIVE:
                audience.skipped[f"status {status}"] += n
                continue
            if not inside:
                audience.skipped["outside the issue's segments"] += n
                continue
            if listed[mask_value]:
                audience.skipped["suppressed"] += listed[mask_value]
                n -= listed[mask_value]
                if not n:
                    continue
            key = self.key(mask_value)
            if key not in by_key:
                by_key[key] = self.variant_of(key)
            variant = by_key[key]
            if variant is None:
                audience.skipped[NO_TOPICS if key is None else NO_MATCH] += n
                continue
            audience.per_variant[variant.id] += n
            if key is not None:
                audience.masks[key] = variant.id


def _on_list(people: Any) -> list[Any]:
    """Active subscribers on the suppression list, found from the list's side by the
    indexed (email_hash, status): a probe per suppression, not one per subscriber."""
    return [people.c.email_hash.in_(select(suppressions.c.email_hash)),
            people.c.status == SubscriberStatus.ACTIVE]


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
    over the indexes: no subscriber is read into Python)."""
    segments = tuple(settings.segments[name] for name in issue.segments)
    with engine.connect() as conn:
        selection = _selection(conn, issue, segments)
        audience = Audience(selection=selection)
        with _audience_scan(conn):
            selection.count(conn, audience)
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
                rows = select(literal(issue.slug, String), subscribers.c.id, variant,
                              literal(RowState.QUEUED.value, String), literal(0, Integer), due,
                              literal(now, UTCDateTime())).where(*reached)
                columns = ["issue", "subscriber_id", "variant", "state", "attempts",
                           "next_attempt_at", "updated_at"]
                # The rows as inserted, per variant: the recipients count, and any variant the
                # plan did not foresee, rendered now.
                if conn.dialect.name == "postgresql":
                    copied = (insert(outbox).from_select(columns, rows)
                              .returning(outbox.c.variant).cte("copied"))
                    found: dict[str, int] = dict(conn.execute(
                        select(copied.c.variant, func.count()).group_by(copied.c.variant)).all())
                else:
                    # In id order: SQLite's scan of the status index, which appends to the
                    # outbox's indexes instead of inserting all over them.
                    conn.execute(insert(outbox).from_select(
                        columns, rows.order_by(subscribers.c.id)))
                    # This transaction holds the write lock since the INSERT: the same
                    # selection counted again is exactly what went in (cheaper than
                    # reading the outbox back).
                    recount = Audience()
                    selection.count(conn, recount)
                    found = dict(recount.per_variant)
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
