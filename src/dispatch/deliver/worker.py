"""Delivery: workers that drain an outbox over a transport, with rate limits and retries.

One thread per connection does the network work; the calling thread claims rows in batches,
hands them to the connection threads, decides what their outcomes mean for the send (runs of
refusals, pauses) and checks every STATUS_EVERY whether an editor paused or cancelled it.
Outcomes reach the store through one _Recorder: a connection writes a message's final dot
only once the previous message it sent is recorded, committing itself, in one transaction,
every outcome waiting by then (the calling thread commits stragglers within RECORD_EVERY).
So a killed process has re-sent at most one accepted-but-unrecorded message per connection,
and never skips anyone: a claimed row is either recorded or, when its worker is found dead,
queued again.

What pauses a send (docs/architecture.md, "What pauses a send"): the relay refusing the
session (AUTH, MAIL FROM, a 5xx greeting) `delivery.sender_failures` times in a row; a run of
as many 5.7.x refusals spanning two or more recipient domains (those rows are held, not
failed, until the run is decided); or no session at all for `delivery.session_patience`
seconds. Anything about one recipient or one message fails or retries that row only.

The outbox is a small interface (claim, record, waiting, template_parts, halted) so a dry run
goes through exactly this path with an in-memory outbox and a transport that writes files.
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
from typing import Protocol, TypeVar

from dispatch.audience.tokens import Signer
from dispatch.clock import utcnow
from dispatch.compose.message import (
    MessageTemplate,
    Recipient,
    envelope_sender,
    message_id,
    needs_smtputf8,
    personalize,
    template_from_parts,
    wire_address,
)
from dispatch.config import DeliverySettings, Settings
from dispatch.deliver.outcomes import Kind, Outcome, classify, row_change
from dispatch.deliver.ratelimit import RateLimiter
from dispatch.deliver.transport import Abandoned, Connection, Transport, TransportError
from dispatch.states import SendStatus
from dispatch.store.outbox import Job, RowChange
from dispatch.store.sends import CONFIRMATIONS

HEARTBEAT = 2.0  # seconds between heartbeats, each also finding dead workers on this host
POLL = 2.0  # seconds between looks at an idle outbox
STATUS_EVERY = 0.5  # seconds between looks at whether the sends in hand were paused
SWITCH_INTERVAL = 0.0005  # seconds; see deliver()
RECORD_EVERY = 0.03  # seconds an outcome may wait for its commit when no connection needs it
SESSION_BACKOFF = 0.5  # seconds before trying again for a session, doubling per failure
SESSION_BACKOFF_MAX = 30.0
# Outcomes that show the relay takes our sessions (they end a run of session refusals) and,
# but for a held POLICY refusal, that it takes our messages (they end a run of 5.7.x).
_SESSION_WORKS = (Kind.SENT, Kind.RETRY, Kind.UNKNOWN, Kind.FAILED, Kind.BOUNCED, Kind.POLICY)
_RUN_BREAKERS = (Kind.SENT, Kind.RETRY, Kind.FAILED, Kind.BOUNCED)


class Outbox(Protocol):
    def claim(self, limit: int, now: datetime) -> list[Job]: ...
    def record(self, changes: Iterable[RowChange], now: datetime) -> None: ...
    def waiting(self, now: datetime) -> tuple[int, datetime | None]: ...
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

    def template_parts(self, issue: str, variant: str) -> tuple[str, str, str]:
        return self.parts[(issue, variant)]

    def halted(self, issues: Iterable[str]) -> dict[str, str]:
        return {}


@dataclass(frozen=True)
class Built:
    """One recipient's message, ready for the wire."""

    sender: str  # MAIL FROM
    recipient: str  # RCPT TO
    data: bytes
    message_id: str
    utf8: bool  # needs SMTPUTF8: a non-ASCII local part


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

    def build(self, job: Job, now: datetime) -> Built:
        """One job's message; any exception means it cannot be built (that row fails)."""
        recipient = self.recipient(job, now)
        data = personalize(self.template(job.issue, job.variant), recipient,
                           now.replace(microsecond=0), self.settings)
        if self._dkim:
            data = sign_dkim(data, *self._dkim)
        email = recipient.email
        return Built(envelope_sender(email, self.settings), wire_address(email), data,
                     recipient.message_id, needs_smtputf8(email))


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


class _Signal:
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


_Result = tuple[Outcome, _Signal]  # an outcome, and its "recorded" signal
T = TypeVar("T")
_DIRECT = (Kind.SENT, Kind.UNKNOWN)  # recorded by their connection's thread: nothing to decide


class _Recorder:
    """The one way outcomes reach the store. Outcomes wait in a list; whichever thread needs
    them stored first (a connection about to write its next final dot, or the store thread
    when one has waited RECORD_EVERY) commits all of them in one transaction, so the
    connections' commits are grouped and no connection waits for another thread to wake."""

    def __init__(self, outbox: Outbox, delivery: DeliverySettings,
                 clock: Callable[[], datetime], stats: Stats) -> None:
        self.outbox = outbox
        self.delivery = delivery
        self.clock = clock
        self.stats = stats
        self.error: BaseException | None = None  # a failed commit, for the store thread
        self._waiting: list[_Result] = []
        self._since = 0.0  # when the oldest waiting outcome came
        self._list_lock = threading.Lock()
        self._commit_lock = threading.Lock()

    def add(self, results: list[_Result]) -> None:
        if results:
            with self._list_lock:
                if not self._waiting:
                    self._since = time.monotonic()
                self._waiting += results

    def age(self) -> float:
        """Seconds the oldest waiting outcome has waited (0 when none waits)."""
        return time.monotonic() - self._since if self._waiting else 0.0

    def commit(self, needed: _Signal | None = None) -> None:
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


class _Health:
    """Whether the relay gives us sessions at all, over every connection: since when none
    could be had (connections refused, timeouts, 4xx greetings, 4xx to MAIL FROM), how many
    tries, and the last reason. Any transaction that gets past MAIL FROM ends the trouble."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.since: float | None = None
        self.started: datetime | None = None
        self.tries = 0
        self.last = ""

    def failed(self, reason: str, now: datetime) -> None:
        with self._lock:
            if self.since is None:
                self.since, self.started, self.tries = time.monotonic(), now, 0
            self.tries += 1
            self.last = reason

    def ok(self) -> None:
        if self.since is not None:
            with self._lock:
                self.since = None

    def trouble(self) -> float:
        """Seconds without a session (0 when sessions work)."""
        since = self.since
        return 0.0 if since is None else time.monotonic() - since

    def describe(self) -> str:
        started = f" since {self.started:%Y-%m-%d %H:%M:%S} UTC" if self.started else ""
        return (f"no session with the relay for {self.trouble():.0f} s{started} "
                f"({self.tries} tries); the last: {self.last}")


@dataclass
class _Shared:
    """What the store thread tells the connection threads, and back."""

    health: _Health = field(default_factory=_Health)
    halted: Mapping[str, str] = field(default_factory=dict)  # issue -> paused / cancelled


class _Sender:
    """One connection's loop; keeps the connection open between messages."""

    def __init__(self, transport: Transport, messages: Messages, limiter: RateLimiter,
                 clock: Callable[[], datetime], shared: _Shared, recorder: _Recorder) -> None:
        self.transport = transport
        self.recorder = recorder
        self.messages = messages
        self.limiter = limiter
        self.clock = clock
        self.shared = shared
        self.conn: Connection | None = None
        self.failures = 0  # consecutive failures to get a session on this connection
        self.dropped = False  # the last failure was a working session lost, not a refusal
        self.pending: _Signal | None = None  # set once the last message is recorded
        self.nudge: queue.SimpleQueue[bool] = queue.SimpleQueue()

    def run(self, work: queue.SimpleQueue[Job | None], results: queue.SimpleQueue[_Result],
            nudge: queue.SimpleQueue[bool], stop: threading.Event) -> None:
        """Deliver jobs until a None. Each outcome goes to `results` (a delivered one also
        straight to the recorder); the store thread is woken through `nudge` only when it
        has something to decide: an outcome other than a delivery, or no work left."""
        self.nudge = nudge
        try:
            while (job := work.get()) is not None:
                if stop.is_set():
                    outcome = Outcome(job, Kind.REQUEUE, "stopped before sending")
                else:
                    try:
                        outcome = self.deliver(job, stop)
                    except Exception as exc:  # a bug must cost one try, not hang the loop
                        self._hang_up()
                        outcome = Outcome(job, Kind.RETRY, f"internal error: {exc!r}")
                stored = _Signal()
                if outcome.kind in _DIRECT:
                    self.pending = stored  # the next final dot waits for it
                    self.recorder.add([(outcome, stored)])
                results.put((outcome, stored))
                if outcome.kind != Kind.SENT or work.empty():
                    nudge.put(False)
                if outcome.kind == Kind.SESSION:
                    self.failures += 1
                    # A session that worked and was lost is reconnected at once; a refusal,
                    # or a second failure in a row, backs off, doubling each time.
                    if not (self.failures == 1 and self.dropped):
                        stop.wait(min(SESSION_BACKOFF * 2 ** (self.failures - 1),
                                      SESSION_BACKOFF_MAX))
        finally:
            self._hang_up()

    def _hang_up(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None

    def _before_dot(self) -> bool:
        """Make sure the previous accepted message's outcome is in the store, committing it
        (with whatever else is waiting) if no other thread has: a kill then re-sends at most
        that one message per connection. False when it cannot be stored."""
        pending = self.pending
        if pending is not None and not pending.done:
            self.recorder.commit(pending)
            if not pending.done:
                return False
        self.pending = None
        return True

    def _session_failed(self, job: Job, reason: str, dropped: bool = False) -> Outcome:
        self.dropped = dropped
        self.shared.health.failed(reason, self.clock())
        return Outcome(job, Kind.SESSION, reason)

    def _session_works(self) -> None:
        self.failures = 0
        self.shared.health.ok()

    def _halted(self, job: Job) -> Outcome | None:
        status = self.shared.halted.get(job.issue)
        if status == SendStatus.CANCELLED:
            return Outcome(job, Kind.SKIPPED, "the send was cancelled")
        if status is not None:
            return Outcome(job, Kind.REQUEUE, f"the send was {status} before this message")
        return None

    def deliver(self, job: Job, stop: threading.Event) -> Outcome:
        if job.email is None or not job.deliverable:
            return Outcome(job, Kind.SKIPPED, f"subscriber {job.status} since launch")
        if halted := self._halted(job):
            return halted
        try:
            built = self.messages.build(job, self.clock())
        except Exception as exc:  # this message only: its row fails, the list goes on
            return Outcome(job, Kind.FAILED, f"cannot build the message: {exc}")
        wait = self.limiter.delay(job.email.rpartition("@")[2])
        if wait > 0 and stop.wait(wait):
            return Outcome(job, Kind.REQUEUE, "stopped before sending")
        if wait > 0 and (halted := self._halted(job)):
            return halted
        if self.conn is None:
            try:
                self.conn = self.transport()
            except TransportError as exc:
                reason = f"{exc}: {exc.reply}" if exc.reply else str(exc)
                if exc.permanent or (exc.reply is not None
                                     and classify(exc.reply) == Kind.SENDER):
                    return Outcome(job, Kind.SENDER, reason)  # 5xx greeting, AUTH refused
                return self._session_failed(job, reason)
        if built.utf8 and not self.conn.smtputf8:
            return Outcome(job, Kind.FAILED, "relay does not offer SMTPUTF8, which the "
                                             f"non-ASCII address {job.email} needs")
        try:
            reply = self.conn.send(built.sender, built.recipient, built.data, utf8=built.utf8,
                                   before_dot=self._before_dot)
        except Abandoned as exc:
            self.conn = None
            return Outcome(job, Kind.REQUEUE, f"{exc}: the last outcome could not be stored")
        except TransportError as exc:
            self.conn = None
            if exc.stage == "dot":
                self._session_works()
                return Outcome(job, Kind.UNKNOWN, f"connection lost after the final dot, "
                                                  f"before the reply: {exc}")
            if exc.stage == "mail":  # a stale or refused session: the message was not offered
                return self._session_failed(job, f"{exc} (at MAIL FROM)", dropped=True)
            self._session_works()
            return Outcome(job, Kind.RETRY, f"{exc} (at {exc.stage.upper()})")
        if reply.code == 421:  # the server is closing this session
            self.conn.close()
            self.conn = None
        kind = classify(reply)
        if kind == Kind.SESSION:
            return self._session_failed(job, f"{reply} (at MAIL FROM)")
        if kind != Kind.SENDER:
            self._session_works()
        return Outcome(job, kind, str(reply), built.message_id if kind == Kind.SENT else None)


def deliver(outbox: Outbox, transport: Transport, settings: Settings, signer: Signer, *,
            stop: threading.Event | None = None, wait_for_retries: bool = True,
            until_done: bool = True, heartbeat: Callable[[datetime], object] | None = None,
            progress: Callable[[Stats], None] = lambda _: None,
            clock: Callable[[], datetime] = utcnow,
            wake: threading.Event | None = None) -> Stats:
    """Drain the outbox's due rows over `settings.delivery.connections` connections.

    Returns when nothing is left to deliver (waiting for scheduled retries unless told not to),
    when `stop` is set (in-flight messages finish, the rest go back to the queue), or when the
    relay refuses us (Stats.paused says why; see the module docstring). A send paused or
    cancelled meanwhile is noticed within STATUS_EVERY: no new message of it is started. With
    until_done False the worker keeps polling for new sends until stopped; setting `wake` (the
    scheduler does, after a launch) ends an idle wait at once.
    """
    stop = stop or threading.Event()
    delivery = settings.delivery
    messages = Messages(outbox, settings, signer)
    limiter = RateLimiter(delivery.rate, delivery.domain_rates)
    shared = _Shared()
    stats = Stats()
    recorder = _Recorder(outbox, delivery, clock, stats)
    work: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
    results: queue.SimpleQueue[_Result] = queue.SimpleQueue()
    nudge: queue.SimpleQueue[bool] = queue.SimpleQueue()  # see _Sender.run
    threads = [threading.Thread(
        target=_Sender(transport, messages, limiter, clock, shared, recorder).run,
        args=(work, results, nudge, stop), daemon=True, name=f"dispatch-connection-{i}")
        for i in range(delivery.connections)]
    # The connection threads spend their time waiting on sockets; with Python's default 5 ms
    # GIL switch interval a thread whose reply has arrived waits behind the store work.
    # A shorter interval lifted throughput to Postfix's smtp-sink by about 15%.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    for thread in threads:
        thread.start()
    runs = _Runs(delivery, stats, stop)
    batch = max(25, delivery.connections * 25)  # rows per claim; at most 2 batches held
    beat_every = min(HEARTBEAT, delivery.worker_lease / 4)
    in_flight = 0
    in_hand: Counter[str] = Counter()  # issue -> its jobs handed to the connections
    last_beat = last_status = time.monotonic()
    try:
        while True:
            if recorder.error is not None:
                raise recorder.error
            now = clock()
            if heartbeat and time.monotonic() - last_beat >= beat_every:
                heartbeat(now)
                last_beat = time.monotonic()
            if in_flight and time.monotonic() - last_status >= STATUS_EVERY:
                shared.halted = outbox.halted(+in_hand)
                last_status = time.monotonic()
            if shared.health.trouble():
                stats.note = shared.health.describe()
                if shared.health.trouble() >= delivery.session_patience:
                    runs.pause(shared.health.describe())
            if not stop.is_set() and in_flight <= batch:
                for job in outbox.claim(batch, now):
                    work.put(job)
                    in_flight += 1
                    in_hand[job.issue] += 1
            if in_flight == 0:
                if runs.held:  # nothing more to come: a run that did not pause fails its rows
                    recorder.add(runs.settle())
                if recorder.age():
                    recorder.commit()
                    continue
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
            if not shared.health.trouble():
                stats.note = ""
            _drain(nudge, timeout=max(0.001, RECORD_EVERY - recorder.age()))
            outcomes = _drain(results, timeout=0)
            in_flight -= len(outcomes)
            for outcome, _ in outcomes:
                in_hand[outcome.job.issue] -= 1
            recorder.add(runs.decide(outcomes))
            # Outcomes no connection is waiting for are stored within RECORD_EVERY.
            if recorder.age() >= RECORD_EVERY or in_flight == 0 or stop.is_set():
                recorder.commit()
            progress(stats)
    finally:
        stop.set()  # anything still queued goes back as REQUEUE
        for _ in threads:
            work.put(None)
        for thread in threads:
            thread.join()
        sys.setswitchinterval(switch_interval)
        recorder.add(runs.decide(_drain(results, timeout=0)) + runs.settle())
        failed, recorder.error = recorder.error, None
        recorder.commit()  # one more try for what a failed commit left
        if recorder.error is not None and failed is None:
            raise recorder.error
    return stats


class _Runs:
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
        self.held: list[_Result] = []

    def pause(self, reason: str) -> None:
        if self.stats.paused is None:
            self.stats.paused = reason
            self.stop.set()

    def decide(self, outcomes: list[_Result]
               ) -> list[_Result]:
        """The outcomes to record now."""
        ready: list[_Result] = []
        for outcome, stored in outcomes:
            kind = outcome.kind
            if kind in _SESSION_WORKS:
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
            if kind in _RUN_BREAKERS and self.held:
                ready += self._fail_held()
            if kind == Kind.SENDER:
                self.sender_run += 1
                if self.sender_run >= self.limit:
                    self.pause(outcome.reply)
            if kind not in _DIRECT:  # those are on their way to the store already
                ready.append((outcome, stored))
        return ready

    def settle(self) -> list[_Result]:
        """The held rows when no more outcomes are coming: failed, unless the run was cut
        short by a stop or a pause (then queued again, no attempt used)."""
        return self._release() if self.stop.is_set() else self._fail_held()

    def _fail_held(self) -> list[_Result]:
        held, self.held = self.held, []
        return [(Outcome(o.job, Kind.FAILED, o.reply), e) for o, e in held]

    def _release(self) -> list[_Result]:
        held, self.held = self.held, []
        return [(Outcome(o.job, Kind.REQUEUE, o.reply), e) for o, e in held]


def _drain(results: queue.SimpleQueue[T], timeout: float) -> list[T]:
    """Everything waiting in the queue, blocking up to `timeout` for the first."""
    outcomes: list[T] = []
    try:
        outcomes.append(results.get(timeout=timeout) if timeout else results.get_nowait())
        while True:
            outcomes.append(results.get_nowait())
    except queue.Empty:
        pass
    return outcomes
