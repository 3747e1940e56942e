"""`dispatch run`: the daemon. APScheduler wakes `tick` at every scheduled issue's time and
every recurring schedule's; every decision is made by `tick(engine, settings, now)` from the
store with the clock passed in, and launching is a compare-and-set on the send's row, so a
restart rebuilds everything from the store and nothing fires twice.

The recurring schedules come from config.toml and are reloaded on SIGHUP (`Daemon.reload`, called
by cli/daemon.py) and when the file's modification time changes (looked at on every sync tick).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine

from dispatch.clock import utcnow
from dispatch.config import Settings, load_settings
from dispatch.config.cron import cron_trigger
from dispatch.config.defaults import TUNING, Tuning
from dispatch.deliver.loop import Keep, run_delivery
from dispatch.deliver.recording import Stats
from dispatch.deliver.transport import Transport
from dispatch.errors import ConfigError
from dispatch.schedule.digests import digests_due
from dispatch.schedule.firing import Event, EventKind, fire
from dispatch.states import SendStatus
from dispatch.store import progress, sends

log = logging.getLogger("dispatch.schedule")


def tick(engine: Engine, settings: Settings, now: datetime) -> list[Event]:
    """Everything due at `now`: scheduled issues whose time has come, recurring digests."""
    events: list[Event] = []
    for send in sends.scheduled_sends(engine):
        if send.send_at is not None and send.send_at <= now:
            event = fire(engine, settings, send, now)
            events += [event] if event else []
    for recurring in settings.schedules:
        events += digests_due(engine, settings, recurring, now)
    return events


# What an operator must act on stands out in the log: an issue or digest that could not go out.
LEVELS = {EventKind.FAILED: logging.ERROR, EventKind.MISSED: logging.WARNING,
          EventKind.DIGEST_MISSED: logging.WARNING}


def log_event(event: Event) -> None:
    log.log(LEVELS.get(event.kind, logging.INFO), "%s", event)


class Daemon:
    """`dispatch run`: APScheduler wakes `tick` at every scheduled issue's time and every
    recurring schedule's, and every `schedule.sync` seconds to pick up changes made from other
    shells and to config.toml's [[schedules]]; one delivery worker thread sends what was
    launched."""

    def __init__(self, engine: Engine, settings: Settings, transport: Transport, *,
                 clock: Callable[[], datetime] = utcnow,
                 on_event: Callable[[Event], None] = log_event,
                 progress: Callable[[Stats], None] = lambda _: None,
                 tuning: Tuning = TUNING) -> None:
        self.engine = engine
        self.tuning = tuning
        self.progress = progress
        self._sending: set[str] = set()
        self.settings = settings
        self.transport = transport
        self.clock = clock
        self.on_event = on_event
        self.stopping = threading.Event()
        self._wake = threading.Event()  # a launch ends the delivery worker's idle wait
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._config_mtime = self._mtime()
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            # Lateness is judged by fire() against schedule.grace, from the store, so
            # APScheduler must run every wake-up however late.
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1})

    def _mtime(self) -> int | None:
        try:
            return self.settings.path.stat().st_mtime_ns
        except (AttributeError, OSError):  # settings built in code, or the file is gone
            return None

    def reload(self, why: str) -> bool:
        """Read config.toml again and take its [[schedules]] (the rest of the settings
        need a restart). An invalid file changes nothing: its problems are logged as an
        ERROR and the schedules in use are kept. True when the new schedules apply."""
        self._config_mtime = self._mtime()  # an invalid file is reported once, not per sync
        try:
            fresh = load_settings(self.settings.path)
        except ConfigError as exc:
            log.error("config.toml not reloaded (%s): keeping the %d recurring schedule(s) in "
                      "use; fix these and save it again or send SIGHUP:\n%s", why,
                      len(self.settings.schedules), "\n".join(str(p) for p in exc.problems))
            return False
        with self._lock:
            self.settings = self.settings.model_copy(update={"schedules": fresh.schedules})
            self._recurring_jobs()
        log.info("config.toml reloaded (%s): %d recurring schedule(s)%s", why,
                 len(fresh.schedules),
                 f": {', '.join(r.name for r in fresh.schedules)}" if fresh.schedules else "")
        return True

    def _recurring_jobs(self) -> None:
        """One cron job per [[schedules]] entry; those no longer in the file are dropped."""
        wanted = {f"recurring:{r.name}": r for r in self.settings.schedules}
        for job in self.scheduler.get_jobs():
            if job.id.startswith("recurring:") and job.id not in wanted:
                job.remove()
        for job_id, recurring in wanted.items():
            self.scheduler.add_job(self.tick, cron_trigger(recurring.cron, recurring.timezone),
                                   id=job_id, replace_existing=True)

    def tick(self) -> list[Event]:
        if self._mtime() != self._config_mtime:
            self.reload("config.toml changed")
        with self._lock:
            try:
                events = tick(self.engine, self.settings, self.clock())
            except Exception:  # a store hiccup must not end the daemon; the next sync retries
                log.exception("scheduler tick failed")
                return []
            if any(e.kind in (EventKind.LAUNCHED, EventKind.DIGEST) for e in events):
                self._wake.set()
            events += self._finished()
            for event in events:
                self.on_event(event)
            self.reconcile()
        return events

    def _finished(self) -> list[Event]:
        """Sends that stopped sending since the last look (sent, paused, cancelled)."""
        known = {s.issue: s for s in sends.list_sends(self.engine)}
        sending = {slug for slug, s in known.items() if s.status == SendStatus.SENDING}
        events = []
        for slug in sorted(self._sending - sending):
            counts = progress.state_counts(self.engine, slug).get(slug, Counter())
            detail = ", ".join(f"{n:,} {state}" for state, n in sorted(counts.items()))
            events.append(Event(EventKind(known[slug].status), slug, f"{detail} of "
                                f"{known[slug].recipients:,} recipient(s)"))
        self._sending = sending
        return events

    def reconcile(self) -> None:
        """Keep one date job per scheduled issue, at its time; drop the rest."""
        wanted = {f"issue:{s.issue}": s.send_at for s in sends.scheduled_sends(self.engine)
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
        self._recurring_jobs()
        self.scheduler.add_job(self.tick, IntervalTrigger(seconds=self.settings.schedule.sync),
                               id="sync", next_run_time=utcnow())
        self.scheduler.start()
        self._worker = threading.Thread(target=self._deliver, name="dispatch-delivery")
        self._worker.start()

    def _deliver(self) -> None:
        """The daemon's delivery: deliver/loop.py's loop, holding a worker until stopped."""
        run_delivery(self.engine, self.settings, self.transport, keep=Keep.HOLDING,
                     stop=self.stopping, wake=self._wake, progress=self.progress,
                     clock=self.clock, tuning=self.tuning)

    def stop(self) -> None:
        """Stop waking up, let in-flight messages finish, hand the rest back to the queue."""
        self.stopping.set()
        self._wake.set()
        self.scheduler.shutdown(wait=True)
        if self._worker is not None:
            self._worker.join()
