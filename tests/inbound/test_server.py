"""The inbound SMTP server: only the inbound domain's recipients, a size cap, each message
kept durably before the 250 and then processed; what a crash left in the spool processed at
start-up. Real SMTP sessions over loopback (smtplib against aiosmtpd)."""

from __future__ import annotations

import smtplib
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from dispatch.compose.issues import load_issue
from dispatch.config import InboundSettings, Settings
from dispatch.deliver.sending import launch_issue, run_worker
from dispatch.deliver.transport import smtp_transport
from dispatch.devtools.sink import free_port, smtp_sink
from dispatch.inbound.process import Outcome
from dispatch.inbound.server import InboundServer, Spool
from dispatch.store import subscribers as subs
from dispatch.store.launch import plan_audience
from tests.helpers import (
    EXAMPLE_ISSUE,
    FIXTURES,
    configure_delivery,
    eventually,
    populate_audience,
)

NOW = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
INBOUND = "bounces.example.org"


def fill(sample: str, values: dict[str, str]) -> bytes:
    text = (FIXTURES / "inbound" / sample).read_text()
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value)
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


@pytest.fixture
def wired(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={
        "delivery": settings.delivery.model_copy(update={"verp_domain": INBOUND}),
        "inbound": InboundSettings(host="127.0.0.1", port=free_port(), max_size=50_000,
                                   spool=tmp_path / "spool")})


def send_to_sink(engine: Engine, settings: Settings, count: int) -> list[dict[str, str]]:
    populate_audience(engine, settings, count, NOW)
    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    with smtp_sink() as (handler, port):
        delivering = configure_delivery(settings, port)
        assert launch_issue(engine, issue, plan_audience(engine, issue, delivering),
                            delivering, NOW)
        run_worker(engine, delivering, smtp_transport(delivering.smtp), issue=issue.slug)
    found = []
    for item in sorted(handler.received, key=lambda r: r.recipient):
        msg = message_from_bytes(item.data, policy=policy.SMTP)
        found.append({"RCPT": item.recipient, "VERP": item.sender,
                      "MSGID": str(msg["Message-ID"]),
                      "MAILTO": str(msg["List-Unsubscribe"]).split(",")[1].strip(" <>")
                      .removeprefix("mailto:").split("?")[0]})
    return found


class Collected:
    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    def __call__(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


def test_it_takes_mail_for_the_inbound_domain_only_and_acts_on_it(engine, wired):
    sent = send_to_sink(engine, wired, 3)
    collected = Collected()
    server = InboundServer(engine, wired, processed=collected)
    server.start()
    try:
        assert wired.inbound is not None
        with smtplib.SMTP(wired.inbound.host, wired.inbound.port, timeout=10) as client:
            client.ehlo("mx.example.com")
            # Never a relay: any other domain is refused at RCPT.
            client.mail("")
            code, reply = client.rcpt("someone@example.net")
            assert code == 550 and reply.startswith(b"5.7.1")
            code, _ = client.rcpt(f"someone@{INBOUND.upper()}")  # domains have no case
            assert code == 250
            client.rset()
            client.sendmail("", [sent[0]["VERP"]], fill("postfix-user-unknown.eml", sent[0]))
            client.sendmail(sent[1]["RCPT"], [sent[1]["MAILTO"]],
                            fill("mailto-unsubscribe.eml", sent[1]))
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                # Over inbound.max_size: SIZE is advertised and enforced.
                client.sendmail("", [sent[2]["VERP"]], b"Subject: big\r\n\r\n" + b"x" * 60_000)
            assert refused.value.smtp_code == 552
        assert eventually(lambda: len(collected.outcomes) == 2, 10)
    finally:
        server.stop()
    assert [subs.get(engine, s["RCPT"]).status for s in sent] == [  # type: ignore[union-attr]
        "bounced", "unsubscribed", "active"]
    assert not list((wired.inbound.spool / "new").iterdir())  # processed, then deleted


def test_what_the_spool_kept_is_processed_at_start_up(engine, wired):
    # A message accepted (250) just before a crash is in spool/new; the next start reads it.
    sent = send_to_sink(engine, wired, 2)
    assert wired.inbound is not None
    spool = Spool(wired.inbound.spool)
    spool.put("", [sent[1]["VERP"]], fill("arf-abuse.eml", sent[1]))
    assert len(spool.waiting()) == 1
    collected = Collected()
    server = InboundServer(engine, wired, processed=collected)
    server.start()
    try:
        assert eventually(lambda: len(collected.outcomes) == 1, 10)
    finally:
        server.stop()
    assert subs.get(engine, sent[1]["RCPT"]).status == "complained"  # type: ignore[union-attr]
    assert subs.get(engine, sent[0]["RCPT"]).status == "active"  # type: ignore[union-attr]
    assert spool.waiting() == []


def test_a_message_that_cannot_be_processed_stays_in_the_spool(engine, wired, caplog):
    sent = send_to_sink(engine, wired, 1)
    server = InboundServer(engine, wired)
    server.start()
    try:
        with engine.begin() as conn:  # the store breaks under the server
            conn.execute(text("DROP TABLE reports"))
        assert wired.inbound is not None
        with smtplib.SMTP(wired.inbound.host, wired.inbound.port, timeout=10) as client:
            client.sendmail("", [sent[0]["VERP"]], fill("postfix-user-unknown.eml", sent[0]))
        assert eventually(lambda: "could not be processed" in caplog.text, 10)
    finally:
        server.stop()
    # Kept, not lost: the next start (or the next look at the spool) tries it again.
    assert len(Spool(wired.inbound.spool).waiting()) == 1
