"""Amazon SES, through SNS: each notification is signed by SNS (RSA over AWS's canonical form
of the message, with a certificate fetched from an sns.<region>.amazonaws.com URL), and taken
only from the topics inbound.webhooks.ses.topic_arns names (a genuine signature proves only
that AWS sent it). SES echoes our headers, so the List-Unsubscribe mailto token names the
row; no relay metadata is needed.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import urllib.request
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from dispatch.inbound.providers.base import (
    Event,
    Fetcher,
    Incoming,
    Malformed,
    Provider,
    Unverified,
    Verified,
    bracketed,
    json_object,
    one_line,
    parse_json,
    severe,
    sub_object,
)
from dispatch.states import ReportKind

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


def fetch_https(url: str) -> bytes:
    """GET an https URL (SNS's signing certificate, its SubscribeURL), at most 64 KiB."""
    if urlsplit(url).scheme != "https":
        raise Unverified(f"not an https URL: {url[:200]}")
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read(MAX_CERTIFICATE + 1))[:MAX_CERTIFICATE + 1]


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
    mail = sub_object(notification, "mail")
    common = sub_object(mail, "commonHeaders")
    ids = [bracketed(common.get("messageId"))]
    # mail.source is the envelope sender we gave (the VERP address); mail.headers, when the
    # identity includes them, our headers (the List-Unsubscribe mailto token among them).
    echoed: list[str] = [str(mail.get("source") or "")]
    for header in mail.get("headers") or []:
        if isinstance(header, dict) and isinstance(header.get("value"), str):
            if str(header.get("name", "")).lower() == "message-id":
                ids.append(bracketed(header["value"]))
            echoed.append(header["value"])
    message_ids = tuple(dict.fromkeys(i for i in ids if i))
    events = []
    if kind == "Bounce":
        bounce = json_object(notification.get("bounce"), "bounce")
        permanent = bounce.get("bounceType") == "Permanent"
        for recipient in bounce.get("bouncedRecipients") or []:
            if not isinstance(recipient, dict):
                continue
            status, diagnostic = str(recipient.get("status") or ""), str(
                recipient.get("diagnosticCode") or "")
            found = severe(status, diagnostic, permanent)
            reason = one_line(f"SES {bounce.get('bounceType')}/{bounce.get('bounceSubType')}",
                              status, diagnostic)
            events.append(Event("ses", sns_id, found, str(recipient.get("emailAddress", "")),
                                reason, message_ids, tuple(echoed)))
    elif kind == "Complaint":
        complaint = json_object(notification.get("complaint"), "complaint")
        feedback = str(complaint.get("complaintFeedbackType") or "").lower()
        # No type at all is still a complaint (some providers send none); not-spam is not.
        found = (ReportKind.IGNORED if feedback and feedback not in ("abuse", "fraud")
                 else ReportKind.COMPLAINT)
        reason = one_line("SES complaint", feedback or None,
                          complaint.get("userAgent") and f"({complaint.get('userAgent')})")
        for recipient in complaint.get("complainedRecipients") or []:
            if isinstance(recipient, dict):
                events.append(Event("ses", sns_id, found,
                                    str(recipient.get("emailAddress", "")), reason,
                                    message_ids, tuple(echoed)))
    return events


class Ses(Provider):
    name = "ses"

    def __init__(self, config: Any, clock: Callable[[], datetime], fetch: Fetcher) -> None:
        super().__init__(config, clock, fetch)
        self.sns = SnsVerifier(fetch, clock)

    def verify(self, incoming: Incoming) -> Verified:
        message = json_object(parse_json(incoming.body), "the SNS message")
        if message.get("TopicArn") not in self.config.topic_arns:
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
            return Verified(None, f"subscribed to {message['TopicArn']}")
        if kind == "UnsubscribeConfirmation":
            return Verified(None, f"unsubscribed from {message['TopicArn']}")
        return Verified(message)

    def events(self, payload: Any) -> list[Event]:
        if payload is None:  # a subscription handshake: nothing to record
            return []
        try:
            notification = json.loads(str(payload.get("Message", "")))
        except (ValueError, RecursionError):
            raise Malformed("the SES notification is not JSON") from None
        return ses_events(json_object(notification, "the SES notification"),
                          str(payload.get("MessageId")))
