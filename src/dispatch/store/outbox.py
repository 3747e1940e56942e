"""The outbox rows in a worker's hands: claiming rows for delivery, recording what happened.

Launching a send (the audience snapshot) is store/launch.py; reading where sends stand,
store/progress.py; the worker registry, store/workers.py; the sends themselves,
store/sends.py. A row is
claimed (state "sending", claimed_by = the worker) before its message is sent and is marked
"sent" only after the server's 250. Rows claimed by a worker that died go back to the queue,
so a crash costs at most the messages accepted but not yet recorded.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    and_,
    bindparam,
    func,
    select,
    update,
)

from dispatch.config import Settings
from dispatch.states import (
    OPEN,
    UNFINISHED,
    RowState,
    SendStatus,
    SubscriberStatus,
)
from dispatch.store import workers
from dispatch.store.schema import (
    UTCDateTime,
    outbox,
    send_variants,
    sends,
    subscribers,
)
from dispatch.store.sends import CONFIRMATIONS, finish_done
from dispatch.store.subscribers import mark_bounced, topics_by_id

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


def variant_parts(engine: Engine, issue: str, variant: str) -> tuple[str, str, str]:
    """(subject, html, text) of a variant as rendered at launch."""
    with engine.connect() as conn:
        row = conn.execute(select(sends.c.subject, send_variants.c.html, send_variants.c.text)
                           .join(sends, sends.c.issue == send_variants.c.issue)
                           .where(and_(send_variants.c.issue == issue,
                                       send_variants.c.variant == variant))).one()
    return row[0], row[1], row[2]


class SqlOutbox:
    """The store side of a delivery worker. Claims use FOR UPDATE SKIP LOCKED on PostgreSQL,
    so several workers share one outbox; on SQLite the caller holds the one-worker lock."""

    def __init__(self, engine: Engine, settings: Settings, issue: str | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.issue = issue
        self.host = workers.host_identity()
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

    # -- worker lifecycle (store/workers.py)
    def register(self, now: datetime) -> int:
        """Join as a live worker and return rows orphaned by dead workers to the queue."""
        with self.engine.begin() as conn:
            return workers.register(conn, self.worker_id, self.host, self.lease, now)

    def heartbeat(self, now: datetime) -> int:
        """Say this worker lives; return the rows of dead workers to the queue (how many)."""
        with self.engine.begin() as conn:
            return workers.heartbeat(conn, self.worker_id, self.host, self.lease, now)

    def unregister(self) -> None:
        if self._recorder is not None:
            self._recorder.close()
            self._recorder = None
        with self.engine.begin() as conn:
            workers.unregister(conn, self.worker_id)

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
