"""Sends: one row per scheduled or launched issue. Every change of a send's status goes
through `change_status`, as one of the steps declared in states.SEND_STEPS
(docs/architecture.md has the table); the archive's queries live here too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, exists, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from dispatch.compose.models import Issue
from dispatch.states import (
    ARCHIVED,
    OPEN,
    SEND_STEPS,
    UNFINISHED,
    VIEWABLE,
    RowState,
    SendStatus,
    SendStep,
)
from dispatch.store.schema import archive_hidden, outbox, send_variants, sends

# The outbox "sends" that carry double opt-in confirmation messages and the welcome message
# after a confirmation (store/confirmations.py). "~" never starts an issue folder's name
# (compose.issues refuses it), so they cannot collide with an issue.
CONFIRMATIONS = "~confirmations"
WELCOME = "~welcome"
INTERNAL = (CONFIRMATIONS, WELCOME)
MAX_REASON = 2000


@dataclass(frozen=True)
class SendInfo:
    issue: str
    subject: str
    status: SendStatus
    recipients: int
    created_at: datetime
    finished_at: datetime | None
    reason: str | None
    send_at: datetime | None
    local_time: str | None
    zone: str | None
    launched_at: datetime | None
    skipped: dict[str, int] = field(default_factory=dict)  # left out at launch: reason → n

    @classmethod
    def of(cls, row: Any) -> SendInfo:
        return cls(**{**row, "status": SendStatus(row["status"]),
                      "skipped": json.loads(row["skipped"]) if row["skipped"] else {}})


def change_status(conn: Connection, step: SendStep, *where: ColumnElement[bool],
                  reason: str | None = None, **values: Any) -> int:
    """Take `step` (states.SEND_STEPS: the states it comes from, the one it goes to) for the
    sends matching `where` that are in one of its source states, in the caller's transaction;
    how many moved. The one place a send's status is written after the row is created."""
    sources, target = SEND_STEPS[step]
    condition = and_(sends.c.status.in_(sorted(sources)), *where)
    return conn.execute(update(sends).where(condition).values(
        status=target, reason=reason[:MAX_REASON] if reason else None, **values)).rowcount


def set_status(engine: Engine, issue: str, step: SendStep, *, reason: str | None = None
               ) -> bool:
    """Take `step` for one send; False if it was in none of the step's source states."""
    with engine.begin() as conn:
        return bool(change_status(conn, step, sends.c.issue == issue, reason=reason))


def pause_running(engine: Engine, issue: str | None, reason: str) -> None:
    """Pause the running send (or every running send): the relay refuses us, not them."""
    where = [sends.c.issue == issue] if issue else []
    with engine.begin() as conn:
        change_status(conn, SendStep.PAUSE, *where, reason=reason)


def finish_done(engine: Engine, now: datetime, issue: str | None = None) -> int:
    """The finish step: running sends (this one, or every one) with no message left to
    deliver become sent; how many. The delivery loop calls it each time it counts."""
    busy = exists().where(and_(outbox.c.issue == sends.c.issue,
                               outbox.c.state.in_(UNFINISHED)))
    where = [~busy, *([sends.c.issue == issue] if issue else [])]
    with engine.begin() as conn:
        return change_status(conn, SendStep.FINISH, *where, finished_at=now)


def is_internal(issue: str) -> bool:
    """A pseudo-send (confirmations, welcome messages), never shown as an issue."""
    return issue.startswith("~")


def get_send(engine: Engine, issue: str) -> SendInfo | None:
    with engine.connect() as conn:
        row = conn.execute(select(sends).where(sends.c.issue == issue)).mappings().first()
    return SendInfo.of(row) if row else None


def list_sends(engine: Engine) -> list[SendInfo]:
    with engine.connect() as conn:
        rows = conn.execute(select(sends).order_by(sends.c.created_at)).mappings().all()
    return [SendInfo.of(row) for row in rows]


def scheduled_sends(engine: Engine) -> list[SendInfo]:
    """Issues waiting for their time, soonest first."""
    with engine.connect() as conn:
        rows = conn.execute(select(sends).where(sends.c.status == SendStatus.SCHEDULED)
                            .order_by(sends.c.send_at, sends.c.issue)).mappings().all()
    return [SendInfo.of(row) for row in rows]


# ---- Scheduling ------------------------------------------------------------------------

def schedule_send(engine: Engine, issue: Issue, send_at: datetime, now: datetime, *,
                  zone: str, local_time: str | None = None) -> bool:
    """Record an issue as scheduled for `send_at`; False if it is scheduled already or has
    launched. An issue that never went out (cancelled, failed, missed) may be scheduled again."""
    try:
        with engine.begin() as conn:
            schedule_row(conn, issue, send_at, now, zone=zone, local_time=local_time)
    except IntegrityError:
        return False
    return True


def schedule_row(conn: Connection, issue: Issue, send_at: datetime, now: datetime, *,
                 zone: str, local_time: str | None = None) -> None:
    """schedule_send inside the caller's transaction; raises IntegrityError instead."""
    values: dict[str, Any] = {"subject": issue.subject, "send_at": send_at, "zone": zone,
              "local_time": local_time}
    if not change_status(conn, SendStep.SCHEDULE, sends.c.issue == issue.slug,
                         sends.c.launched_at.is_(None), **values):
        conn.execute(insert(sends).values(issue=issue.slug, recipients=0, created_at=now,
                                          status=SendStatus.SCHEDULED, **values))


def move_send(engine: Engine, issue: str, send_at: datetime, local_time: str | None) -> bool:
    """A scheduled issue's new time; False if it is not scheduled (any more)."""
    with engine.begin() as conn:
        return bool(conn.execute(update(sends).where(and_(
            sends.c.issue == issue, sends.c.status == SendStatus.SCHEDULED))
            .values(send_at=send_at, local_time=local_time)).rowcount)


def cancel_send(engine: Engine, issue: str, reason: str, now: datetime) -> int | None:
    """Cancel a scheduled, sending or paused issue. Rows not yet sent are marked skipped (the
    ones in a worker's hands finish). None if there was nothing to cancel; else rows skipped."""
    with engine.begin() as conn:
        if not change_status(conn, SendStep.CANCEL, sends.c.issue == issue,
                             reason=reason, finished_at=now):
            return None
        return conn.execute(update(outbox).where(and_(
            outbox.c.issue == issue, outbox.c.state.in_(OPEN)))
            .values(state=RowState.SKIPPED, reply=reason, updated_at=now)).rowcount


# ---- The archive -----------------------------------------------------------------------

def _public() -> ColumnElement[bool]:
    """Sends that may be shown: not internal, not taken down."""
    return and_(sends.c.issue.not_in(INTERNAL),
                sends.c.issue.not_in(select(archive_hidden.c.issue)))


def archived_sends(engine: Engine) -> list[SendInfo]:
    """Issues in the public archive, newest first."""
    with engine.connect() as conn:
        rows = conn.execute(select(sends).where(and_(sends.c.status.in_(ARCHIVED), _public()))
                            .order_by(sends.c.launched_at.desc(), sends.c.issue)
                            ).mappings().all()
    return [SendInfo.of(row) for row in rows]


def _viewable(issue: str) -> Any:
    return (select(send_variants.c.variant, send_variants.c.html)
            .join(sends, sends.c.issue == send_variants.c.issue)
            .where(and_(send_variants.c.issue == issue, sends.c.status.in_(VIEWABLE),
                        _public())))


def hide_from_archive(engine: Engine, issue: str, now: datetime) -> bool:
    """Take an issue down from the archive (its list, its feed, its pages), or keep it out
    before it goes out; False if it was hidden already."""
    try:
        with engine.begin() as conn:
            conn.execute(insert(archive_hidden).values(issue=issue, hidden_at=now))
    except IntegrityError:
        return False
    return True


def show_in_archive(engine: Engine, issue: str) -> bool:
    """Put a hidden issue back; False if it was not hidden."""
    with engine.begin() as conn:
        return bool(conn.execute(delete(archive_hidden)
                                 .where(archive_hidden.c.issue == issue)).rowcount)


def hidden_from_archive(engine: Engine, issue: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(select(archive_hidden.c.issue)
                            .where(archive_hidden.c.issue == issue)).first() is not None


def archived_variants(engine: Engine, issue: str) -> list[str]:
    """The variant ids a launched issue can be viewed in; empty if none."""
    with engine.connect() as conn:
        return list(conn.execute(_viewable(issue).with_only_columns(send_variants.c.variant)
                                 .order_by(send_variants.c.variant)).scalars())


def viewable_html(engine: Engine, issue: str, variant: str) -> str | None:
    """A launched issue's variant as rendered, slots and all; None if it cannot be viewed."""
    with engine.connect() as conn:
        return conn.execute(_viewable(issue).with_only_columns(send_variants.c.html)
                            .where(send_variants.c.variant == variant)).scalar()
