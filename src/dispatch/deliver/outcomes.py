"""What one delivery attempt came to, and what that means for its outbox row: the SMTP reply
classified (RFC 3463 enhanced codes), and the retry policy (backoff doubling per attempt,
giving up after delivery.max_attempts). The store only writes what this decides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from dispatch.config import DeliverySettings
from dispatch.deliver.transport import Reply, TransportError
from dispatch.states import RowState
from dispatch.store.outbox import Job, RowChange

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.\d{1,3}\b")
_AUTH_CODES = {530, 534, 535, 538}  # authentication required / failed
UNKNOWN = "unknown outcome"  # how the reply of a row whose last attempt may have arrived starts


class Kind(StrEnum):
    """What became of one attempt to deliver a Job."""

    SENT = "sent"
    RETRY = "retry"  # transient for this message: 4xx at RCPT or to the data, a dropped line
    UNKNOWN = "unknown"  # the connection was lost after the final dot: it may have arrived
    FAILED = "failed"  # permanent for this message (or it cannot be built)
    BOUNCED = "bounced"  # permanent for this address: 5.1.x
    POLICY = "policy"  # 5.7.x for this recipient: failed, unless a run of them pauses the send
    SENDER = "sender"  # the relay refuses the session (AUTH, MAIL FROM, 5xx greeting): us
    SESSION = "session"  # no session for now (refused, timeout, 4xx greeting): retried later
    REQUEUE = "requeue"  # stopped before sending: back to the queue, no attempt used
    SKIPPED = "skipped"  # the subscriber left after launch, or the send was cancelled


@dataclass(frozen=True)
class Outcome:
    job: Job
    kind: Kind
    reply: str  # the server's reply or the reason
    message_id: str | None = None


def classify(reply: Reply) -> Kind:
    """What a final SMTP reply means for the row, by its code, its enhanced status code and
    the stage of the session that gave it (Reply.stage). Refusals of the session (at the
    greeting or AUTH, or of MAIL FROM) are about us, not the recipient: SENDER when permanent,
    SESSION when transient. Refusals at RCPT or of the message are the recipient's: 5.1.x
    bounces, 5.7.x is POLICY (failed, unless a run of them across domains pauses the send)."""
    code = reply.code
    if 200 <= code < 300:
        return Kind.SENT
    if reply.stage.about_us:
        return Kind.SESSION if 400 <= code < 500 or code < 200 else Kind.SENDER
    if 400 <= code < 500 or code < 200:
        return Kind.RETRY
    if code in _AUTH_CODES:
        return Kind.SENDER  # "authentication required" mid-transaction: still us
    enhanced = _ENHANCED.match(reply.text)
    if enhanced and enhanced[2] == "1":
        return Kind.BOUNCED  # 5.1.x: the mailbox does not exist
    if enhanced and enhanced[2] == "7":
        return Kind.POLICY  # 5.7.x: this recipient's policy refuses the message
    return Kind.FAILED


def session_failure(error: TransportError) -> Kind:
    """What a session that could not be opened means: SENDER when the relay refused us (a
    5xx greeting, EHLO or AUTH refused, or what no retry can fix: a certificate that does
    not verify, STARTTLS or AUTH not offered), SESSION when another try may get one."""
    if error.permanent or (error.reply is not None and classify(error.reply) == Kind.SENDER):
        return Kind.SENDER
    return Kind.SESSION


def row_change(outcome: Outcome, delivery: DeliverySettings, now: datetime) -> RowChange:
    """The retry policy: the row's next state, attempts and due time after `outcome`. A row
    whose attempt had an unknown outcome keeps that mark (outbox.outcome_unknown) until it
    is finished, so it is tried at most once more after another unknown one; its reply
    says so for people."""
    change = _change(outcome, delivery, now)
    unknown = outcome.job.outcome_unknown or outcome.kind == Kind.UNKNOWN
    if (outcome.job.outcome_unknown and UNKNOWN not in change.reply
            and change.state in (RowState.RETRYING, RowState.QUEUED)):
        change = replace(change, reply=f"{change.reply} (after an {UNKNOWN})")
    return replace(change, outcome_unknown=unknown)


def _change(outcome: Outcome, delivery: DeliverySettings, now: datetime) -> RowChange:
    job, kind, reply = outcome.job, outcome.kind, outcome.reply
    attempts = job.attempts + 1
    after_unknown = job.outcome_unknown
    if kind == Kind.SENT:
        return RowChange(job.row_id, RowState.SENT, attempts, now, reply, outcome.message_id)
    if kind == Kind.UNKNOWN:
        if after_unknown:  # tried again once already: a third copy is worse than none
            return RowChange(job.row_id, RowState.FAILED, attempts, now,
                             f"{UNKNOWN} twice, not tried again (it may have arrived): {reply}")
        reply = f"{UNKNOWN} (it may have arrived; tried once more, later): {reply}"
        kind = Kind.RETRY
    if kind == Kind.RETRY:
        if attempts >= delivery.max_attempts:
            return RowChange(job.row_id, RowState.FAILED, attempts, now,
                             f"gave up after {attempts} attempts: {reply}")
        backoff = timedelta(seconds=delivery.retry_backoff * 2 ** (attempts - 1))
        return RowChange(job.row_id, RowState.RETRYING, attempts, now + backoff, reply)
    if kind in (Kind.FAILED, Kind.POLICY):
        return RowChange(job.row_id, RowState.FAILED, attempts, now, reply)
    if kind == Kind.BOUNCED:
        return RowChange(job.row_id, RowState.BOUNCED, attempts, now, reply,
                         bounced=job.subscriber_id)
    if kind == Kind.SKIPPED:
        return RowChange(job.row_id, RowState.SKIPPED, job.attempts, now, reply)
    # SENDER, SESSION and REQUEUE are not the subscriber's fault: no attempt is used.
    state = RowState.RETRYING if job.attempts else RowState.QUEUED
    return RowChange(job.row_id, state, job.attempts, now, reply)
