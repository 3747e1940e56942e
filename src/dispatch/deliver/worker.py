"""Delivery: workers that drain an outbox over a transport, with rate limits and retries.

One thread per connection does the network work; the calling thread alone touches the store:
it claims rows in batches, hands them to the connection threads, and records every outcome
within a fraction of a second of the server's reply. So a killed process has re-sent, at
worst, the messages accepted but not yet recorded, and never skips anyone: a claimed row is
either recorded or, when its worker is found dead, queued again.

The outbox is a small interface (claim, record, waiting, template_parts) so a dry run goes
through exactly this path with an in-memory outbox and a transport that writes files.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from dispatch.audience.tokens import Signer
from dispatch.clock import utcnow
from dispatch.compose.message import (
    MessageTemplate,
    Recipient,
    envelope_sender,
    message_id,
    personalize,
    template_from_parts,
)
from dispatch.config import DeliverySettings, Settings
from dispatch.deliver.outcomes import Kind, Outcome, classify, row_change
from dispatch.deliver.ratelimit import RateLimiter
from dispatch.deliver.transport import Connection, Transport, TransportError
from dispatch.store.outbox import Job, RowChange
from dispatch.store.sends import CONFIRMATIONS

HEARTBEAT = 5.0  # seconds between a worker's heartbeats
POLL = 2.0  # seconds between looks at an idle outbox
SWITCH_INTERVAL = 0.0005  # seconds; see deliver()
RECORD_EVERY = 0.03  # seconds of outcomes gathered into one store transaction
class Outbox(Protocol):
    def claim(self, limit: int, now: datetime) -> list[Job]: ...
    def record(self, changes: Iterable[RowChange], now: datetime) -> None: ...
    def waiting(self, now: datetime) -> tuple[int, datetime | None]: ...
    def template_parts(self, issue: str, variant: str) -> tuple[str, str, str]: ...


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

    def template_parts(self, issue: str, variant: str) -> tuple[str, str, str]:
        return self.parts[(issue, variant)]


class Messages:
    """Builds each recipient's bytes from its variant's template (serialised once)."""

    def __init__(self, outbox: Outbox, settings: Settings, signer: Signer) -> None:
        self.outbox = outbox
        self.settings = settings
        self.signer = signer
        self._templates: dict[tuple[str, str], MessageTemplate] = {}
        self._lock = threading.Lock()
        self._dkim: tuple[bytes, bytes, bytes] | None = None
        if settings.dkim:
            self._dkim = (settings.dkim.selector.encode(), settings.dkim.domain.encode(),
                          settings.dkim.key_file.read_bytes())

    def template(self, issue: str, variant: str) -> MessageTemplate:
        key = (issue, variant)
        with self._lock:
            if key not in self._templates:
                subject, html, text = self.outbox.template_parts(issue, variant)
                self._templates[key] = template_from_parts(variant, html, text, subject, issue,
                                                           self.settings)
            return self._templates[key]

    def recipient(self, job: Job, now: datetime) -> Recipient:
        base = self.settings.newsletter.base_url
        sid, email = job.subscriber_id, job.email
        assert email is not None and sid is not None
        key, confirm_url = str(sid), ""
        if job.issue == CONFIRMATIONS:
            confirm_url = f"{base}/c/{self.signer.token('confirm', sid, email, now)}"
            key = f"{sid}.{job.row_id}"  # a new request is a new row: a new Message-ID
        return Recipient(
            email=email, name=job.name,
            unsubscribe_url=f"{base}/u/{self.signer.token('unsubscribe', sid, email)}",
            preferences_url=f"{base}/p/{self.signer.token('preferences', sid, email)}",
            view_url=f"{base}/a/{job.issue}/{job.variant}", confirm_url=confirm_url,
            message_id=message_id(job.issue, key, self.settings))

    def build(self, job: Job, now: datetime) -> tuple[str, bytes, str]:
        """(envelope sender, message bytes, Message-ID) for one job."""
        recipient = self.recipient(job, now)
        data = personalize(self.template(job.issue, job.variant), recipient,
                           now.replace(microsecond=0), self.settings)
        if self._dkim:
            data = sign_dkim(data, *self._dkim)
        return envelope_sender(job.email or "", self.settings), data, recipient.message_id


DKIM_HEADERS = (b"from", b"to", b"subject", b"date", b"message-id", b"mime-version",
                b"content-type", b"list-id", b"list-unsubscribe", b"list-unsubscribe-post")


def sign_dkim(data: bytes, selector: bytes, domain: bytes, key: bytes) -> bytes:
    import dkim  # only when signing is configured

    # List-Unsubscribe-Post must be signed for one-click unsubscribe to be honoured (RFC 8058).
    return dkim.sign(data, selector, domain, key, canonicalize=(b"relaxed", b"relaxed"),
                     include_headers=list(DKIM_HEADERS)) + data


@dataclass
class Stats:
    outcomes: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    left: int = 0  # rows still open in scope when last looked
    paused: str | None = None  # why the send was paused
    note: str = ""  # what the worker is doing, e.g. waiting for retries

    @property
    def done(self) -> int:
        return sum(self.outcomes[k] for k in (Kind.SENT, Kind.FAILED, Kind.BOUNCED,
                                                 Kind.SKIPPED))

    @property
    def rate(self) -> float:
        return self.outcomes[Kind.SENT] / max(time.monotonic() - self.started, 1e-9)


class _Sender:
    """One connection's loop; keeps the connection open between messages."""

    def __init__(self, transport: Transport, messages: Messages, limiter: RateLimiter,
                 clock: Callable[[], datetime]) -> None:
        self.transport = transport
        self.messages = messages
        self.limiter = limiter
        self.clock = clock
        self.conn: Connection | None = None

    def run(self, work: queue.Queue[Job | None], results: queue.Queue[Outcome],
            stop: threading.Event) -> None:
        try:
            while (job := work.get()) is not None:
                if stop.is_set():
                    results.put(Outcome(job, Kind.REQUEUE, "stopped before sending"))
                else:
                    results.put(self.deliver(job, stop))
        finally:
            if self.conn is not None:
                self.conn.close()

    def deliver(self, job: Job, stop: threading.Event) -> Outcome:
        if job.email is None or not job.deliverable:
            return Outcome(job, Kind.SKIPPED, f"subscriber {job.status} since launch")
        try:
            sender, data, mid = self.messages.build(job, self.clock())
        except Exception as exc:  # a broken template or key must not kill the connection
            return Outcome(job, Kind.SENDER, f"cannot build the message: {exc}")
        wait = self.limiter.delay(job.email.rpartition("@")[2])
        if wait > 0 and stop.wait(wait):
            return Outcome(job, Kind.REQUEUE, "stopped before sending")
        if self.conn is None:
            try:
                self.conn = self.transport()
            except TransportError as exc:
                # Cannot reach or log in to the relay: never the subscriber's fault.
                return Outcome(job, Kind.SENDER, f"{exc}: {exc.reply}" if exc.reply else str(exc))
        try:
            reply = self.conn.send(sender, job.email, data)
        except TransportError as exc:
            self.conn = None
            return Outcome(job, Kind.RETRY, str(exc))
        if reply.code == 421:  # the server is closing this session
            self.conn.close()
            self.conn = None
        kind = classify(reply)
        return Outcome(job, kind, str(reply), mid if kind == Kind.SENT else None)


def deliver(outbox: Outbox, transport: Transport, settings: Settings, signer: Signer, *,
            stop: threading.Event | None = None, wait_for_retries: bool = True,
            until_done: bool = True, heartbeat: Callable[[datetime], object] | None = None,
            progress: Callable[[Stats], None] = lambda _: None,
            clock: Callable[[], datetime] = utcnow,
            wake: threading.Event | None = None) -> Stats:
    """Drain the outbox's due rows over `settings.delivery.connections` connections.

    Returns when nothing is left to deliver (waiting for scheduled retries unless told not to),
    when `stop` is set (in-flight messages finish, the rest go back to the queue), or when a
    run of sender-side failures pauses the send (Stats.paused says why). With until_done False
    the worker keeps polling for new sends until stopped; setting `wake` (the scheduler does,
    after a launch) ends an idle wait at once.
    """
    stop = stop or threading.Event()
    delivery = settings.delivery
    messages = Messages(outbox, settings, signer)
    limiter = RateLimiter(delivery.rate, delivery.domain_rates)
    work: queue.Queue[Job | None] = queue.Queue()
    results: queue.Queue[Outcome] = queue.Queue()
    threads = [threading.Thread(target=_Sender(transport, messages, limiter, clock).run,
                                args=(work, results, stop), daemon=True,
                                name=f"dispatch-connection-{i}")
               for i in range(delivery.connections)]
    # The connection threads spend their time waiting on sockets; with Python's default 5 ms
    # GIL switch interval a thread whose reply has arrived waits behind the store work.
    # A shorter interval lifted throughput to Postfix's smtp-sink by about 15%.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    for thread in threads:
        thread.start()
    stats = Stats()
    batch = max(25, delivery.connections * 25)  # rows per claim; at most 2 batches held
    in_flight = 0
    sender_run = 0
    last_beat = time.monotonic()
    try:
        while True:
            now = clock()
            if heartbeat and time.monotonic() - last_beat >= HEARTBEAT:
                heartbeat(now)
                last_beat = time.monotonic()
            if not stop.is_set() and in_flight <= batch:
                for job in outbox.claim(batch, now):
                    work.put(job)
                    in_flight += 1
            if in_flight == 0:
                if stop.is_set():
                    break
                stats.left, due = outbox.waiting(now)
                if until_done and (stats.left == 0 or (
                        due is not None and due > now and not wait_for_retries)):
                    break
                # Nothing claimable now: retries are scheduled later, other workers hold the
                # remaining rows, or (as a daemon) there is no running send at all.
                pause = POLL
                if due is not None:
                    pause = min(POLL, max(0.0, (due - now).total_seconds()))
                    stats.note = (f"{stats.left:,} left; next retry in "
                                  f"{(due - now).total_seconds():.0f} s")
                elif stats.left:
                    stats.note = f"{stats.left:,} being sent by other workers"
                progress(stats)
                if wake is not None:
                    wake.wait(pause)
                    wake.clear()
                else:
                    stop.wait(pause)
                continue
            stats.note = ""
            outcomes = _drain(results, timeout=0.05, expected=in_flight)
            if not outcomes:
                progress(stats)
                continue
            in_flight -= len(outcomes)
            for outcome in outcomes:
                sender_run = sender_run + 1 if outcome.kind == Kind.SENDER else 0
                if sender_run >= delivery.sender_failures and stats.paused is None:
                    stats.paused = outcome.reply
                    stop.set()
            _record(outbox, outcomes, delivery, clock())
            stats.outcomes.update(o.kind for o in outcomes)
            progress(stats)
    finally:
        stop.set()  # anything still queued goes back as REQUEUE
        for _ in threads:
            work.put(None)
        for thread in threads:
            thread.join()
        sys.setswitchinterval(switch_interval)
        leftover = _drain(results, timeout=0)
        if leftover:
            _record(outbox, leftover, delivery, clock())
            stats.outcomes.update(o.kind for o in leftover)
    return stats


def _record(outbox: Outbox, outcomes: list[Outcome], delivery: DeliverySettings,
            now: datetime) -> None:
    outbox.record([row_change(o, delivery, now) for o in outcomes], now)


def _drain(results: queue.Queue[Outcome], timeout: float, expected: int = 0,
           gather: float = RECORD_EVERY) -> list[Outcome]:
    """Outcomes waiting in the queue: blocks up to `timeout` for the first, then gathers for
    up to `gather` seconds more (or until `expected` have come), so the store gets one
    transaction per batch instead of one per message. That window is all a kill can lose."""
    outcomes: list[Outcome] = []
    try:
        outcomes.append(results.get(timeout=timeout) if timeout else results.get_nowait())
        deadline = time.monotonic() + gather
        while len(outcomes) < expected and (left := deadline - time.monotonic()) > 0:
            outcomes.append(results.get(timeout=left))
    except queue.Empty:
        pass
    try:
        while True:
            outcomes.append(results.get_nowait())
    except queue.Empty:
        pass
    return outcomes
