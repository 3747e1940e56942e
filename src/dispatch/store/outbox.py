"""The outbox: the audience snapshot, claiming rows for delivery, recording what happened.

Every query about outbox rows, the variants stored at launch and live workers lives here
(the sends themselves: store/sends.py). A row is
claimed (state "sending", claimed_by = the worker) before its message is sent and is marked
"sent" only after the server's 250. Rows claimed by a worker that died go back to the queue,
so a crash costs at most the messages accepted but not yet recorded.
"""

from __future__ import annotations

import json
import operator
import os
import socket
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import reduce
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    String,
    and_,
    bindparam,
    case,
    delete,
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
    OPEN,
    PROBLEMS,
    UNFINISHED,
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
    workers,
)
from dispatch.store.segments import segment_condition, suppressed, topic_mask
from dispatch.store.sends import CONFIRMATIONS, change_status, finish_done
from dispatch.store.subscribers import mark_bounced, topics_by_id

INSERT_BATCH = 5_000
MAX_REPLY = 2000
LEASE = timedelta(seconds=60)  # the default delivery.worker_lease


@dataclass(frozen=True)
class Job:
    """One claimed outbox row with what is needed to build and address its message."""

    row_id: int
    issue: str
    variant: str
    attempts: int  # before this one
    subscriber_id: int | None
    email: str | None  # None: the subscriber was erased after launch
    name: str | None = None
    status: str = SubscriberStatus.ACTIVE  # the subscriber's status at claim time
    reply: str | None = None  # the row's reply from its previous attempt, if any
    outcome_unknown: bool = False  # an earlier attempt may have arrived (no reply to its dot)
    topics: tuple[str, ...] = ()  # the topic keys the subscriber follows at claim time

    @property
    def deliverable(self) -> bool:
        """Issues go to active subscribers only; a confirmation to a pending one, or to an
        unsubscribed one asking to come back (its row is skipped if the request is
        withdrawn: store.signups.withdraw_request)."""
        if self.issue == CONFIRMATIONS:
            return self.status in (SubscriberStatus.PENDING, SubscriberStatus.UNSUBSCRIBED)
        return self.status == SubscriberStatus.ACTIVE


@dataclass(frozen=True)
class RowChange:
    """What to write to one claimed row after an attempt (the retry policy decides it:
    deliver/outcomes.py)."""

    row_id: int
    state: RowState
    attempts: int
    next_attempt_at: datetime
    reply: str
    message_id: str | None = None
    bounced: int | None = None  # the subscriber to mark bounced and suppress
    outcome_unknown: bool = False  # this or an earlier attempt may have arrived


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


def live_workers(engine: Engine, now: datetime, lease: timedelta = LEASE) -> int:
    """Delivery processes (workers or daemons) whose heartbeat is recent."""
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(workers).where(
            workers.c.heartbeat_at >= now - lease)).scalar_one()


def variant_parts(engine: Engine, issue: str, variant: str) -> tuple[str, str, str]:
    """(subject, html, text) of a variant as rendered at launch."""
    with engine.connect() as conn:
        row = conn.execute(select(sends.c.subject, send_variants.c.html, send_variants.c.text)
                           .join(sends, sends.c.issue == send_variants.c.issue)
                           .where(and_(send_variants.c.issue == issue,
                                       send_variants.c.variant == variant))).one()
    return row[0], row[1], row[2]


def state_counts(engine: Engine, issue: str | None = None) -> dict[str, Counter[str]]:
    """Outbox rows per state, per issue."""
    query = select(outbox.c.issue, outbox.c.state, func.count()).group_by(outbox.c.issue,
                                                                          outbox.c.state)
    if issue:
        query = query.where(outbox.c.issue == issue)
    counts: dict[str, Counter[str]] = {}
    with engine.connect() as conn:
        for slug, state, n in conn.execute(query):
            counts.setdefault(slug, Counter())[state] = n
    return counts


def delivery_timeline(engine: Engine, issue: str, buckets: int = 30
                      ) -> list[tuple[datetime, int]]:
    """Messages delivered over time, for the console's chart: (bucket start, count) over
    at most `buckets` equal spans from the first delivery to the last."""
    with engine.connect() as conn:
        times = sorted(conn.execute(select(outbox.c.updated_at).where(and_(
            outbox.c.issue == issue, outbox.c.state == RowState.SENT))).scalars())
    if not times:
        return []
    span = max((times[-1] - times[0]) / buckets, timedelta(seconds=1))
    counts: Counter[int] = Counter(min(int((t - times[0]) / span), buckets - 1) for t in times)
    return [(times[0] + span * i, counts[i]) for i in range(max(counts) + 1)]


def sent_since(engine: Engine, issue: str, since: datetime) -> int:
    """Messages of an issue delivered after `since` (the console's live rate)."""
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(outbox).where(and_(
            outbox.c.issue == issue, outbox.c.state == RowState.SENT,
            outbox.c.updated_at > since))).scalar_one()


def last_errors(engine: Engine, issues: Iterable[str] | None, limit: int = 5
                ) -> dict[str, list[dict[str, Any]]]:
    """The `limit` latest problem replies of each issue (or of every issue), in one query
    whatever the number of issues: a status report over many sends costs what one does."""
    rank = func.row_number().over(partition_by=outbox.c.issue,
                                  order_by=(outbox.c.updated_at.desc(), outbox.c.id.desc()))
    condition = and_(outbox.c.state.in_(PROBLEMS), outbox.c.reply.is_not(None))
    if issues is not None:
        condition = and_(condition, outbox.c.issue.in_(list(issues)))
    ranked = (select(outbox.c.issue, subscribers.c.email, outbox.c.state, outbox.c.attempts,
                     outbox.c.reply, outbox.c.updated_at, rank.label("n"))
              .join(subscribers, subscribers.c.id == outbox.c.subscriber_id, isouter=True)
              .where(condition).subquery())
    query = select(ranked).where(ranked.c.n <= limit).order_by(ranked.c.issue, ranked.c.n)
    found: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as conn:
        for row in conn.execute(query).mappings():
            entry = dict(row)
            found.setdefault(entry.pop("issue"), []).append(entry)
            del entry["n"]
    return found


# ---- Claiming and recording ------------------------------------------------------------

def host_identity() -> str:
    """This machine as the workers table names it: the host name, plus the PID namespace
    where Linux tells it, so two containers that share a host name never probe each other's
    process ids."""
    try:
        namespace = f"/pidns:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}{namespace}"[:200]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SqlOutbox:
    """The store side of a delivery worker. Claims use FOR UPDATE SKIP LOCKED on PostgreSQL,
    so several workers share one outbox; on SQLite the caller holds the one-worker lock."""

    def __init__(self, engine: Engine, settings: Settings, issue: str | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.issue = issue
        self.host = host_identity()
        self.lease = timedelta(seconds=settings.delivery.worker_lease)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:120]
        self._claim_sql: tuple[list[Any], Any] | None = None  # built on the first claim
        self._recorder: Connection | None = None  # record()'s own connection
        self._driver_statement: tuple[str, Callable[[dict[str, Any]], Any]] | None = None
        self._record_statement = (
            update(outbox).where(and_(outbox.c.id == bindparam("rid"),
                                      outbox.c.claimed_by == self.worker_id))
            .values(state=bindparam("st"), attempts=bindparam("att"),
                    next_attempt_at=bindparam("nxt", type_=UTCDateTime()),
                    message_id=bindparam("mid"), reply=bindparam("rep"), claimed_by=None,
                    outcome_unknown=bindparam("unk"),
                    updated_at=bindparam("now", type_=UTCDateTime())))

    # -- worker lifecycle
    def register(self, now: datetime) -> int:
        """Join as a live worker and return rows orphaned by dead workers to the queue."""
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "sqlite":
                conn.execute(delete(workers))  # we hold the one-worker lock: nobody else lives
            conn.execute(insert(workers).values(id=self.worker_id, host=self.host,
                                                pid=os.getpid(), started_at=now,
                                                heartbeat_at=now))
            return self._requeue_orphans(conn, now)

    def heartbeat(self, now: datetime) -> int:
        """Say this worker lives; return the rows of dead workers to the queue (how many)."""
        with self.engine.begin() as conn:
            conn.execute(update(workers).where(workers.c.id == self.worker_id)
                         .values(heartbeat_at=now))
            return self._requeue_orphans(conn, now)

    def unregister(self) -> None:
        if self._recorder is not None:
            self._recorder.close()
            self._recorder = None
        with self.engine.begin() as conn:
            conn.execute(delete(workers).where(workers.c.id == self.worker_id))

    def _requeue_orphans(self, conn: Connection, now: datetime) -> int:
        """A worker is dead when its process is gone (probed for workers on this host, so a
        killed neighbour's rows come back within a heartbeat) or when it has been silent for
        delivery.worker_lease (the only sign across hosts); its claimed rows are queued
        again with no attempt used."""
        for wid, pid in conn.execute(select(workers.c.id, workers.c.pid).where(and_(
                workers.c.host == self.host, workers.c.id != self.worker_id))).all():
            if not _alive(pid):
                conn.execute(delete(workers).where(workers.c.id == wid))
        conn.execute(delete(workers).where(workers.c.heartbeat_at < now - self.lease))
        live = select(workers.c.id)
        result = conn.execute(
            update(outbox)
            .where(and_(outbox.c.state == RowState.SENDING,
                        or_(outbox.c.claimed_by.is_(None), outbox.c.claimed_by.not_in(live))))
            .values(state=case((outbox.c.attempts > 0, RowState.RETRYING),
                               else_=RowState.QUEUED),
                    claimed_by=None, updated_at=now))
        return result.rowcount

    # -- rows
    def _scope(self) -> Any:
        running = select(sends.c.issue).where(sends.c.status == SendStatus.SENDING)
        condition = outbox.c.issue.in_(running)
        return and_(condition, outbox.c.issue == self.issue) if self.issue else condition

    def _claim_statements(self) -> tuple[list[Any], Any]:
        """Built once: SQLAlchemy then reuses the compiled SQL every batch.
        One query per open state, each in ix_outbox_claim's order (state, next_attempt_at,
        id), so the database reads just the rows it returns: ordered by id across both
        states, every claim sorted all the open rows (a send's whole outbox at its start)."""
        if self._claim_sql is None:
            due = [(select(outbox.c.id, outbox.c.issue, outbox.c.variant, outbox.c.attempts,
                           outbox.c.subscriber_id, outbox.c.reply, outbox.c.outcome_unknown,
                           subscribers.c.email,
                           subscribers.c.name, subscribers.c.status)
                    .join(subscribers, subscribers.c.id == outbox.c.subscriber_id, isouter=True)
                    .where(and_(self._scope(), outbox.c.state == state,
                                outbox.c.next_attempt_at <= bindparam("now",
                                                                      type_=UTCDateTime())))
                    .order_by(outbox.c.next_attempt_at, outbox.c.id)
                    .limit(bindparam("limit", type_=Integer))
                    .with_for_update(skip_locked=True, of=outbox))
                   for state in OPEN]
            mark = (update(outbox).where(outbox.c.id.in_(bindparam("ids", expanding=True)))
                    .values(state=RowState.SENDING, claimed_by=self.worker_id,
                            updated_at=bindparam("now", type_=UTCDateTime())))
            self._claim_sql = (due, mark)
        return self._claim_sql

    def claim(self, limit: int, now: datetime) -> list[Job]:
        """Up to `limit` due rows, retries first, each set to sending under this worker."""
        queries, mark = self._claim_statements()
        rows: list[Any] = []
        topics: dict[int, list[str]] = {}
        with self.engine.begin() as conn:
            for query in reversed(queries):  # OPEN is (queued, retrying)
                if len(rows) < limit:
                    rows += conn.execute(query, {"now": now, "limit": limit - len(rows)}).all()
            if rows:
                conn.execute(mark, {"ids": [row.id for row in rows], "now": now})
                # The footer names each reader's own topics: one query per claim.
                topics = topics_by_id(conn, list({row.subscriber_id for row in rows
                                                  if row.subscriber_id is not None}))
        return [Job(row_id=row.id, issue=row.issue, variant=row.variant,
                    attempts=row.attempts, subscriber_id=row.subscriber_id, email=row.email,
                    name=row.name, status=row.status if row.email else "erased",
                    reply=row.reply, outcome_unknown=row.outcome_unknown,
                    topics=tuple(topics.get(row.subscriber_id, ())))
                for row in rows]

    def record(self, changes: Iterable[RowChange], now: datetime) -> None:
        """Write what happened to each claimed row, in one transaction.

        The worker commits often (before each connection's next final dot), so this keeps a
        connection of its own and, unless a subscriber is to be marked bounced, runs the
        statement SQLAlchemy compiled once straight through the driver: the same SQL and the
        same bind processing, without the per-call overhead."""
        changes = list(changes)
        rows = [{"rid": c.row_id, "st": c.state, "att": c.attempts, "nxt": c.next_attempt_at,
                 "now": now, "mid": c.message_id, "rep": c.reply[:MAX_REPLY],
                 "unk": c.outcome_unknown} for c in changes]
        if not rows:
            return
        if self._recorder is None:
            self._recorder = self.engine.connect()
        conn = self._recorder
        try:
            if any(change.bounced is not None for change in changes):
                conn.execute(self._record_statement, rows)
                for change in changes:
                    if change.bounced is not None:
                        mark_bounced(conn, change.bounced, now, change.reply[:MAX_REPLY])
                conn.commit()
            else:
                driver = conn.connection.driver_connection
                assert driver is not None
                sql, bind = self._driver_record()
                cursor = driver.cursor()
                try:
                    cursor.executemany(sql, [bind(row) for row in rows])
                finally:
                    cursor.close()
                driver.commit()
        except BaseException:
            self._recorder = None
            try:
                conn.invalidate()  # a half-done driver transaction must not go back to the pool
                conn.close()
            except Exception:
                pass
            raise

    def _driver_record(self) -> tuple[str, Callable[[dict[str, Any]], Any]]:
        """The record statement as its driver takes it: (SQL, row dict -> parameters)."""
        if self._driver_statement is None:
            dialect = self.engine.dialect
            compiled = self._record_statement.compile(dialect=dialect)
            fixed = compiled.construct_params({name: None for name in (
                "rid", "st", "att", "nxt", "now", "mid", "rep", "unk")})
            processors = {name: process for name, bind in compiled.binds.items()
                          if name in fixed
                          and (process := bind.type.bind_processor(dialect)) is not None}
            names = list(compiled.positiontup or ()) if dialect.positional else None

            def bind(row: dict[str, Any]) -> Any:
                values = {**fixed, **row}
                for name, process in processors.items():
                    values[name] = process(values[name])
                return tuple(values[n] for n in names) if names is not None else values

            self._driver_statement = (str(compiled), bind)
        return self._driver_statement

    def waiting(self, now: datetime) -> tuple[int, datetime | None]:
        """Rows still to deliver in scope (open or being sent) and when the next open row is
        due. Counts only: finishing a send is `finish`."""
        with self.engine.connect() as conn:
            left = conn.execute(select(func.count()).select_from(outbox).where(and_(
                self._scope(), outbox.c.state.in_(UNFINISHED)))).scalar_one()
            due = conn.execute(select(func.min(outbox.c.next_attempt_at)).where(and_(
                self._scope(), outbox.c.state.in_(OPEN)))).scalar()
        return left, due

    def finish(self, now: datetime) -> int:
        """The lifecycle's finish step for every running send with nothing left (a worker
        delivers for several sends, and one may end while others go on)."""
        return finish_done(self.engine, now)

    def template_parts(self, issue: str, variant: str) -> tuple[str, str, str]:
        return variant_parts(self.engine, issue, variant)

    def halted(self, issues: Iterable[str]) -> dict[str, str]:
        """Of these sends, the ones no longer sending (paused, cancelled), with their status:
        the worker stops starting messages for them."""
        names = set(issues)
        if not names:
            return {}
        with self.engine.connect() as conn:
            return {issue: status for issue, status in conn.execute(
                select(sends.c.issue, sends.c.status).where(and_(
                    sends.c.issue.in_(names),
                    sends.c.status.in_((SendStatus.PAUSED, SendStatus.CANCELLED)))))}


def mail_due(engine: Engine, now: datetime) -> bool:
    """Whether any running send has a message waiting for a worker."""
    running = select(sends.c.issue).where(sends.c.status == SendStatus.SENDING)
    with engine.connect() as conn:
        return conn.execute(select(outbox.c.id).where(and_(
            outbox.c.issue.in_(running), outbox.c.state.in_(OPEN),
            outbox.c.next_attempt_at <= now)).limit(1)).first() is not None
