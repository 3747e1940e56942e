"""Recurring digests: at each fire time of a [[schedules]] entry, the briefs in its folder
that no earlier digest carried become a new issue, launched at once; a fire time missed by
more than schedule.grace is reported, never built late."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from dispatch.compose.issues import ISSUE_FILE
from dispatch.config import RecurringSchedule, Settings
from dispatch.config.cron import cron_trigger, fire_times, next_fire
from dispatch.errors import DispatchError
from dispatch.schedule.firing import Event, _late, fire
from dispatch.schedule.planning import validate
from dispatch.store import schedules as runs
from dispatch.store import sends


def _issue_toml(subject: str, briefs: list[str]) -> str:
    # JSON strings are valid TOML basic strings.
    return (f"subject = {json.dumps(subject, ensure_ascii=False)}\n"
            f"briefs = [{', '.join(json.dumps(b, ensure_ascii=False) for b in briefs)}]\n")


def build_digest(engine: Engine, settings: Settings, recurring: RecurringSchedule,
                 fire_time: datetime, now: datetime) -> Event | None:
    """Collect the briefs in the schedule's folder that no earlier digest carried into a new
    issue, scheduled at the fire time and launched at once. None if already done."""
    folder = settings.root / recurring.folder
    done = runs.carried(engine, recurring.folder)
    new = sorted(p for p in folder.glob("*.md") if p.name not in done) if folder.is_dir() else []
    local = fire_time.astimezone(ZoneInfo(recurring.timezone))
    name = recurring.name
    if not new:
        message = (f"nothing new in {recurring.folder}/ since the last digest; no issue built"
                   if folder.is_dir() else f"no folder {recurring.folder}/; no issue built")
        return _record(engine, name, fire_time, "nothing new", now, None, message)
    slug = f"{local:%Y-%m-%d}-{name}"
    if sends.get_send(engine, slug) is not None:  # an earlier run the same day took the name
        slug = f"{local:%Y-%m-%d-%H%M}-{name}"
    target = settings.issues_dir / slug
    if not (target / ISSUE_FILE).is_file():  # else a crash came after writing it: reuse it
        target.mkdir(parents=True, exist_ok=True)
        for path in new:
            shutil.copy2(path, target / path.name)
        subject = recurring.subject.format(date=local.date())
        (target / ISSUE_FILE).write_text(_issue_toml(subject, [p.name for p in new]),
                                         encoding="utf-8")
    try:
        issue = validate(settings, target, now)
    except DispatchError as exc:
        reason = "; ".join(str(p) for p in exc.problems)
        return _record(engine, name, fire_time, "failed", now, slug, reason)
    carried = [b.path.name for b in issue.briefs]
    try:
        with engine.begin() as conn:
            runs.record_run(conn, name, fire_time, "created", now, issue=slug)
            runs.record_carried(conn, recurring.folder, carried, slug, now)
            sends.schedule_row(conn, issue, fire_time, now, zone=recurring.timezone)
    except IntegrityError:
        if runs.has_run(engine, name, fire_time):
            return None  # another daemon built it
        return _record(engine, name, fire_time, "failed", now, slug,
                       f"an issue named {slug} is already scheduled or sent")
    send = sends.get_send(engine, slug)
    assert send is not None
    launched = fire(engine, settings, send, now)
    detail = f"; {launched.message}" if launched else ""
    return Event("digest", name, f"built {slug} from {len(carried)} new brief(s){detail}")


def _record(engine: Engine, name: str, fire_time: datetime, outcome: str, now: datetime,
            issue: str | None, message: str) -> Event | None:
    try:
        with engine.begin() as conn:
            runs.record_run(conn, name, fire_time, outcome, now, issue=issue, note=message)
    except IntegrityError:
        return None
    kind = {"nothing new": "nothing-new", "missed": "digest-missed"}.get(outcome, outcome)
    return Event(kind, name, message)


def digests_due(engine: Engine, settings: Settings, recurring: RecurringSchedule,
                now: datetime) -> list[Event]:
    """Build the digest whose fire time passed within schedule.grace, once; report (never
    build) the latest one missed beyond it since the last run."""
    trigger = cron_trigger(recurring.cron, recurring.timezone)
    grace = settings.schedule.grace
    events: list[Event] = []
    last = runs.last_run(engine, recurring.name)
    if last is not None:
        missed = fire_times(trigger, last, now - grace, limit=1)
        if missed:
            message = (f"the digest due {missed[-1]:%Y-%m-%d %H:%M} UTC was more than "
                       f"{_late(grace)} late when a daemon came back; not built")
            event = _record(engine, recurring.name, missed[-1], "missed", now, None, message)
            events += [event] if event else []
    due = fire_times(trigger, now - grace, now, limit=1)
    if due and not runs.has_run(engine, recurring.name, due[-1]):
        event = build_digest(engine, settings, recurring, due[-1], now)
        events += [event] if event else []
    return events


def next_digest(recurring: RecurringSchedule, now: datetime) -> datetime | None:
    return next_fire(recurring.cron, recurring.timezone, now)
