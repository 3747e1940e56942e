"""Delivery: workers that drain an outbox over a transport, with rate limits and retries.

One thread per connection does the network work; the calling thread claims rows in batches,
hands them to the connection threads, decides what their outcomes mean for the send (runs of
refusals, pauses) and checks every `Tuning.status_every` whether an editor paused or cancelled
it. Outcomes reach the store through one Recorder: a connection writes a message's final dot
only once the previous message it sent is recorded, committing itself, in one transaction,
every outcome waiting by then (the calling thread commits stragglers within
`Tuning.record_every`). The cadences are config/defaults.py's `Tuning`, passed in.
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
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from dispatch.audience.tokens import Signer
from dispatch.clock import utcnow
from dispatch.config import Settings
from dispatch.config.defaults import TUNING, Tuning
from dispatch.deliver.messages import Built, Messages
from dispatch.deliver.outcomes import Kind, Outcome, classify, session_failure
from dispatch.deliver.pausing import Health, Runs
from dispatch.deliver.ratelimit import RateLimiter
from dispatch.deliver.recording import (
    DIRECT,
    Outbox,
    Recorder,
    Result,
    Signal,
    Stats,
)
from dispatch.deliver.transport import (
    Abandoned,
    Connection,
    SmtpStage,
    Transport,
    TransportError,
)
from dispatch.states import SendStatus
from dispatch.store.outbox import Job


@dataclass
class _Shared:
    """What the store thread tells the connection threads, and back."""

    health: Health = field(default_factory=Health)
    halted: Mapping[str, str] = field(default_factory=dict)  # issue -> paused / cancelled


@dataclass(frozen=True)
class _Ready:
    """A job whose message is built and whose rate-limit slot is reserved."""

    job: Job
    built: Built
    wait: float  # seconds until the slot


class _Sender:
    """One connection's loop; keeps the connection open between messages."""

    def __init__(self, transport: Transport, messages: Messages, limiter: RateLimiter,
                 clock: Callable[[], datetime], shared: _Shared, recorder: Recorder,
                 tuning: Tuning) -> None:
        self.transport = transport
        self.tuning = tuning
        self.recorder = recorder
        self.messages = messages
        self.limiter = limiter
        self.clock = clock
        self.shared = shared
        self.conn: Connection | None = None
        self.failures = 0  # consecutive failures to get a session on this connection
        self.dropped = False  # the last failure was a working session lost, not a refusal
        self.pending: Signal | None = None  # set once the last message is recorded
        self.ahead: Job | None = None  # the job whose envelope went out with the last dot
        self.nudge: queue.SimpleQueue[bool] = queue.SimpleQueue()

    def run(self, work: queue.SimpleQueue[Job | None], results: queue.SimpleQueue[Result],
            nudge: queue.SimpleQueue[bool], stop: threading.Event) -> None:
        """Deliver jobs until a None. Each outcome goes to `results` (a delivered one also
        straight to the recorder); the store thread is woken through `nudge` only when it
        has something to decide: an outcome other than a delivery, or no work left.

        The next job is taken from the queue and prepared before the current message's
        final dot, when one is waiting, so that its envelope can go out with that dot
        (RFC 2920 PIPELINING): one round trip per message."""
        self.nudge = nudge
        upcoming: tuple[Job, _Ready | Outcome] | None = None
        ended = False  # the None was taken early
        try:
            while True:
                if upcoming is not None:
                    (job, prepared), upcoming = upcoming, None
                else:
                    if ended or (next_job := work.get()) is None:
                        break
                    job, prepared = next_job, None
                if stop.is_set():
                    if self.ahead is job:
                        self._hang_up()  # its DATA may be open: only hanging up ends it
                    outcome = Outcome(job, Kind.REQUEUE, "stopped before sending")
                else:
                    try:
                        if prepared is None:
                            prepared = self.prepare(job)
                        if isinstance(prepared, Outcome):
                            outcome = prepared
                        else:
                            try:
                                if (after := work.get_nowait()) is None:
                                    ended = True
                                else:
                                    upcoming = (after, self.prepare(after))
                            except queue.Empty:
                                pass
                            outcome = self.send(prepared, stop, upcoming[1] if upcoming else None)
                    except Exception as exc:  # a bug must cost one try, not hang the loop
                        self._hang_up()
                        outcome = Outcome(job, Kind.RETRY, f"internal error: {exc!r}")
                stored = Signal()
                if outcome.kind in DIRECT:
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
                        stop.wait(min(self.tuning.session_backoff * 2 ** (self.failures - 1),
                                      self.tuning.session_backoff_max))
        finally:
            self._hang_up()

    def _hang_up(self) -> None:
        self.ahead = None
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

    def prepare(self, job: Job) -> _Ready | Outcome:
        """The job's message built and its rate-limit slot reserved, or the outcome that
        says why it will not be sent."""
        if job.email is None or not job.deliverable:
            return Outcome(job, Kind.SKIPPED, f"subscriber {job.status} since launch")
        if halted := self._halted(job):
            return halted
        try:
            built = self.messages.build(job, self.clock())
        except Exception as exc:  # this message only: its row fails, the list goes on
            return Outcome(job, Kind.FAILED, f"cannot build the message: {exc}")
        return _Ready(job, built, self.limiter.delay(job.email.rpartition("@")[2]))

    def send(self, ready: _Ready, stop: threading.Event,
             upcoming: _Ready | Outcome | None = None) -> Outcome:
        """Send a prepared job; `upcoming`, the next one, has its envelope written with this
        message's final dot when it is due now and the connection can take it."""
        job = ready.job
        written_ahead, self.ahead = self.ahead is job, None
        outcome = self._ahead_of_send(ready, stop)
        if outcome is not None:
            if written_ahead:
                self._hang_up()  # its DATA may be open: only hanging up ends it
            return outcome
        assert self.conn is not None
        then = None
        if (isinstance(upcoming, _Ready) and upcoming.wait <= 0
                and (self.conn.smtputf8 or not upcoming.built.utf8)):
            then = upcoming.built.envelope
        built = ready.built
        try:
            reply = self.conn.send(built.sender, built.recipient, built.data, utf8=built.utf8,
                                   before_dot=self._before_dot, then=then)
        except Abandoned as exc:
            self.conn = None
            return Outcome(job, Kind.REQUEUE, f"{exc}: the last outcome could not be stored")
        except TransportError as exc:
            self.conn = None
            if exc.stage is SmtpStage.DOT:
                self._session_works()
                return Outcome(job, Kind.UNKNOWN, f"connection lost after the final dot, "
                                                  f"before the reply: {exc}")
            if exc.stage is SmtpStage.MAIL:  # a stale or refused session: nothing offered
                return self._session_failed(job, f"{exc} (at MAIL FROM)", dropped=True)
            self._session_works()
            return Outcome(job, Kind.RETRY, f"{exc} (at {exc.stage.upper()})")
        if reply.code == 421:  # the server is closing this session
            self._hang_up()
        elif then is not None and isinstance(upcoming, _Ready):
            self.ahead = upcoming.job
        kind = classify(reply)
        if kind == Kind.SESSION:
            return self._session_failed(job, f"{reply} (at MAIL FROM)")
        if kind != Kind.SENDER:
            self._session_works()
        return Outcome(job, kind, str(reply), built.message_id if kind == Kind.SENT else None)

    def _ahead_of_send(self, ready: _Ready, stop: threading.Event) -> Outcome | None:
        """The rate limit's wait, a pause or cancel meanwhile, a session: what comes before
        the transaction, or the outcome that ends the job there."""
        job = ready.job
        if ready.wait > 0 and stop.wait(ready.wait):
            return Outcome(job, Kind.REQUEUE, "stopped before sending")
        if halted := self._halted(job):
            return halted
        if self.conn is None:
            try:
                self.conn = self.transport()
            except TransportError as exc:
                reason = f"{exc}: {exc.reply}" if exc.reply else str(exc)
                if session_failure(exc) is Kind.SENDER:  # 5xx greeting, AUTH refused
                    return Outcome(job, Kind.SENDER, f"{reason} (at {exc.stage.upper()})")
                return self._session_failed(job, reason)
        if ready.built.utf8 and not self.conn.smtputf8:
            return Outcome(job, Kind.FAILED, "relay does not offer SMTPUTF8, which the "
                                             f"non-ASCII address {job.email} needs")
        return None


def deliver(outbox: Outbox, transport: Transport, settings: Settings, signer: Signer, *,
            stop: threading.Event | None = None, wait_for_retries: bool = True,
            until_done: bool = True, heartbeat: Callable[[datetime], object] | None = None,
            progress: Callable[[Stats], None] = lambda _: None,
            clock: Callable[[], datetime] = utcnow,
            wake: threading.Event | None = None, tuning: Tuning = TUNING) -> Stats:
    """Drain the outbox's due rows over `settings.delivery.connections` connections.

    Returns when nothing is left to deliver (waiting for scheduled retries unless told not to),
    when `stop` is set (in-flight messages finish, the rest go back to the queue), or when the
    relay refuses us (Stats.paused says why; see the module docstring). A send paused or
    cancelled meanwhile is noticed within `tuning.status_every`: no new message of it is
    started. With until_done False the worker keeps polling for new sends until stopped;
    setting `wake` (the scheduler does, after a launch) ends an idle wait at once, and whoever
    sets `stop` sets `wake` too, else the stop is seen within `tuning.poll`. `stop` is only
    read: the same event can stop run after run. Times in the store and the session patience
    are `clock`'s; the cadences (`tuning`) are measured on the monotonic clock.
    """
    stop = stop or threading.Event()
    halt = threading.Event()  # this run ends: stopped, paused, or done
    delivery = settings.delivery
    messages = Messages(outbox, settings, signer)
    limiter = RateLimiter(delivery.rate, delivery.domain_rates)
    shared = _Shared()
    stats = Stats()
    recorder = Recorder(outbox, delivery, clock, stats)
    work: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
    results: queue.SimpleQueue[Result] = queue.SimpleQueue()
    nudge: queue.SimpleQueue[bool] = queue.SimpleQueue()  # see _Sender.run
    threads = [threading.Thread(
        target=_Sender(transport, messages, limiter, clock, shared, recorder, tuning).run,
        args=(work, results, nudge, halt), daemon=True, name=f"dispatch-connection-{i}")
        for i in range(delivery.connections)]
    for thread in threads:
        thread.start()
    runs = Runs(delivery, stats, halt)
    batch = max(25, delivery.connections * 25)  # rows per claim; at most 2 batches held
    beat_every = min(tuning.heartbeat, delivery.worker_lease / 4)
    in_flight = 0
    in_hand: Counter[str] = Counter()  # issue -> its jobs handed to the connections
    last_beat = last_status = time.monotonic()
    stats.looked(outbox.waiting(clock())[0])  # the total a progress line counts up to
    last_count = time.monotonic()
    try:
        while True:
            if stop.is_set():
                halt.set()
            if recorder.error is not None:
                raise recorder.error
            now = clock()
            if heartbeat and time.monotonic() - last_beat >= beat_every:
                heartbeat(now)
                last_beat = time.monotonic()
            if time.monotonic() - last_count >= tuning.count_every:  # new launches, others
                outbox.finish(now)
                stats.looked(outbox.waiting(now)[0])
                last_count = time.monotonic()
            if in_flight and time.monotonic() - last_status >= tuning.status_every:
                shared.halted = outbox.halted(+in_hand)
                last_status = time.monotonic()
            if trouble := shared.health.trouble(now):
                stats.note = shared.health.describe(now)
                if trouble >= delivery.session_patience:
                    runs.pause(shared.health.describe(now))
            if not halt.is_set() and in_flight <= batch:
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
                if halt.is_set():
                    break
                outbox.finish(now)
                left, due = outbox.waiting(now)
                stats.looked(left)
                if until_done and (stats.left == 0 or (
                        due is not None and due > now and not wait_for_retries)):
                    break
                # Nothing claimable now: retries are scheduled later, other workers hold the
                # remaining rows, or (as a daemon) there is no running send at all.
                pause = tuning.poll
                if due is not None:
                    pause = min(tuning.poll, max(0.0, (due - now).total_seconds()))
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
            if not shared.health.trouble(now):
                stats.note = ""
            _drain(nudge, timeout=max(0.001, tuning.record_every - recorder.age()))
            outcomes = _drain(results, timeout=0)
            in_flight -= len(outcomes)
            for outcome, _ in outcomes:
                in_hand[outcome.job.issue] -= 1
            recorder.add(runs.decide(outcomes))
            # Outcomes no connection is waiting for are stored within record_every.
            if recorder.age() >= tuning.record_every or in_flight == 0 or halt.is_set():
                recorder.commit()
            progress(stats)
    finally:
        halt.set()  # anything still queued goes back as REQUEUE
        for _ in threads:
            work.put(None)
        for thread in threads:
            thread.join()
        recorder.add(runs.decide(_drain(results, timeout=0)) + runs.settle())
        failed, recorder.error = recorder.error, None
        recorder.commit()  # one more try for what a failed commit left
        if recorder.error is not None and failed is None:
            raise recorder.error
    return stats


T = TypeVar("T")


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
