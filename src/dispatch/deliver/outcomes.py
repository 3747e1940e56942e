"""What one delivery attempt came to, and what that means for its outbox row: the SMTP reply
classified (RFC 3463 enhanced codes), and the retry policy (backoff doubling per attempt,
giving up after delivery.max_attempts). The store only writes what this decides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from dispatch.config import DeliverySettings
from dispatch.deliver.transport import Reply
from dispatch.states import RowState
from dispatch.store.outbox import Job, RowChange

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.\d{1,3}\b")
_SENDER_CODES = {530, 534, 535, 538}  # authentication required / failed


class Kind(StrEnum):
    """What became of one attempt to deliver a Job."""

    SENT = "sent"
    RETRY = "retry"  # transient: 4xx, a dropped connection
    FAILED = "failed"  # permanent for this message
    BOUNCED = "bounced"  # permanent for this address: 5.1.x
    SENDER = "sender"  # the relay refuses us (5.7.x, authentication): not the subscriber's fault
    REQUEUE = "requeue"  # stopped before sending: back to the queue, no attempt used
    SKIPPED = "skipped"  # the subscriber left after launch


@dataclass(frozen=True)
class Outcome:
    job: Job
    kind: Kind
    reply: str  # the server's reply or the reason
    message_id: str | None = None


def classify(reply: Reply) -> Kind:
    """What a final SMTP reply means for the row: sent, retry, bounced, sender or failed."""
    if 200 <= reply.code < 300:
        return Kind.SENT
    if 400 <= reply.code < 500 or reply.code < 200:
        return Kind.RETRY
    enhanced = _ENHANCED.match(reply.text)
    if enhanced and enhanced[2] == "1":
        return Kind.BOUNCED  # 5.1.x: the mailbox does not exist
    if (enhanced and enhanced[2] == "7") or reply.code in _SENDER_CODES:
        return Kind.SENDER  # 5.7.x: policy or authentication; the sender's problem
    return Kind.FAILED


def row_change(outcome: Outcome, delivery: DeliverySettings, now: datetime) -> RowChange:
    """The retry policy: the row's next state, attempts and due time after `outcome`."""
    job, kind = outcome.job, outcome.kind
    attempts = job.attempts + 1
    if kind == Kind.SENT:
        return RowChange(job.row_id, RowState.SENT, attempts, now, outcome.reply,
                         outcome.message_id)
    if kind == Kind.RETRY:
        if attempts >= delivery.max_attempts:
            return RowChange(job.row_id, RowState.FAILED, attempts, now,
                             f"gave up after {attempts} attempts: {outcome.reply}")
        backoff = timedelta(seconds=delivery.retry_backoff * 2 ** (attempts - 1))
        return RowChange(job.row_id, RowState.RETRYING, attempts, now + backoff, outcome.reply)
    if kind == Kind.FAILED:
        return RowChange(job.row_id, RowState.FAILED, attempts, now, outcome.reply)
    if kind == Kind.BOUNCED:
        return RowChange(job.row_id, RowState.BOUNCED, attempts, now, outcome.reply,
                         bounced=job.subscriber_id)
    if kind == Kind.SKIPPED:
        return RowChange(job.row_id, RowState.SKIPPED, job.attempts, now, outcome.reply)
    # SENDER and REQUEUE are not the subscriber's fault: no attempt is used.
    state = RowState.RETRYING if job.attempts else RowState.QUEUED
    return RowChange(job.row_id, state, job.attempts, now, outcome.reply)
