"""The unknown outcome (a reply lost after the final dot) is the row's own flag, not words in
its reply: the retry policy reads Job.outcome_unknown and keeps it set."""

from __future__ import annotations

from datetime import UTC, datetime

from dispatch.config import DeliverySettings
from dispatch.deliver.outcomes import Kind, Outcome, row_change
from dispatch.states import RowState
from dispatch.store.outbox import Job

NOW = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)


def _job(unknown: bool, reply: str | None) -> Job:
    return Job(row_id=1, issue="i", variant="v", attempts=1, subscriber_id=1,
               email="a@example.com", reply=reply, outcome_unknown=unknown)


def test_a_first_unknown_outcome_is_retried_once_and_flagged():
    # A reply that merely quotes the phrase (a relay's text) is not an earlier unknown one.
    job = _job(False, "451 4.3.0 unknown outcome of the previous command")
    change = row_change(Outcome(job, Kind.UNKNOWN, "lost"), DeliverySettings(), NOW)
    assert change.state == RowState.RETRYING and change.outcome_unknown


def test_a_second_unknown_outcome_fails_and_the_flag_stays():
    delivery = DeliverySettings()
    change = row_change(Outcome(_job(True, "x"), Kind.UNKNOWN, "lost"), delivery, NOW)
    assert change.state == RowState.FAILED and change.outcome_unknown
    retried = row_change(Outcome(_job(True, "x"), Kind.RETRY, "451"), delivery, NOW)
    assert retried.state == RowState.RETRYING and retried.outcome_unknown
    assert "after an unknown outcome" in retried.reply
    sent = row_change(Outcome(_job(True, "x"), Kind.SENT, "250"), delivery, NOW)
    assert sent.state == RowState.SENT and sent.outcome_unknown  # it may have arrived twice
