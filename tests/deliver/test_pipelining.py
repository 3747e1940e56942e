"""RFC 2920 PIPELINING against a real aiosmtpd server that offers it (tests/smtp_server.py):
each message's final dot carries the next transaction's MAIL FROM, RCPT TO and DATA, and the
replies are matched to the commands in order, so a refusal or a dropped connection in the
middle of a pipelined group lands on the right row, once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from sqlalchemy import Engine

from dispatch.config import Settings
from dispatch.deliver.loop import run_delivery
from dispatch.deliver.transport import smtp_transport
from dispatch.schedule.planning import pause_issue
from dispatch.store import subscribers as subs
from dispatch.store.progress import state_counts
from dispatch.store.sends import get_send
from tests.helpers import (
    EXAMPLE_ISSUE,
    configure_delivery,
    launch_example_once,
    outbox_rows,
    populate_audience,
)
from tests.smtp_server import PipeliningFaults, faulty_sink

NOW = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)


def send(engine: Engine, settings: Settings, stop: threading.Event | None = None):
    slug = launch_example_once(engine, settings, NOW)
    return run_delivery(engine, settings, smtp_transport(settings.smtp), issue=slug, stop=stop)


rows = outbox_rows


def emails_of(engine: Engine, settings: Settings, count: int) -> list[str]:
    return [row.email for row in populate_audience(engine, settings, count, NOW,
                                                   ("example.com",))]


def test_every_message_goes_once_with_the_next_envelope_on_its_final_dot(engine, settings):
    handler = PipeliningFaults()
    with faulty_sink(handler) as (_, port):
        settings = configure_delivery(settings, port)
        emails = emails_of(engine, settings, 40)
        stats = send(engine, settings)
    assert stats.paused is None
    assert handler.per_recipient() == {e: 1 for e in emails}
    assert handler.ahead >= 20  # most dots carried the next envelope (two connections)
    assert state_counts(engine)[EXAMPLE_ISSUE] == {"sent": 40}


def test_a_rcpt_refused_in_the_middle_of_a_pipelined_group_lands_on_its_row(engine,
                                                                            settings):
    handler = PipeliningFaults()
    with faulty_sink(handler) as (_, port):
        settings = configure_delivery(settings, port)
        emails = emails_of(engine, settings, 12)
        # Refusals for recipients whose envelopes went out with someone else's final dot.
        handler.rcpt_script = {emails[5]: ["550 5.1.1 No such user"],
                               emails[6]: ["451 4.3.0 Try again later"],
                               emails[9]: ["552 5.2.2 Quota exceeded"]}
        stats = send(engine, settings)
    assert stats.paused is None
    assert handler.ahead > 0
    assert handler.per_recipient() == {e: 1 for e in emails if e not in
                                       (emails[5], emails[9])}
    found = rows(engine)
    assert found[emails[5]] == ("bounced", 1, "550 5.1.1 No such user")
    assert found[emails[6]][:2] == ("sent", 2)  # retried once, then sent
    assert found[emails[9]] == ("failed", 1, "552 5.2.2 Quota exceeded")
    assert subs.get(engine, emails[5]).status == "bounced"
    assert state_counts(engine)[EXAMPLE_ISSUE] == {"sent": 10, "bounced": 1, "failed": 1}


def test_a_connection_lost_after_the_dot_is_retried_once_and_the_next_goes_once(engine,
                                                                              settings):
    handler = PipeliningFaults()
    with faulty_sink(handler) as (_, port):
        settings = configure_delivery(settings, port, connections=1)
        emails = emails_of(engine, settings, 10)
        # Kept, then the connection closes before the reply: the envelope written with
        # that dot (the next recipient's) never gets its replies.
        handler.data_script = {emails[3]: ["lost"], emails[7]: ["drop"]}
        stats = send(engine, settings)
    assert stats.paused is None
    copies = handler.per_recipient()
    assert copies == {**{e: 1 for e in emails}, emails[3]: 2}  # unknown outcome: once more
    found = rows(engine)
    assert found[emails[3]][:2] == ("sent", 2)
    assert found[emails[4]][:2] == ("sent", 1)  # its envelope was lost with the session
    assert found[emails[7]][:2] == ("sent", 2)  # dropped mid-data: nothing kept, sent again
    assert state_counts(engine)[EXAMPLE_ISSUE] == {"sent": 10}


def test_a_pause_mid_pipeline_leaves_every_row_sent_once_or_queued(engine, settings):
    handler = PipeliningFaults(
        on_kept=lambda kept: pause_issue(engine, EXAMPLE_ISSUE) if kept == 50 else None)
    with faulty_sink(handler) as (_, port):
        settings = configure_delivery(settings, port)
        emails = emails_of(engine, settings, 400)
        send(engine, settings)
    copies = handler.per_recipient()
    assert max(copies.values()) == 1
    found = rows(engine)
    assert {e for e, (state, _, _) in found.items() if state == "sent"} == set(copies)
    assert {state for state, _, _ in found.values()} == {"sent", "queued"}
    assert get_send(engine, EXAMPLE_ISSUE).status == "paused"
    assert 50 <= len(copies) < len(emails)
