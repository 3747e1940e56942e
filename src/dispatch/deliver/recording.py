"""How outcomes reach the store: the outbox interface a worker drains (the store's, or the
dry run's in memory), the running tally, and the one recorder whose commits the connection
threads share, so a message's outcome is durable before its connection's next final dot."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from dispatch.config import DeliverySettings
from dispatch.deliver.outcomes import Kind, Outcome, row_change
from dispatch.store.outbox import Job, RowChange


class Outbox(Protocol):
    def claim(self, limit: int, now: datetime) -> list[Job]: ...
    def record(self, changes: Iterable[RowChange], now: datetime) -> None: ...
    def waiting(self, now: datetime) -> tuple[int, datetime | None]: ...
    def finish(self, now: datetime) -> int: ...
    def template_parts(self, issue: str, variant: str) -> tuple[str, str, str]: ...
    def halted(self, issues: Iterable[str]) -> dict[str, str]: ...


@dataclass
class MemoryOutbox:
    """An outbox that lives in memory: the dry run's, so the store is never written."""

    jobs: deque[Job]
    parts: Mapping[tuple[str, str], tuple[str, str, str]]  # (issue, variant) -> parts
    changes: list[RowChange] = field(default_factory=list)

    def claim(self, limit: int, now: datetime) -> list[Job]:
        return [self.jobs.popleft() for _ in range(min(limit, len(self.jobs)))]

    def record(self, changes: Iterable[RowChange], now: datetime) -> None:
        self.changes.extend(changes)

    def waiting(self, now: datetime) -> tuple[int, datetime | None]:
        return len(self.jobs), None

    def finish(self, now: datetime) -> int:
        return 0  # a dry run has no send to finish

    def template_parts(self, issue: str, variant: str) -> tuple[str, str, str]:
        return self.parts[(issue, variant)]

    def halted(self, issues: Iterable[str]) -> dict[str, str]:
        return {}


@dataclass
class Stats:
    outcomes: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    left: int = 0  # rows still open in scope when last looked
    total: int = 0  # done + left when last looked: what a progress line counts up to
    paused: str | None = None  # why the send was paused
    note: str = ""  # what the worker is doing, e.g. waiting for retries

    @property
    def done(self) -> int:
        return sum(self.outcomes[k] for k in (Kind.SENT, Kind.FAILED, Kind.BOUNCED,
                                                 Kind.SKIPPED))

    def looked(self, left: int) -> None:
        """The rows still to deliver in scope, just counted: the total follows."""
        self.left = left
        self.total = self.done + left

    @property
    def rate(self) -> float:
        return self.outcomes[Kind.SENT] / max(time.monotonic() - self.started, 1e-9)


class Signal:
    """Set once an outcome is in the store: a lock held until then, cheaper than an Event
    (one waiter, the connection that sent the message; one setter, the store thread)."""

    __slots__ = ("_lock", "done")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self.done = False

    def set(self) -> None:
        if not self.done:
            self.done = True
            self._lock.release()

    def wait(self, timeout: float) -> bool:
        return self.done or self._lock.acquire(timeout=timeout)


Result = tuple[Outcome, Signal]  # an outcome, and its "recorded" signal
DIRECT = (Kind.SENT, Kind.UNKNOWN)  # recorded by their connection's thread: nothing to decide


class Recorder:
    """The one way outcomes reach the store. Outcomes wait in a list; whichever thread needs
    them stored first (a connection about to write its next final dot, or the store thread
    when one has waited `Tuning.record_every`) commits all of them in one transaction, so the
    connections' commits are grouped and no connection waits for another thread to wake."""

    def __init__(self, outbox: Outbox, delivery: DeliverySettings,
                 clock: Callable[[], datetime], stats: Stats) -> None:
        self.outbox = outbox
        self.delivery = delivery
        self.clock = clock
        self.stats = stats
        self.error: BaseException | None = None  # a failed commit, for the store thread
        self._waiting: list[Result] = []
        self._since = 0.0  # when the oldest waiting outcome came
        self._list_lock = threading.Lock()
        self._commit_lock = threading.Lock()

    def add(self, results: list[Result]) -> None:
        if results:
            with self._list_lock:
                if not self._waiting:
                    self._since = time.monotonic()
                self._waiting += results

    def age(self) -> float:
        """Seconds the oldest waiting outcome has waited (0 when none waits)."""
        return time.monotonic() - self._since if self._waiting else 0.0

    def commit(self, needed: Signal | None = None) -> None:
        """Store every waiting outcome; with `needed`, only if that one is not stored yet
        (another thread's commit may have taken it while this one waited for the lock)."""
        with self._commit_lock:
            if needed is not None and needed.done:
                return
            with self._list_lock:
                results, self._waiting = self._waiting, []
            if not results or self.error is not None:
                self.add(results)
                return
            try:
                now = self.clock()
                self.outbox.record([row_change(o, self.delivery, now) for o, _ in results], now)
            except BaseException as exc:
                self.error = exc
                self.add(results)  # for the last try on the way out
                return
            for outcome, stored in results:
                stored.set()
                self.stats.outcomes[outcome.kind] += 1
