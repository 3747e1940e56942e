"""The one delivery loop. `dispatch send`, `dispatch worker`, `dispatch run` (the daemon's
delivery thread) and `dispatch serve` (sign-up confirmations) all deliver through
`run_delivery`, which has the one error policy (docs/architecture.md, "The delivery loop"):

- The relay refusing us (Stats.paused: the session refused `delivery.sender_failures` times
  in a row, AUTH refused, a 5xx greeting or 5xx to MAIL FROM as deliver/outcomes.py
  classifies them, a run of 5.7.x across domains, no session for
  `delivery.session_patience`) pauses the send delivered, or every running send, with the
  reason: no worker keeps hammering a relay that refuses us until an editor resumes.
- A transient problem (the store or the relay gone mid-run, another process holding the
  SQLite worker lock) ends the run; a loop that keeps going tries again after a backoff
  doubling from `Tuning.restart_backoff` to `Tuning.restart_backoff_max`, a single run
  raises it to its caller.

The clock, the stop event, the wake-up event and the tunings are passed in.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Engine

from dispatch.clock import utcnow
from dispatch.config import Settings
from dispatch.config.defaults import TUNING, Tuning
from dispatch.deliver.recording import Stats
from dispatch.deliver.sending import WorkerBusy, run_worker
from dispatch.deliver.transport import Transport
from dispatch.store import sends
from dispatch.store.progress import mail_due

log = logging.getLogger("dispatch.deliver.worker")


class Keep(StrEnum):
    """How long the loop goes on, by the command that runs it."""

    ONCE = "once"  # `dispatch send`, `dispatch worker`: one run; a transient error is raised
    # `dispatch run`: registered as a worker all along, polling while idle, run after run
    HOLDING = "holding"
    # `dispatch serve`: a run only while mail is due (woken by a sign-up, or every
    # Tuning.look_every), so the SQLite worker lock is free in between for `dispatch send`
    # and `dispatch run`; when one of them holds it, its worker delivers the confirmations
    WHEN_DUE = "when-due"


def run_delivery(engine: Engine, settings: Settings, transport: Transport, *,
                 keep: Keep = Keep.ONCE, issue: str | None = None,
                 stop: threading.Event | None = None, wake: threading.Event | None = None,
                 until_done: bool = True, progress: Callable[[Stats], None] = lambda _: None,
                 clock: Callable[[], datetime] = utcnow, tuning: Tuning = TUNING) -> Stats:
    """Deliver the running sends' rows (one issue's, or all) as a registered worker, by the
    module's error policy, until `stop` is set (ONCE: until its run ends; `until_done` False
    keeps that run polling for new sends). Setting `wake` ends an idle wait at once; whoever
    sets `stop` sets `wake` too. Returns the last run's Stats."""
    stop = stop or threading.Event()
    stats = Stats()
    failures = 0  # transient failures in a row

    def idle(seconds: float) -> None:
        if wake is None:
            stop.wait(seconds)
        else:
            wake.wait(seconds)
            wake.clear()

    while not stop.is_set():
        try:
            if keep is Keep.WHEN_DUE and not mail_due(engine, clock()):
                idle(tuning.look_every)
                continue
            stats = run_worker(engine, settings, transport, issue=issue, stop=stop,
                               until_done=until_done and keep is not Keep.HOLDING,
                               wait_for_retries=keep is not Keep.WHEN_DUE,
                               progress=progress, wake=wake, clock=clock, tuning=tuning)
        except WorkerBusy as busy:
            if keep is Keep.ONCE:
                raise
            if keep is Keep.WHEN_DUE:  # nothing failed: the lock's holder delivers the mail
                idle(tuning.look_every)
                continue
            failures += 1
            delay = _backoff(tuning, failures)
            log.warning("%s; trying again in %.0f s", busy.problems[0], delay)
            stop.wait(delay)
            continue
        except Exception:
            if keep is Keep.ONCE:
                raise
            failures += 1  # the store or the relay went away: the server stays up
            delay = _backoff(tuning, failures)
            log.exception("delivery failed; trying again in %.0f s", delay)
            stop.wait(delay)
            continue
        failures = 0
        if stats.paused:
            sends.pause_running(engine, issue, stats.paused)
            log.error("delivery paused: the relay refuses us: %s. Fix the relay settings (or "
                      "wait for the relay), then `dispatch resume ISSUE`", stats.paused)
        if keep is Keep.ONCE:
            break
        if stats.outcomes:
            log.info("delivered: %s", ", ".join(f"{n} {kind}" for kind, n in
                                               sorted(stats.outcomes.items())))
    return stats


def _backoff(tuning: Tuning, failures: int) -> float:
    return min(tuning.restart_backoff * 2 ** (failures - 1), tuning.restart_backoff_max)
