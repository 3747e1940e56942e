"""Firing: a scheduled issue whose time has come is launched (its audience snapshotted and
its variants rendered once), or marked missed when it is more than schedule.grace late."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import Engine

from dispatch.clock import local_release
from dispatch.compose.issues import load_issue, resolve_issue_path
from dispatch.config import Settings
from dispatch.deliver.sending import launch_issue
from dispatch.errors import DispatchError, Problem
from dispatch.states import SendStep
from dispatch.store import sends
from dispatch.store.launch import plan_audience
from dispatch.store.sends import SendInfo


class EventKind(StrEnum):
    """What the scheduler did (or saw), as the daemon's log names it."""

    LAUNCHED = "launched"  # a scheduled issue went out
    MISSED = "missed"  # it was more than schedule.grace late
    FAILED = "failed"  # it, or a digest, could not be launched or built
    DIGEST = "digest"  # a recurring digest was built (and launched)
    NOTHING_NEW = "nothing-new"  # a digest's time came with no new brief
    DIGEST_MISSED = "digest-missed"  # a digest was more than schedule.grace late
    # A send stopped sending since the daemon's last look (its new status).
    SENT = "sent"
    PAUSED = "paused"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Event:
    """Something the scheduler did, for the daemon's log and for tests."""

    kind: EventKind
    subject: str  # the issue slug or the recurring schedule's name
    message: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.kind}: {self.message}"


def late_by(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def fire(engine: Engine, settings: Settings, send: SendInfo, now: datetime) -> Event | None:
    """Launch a scheduled issue whose time has come, unless it is more than schedule.grace
    late (then it is marked missed). None when another process got there first."""
    assert send.send_at is not None
    grace = settings.schedule.grace
    if now - send.send_at > grace:
        reason = (f"due {send.send_at:%Y-%m-%d %H:%M} UTC but no daemon ran until "
                  f"{now:%Y-%m-%d %H:%M} UTC ({late_by(now - send.send_at)} late; schedule.grace "
                  f"is {late_by(grace)}); not sent. Schedule it again to send it")
        if sends.set_status(engine, send.issue, SendStep.MISS, reason=reason):
            return Event(EventKind.MISSED, send.issue, reason)
        return None
    try:
        issue = load_issue(resolve_issue_path(send.issue, settings), settings)
        audience = plan_audience(engine, issue, settings)
        if not audience.recipients:
            raise DispatchError(Problem(send.issue, "nobody to send to: no active subscriber "
                                                    "matches this issue"))
        release, day = None, None
        if send.local_time:
            wall = datetime.fromisoformat(send.local_time)
            day = wall.date()  # each reader gets it on this day in their own zone
            default = settings.schedule.default_timezone

            def release(zone: str | None) -> datetime:
                return local_release(wall, zone or default)

        launched = launch_issue(engine, issue, audience, settings, now,
                                scheduled_for=send.send_at, release=release, day=day)
    except DispatchError as exc:
        reason = "; ".join(str(p) for p in exc.problems)
        if sends.set_status(engine, send.issue, SendStep.FAIL, reason=reason):
            return Event(EventKind.FAILED, send.issue, reason)
        return None
    if not launched:
        return None
    how = (f", each at {send.local_time[11:16]} in their own zone" if send.local_time else "")
    return Event(EventKind.LAUNCHED, send.issue, f"{audience.recipients:,} recipient(s) in "
                                                  f"{len(audience.variants)} variant(s){how}")
