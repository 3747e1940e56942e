"""SmtpConnection's TLS against a real aiosmtpd server with certificates from a throw-away CA
(trustme): STARTTLS and implicit TLS deliver; a certificate the client cannot verify, or one
for another host, ends the session before anything is sent."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trustme

from dispatch.config import SmtpSettings
from dispatch.deliver.transport import SmtpConnection, TransportError
from dispatch.devtools.sink import RecordingHandler, smtp_sink

HOST = "127.0.0.1"
SENDER = "briefs@example.org"
RECIPIENT = "reader@example.com"
# As message.py hands it over: CRLF line ends, ending with one, no line starting with ".".
MESSAGE = (b"From: The Pacific Brief <briefs@example.org>\r\nTo: reader@example.com\r\n"
           b"Subject: Over TLS\r\n\r\nHello over an encrypted session.\r\n")
SECURE = ["starttls", "tls"]


@dataclass
class TlsRecordingHandler(RecordingHandler):
    """Also notes, per message, the TLS version of the session it came over (None: clear)."""

    tls: list[str | None] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        ssl_object = server.transport.get_extra_info("ssl_object")
        self.tls.append(ssl_object.version() if ssl_object is not None else None)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    """What an operator's machine would use, with the test CA added to what it trusts."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


@contextmanager
def tls_server(security: str, context: ssl.SSLContext
               ) -> Iterator[tuple[TlsRecordingHandler, int]]:
    """An aiosmtpd server on HOST that insists on TLS: STARTTLS before MAIL ("starttls"), or
    TLS from the first byte ("tls")."""
    if security == "starttls":
        options: dict[str, Any] = {"tls_context": context, "require_starttls": True}
    else:
        options = {"ssl_context": context, "server_hostname": "mail.example.org"}
    with smtp_sink(TlsRecordingHandler(), HOST, **options) as (handler, port):
        yield handler, port


def settings(port: int, security: str) -> SmtpSettings:
    return SmtpSettings(host=HOST, port=port, security=security, timeout=5.0)


@pytest.mark.parametrize("security", SECURE)
def test_a_trusted_certificate_carries_the_message_encrypted(ca, client_context, security):
    with tls_server(security, server_context(ca, HOST)) as (handler, port):
        connection = SmtpConnection(settings(port, security), client_context)
        try:
            reply = connection.send(SENDER, RECIPIENT, MESSAGE)
        finally:
            connection.close()
    assert reply.code == 250, reply
    [received] = handler.received
    assert (received.sender, received.recipient) == (SENDER, RECIPIENT)
    assert received.data == MESSAGE
    assert len(handler.tls) == 1 and handler.tls[0] in ("TLSv1.2", "TLSv1.3"), handler.tls


@pytest.mark.parametrize("security", SECURE)
def test_one_session_carries_several_messages_over_tls(ca, client_context, security):
    recipients = [f"reader{i}@example.com" for i in range(3)]
    with tls_server(security, server_context(ca, HOST)) as (handler, port):
        connection = SmtpConnection(settings(port, security), client_context)
        try:
            replies = [connection.send(SENDER, r, MESSAGE) for r in recipients]
        finally:
            connection.close()
    assert [r.code for r in replies] == [250, 250, 250]
    assert [r.recipient for r in handler.received] == recipients
    assert None not in handler.tls


@pytest.mark.parametrize("security", SECURE)
def test_a_certificate_from_an_untrusted_ca_is_refused(ca, client_context, security):
    # Right name, but signed by a CA the client has never heard of: to the client it is
    # the same as a self-signed certificate.
    stranger = trustme.CA()
    with (tls_server(security, server_context(stranger, HOST)) as (handler, port),
          pytest.raises(TransportError) as caught):
        SmtpConnection(settings(port, security), client_context)
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value), caught.value
    assert f"{HOST}:{port}" in str(caught.value)
    assert caught.value.permanent  # no retrying: the send pauses with this reason
    assert handler.received == [] and handler.tls == []


@pytest.mark.parametrize("security", SECURE)
def test_a_certificate_for_another_host_is_refused(ca, client_context, security):
    with (tls_server(security, server_context(ca, "mail.example.org")) as (handler, port),
          pytest.raises(TransportError) as caught):
        SmtpConnection(settings(port, security), client_context)
    message = str(caught.value)
    assert "CERTIFICATE_VERIFY_FAILED" in message and "mismatch" in message, message
    assert caught.value.permanent
    assert handler.received == [] and handler.tls == []


@pytest.mark.parametrize("security", SECURE)
def test_without_a_context_the_system_trust_store_decides(ca, security):
    # The test CA is in no system store, so the default context must refuse it: proof that
    # leaving `context` out does not mean "do not verify".
    with (tls_server(security, server_context(ca, HOST)) as (handler, port),
          pytest.raises(TransportError) as caught):
        SmtpConnection(settings(port, security))
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value), caught.value
    assert handler.received == []


def test_a_plain_session_to_a_server_requiring_starttls_gets_its_refusal(ca, client_context):
    with tls_server("starttls", server_context(ca, HOST)) as (handler, port):
        connection = SmtpConnection(settings(port, "none"), client_context)
        try:
            reply = connection.send(SENDER, RECIPIENT, MESSAGE)
        finally:
            connection.close()
    assert reply.code == 530 and "STARTTLS" in reply.text, reply
    assert handler.received == [] and handler.tls == []


def test_a_password_variable_gone_since_the_start_is_a_permanent_refusal(monkeypatch):
    # Checked at start-up (dispatch check, send, run); if the variable disappears while a
    # daemon runs, the session is refused for good (the send pauses) instead of retrying.
    monkeypatch.delenv("DISPATCH_TEST_GONE_PASSWORD", raising=False)
    with smtp_sink(RecordingHandler()) as (handler, port):
        settings = SmtpSettings(host="127.0.0.1", port=port, security="none", timeout=5.0,
                                username="dispatch", password_env="DISPATCH_TEST_GONE_PASSWORD")
        with pytest.raises(TransportError) as info:
            SmtpConnection(settings)
    assert info.value.permanent and "DISPATCH_TEST_GONE_PASSWORD" in str(info.value)
    assert handler.received == []
