"""One builder for every message: a subscriber's (its footer naming their own topics), an
editor's test copy (DKIM-signed and headed like a subscriber's) and a preview's sample. Real
sends go through the outbox and the worker to an in-process aiosmtpd sink."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dispatch.compose.issues import load_issue
from dispatch.compose.preview import sample_copy
from dispatch.compose.variants import possible_variants
from dispatch.config import DkimSettings
from dispatch.deliver.sending import send_test_copies
from dispatch.deliver.transport import smtp_transport
from dispatch.devtools.sink import smtp_sink
from dispatch.store import subscribers as subs
from tests.helpers import EXAMPLE_ISSUE, configure_delivery, send_example_to_sink

NOW = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)


def parsed(data: bytes) -> EmailMessage:
    msg = message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def bodies(msg: EmailMessage) -> tuple[str, str]:
    plain, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain is not None and html is not None
    return (plain.get_content().replace("\r\n", "\n"), html.get_content().replace("\r\n", "\n"))


def add(engine, settings, email: str, topics: list[str], name: str | None = None) -> None:
    subs.add(engine, email, name=name, topics=topics, timezone=None,
             known_topics=settings.topics, now=NOW)


def test_each_readers_footer_names_their_own_topics(engine, settings):
    # Both get variant b1-2-3 (technology is carried by brief 2 only, which East Asia gets).
    add(engine, settings, "ana@example.com", ["east-asia"])
    add(engine, settings, "bo@example.com", ["technology", "east-asia"], name="Bo")
    received = send_example_to_sink(engine, settings, datetime.now(UTC))
    by_rcpt = {item.recipient: parsed(item.data) for item in received}
    assert {msg["X-Dispatch-Variant"] for msg in by_rcpt.values()} == {"b1-2-3"}
    expected = {"ana@example.com": "East Asia", "bo@example.com": "East Asia, Technology"}
    for rcpt, topics in expected.items():
        text, html = bodies(by_rcpt[rcpt])
        assert f"because you subscribed and follow:\n{topics}.\n" in text, rcpt
        assert f"because you subscribed and follow {topics}.</p>" in html, rcpt
        assert "Diplomacy" not in text.split("because you subscribed")[1], rcpt
        assert all(len(line) <= 76 for line in text.splitlines()), rcpt


def test_a_readers_many_topics_wrap_within_76_columns_and_are_escaped_in_html(engine,
                                                                              settings):
    topics = list(settings.topics)
    add(engine, settings, "cy@example.com", topics)
    [item] = send_example_to_sink(engine, settings, datetime.now(UTC))
    text, html = bodies(parsed(item.data))
    footer = text.split("because you subscribed and follow:\n", 1)[1].split(".\n", 1)[0]
    assert " ".join(footer.split()) == ", ".join(t.label for t in settings.topics.values())
    assert all(len(line) <= 76 for line in text.splitlines())
    assert "Economy &amp; Trade" in html and "Economy & Trade" not in html


def _dkim_settings(settings, tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "dkim.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    records = {b"news._domainkey.example.org.": b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)}
    settings = settings.model_copy(update={
        "dkim": DkimSettings(domain="example.org", selector="news",
                             key_file=tmp_path / "dkim.pem"),
        "delivery": settings.delivery.model_copy(update={
            "feedback_id": "pacific-brief", "verp_domain": "bounces.example.org"})})
    return settings, (lambda name, timeout=5: records.get(name))


def test_a_test_copy_is_dkim_signed_and_headed_like_a_subscribers_message(engine, settings,
                                                                         tmp_path):
    settings, dns = _dkim_settings(settings, tmp_path)
    add(engine, settings, "ana@example.com", ["east-asia"])
    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    with smtp_sink() as (handler, port):
        wired = configure_delivery(settings, port, feedback_id="pacific-brief",
                                   verp_domain="bounces.example.org")
        replies = send_test_copies(engine, issue, wired, "editor@example.net", NOW,
                                   transport=smtp_transport(wired.smtp))
        copies = list(handler.received)
    assert [vid for vid, _ in replies] == ["b1-2-3"] and replies[0][1].code == 250
    [real] = send_example_to_sink(engine, settings, datetime.now(UTC))
    [copy] = copies
    assert copy.data.startswith(b"DKIM-Signature:")
    assert dkim.verify(copy.data, dnsfunc=dns)
    assert not dkim.verify(copy.data.replace(b"Subject: ", b"Subject: Re: ", 1), dnsfunc=dns)
    assert dkim.verify(real.data, dnsfunc=dns)

    test, sub = parsed(copy.data), parsed(real.data)
    assert sorted(test.keys()) == sorted(sub.keys())  # the same headers, DKIM's included
    for name in ("From", "List-Id", "List-Unsubscribe-Post", "MIME-Version",
                 "X-Dispatch-Issue", "X-Dispatch-Variant", "Feedback-ID"):
        assert test[name] == sub[name], name
    # Both ways to unsubscribe, as a subscriber's message has them, with links naming nobody.
    assert test["List-Unsubscribe"].count("<") == sub["List-Unsubscribe"].count("<") == 2
    assert "/u/TEST-SEND>" in test["List-Unsubscribe"]
    assert test["Subject"] == f"[TEST · East Asia] {issue.subject}"
    assert test["Message-ID"] != sub["Message-ID"]
    text, _ = bodies(test)
    assert "because you subscribed and follow:\nEast Asia.\n" in text
    assert copy.sender == settings.newsletter.from_email  # a test's bounce reaches a person


@pytest.mark.parametrize("vid", ["b3-5", "b1-2-3-4-5"])
def test_a_sample_copy_follows_its_variants_smallest_topic_mix(settings, vid):
    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    html, text = sample_copy(issue, possible_variants(issue)[vid], settings, NOW)
    topics = {"b3-5": "Security", "b1-2-3-4-5": "East Asia, Diplomacy, Security"}[vid]
    assert f"follow:\n{topics}.\n" in text
    assert f"follow {topics}.</p>" in html
