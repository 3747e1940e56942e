"""Recurring digests: at each fire time of a [[schedules]] entry, the briefs in its folder
that no earlier digest carried become a new issue, launched at once; a fire time missed by
more than schedule.grace is reported, never built late."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from dispatch.compose.check import check
from dispatch.compose.issues import ISSUE_FILE
from dispatch.config import RecurringSchedule, Settings
from dispatch.config.cron import cron_trigger, fire_times, next_fire
from dispatch.errors import DispatchError
from dispatch.schedule.firing import Event, EventKind, fire, late_by
from dispatch.schedule.planning import validate
from dispatch.store import schedules as runs
from dispatch.store import sends

log = logging.getLogger("dispatch.schedule")


class RunOutcome(StrEnum):
    """What became of a recurring schedule's fire time (stored in schedule_runs.outcome)."""

    CREATED = "created"  # a digest issue was built and scheduled
    NOTHING_NEW = "nothing new"
    FAILED = "failed"
    MISSED = "missed"  # more than schedule.grace late: not built


_EVENT_OF = {RunOutcome.NOTHING_NEW: EventKind.NOTHING_NEW, RunOutcome.FAILED: EventKind.FAILED,
             RunOutcome.MISSED: EventKind.DIGEST_MISSED, RunOutcome.CREATED: EventKind.DIGEST}


def _issue_toml(subject: str, briefs: list[str]) -> str:
    # JSON strings are valid TOML basic strings.
    return (f"subject = {json.dumps(subject, ensure_ascii=False)}\n"
            f"briefs = [{', '.join(json.dumps(b, ensure_ascii=False) for b in briefs)}]\n")


def _checked(recurring: RecurringSchedule, settings: Settings, paths: list[Path],
             now: datetime) -> tuple[list[Path], list[str]]:
    """The briefs that pass `dispatch check`, and a line per one left out. A brief left out
    is not carried, so it goes out with the first digest after it is fixed."""
    good, left_out = [], []
    for path in paths:
        problems = check(settings, now, path).problems
        if problems:
            detail = "; ".join(str(p) for p in problems)
            log.error("digest %s: left out %s/%s: %s", recurring.name, recurring.folder,
                      path.name, detail)
            left_out.append(f"{path.name} ({detail})")
        else:
            good.append(path)
    return good, left_out


def _write_issue(target: Path, subject: str, briefs: list[Path]) -> None:
    target.mkdir()
    for path in briefs:
        shutil.copy2(path, target / path.name)
    (target / ISSUE_FILE).write_text(_issue_toml(subject, [p.name for p in briefs]),
                                     encoding="utf-8")


def build_digest(engine: Engine, settings: Settings, recurring: RecurringSchedule,
                 fire_time: datetime, now: datetime) -> Event | None:
    """Collect the briefs in the schedule's folder that no earlier digest carried and that
    pass their check into a new issue, scheduled at the fire time and launched at once. None
    if already done. The issue folder appears under issues/ only once it passed its check:
    a failed firing leaves nothing behind."""
    folder = settings.root / recurring.folder
    done = runs.carried(engine, recurring.folder)
    found = sorted(p for p in folder.glob("*.md") if p.name not in done) if folder.is_dir() \
        else []
    new, left_out = _checked(recurring, settings, found, now)
    local = fire_time.astimezone(ZoneInfo(recurring.timezone))
    name = recurring.name
    skipped = f"; left out (failed their check): {', '.join(left_out)}" if left_out else ""
    if not found:
        message = (f"nothing new in {recurring.folder}/ since the last digest; no issue built"
                   if folder.is_dir() else f"no folder {recurring.folder}/; no issue built")
        return _record(engine, name, fire_time, RunOutcome.NOTHING_NEW, now, None, message)
    if not new:
        return _record(engine, name, fire_time, RunOutcome.FAILED, now, None,
                       f"no issue built{skipped}")
    slug = f"{local:%Y-%m-%d}-{name}"
    if sends.get_send(engine, slug) is not None:  # an earlier run the same day took the name
        slug = f"{local:%Y-%m-%d-%H%M}-{name}"
    target = settings.issues_dir / slug
    if (target / ISSUE_FILE).is_file():  # a crash came after moving it into place: reuse it
        try:
            issue = validate(settings, target, now)
        except DispatchError as exc:
            return _record(engine, name, fire_time, RunOutcome.FAILED, now, slug,
                           "; ".join(str(p) for p in exc.problems))
    else:
        # Built and checked beside issues/, then moved into place in one rename.
        settings.issues_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".digest-", dir=settings.root) as scratch:
            draft = Path(scratch) / slug  # the folder's name is the issue's slug
            _write_issue(draft, recurring.subject.format(date=local.date()), new)
            try:
                # Only its slug, subject and brief names are used below: the send itself
                # loads the issue from issues/ when it launches.
                issue = validate(settings, draft, now)
                draft.rename(target)
            except DispatchError as exc:
                return _record(engine, name, fire_time, RunOutcome.FAILED, now, slug,
                               "; ".join(str(p) for p in exc.problems) + skipped)
            except OSError as exc:
                return _record(engine, name, fire_time, RunOutcome.FAILED, now, slug,
                               f"cannot create issues/{slug}: {exc}")
    carried = [b.path.name for b in issue.briefs]
    try:
        with engine.begin() as conn:
            runs.record_run(conn, name, fire_time, RunOutcome.CREATED, now, issue=slug)
            runs.record_carried(conn, recurring.folder, carried, slug, now)
            sends.schedule_row(conn, issue, fire_time, now, zone=recurring.timezone)
    except IntegrityError:
        if runs.has_run(engine, name, fire_time):
            return None  # another daemon built it
        return _record(engine, name, fire_time, RunOutcome.FAILED, now, slug,
                       f"an issue named {slug} is already scheduled or sent")
    send = sends.get_send(engine, slug)
    assert send is not None
    launched = fire(engine, settings, send, now)
    detail = f"; {launched.message}" if launched else ""
    return Event(EventKind.DIGEST, name, f"built {slug} from {len(carried)} new brief(s)"
                                         f"{skipped}{detail}")


def _record(engine: Engine, name: str, fire_time: datetime, outcome: RunOutcome, now: datetime,
            issue: str | None, message: str) -> Event | None:
    try:
        with engine.begin() as conn:
            runs.record_run(conn, name, fire_time, outcome, now, issue=issue, note=message)
    except IntegrityError:
        return None
    return Event(_EVENT_OF[outcome], name, message)


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
                       f"{late_by(grace)} late when a daemon came back; not built")
            event = _record(engine, recurring.name, missed[-1], RunOutcome.MISSED, now, None,
                            message)
            events += [event] if event else []
    due = fire_times(trigger, now - grace, now, limit=1)
    if due and not runs.has_run(engine, recurring.name, due[-1]):
        event = build_digest(engine, settings, recurring, due[-1], now)
        events += [event] if event else []
    return events


def next_digest(recurring: RecurringSchedule, now: datetime) -> datetime | None:
    return next_fire(recurring.cron, recurring.timezone, now)
