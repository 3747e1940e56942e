"""Relays' bounce and complaint webhooks: Amazon SES (through SNS), Postmark, Mailgun and
SendGrid. Each request is verified by its provider's documented method before anything in it
is believed; each event then becomes a `Report` recorded through the same store function as
every other way in (dispatch.store.reports.record), fingerprinted by the provider's event id,
so a repeated delivery of the same event changes nothing more.

An event is matched to the outbox row by what the relay echoes of our message: a signed row
token (the List-Unsubscribe mailto address in SES's copy of the headers, or the
`dispatch-row` metadata Postmark, Mailgun and SendGrid hand back when delivery.relay_metadata
is on) or the keyed Message-ID. An event naming neither is counted as unmatched.

The HTTP shell is dispatch.web.webhooks; this module does the checking and recording.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine

from dispatch.audience.tokens import BadToken, Signer
from dispatch.config import Settings, WebhookSettings
from dispatch.errors import ConfigError
from dispatch.inbound.classify import STATUS, Report, _severity
from dispatch.inbound.process import record_report
from dispatch.states import ReportKind, ReportVia

# The metadata key our messages carry the row token under (delivery.relay_metadata).
ROW_KEY = "dispatch-row"
ROW_TOKEN = re.compile(r"(?<![0-9a-z-])([bu]-[0-9a-z]{1,13}-[0-9a-z]{1,13}-[a-z2-7]{16})"
                       r"(?:@([A-Za-z0-9.-]+))?")
# Where SNS signing certificates live (AWS: "the certificate URL is on an
# sns.<region>.amazonaws.com host, over HTTPS"); the same host pattern for SubscribeURL.
SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
SNS_SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp",
                                 "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp",
                                "Token", "TopicArn", "Type"),
}
MAX_CERTIFICATE = 64 * 1024
MAX_REASON = 300

Fetcher = Callable[[str], bytes]


class Unverified(Exception):
    """The request does not prove it comes from the provider: 403, nothing changed."""


class Malformed(Exception):
    """The request is not what the provider sends: 400, nothing changed."""


class Misconfigured(Exception):
    """A provider's secret is missing from the environment: 503, so the provider retries
    once the operator has fixed it, and nothing is lost."""


class Unauthenticated(Unverified):
    """No credentials at all where HTTP basic auth is expected: 401 with a challenge."""


def fetch_https(url: str) -> bytes:
    """GET an https URL (SNS's signing certificate, its SubscribeURL), at most 64 KiB."""
    if urlsplit(url).scheme != "https":
        raise Unverified(f"not an https URL: {url[:200]}")
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read(MAX_CERTIFICATE + 1))[:MAX_CERTIFICATE + 1]


@dataclass(frozen=True)
class Event:
    """One provider event about one recipient of one message, read from a verified request."""

    provider: str
    event_id: str
    kind: ReportKind
    recipient: str | None = None
    reason: str | None = None
    message_ids: tuple[str, ...] = ()
    echoed: tuple[str, ...] = ()  # header values and metadata that may carry a row token

    @property
    def fingerprint(self) -> str:
        key = f"webhook\0{self.provider}\0{self.event_id}\0{(self.recipient or '').lower()}"
        return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


@dataclass
class Outcome:
    """What one request did, for the response body and the log."""

    counts: dict[str, int] = field(default_factory=dict)
    note: str = ""

    def add(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def describe(self) -> str:
        parts = [f"{kind} {n}" for kind, n in sorted(self.counts.items())]
        return "; ".join(filter(None, [self.note, ", ".join(parts)])) or "nothing to record"


def rows_named(echoed: Iterable[str], signer: Signer, domain: str | None
               ) -> tuple[tuple[int, int], ...]:
    """(outbox row, subscriber) pairs named by row tokens that verify in what the relay
    echoed back. A token in an address must be on the inbound domain; a bare one (our
    metadata) stands alone. Either purpose will do (unlike a message's tokens, which
    dispatch.inbound.process holds to the purpose its kind needs): the relay proved it sent
    the event, and what it echoes is our own message's headers."""
    rows: list[tuple[int, int]] = []
    for text in echoed:
        for token, at in ROW_TOKEN.findall(text.lower()[:4000]):
            if at and (not domain or at.rstrip(".") != domain.lower()):
                continue
            try:
                claim = signer.read_row_local_part(token)
                rows.append((claim.row_id, claim.subscriber_id))
            except BadToken:
                continue
    return tuple(dict.fromkeys(rows))


def _bracketed(message_id: object) -> str | None:
    if not isinstance(message_id, str) or not message_id.strip():
        return None
    text = message_id.strip()[:500]
    return text if text.startswith("<") else f"<{text}>"


def _severe(code: str, text: str, permanent: bool) -> ReportKind:
    """A relay's failure by its RFC 3463 status when it gives one (a relay's "permanent"
    includes 5.2.2 mailbox full, which is soft here); else by the relay's own word."""
    if STATUS.search(code) or STATUS.search(text):
        return _severity("failed", code, text) or ReportKind.SOFT
    return ReportKind.BOUNCED if permanent else ReportKind.SOFT


def _one_line(*texts: object) -> str | None:
    words = " ".join(str(t) for t in texts if t not in (None, ""))
    return " ".join(words.split())[:MAX_REASON] or None


def _strings(value: object) -> Iterator[str]:
    """Every string in a JSON value (metadata, custom arguments)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise Malformed("the body is not JSON") from None


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Malformed(f"{what} is not a JSON object")
    return value


# ---- Amazon SES through SNS ----------------------------------------------------------------

def sns_string_to_sign(message: dict[str, Any]) -> bytes:
    """AWS's canonical form: each signed key present, then its value, one per line."""
    kind = message.get("Type")
    if kind not in SNS_SIGNED:
        raise Malformed(f"unknown SNS message type {str(kind)[:40]!r}")
    lines = []
    for key in SNS_SIGNED[kind]:
        value = message.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise Malformed(f"SNS field {key} is not a string")
        lines += [key, value]
    return ("\n".join(lines) + "\n").encode("utf-8")


def sns_url_allowed(url: object) -> bool:
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    return (parts.scheme == "https" and parts.port in (None, 443) and not parts.username
            and bool(SNS_HOST.match(parts.hostname or "")))


class SnsVerifier:
    """Checks SNS signatures against the signing certificate, fetched once per URL."""

    def __init__(self, fetch: Fetcher, clock: Callable[[], datetime]) -> None:
        self.fetch, self.clock = fetch, clock
        self._keys: dict[str, Any] = {}
        self._lock = threading.Lock()

    def public_key(self, url: str) -> Any:
        from cryptography import x509

        with self._lock:
            if url in self._keys:
                return self._keys[url]
        try:
            pem = self.fetch(url)
        except Unverified:
            raise
        except Exception as exc:
            raise Unverified(f"cannot fetch the SNS signing certificate: {exc}") from None
        if len(pem) > MAX_CERTIFICATE:
            raise Unverified("the SNS signing certificate is too large")
        try:
            certificate = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise Unverified("the SNS signing certificate is not a PEM certificate") from None
        now = self.clock()
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise Unverified("the SNS signing certificate is not valid now")
        key = certificate.public_key()
        with self._lock:
            if len(self._keys) > 32:  # AWS rotates them now and then; keep the cache small
                self._keys.clear()
            self._keys[url] = key
        return key

    def verify(self, message: dict[str, Any]) -> None:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        version = message.get("SignatureVersion")
        algorithm = {"1": hashes.SHA1(), "2": hashes.SHA256()}.get(str(version))
        if algorithm is None:
            raise Unverified(f"unknown SNS SignatureVersion {str(version)[:10]!r}")
        url = message.get("SigningCertURL")
        if not sns_url_allowed(url):
            raise Unverified("SigningCertURL is not https on an sns.<region>.amazonaws.com "
                             "host")
        try:
            signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
        except (binascii.Error, ValueError):
            raise Unverified("the SNS Signature is not base64") from None
        data = sns_string_to_sign(message)
        key = self.public_key(str(url))
        if not isinstance(key, rsa.RSAPublicKey):
            raise Unverified("the SNS signing certificate does not hold an RSA key")
        try:
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        except InvalidSignature:
            raise Unverified("the SNS signature does not verify") from None


def ses_events(notification: dict[str, Any], sns_id: str) -> list[Event]:
    """The bounce and complaint events in one SES notification (the notification format's
    notificationType, or event publishing's eventType)."""
    kind = notification.get("notificationType") or notification.get("eventType")
    mail = notification.get("mail") if isinstance(notification.get("mail"), dict) else {}
    assert isinstance(mail, dict)
    common = mail.get("commonHeaders") if isinstance(mail.get("commonHeaders"), dict) else {}
    assert isinstance(common, dict)
    ids = [_bracketed(common.get("messageId"))]
    # mail.source is the envelope sender we gave (the VERP address); mail.headers, when the
    # identity includes them, our headers (the List-Unsubscribe mailto token among them).
    echoed: list[str] = [str(mail.get("source") or "")]
    for header in mail.get("headers") or []:
        if isinstance(header, dict) and isinstance(header.get("value"), str):
            if str(header.get("name", "")).lower() == "message-id":
                ids.append(_bracketed(header["value"]))
            echoed.append(header["value"])
    message_ids = tuple(dict.fromkeys(i for i in ids if i))
    events = []
    if kind == "Bounce":
        bounce = _object(notification.get("bounce"), "bounce")
        permanent = bounce.get("bounceType") == "Permanent"
        for recipient in bounce.get("bouncedRecipients") or []:
            if not isinstance(recipient, dict):
                continue
            status, diagnostic = str(recipient.get("status") or ""), str(
                recipient.get("diagnosticCode") or "")
            found = _severe(status, diagnostic, permanent)
            reason = _one_line(f"SES {bounce.get('bounceType')}/{bounce.get('bounceSubType')}",
                               status, diagnostic)
            events.append(Event("ses", sns_id, found, str(recipient.get("emailAddress", "")),
                                reason, message_ids, tuple(echoed)))
    elif kind == "Complaint":
        complaint = _object(notification.get("complaint"), "complaint")
        feedback = str(complaint.get("complaintFeedbackType") or "").lower()
        # No type at all is still a complaint (some providers send none); not-spam is not.
        found = (ReportKind.IGNORED if feedback and feedback not in ("abuse", "fraud")
                 else ReportKind.COMPLAINT)
        reason = _one_line("SES complaint", feedback or None,
                           complaint.get("userAgent") and f"({complaint.get('userAgent')})")
        for recipient in complaint.get("complainedRecipients") or []:
            if isinstance(recipient, dict):
                events.append(Event("ses", sns_id, found,
                                    str(recipient.get("emailAddress", "")), reason,
                                    message_ids, tuple(echoed)))
    return events


# ---- Postmark, Mailgun, SendGrid -----------------------------------------------------------

POSTMARK_KINDS = {
    "HardBounce": ReportKind.BOUNCED, "BadEmailAddress": ReportKind.BOUNCED,
    "SoftBounce": ReportKind.SOFT, "Transient": ReportKind.SOFT, "DnsError": ReportKind.SOFT,
    "Blocked": ReportKind.SOFT, "Undeliverable": ReportKind.SOFT,
    "SpamComplaint": ReportKind.COMPLAINT, "AutoResponder": ReportKind.AUTO_REPLY,
    "Unsubscribe": ReportKind.UNSUBSCRIBE,
}


def postmark_events(payload: dict[str, Any]) -> list[Event]:
    record = payload.get("RecordType")
    if record not in ("Bounce", "SpamComplaint"):
        return []  # deliveries, opens, clicks: nothing to record
    kind = "SpamComplaint" if record == "SpamComplaint" else str(payload.get("Type", ""))
    found = POSTMARK_KINDS.get(kind, ReportKind.IGNORED)
    if found == ReportKind.BOUNCED:
        found = _severe("", str(payload.get("Details") or ""), True)
    event_id = payload.get("ID")
    if not isinstance(event_id, (int, str)) or isinstance(event_id, bool):
        raise Malformed("a Postmark bounce without an ID")
    reason = _one_line(f"Postmark {kind}", payload.get("Description"), payload.get("Details"))
    return [Event("postmark", f"{record}:{event_id}", found, str(payload.get("Email") or ""),
                  reason, (), tuple(_strings(payload.get("Metadata"))))]


def mailgun_event(data: dict[str, Any]) -> list[Event]:
    name = data.get("event")
    event_id = data.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise Malformed("a Mailgun event without an id")
    message = data.get("message") if isinstance(data.get("message"), dict) else {}
    assert isinstance(message, dict)
    headers = message.get("headers") if isinstance(message.get("headers"), dict) else {}
    assert isinstance(headers, dict)
    ids = tuple(i for i in [_bracketed(headers.get("message-id"))] if i)
    echoed = tuple(_strings(data.get("user-variables")))
    recipient = str(data.get("recipient") or "")
    if name == "failed":
        status = data.get("delivery-status") if isinstance(data.get("delivery-status"),
                                                           dict) else {}
        assert isinstance(status, dict)
        code = str(status.get("enhanced-code") or "")
        text = _one_line(status.get("code"), status.get("message"), status.get("description"))
        found = _severe(code, text or "", data.get("severity") == "permanent")
        reason = _one_line(f"Mailgun {data.get('severity')} failure", data.get("reason"), code,
                           text)
    elif name == "complained":
        found, reason = ReportKind.COMPLAINT, "Mailgun complaint"
    elif name == "unsubscribed":
        found, reason = ReportKind.UNSUBSCRIBE, "Mailgun unsubscribe"
    else:
        return []
    return [Event("mailgun", event_id, found, recipient, reason, ids, echoed)]


SENDGRID_OWN = {"email", "timestamp", "smtp-id", "event", "category", "sg_event_id",
                "sg_message_id", "reason", "status", "type", "response", "attempt",
                "ip", "tls", "cert_err", "useragent", "url", "asm_group_id",
                "bounce_classification"}


def sendgrid_event(data: dict[str, Any]) -> list[Event]:
    name = data.get("event")
    event_id = data.get("sg_event_id")
    if not isinstance(event_id, str) or not event_id:
        raise Malformed("a SendGrid event without an sg_event_id")
    ids = tuple(i for i in [_bracketed(data.get("smtp-id"))] if i)
    # Custom arguments come back as top-level fields of the event.
    echoed = tuple(s for key, value in data.items() if key not in SENDGRID_OWN
                   for s in _strings(value))
    status, text = str(data.get("status") or ""), str(data.get("reason") or "")
    if name == "bounce":
        found = (ReportKind.SOFT if data.get("type") == "blocked"
                 else _severe(status, text, True))
        reason = _one_line(f"SendGrid {data.get('type') or 'bounce'}", status, text)
    elif name == "deferred":
        found = ReportKind.SOFT
        reason = _one_line("SendGrid deferred:", data.get("response"))
    elif name == "spamreport":
        found, reason = ReportKind.COMPLAINT, "SendGrid spam report"
    elif name in ("unsubscribe", "group_unsubscribe"):
        found, reason = ReportKind.UNSUBSCRIBE, "SendGrid unsubscribe"
    else:
        return []
    return [Event("sendgrid", event_id, found, str(data.get("email") or ""), reason, ids,
                  echoed)]


# ---- Checking and recording -----------------------------------------------------------------

class Webhooks:
    """The four providers' endpoints as functions of the raw request; each raises
    Unverified (403) or Malformed (400) before anything is recorded."""

    def __init__(self, engine: Engine, settings: Settings, hooks: WebhookSettings,
                 signer: Signer, clock: Callable[[], datetime], fetch: Fetcher = fetch_https
                 ) -> None:
        self.engine, self.settings, self.hooks = engine, settings, hooks
        self.signer, self.clock, self.fetch = signer, clock, fetch
        self.sns = SnsVerifier(fetch, clock)
        self._mailgun_tokens: dict[str, float] = {}
        self._lock = threading.Lock()

    def record(self, events: Iterable[Event], outcome: Outcome) -> Outcome:
        now = self.clock()
        for event in events:
            if event.kind == ReportKind.IGNORED:
                outcome.add(str(event.kind))
                continue
            report = Report(event.kind, event.fingerprint, event.reason,
                            addresses=(event.recipient,) if event.recipient else (),
                            message_ids=event.message_ids,
                            failed=(event.recipient,) if event.recipient else (),
                            rows=rows_named(event.echoed, self.signer,
                                            self.settings.delivery.verp_domain),
                            source=event.provider,
                            via=ReportVia.WEBHOOK if event.kind == ReportKind.UNSUBSCRIBE
                            else None)
            recorded = record_report(self.engine, report, self.settings, self.signer,
                                     now).recorded
            assert recorded is not None
            outcome.add("repeat" if recorded.repeat else str(recorded.kind))
        return outcome

    # Amazon SES

    def ses(self, body: bytes) -> Outcome:
        config = self.hooks.ses
        assert config is not None
        message = _object(_json(body), "the SNS message")
        if message.get("TopicArn") not in config.topic_arns:
            raise Unverified("the SNS topic is not one of inbound.webhooks.ses.topic_arns")
        self.sns.verify(message)
        kind = message["Type"]
        if kind == "SubscriptionConfirmation":
            url = message.get("SubscribeURL")
            if not sns_url_allowed(url):
                raise Unverified("SubscribeURL is not https on an sns.<region>.amazonaws.com "
                                 "host")
            try:
                self.fetch(str(url))
            except Exception as exc:
                raise Unverified(f"cannot confirm the subscription: {exc}") from None
            return Outcome(note=f"subscribed to {message['TopicArn']}")
        if kind == "UnsubscribeConfirmation":
            return Outcome(note=f"unsubscribed from {message['TopicArn']}")
        notification = _object(_json(str(message.get("Message", "")).encode()),
                               "the SES notification")
        return self.record(ses_events(notification, str(message.get("MessageId"))), Outcome())

    # Postmark

    def postmark(self, body: bytes, authorization: str | None) -> Outcome:
        config = self.hooks.postmark
        assert config is not None
        if not authorization:
            raise Unauthenticated("HTTP basic auth credentials are required")
        scheme, _, encoded = authorization.partition(" ")
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise Unverified("unreadable basic auth credentials") from None
        expected = f"{config.username}:{self._secret(config.password)}".encode()
        if scheme.lower() != "basic" or not secrets.compare_digest(given, expected):
            raise Unverified("wrong basic auth credentials")
        return self.record(postmark_events(_object(_json(body), "the Postmark event")),
                           Outcome())

    # Mailgun

    def mailgun(self, body: bytes) -> Outcome:
        config = self.hooks.mailgun
        assert config is not None
        payload = _object(_json(body), "the Mailgun webhook")
        signature = payload.get("signature")
        if not isinstance(signature, dict) or not all(
                isinstance(signature.get(k), (str, int)) for k in
                ("timestamp", "token", "signature")):
            raise Unverified("no Mailgun signature (timestamp, token, signature)")
        timestamp, token = str(signature["timestamp"]), str(signature["token"])
        key = self._secret(config.signing_key).encode()
        expected = hmac.new(key, (timestamp + token).encode(), hashlib.sha256).hexdigest()
        if not secrets.compare_digest(expected, str(signature["signature"]).lower()):
            raise Unverified("the Mailgun signature does not verify")
        self._fresh(timestamp, config.max_age.total_seconds(), "Mailgun")
        self._once(token, config.max_age.total_seconds())
        return self.record(mailgun_event(_object(payload.get("event-data"), "event-data")),
                           Outcome())

    def _once(self, token: str, window: float) -> None:
        """Refuse a token seen before. Tokens outside the freshness window are refused by
        their timestamp, so remembering them for twice the window is enough."""
        now = time.monotonic()
        with self._lock:
            self._mailgun_tokens = {t: at for t, at in self._mailgun_tokens.items()
                                    if now - at < 2 * window}
            if token in self._mailgun_tokens:
                raise Unverified("the Mailgun token was used before (a replay)")
            self._mailgun_tokens[token] = now

    # SendGrid

    def sendgrid(self, body: bytes, signature: str | None, timestamp: str | None) -> Outcome:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import load_der_public_key

        config = self.hooks.sendgrid
        assert config is not None
        if not signature or not timestamp:
            raise Unverified("no X-Twilio-Email-Event-Webhook-Signature and -Timestamp")
        try:
            key = load_der_public_key(base64.b64decode(self._secret(config.public_key)))
        except (binascii.Error, ValueError):
            raise Unverified("inbound.webhooks.sendgrid.public_key_env does not hold a "
                             "base64 public key") from None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise Unverified("the SendGrid verification key is not an ECDSA key")
        try:
            key.verify(base64.b64decode(signature, validate=True),
                       timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, binascii.Error, ValueError):
            raise Unverified("the SendGrid signature does not verify") from None
        self._fresh(timestamp, config.max_age.total_seconds(), "SendGrid")
        events = _json(body)
        if not isinstance(events, list):
            raise Malformed("SendGrid posts a JSON array of events")
        return self.record([e for item in events
                            for e in sendgrid_event(_object(item, "an event"))], Outcome())

    # Both

    def _fresh(self, timestamp: str, window: float, provider: str) -> None:
        try:
            age = self.clock().timestamp() - int(timestamp)
        except ValueError:
            raise Unverified(f"the {provider} timestamp is not a number") from None
        if abs(age) > window:
            raise Unverified(f"the {provider} timestamp is {int(age)} s old, outside "
                             f"{int(window)} s (a replay, or a clock far off)")

    @staticmethod
    def _secret(read: Callable[[], str]) -> str:
        try:
            return read()
        except ConfigError as exc:
            raise Misconfigured(str(exc)) from None
