"""Scheduling: when issues go out, recurring digests, and the daemon that runs them.

The store is the source of truth: a send's status (scheduled → sending → sent, or paused,
cancelled, failed, missed) and its send_at, in UTC. APScheduler holds the triggers that wake
the daemon at those times. Every decision is made by `tick(engine, settings, now)` from the
store with the clock passed in, and launching is a compare-and-set on the send's row, so a
restart rebuilds everything from the store and nothing fires twice.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from dispatch.clock import local_release, utcnow
from dispatch.compose.check import check
from dispatch.config.cron import cron_trigger, fire_times, next_fire
from dispatch.config import RecurringSchedule, Settings
from dispatch.deliver.worker import Stats
from dispatch.errors import ContentError, DispatchError, Problem
from dispatch.compose.issues import ISSUE_FILE, load_issue, parse_when, resolve_issue_path
from dispatch.compose.models import Issue
from dispatch.deliver.sending import WorkerBusy, launch_issue, run_worker
from dispatch.store import outbox
from dispatch.store import schedules as runs
from dispatch.store.outbox import SendInfo
from dispatch.store.subscribers import active_zones
from dispatch.deliver.transport import Transport

log = logging.getLogger("dispatch.schedule")


@dataclass(frozen=True)
class Event:
    """Something the scheduler did, for the daemon's log and for tests."""

    kind: str  # launched, missed, failed, digest, nothing-new, digest-missed
    subject: str  # the issue slug or the recurring schedule's name
    message: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.kind}: {self.message}"


# ---- Times -------------------------------------------------------------------------------

def _wall_clock(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip().replace(" ", "T"))
    except ValueError:
        raise DispatchError(Problem("--at", f"{text!r} is not a time like 2026-12-01 07:00"))
    if moment.tzinfo is not None:
        raise DispatchError(Problem("--at", "--local-time takes a wall-clock time without an "
                                            "offset or zone: each subscriber's zone applies"))
    return moment


@dataclass(frozen=True)
class When:
    """When a scheduled issue goes out."""

    send_at: datetime  # UTC; for local-time sends, the first subscriber's release
    zone: str  # the zone it was given in, for display
    local_time: datetime | None = None  # the wall-clock time of a local-time send
    releases: tuple[tuple[str, datetime], ...] = ()  # local-time: (zone, UTC instant), sorted


def plan_time(engine: Engine, settings: Settings, issue: Issue, at: str | None,
              tz: str | None, local: bool, now: datetime) -> When:
    """The time an editor asked for (`--at`, else the issue's send_at), checked: never in the
    past, and for a local-time send not yet passed in any subscriber's zone."""
    if tz is not None:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise DispatchError(Problem("--tz", f"unknown IANA time zone {tz!r}")) from None
    if at is None and issue.send_at is None:
        raise DispatchError(Problem(issue.slug, "no time given: use --at, or set send_at in "
                                                "issue.toml"))
    if local:
        if tz is not None:
            raise DispatchError(Problem("--tz", "--local-time uses each subscriber's own zone; "
                                                "leave out --tz"))
        if at is not None:
            wall = _wall_clock(at)
        else:
            assert issue.send_at is not None
            wall = issue.send_at.replace(tzinfo=None)  # its wall clock, wherever it was given
        default = settings.schedule.default_timezone
        zones = sorted({zone or default for zone in active_zones(engine)} | {default})
        releases = tuple(sorted(((z, local_release(wall, z)) for z in zones),
                                key=lambda item: item[1]))
        passed = [z for z, moment in releases if moment <= now]
        if passed:
            raise DispatchError(Problem("--at", f"{wall:%Y-%m-%d %H:%M} has already passed in "
                                                f"{', '.join(passed)}"))
        return When(send_at=releases[0][1], zone="local", local_time=wall, releases=releases)
    zone = tz or settings.newsletter.timezone
    if at is None:
        assert issue.send_at is not None
        moment = issue.send_at
    else:
        try:
            explicit: datetime | None = parse_when(at)  # carries its own offset or zone
        except ValueError:
            explicit = None
        if explicit is not None and tz is not None:
            raise DispatchError(Problem("--tz", f"{at!r} carries its own offset or zone; give "
                                                "the zone once"))
        try:
            moment = explicit or parse_when(at, default_zone=zone)
        except ValueError as exc:
            raise DispatchError(Problem("--at", str(exc))) from None
    shown = getattr(moment.tzinfo, "key", None) or zone
    moment = moment.astimezone(timezone.utc)
    if moment <= now:
        raise DispatchError(Problem("--at", f"{moment:%Y-%m-%d %H:%M:%S} UTC is in the past "
                                            f"(now {now:%Y-%m-%d %H:%M:%S} UTC)"))
    return When(send_at=moment, zone=shown)


# ---- Editor actions ----------------------------------------------------------------------

def validate(settings: Settings, folder: Path, now: datetime) -> Issue:
    """Load the issue and run `dispatch check` on it (every variant rendered): the problems
    are raised, so nothing with errors is ever scheduled."""
    if not (folder / ISSUE_FILE).is_file():
        raise ContentError(Problem(str(folder), f"no {ISSUE_FILE} here: not an issue folder"))
    report = check(settings, now, folder)
    if report.problems:
        raise ContentError(report.problems)
    return report.issues[0]


def schedule_issue(engine: Engine, settings: Settings, name: str, *, at: str | None,
                   tz: str | None, local: bool, now: datetime) -> tuple[Issue, When]:
    issue = validate(settings, resolve_issue_path(name, settings), now)
    existing = outbox.get_send(engine, issue.slug)
    if existing and existing.status == "scheduled":
        raise DispatchError(Problem(issue.slug, f"already scheduled for "
                                                f"{existing.send_at:%Y-%m-%d %H:%M} UTC; use "
                                                f"dispatch schedule move {issue.slug} --at …"))
    if existing and existing.launched_at is not None:
        raise DispatchError(Problem(issue.slug, f"already {existing.status}; see dispatch "
                                                f"status {issue.slug}"))
    when = plan_time(engine, settings, issue, at, tz, local, now)
    if not outbox.schedule_send(engine, issue, when.send_at, now, zone=when.zone,
                                local_time=_iso(when.local_time)):
        raise DispatchError(Problem(issue.slug, "another process scheduled or sent this issue "
                                                "a moment ago"))
    return issue, when


def move_issue(engine: Engine, settings: Settings, slug: str, *, at: str, tz: str | None,
               now: datetime) -> When:
    send = _send(engine, slug, "scheduled", "only a scheduled issue can be moved")
    issue = load_issue(resolve_issue_path(slug, settings), settings)
    when = plan_time(engine, settings, issue, at, tz, send.local_time is not None, now)
    if not outbox.move_send(engine, slug, when.send_at, _iso(when.local_time)):
        raise DispatchError(Problem(slug, "it stopped being scheduled a moment ago (fired or "
                                          "cancelled)"))
    return when


def cancel_issue(engine: Engine, slug: str, now: datetime) -> int:
    """Cancel a scheduled or running send; returns how many unsent messages were dropped."""
    dropped = outbox.cancel_send(engine, slug, "cancelled by an editor", now)
    if dropped is None:
        send = outbox.get_send(engine, slug)
        raise DispatchError(Problem(slug, f"nothing to cancel: it is {send.status}" if send
                                    else "nothing to cancel: it was never scheduled"))
    return dropped


def pause_issue(engine: Engine, slug: str) -> None:
    if not outbox.set_status(engine, slug, "paused", "paused by an editor",
                             only_from=("sending",)):
        _send(engine, slug, "sending", "only a send in progress can be paused (a scheduled "
                                       "one can be moved or cancelled)")


def resume_issue(engine: Engine, slug: str) -> None:
    if not outbox.set_status(engine, slug, "sending", only_from=("paused",)):
        _send(engine, slug, "paused", "only a paused send can be resumed")


def _send(engine: Engine, slug: str, status: str, why: str) -> SendInfo:
    send = outbox.get_send(engine, slug)
    if send is None:
        raise DispatchError(Problem(slug, "not scheduled or sent (dispatch schedule list)"))
    if send.status != status:
        raise DispatchError(Problem(slug, f"{why}; it is {send.status}"))
    return send


def _iso(wall: datetime | None) -> str | None:
    return wall.isoformat(timespec="seconds") if wall else None


# ---- Firing ------------------------------------------------------------------------------

def _late(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def fire(engine: Engine, settings: Settings, send: SendInfo, now: datetime) -> Event | None:
    """Launch a scheduled issue whose time has come, unless it is more than schedule.grace
    late (then it is marked missed). None when another process got there first."""
    assert send.send_at is not None
    grace = settings.schedule.grace
    if now - send.send_at > grace:
        reason = (f"due {send.send_at:%Y-%m-%d %H:%M} UTC but no daemon ran until "
                  f"{now:%Y-%m-%d %H:%M} UTC ({_late(now - send.send_at)} late; schedule.grace "
                  f"is {_late(grace)}); not sent. Schedule it again to send it")
        if outbox.set_status(engine, send.issue, "missed", reason, only_from=("scheduled",)):
            return Event("missed", send.issue, reason)
        return None
    try:
        issue = load_issue(resolve_issue_path(send.issue, settings), settings)
        audience = outbox.plan_audience(engine, issue, settings)
        if not audience.rows:
            raise DispatchError(Problem(send.issue, "nobody to send to: no active subscriber "
                                                    "matches this issue"))
        release = None
        if send.local_time:
            wall = datetime.fromisoformat(send.local_time)
            default = settings.schedule.default_timezone
            zones = audience.zones

            def release(sid: int) -> datetime:
                return local_release(wall, zones.get(sid, default))

        launched = launch_issue(engine, issue, audience, settings, now,
                                scheduled_for=send.send_at, release=release)
    except DispatchError as exc:
        reason = "; ".join(str(p) for p in exc.problems)
        if outbox.set_status(engine, send.issue, "failed", reason, only_from=("scheduled",)):
            return Event("failed", send.issue, reason)
        return None
    if not launched:
        return None
    how = (f", each at {send.local_time[11:16]} in their own zone" if send.local_time else "")
    return Event("launched", send.issue, f"{len(audience.rows):,} recipient(s) in "
                                         f"{len(audience.variants)} variant(s){how}")


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
    if outbox.get_send(engine, slug) is not None:  # an earlier run the same day took the name
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
            outbox.schedule_row(conn, issue, fire_time, now, zone=recurring.timezone)
    except IntegrityError:
        if runs.has_run(engine, name, fire_time):
            return None  # another daemon built it
        return _record(engine, name, fire_time, "failed", now, slug,
                       f"an issue named {slug} is already scheduled or sent")
    send = outbox.get_send(engine, slug)
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


def tick(engine: Engine, settings: Settings, now: datetime) -> list[Event]:
    """Everything due at `now`: scheduled issues whose time has come, recurring digests."""
    events: list[Event] = []
    for send in outbox.scheduled_sends(engine):
        if send.send_at is not None and send.send_at <= now:
            event = fire(engine, settings, send, now)
            events += [event] if event else []
    for recurring in settings.schedules:
        events += digests_due(engine, settings, recurring, now)
    return events


def next_digest(recurring: RecurringSchedule, now: datetime) -> datetime | None:
    return next_fire(recurring.cron, recurring.timezone, now)


# ---- The daemon --------------------------------------------------------------------------

class Daemon:
    """`dispatch run`: APScheduler wakes `tick` at every scheduled issue's time and every
    recurring schedule's, and every `schedule.sync` seconds to pick up changes made from other
    shells; one delivery worker thread sends what was launched."""

    def __init__(self, engine: Engine, settings: Settings, transport: Transport, *,
                 clock: Callable[[], datetime] = utcnow,
                 on_event: Callable[[Event], None] = lambda e: log.info("%s", e),
                 progress: Callable[[Stats], None] = lambda _: None) -> None:
        self.engine = engine
        self.progress = progress
        self._sending: set[str] = set()
        self.settings = settings
        self.transport = transport
        self.clock = clock
        self.on_event = on_event
        self.stopping = threading.Event()
        self._wake = threading.Event()  # a launch ends the delivery worker's idle wait
        self._run_stop = threading.Event()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self.scheduler = BackgroundScheduler(
            timezone=timezone.utc,
            # Lateness is judged by fire() against schedule.grace, from the store, so
            # APScheduler must run every wake-up however late.
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1})

    def tick(self) -> list[Event]:
        with self._lock:
            try:
                events = tick(self.engine, self.settings, self.clock())
            except Exception:  # a store hiccup must not end the daemon; the next sync retries
                log.exception("scheduler tick failed")
                return []
            if any(e.kind in ("launched", "digest") for e in events):
                self._wake.set()
            events += self._finished()
            for event in events:
                self.on_event(event)
            self.reconcile()
        return events

    def _finished(self) -> list[Event]:
        """Sends that stopped sending since the last look (sent, paused, cancelled)."""
        sends = {s.issue: s for s in outbox.list_sends(self.engine)}
        sending = {slug for slug, s in sends.items() if s.status == "sending"}
        events = []
        for slug in sorted(self._sending - sending):
            counts = outbox.state_counts(self.engine, slug).get(slug, Counter())
            detail = ", ".join(f"{n:,} {state}" for state, n in sorted(counts.items()))
            events.append(Event(sends[slug].status, slug, f"{detail} of "
                                f"{sends[slug].recipients:,} recipient(s)"))
        self._sending = sending
        return events

    def reconcile(self) -> None:
        """Keep one date job per scheduled issue, at its time; drop the rest."""
        wanted = {f"issue:{s.issue}": s.send_at for s in outbox.scheduled_sends(self.engine)
                  if s.send_at is not None}
        for job in self.scheduler.get_jobs():
            if job.id.startswith("issue:") and job.id not in wanted:
                job.remove()
        for job_id, send_at in wanted.items():
            job = self.scheduler.get_job(job_id)
            if job is None or job.trigger.run_date != send_at:
                self.scheduler.add_job(self.tick, DateTrigger(run_date=send_at), id=job_id,
                                       replace_existing=True)

    def wake(self) -> None:
        """Something was queued (a sign-up's confirmation): deliver it now."""
        self._wake.set()

    def jobs(self) -> dict[str, datetime | None]:
        return {job.id: job.next_run_time for job in self.scheduler.get_jobs()}

    def start(self) -> None:
        for recurring in self.settings.schedules:
            self.scheduler.add_job(self.tick, cron_trigger(recurring.cron, recurring.timezone),
                                   id=f"recurring:{recurring.name}")
        self.scheduler.add_job(self.tick, IntervalTrigger(seconds=self.settings.schedule.sync),
                               id="sync", next_run_time=utcnow())
        self.scheduler.start()
        self._worker = threading.Thread(target=self._deliver, name="dispatch-delivery")
        self._worker.start()

    def _deliver(self) -> None:
        while True:
            # deliver() sets its stop event when it ends, so each run gets its own.
            self._run_stop = run_stop = threading.Event()
            if self.stopping.is_set():
                return
            try:
                stats = run_worker(self.engine, self.settings, self.transport, stop=run_stop,
                                   until_done=False, progress=self.progress, wake=self._wake)
            except WorkerBusy as busy:
                log.warning("%s; retrying in 10 s", busy.problems[0])
                self.stopping.wait(10)
                continue
            except Exception:  # the store or the relay went away; keep the daemon up
                log.exception("delivery worker failed; restarting in 10 s")
                self.stopping.wait(10)
                continue
            if stats.paused:
                outbox.pause_running(self.engine, None, stats.paused)
                log.error("delivery paused after repeated sender-side failures: %s. Fix the "
                          "relay settings, then `dispatch resume ISSUE`", stats.paused)

    def stop(self) -> None:
        """Stop waking up, let in-flight messages finish, hand the rest back to the queue."""
        self.stopping.set()
        self._run_stop.set()
        self._wake.set()
        self.scheduler.shutdown(wait=True)
        if self._worker is not None:
            self._worker.join()
