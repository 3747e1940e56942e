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
    and_,
    case,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from dispatch.compose.models import Issue
from dispatch.compose.variants import (
    ID_PREFIX,
    ID_SEPARATOR,
    Variant,
    fullest_first,
    matched_briefs,
    variant_by_id,
    variant_for,
)
from dispatch.config import Settings
from dispatch.errors import DispatchError, Problem
from dispatch.states import (
    RowState,
    SendStatus,
    SendStep,
    SubscriberStatus,
)
from dispatch.store.schema import (
    UTCDateTime,
    outbox,
    send_variants,
    sends,
    subscribers,
)
from dispatch.store.segments import segment_condition, suppressed, topic_mask
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
    masks: dict[int, str] = field(default_factory=dict)  # topic mask -> variant id, as planned

    @property
    def recipients(self) -> int:
        return sum(self.per_variant.values())


NO_TOPICS = "no topics chosen"
NO_MATCH = "no brief matches their topics"
# Topic bits are summed in a 64-bit integer.
MAX_TOPICS = 62


@dataclass(frozen=True)
class _Selection:
    """An issue's audience as SQL. `people`: the active subscribers in its segments with
    their topic mask (NULL: no topic at all) and whether they are suppressed; `variant`
    gives a mask's variant id, computed by the database."""

    issue: Issue
    people: Any  # subquery: id, timezone, mask, suppressed
    bits: dict[str, int]

    def variant(self, mask: Any, planned: Mapping[int, str]) -> Any:
        """The variant id of `mask`: the planned masks by a CASE, any other (someone changed
        topics since the plan) as compose.variants.variant_id writes it, from the briefs whose
        topics meet the mask."""
        if not self.issue.personalize:
            return literal(variant_for(self.issue, self.issue.briefs).id, String)
        parts = [case((mask.bitwise_and(sum(self.bits[t] for t in brief.topics)) != 0,
                       literal(f"{ID_SEPARATOR}{i}", String)), else_=literal("", String))
                 for i, brief in enumerate(self.issue.briefs, 1) if brief.topics]
        joined = reduce(operator.add, parts) if parts else literal("", String)
        computed = literal(ID_PREFIX, String) + func.substr(joined, len(ID_SEPARATOR) + 1,
                                                            type_=String)
        if not planned:
            return computed
        return case({m: literal(vid, String) for m, vid in planned.items()}, value=mask,
                    else_=computed)

    def reached(self, planned: Mapping[int, str]) -> Any:
        """select(id, timezone, variant) of everyone the issue goes to."""
        p = self.people
        query = select(p.c.id, p.c.timezone, self.variant(p.c.mask, planned).label("variant")
                       ).where(~p.c.suppressed)
        if self.issue.personalize:
            # NULL (no topic) and 0 (no topic any brief carries) reach nobody.
            query = query.where(p.c.mask != 0)
        return query


def _selection(issue: Issue, settings: Settings) -> _Selection:
    if issue.personalize:
        topics = list(dict.fromkeys(t for brief in issue.briefs for t in brief.topics))
    else:
        topics = []
    if len(topics) > MAX_TOPICS:
        raise DispatchError(Problem(issue.slug, f"{len(topics)} topics across the briefs; "
                                                f"one issue can personalise on {MAX_TOPICS}"))
    bits = {topic: 1 << i for i, topic in enumerate(topics)}
    where = [subscribers.c.status == SubscriberStatus.ACTIVE]
    if issue.segments:
        where.append(or_(*(segment_condition(settings.segments[name])
                           for name in issue.segments)))
    # OFFSET 0 keeps the mask a column of this subquery: a query planner that inlined it
    # would run the per-subscriber topic lookup once for every use of the mask.
    people = (select(subscribers.c.id, subscribers.c.timezone, topic_mask(bits).label("mask"),
                     suppressed().label("suppressed"))
              .where(*where).offset(0).subquery("people"))
    return _Selection(issue, people, bits)


@contextmanager
def _audience_scan(conn: Connection) -> Iterator[None]:
    """Settings for one pass over every subscriber. PostgreSQL: no JIT (it costs the
    per-subscriber topic lookup high enough to compile the query, which takes longer than
    the simple per-row work it would speed). SQLite: a 32 MB page cache while it lasts
    (the default 2 MB thrashes between the subscribers read and the outbox written)."""
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
    variant, and everyone else counted under the reason they are left out (grouped queries:
    no subscriber is read into Python)."""
    selection = _selection(issue, settings)
    audience = Audience(selection=selection)
    in_segments = or_(*(segment_condition(settings.segments[name]) for name in issue.segments)
                      ) if issue.segments else None
    active = subscribers.c.status == SubscriberStatus.ACTIVE
    people = selection.people
    by_mask = (select(people.c.suppressed, people.c.mask, func.count())
               .group_by(people.c.suppressed, people.c.mask))
    with engine.connect() as conn:
        for status, n in conn.execute(select(subscribers.c.status, func.count())
                                      .where(subscribers.c.status != SubscriberStatus.ACTIVE)
                                      .group_by(subscribers.c.status)):
            audience.skipped[f"status {status}"] = n
        if in_segments is not None:
            outside = conn.execute(select(func.count()).select_from(subscribers)
                                   .where(and_(active, ~in_segments))).scalar_one()
            if outside:
                audience.skipped["outside the issue's segments"] = outside
        with _audience_scan(conn):
            groups = conn.execute(by_mask).all()
    by_topics: dict[int, Variant | None] = {}
    for is_suppressed, mask, n in groups:
        if is_suppressed:
            audience.skipped["suppressed"] += n
            continue
        if mask not in by_topics:
            topics = [t for t, bit in selection.bits.items() if (mask or 0) & bit]
            briefs = matched_briefs(issue, topics)
            by_topics[mask] = variant_for(issue, briefs) if briefs else None
        variant = by_topics[mask]
        if variant is None:
            audience.skipped[NO_TOPICS if mask is None else NO_MATCH] += n
            continue
        audience.per_variant[variant.id] += n
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
    query = audience.selection.reached(audience.masks).subquery("reached")
    rows = (select(query.c.id, query.c.variant, subscribers.c.email, subscribers.c.name)
            .join(subscribers, subscribers.c.id == query.c.id).order_by(query.c.id))
    with engine.connect() as conn, _audience_scan(conn):
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
            source = selection.reached(audience.masks).subquery("reached")
            with _audience_scan(conn):
                due: Any = literal(now, UTCDateTime())
                if release is not None:
                    zones = conn.execute(select(subscribers.c.timezone).distinct().where(
                        subscribers.c.status == SubscriberStatus.ACTIVE)).scalars().all()
                    due = case({zone: literal(max(release(zone), now), UTCDateTime())
                                for zone in zones if zone is not None},
                               value=source.c.timezone,
                               else_=literal(max(release(None), now), UTCDateTime()))
                conn.execute(insert(outbox).from_select(
                    ["issue", "subscriber_id", "variant", "state", "attempts", "next_attempt_at",
                     "updated_at"],
                    select(literal(issue.slug, String), source.c.id, source.c.variant,
                           literal(RowState.QUEUED.value, String), literal(0, Integer), due,
                           literal(now, UTCDateTime()))))
                # The rows as inserted, per variant: the recipients count, and any variant the
                # plan did not foresee, rendered now.
                found: dict[str, int] = {vid: n for vid, n in conn.execute(
                    select(outbox.c.variant, func.count()).where(outbox.c.issue == issue.slug)
                    .group_by(outbox.c.variant))}
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
