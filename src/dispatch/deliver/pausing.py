"""What pauses a send (docs/architecture.md, "What pauses a send"): the relay giving no session
for `delivery.session_patience`, a run of session refusals, or a run of 5.7.x refusals
spanning several domains. Anything about one recipient or one message stays that row's."""

from __future__ import annotations

import threading
from datetime import datetime

from dispatch.config import DeliverySettings
from dispatch.deliver.outcomes import Kind, Outcome
from dispatch.deliver.recording import DIRECT, Result, Stats

# Outcomes that show the relay takes our sessions (they end a run of session refusals) and,
# but for a held POLICY refusal, that it takes our messages (they end a run of 5.7.x).
SESSION_WORKS = (Kind.SENT, Kind.RETRY, Kind.UNKNOWN, Kind.FAILED, Kind.BOUNCED, Kind.POLICY)
RUN_BREAKERS = (Kind.SENT, Kind.RETRY, Kind.FAILED, Kind.BOUNCED)


class Health:
    """Whether the relay gives us sessions at all, over every connection: since when none
    could be had (connections refused, timeouts, 4xx greetings, 4xx to MAIL FROM), how many
    tries, and the last reason. Any transaction that gets past MAIL FROM ends the trouble.
    Times are the delivery loop's clock (passed in), so a test can run the patience out
    without waiting for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started: datetime | None = None
        self.tries = 0
        self.last = ""

    def failed(self, reason: str, now: datetime) -> None:
        with self._lock:
            if self.started is None:
                self.started, self.tries = now, 0
            self.tries += 1
            self.last = reason

    def ok(self) -> None:
        if self.started is not None:
            with self._lock:
                self.started = None

    def trouble(self, now: datetime) -> float:
        """Seconds without a session (0 when sessions work)."""
        started = self.started
        return 0.0 if started is None else max((now - started).total_seconds(), 1e-6)

    def describe(self, now: datetime) -> str:
        started = f" since {self.started:%Y-%m-%d %H:%M:%S} UTC" if self.started else ""
        return (f"no session with the relay for {self.trouble(now):.0f} s{started} "
                f"({self.tries} tries); the last: {self.last}")


class Runs:
    """Runs of refusals, in the order their outcomes reach the store thread. A run of
    `sender_failures` session refusals (SENDER) pauses the send; so does a run of as many
    5.7.x refusals (POLICY) spanning at least two recipient domains. A POLICY outcome is held
    (its row stays claimed: no attempt used) until its run is decided: it fails when a
    delivered or otherwise answered message ends the run, and goes back to the queue when
    the run pauses the send."""

    def __init__(self, delivery: DeliverySettings, stats: Stats, stop: threading.Event) -> None:
        self.limit = delivery.sender_failures
        self.stats = stats
        self.stop = stop
        self.sender_run = 0
        self.held: list[Result] = []

    def pause(self, reason: str) -> None:
        if self.stats.paused is None:
            self.stats.paused = reason
            self.stop.set()

    def decide(self, outcomes: list[Result]
               ) -> list[Result]:
        """The outcomes to record now."""
        ready: list[Result] = []
        for outcome, stored in outcomes:
            kind = outcome.kind
            if kind in SESSION_WORKS:
                self.sender_run = 0
            if kind == Kind.POLICY:
                stored.set()  # refused: nothing to wait for before the next message
                self.held.append((outcome, stored))
                if self.stats.paused is not None:
                    ready += self._release()
                    continue
                domains = {o.job.email.rpartition("@")[2].lower()
                           for o, _ in self.held if o.job.email}
                if len(self.held) >= self.limit and len(domains) >= 2:
                    self.pause(f"{len(self.held)} recipients at {len(domains)} domains refused "
                               f"in a row with 5.7.x, the last: {outcome.reply}")
                    ready += self._release()
                continue
            if kind in RUN_BREAKERS and self.held:
                ready += self._fail_held()
            if kind == Kind.SENDER:
                self.sender_run += 1
                if self.sender_run >= self.limit:
                    self.pause(outcome.reply)
            if kind not in DIRECT:  # those are on their way to the store already
                ready.append((outcome, stored))
        return ready

    def settle(self) -> list[Result]:
        """The held rows when no more outcomes are coming: failed, unless the run was cut
        short by a stop or a pause (then queued again, no attempt used)."""
        return self._release() if self.stop.is_set() else self._fail_held()

    def _fail_held(self) -> list[Result]:
        held, self.held = self.held, []
        return [(Outcome(o.job, Kind.FAILED, o.reply), e) for o, e in held]

    def _release(self) -> list[Result]:
        held, self.held = self.held, []
        return [(Outcome(o.job, Kind.REQUEUE, o.reply), e) for o, e in held]
