"""Building one recipient's message for the wire: the variant's template (serialised once per
variant), the recipient's slot values and tokens, DKIM when configured, and what the envelope
needs (VERP sender, the address as the wire wants it, whether SMTPUTF8 is needed)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from dispatch.audience.tokens import Signer
from dispatch.compose.message import (
    MessageTemplate,
    Recipient,
    envelope_sender,
    message_id,
    needs_smtputf8,
    personalize,
    template_from_parts,
    wire_address,
)
from dispatch.config import Settings
from dispatch.config.dkim import DkimKey, dkim_key
from dispatch.deliver.transport import Envelope
from dispatch.store.outbox import Job
from dispatch.store.sends import CONFIRMATIONS


class TemplateSource(Protocol):
    def template_parts(self, issue: str, variant: str) -> tuple[str, str, str]: ...


@dataclass(frozen=True)
class Built:
    """One recipient's message, ready for the wire."""

    sender: str  # MAIL FROM
    recipient: str  # RCPT TO
    data: bytes
    message_id: str
    utf8: bool  # needs SMTPUTF8: a non-ASCII local part

    @property
    def envelope(self) -> Envelope:
        return (self.sender, self.recipient, self.utf8)


class Messages:
    """Builds each recipient's bytes from its variant's template (serialised once)."""

    def __init__(self, outbox: TemplateSource, settings: Settings, signer: Signer) -> None:
        self.outbox = outbox
        self.settings = settings
        self.signer = signer
        self._templates: dict[tuple[str, str], MessageTemplate] = {}
        self._lock = threading.Lock()
        self._dkim: tuple[bytes, bytes, DkimKey] | None = None
        if settings.dkim:
            self._dkim = (settings.dkim.selector.encode(), settings.dkim.domain.encode(),
                          dkim_key(settings.dkim.key_file.read_bytes()))

    def template(self, issue: str, variant: str) -> MessageTemplate:
        key = (issue, variant)
        with self._lock:
            if key not in self._templates:
                subject, html, text = self.outbox.template_parts(issue, variant)
                self._templates[key] = template_from_parts(variant, html, text, subject, issue,
                                                           self.settings)
            return self._templates[key]

    def recipient(self, job: Job, now: datetime) -> Recipient:
        base = self.settings.newsletter.base_url
        sid, email = job.subscriber_id, job.email
        assert email is not None and sid is not None
        key, confirm_url, row = str(sid), "", job.row_id
        if job.issue == CONFIRMATIONS:
            confirm_url = f"{base}/c/{self.signer.token('confirm', sid, email, now)}"
            key = f"{sid}.{job.row_id}"  # a new request is a new row: a new Message-ID
        inbound = self.settings.delivery.verp_domain
        mailto = (f"{self.signer.row_local_part('mailto', job.row_id, sid)}@{inbound}"
                  if inbound else "")
        return Recipient(
            email=email, name=job.name,
            # The row in the links: an unsubscribe counts for the send it came from.
            unsubscribe_url=f"{base}/u/{self.signer.token('unsubscribe', sid, email, row=row)}",
            preferences_url=f"{base}/p/{self.signer.token('preferences', sid, email, row=row)}",
            view_url=f"{base}/a/{job.issue}/{job.variant}", confirm_url=confirm_url,
            unsubscribe_address=mailto,
            message_id=message_id(job.issue, self.signer.digest("message-id",
                                                                f"{job.issue}\0{key}"),
                                  self.settings))

    def build(self, job: Job, now: datetime) -> Built:
        """One job's message; any exception means it cannot be built (that row fails)."""
        recipient = self.recipient(job, now)
        data = personalize(self.template(job.issue, job.variant), recipient,
                           now.replace(microsecond=0), self.settings)
        if self._dkim:
            data = sign_dkim(data, *self._dkim)
        email = recipient.email
        assert job.subscriber_id is not None
        sender = envelope_sender(self.settings, self.signer.row_local_part(
            "bounce", job.row_id, job.subscriber_id))
        return Built(sender, wire_address(email), data,
                     recipient.message_id, needs_smtputf8(email))


# Signed: what a reader sees and what one-click unsubscribe and feedback loops act on
# (RFC 8058 requires List-Unsubscribe-Post signed). Each is listed once more than it occurs,
# so adding one after signing breaks the signature (RFC 6376 §8.15); a header listed but absent
# is signed as absent, so it cannot be added either.
DKIM_HEADERS = (b"from", b"to", b"subject", b"date", b"message-id", b"mime-version",
                b"content-type", b"reply-to", b"list-id", b"list-unsubscribe",
                b"list-unsubscribe-post", b"feedback-id")
# Oversigned: listed once more than they occur, even when they occur once, so a second copy
# prepended by someone else (which some clients show instead of ours) fails verification.
DKIM_OVERSIGNED = frozenset((b"from", b"subject", b"to", b"list-unsubscribe",
                             b"list-unsubscribe-post"))

def _signed_headers(data: bytes) -> list[bytes]:
    """h=: each of DKIM_HEADERS as many times as it occurs (at least once), the oversigned
    ones once more."""
    head = data.split(b"\r\n\r\n", 1)[0]
    names = [line.split(b":", 1)[0].strip().lower() for line in head.split(b"\r\n")
             if line and line[:1] not in b" \t"]
    return [name for name in DKIM_HEADERS
            for _ in range(max(names.count(name), 1) + (name in DKIM_OVERSIGNED))]


def sign_dkim(data: bytes, selector: bytes, domain: bytes, key: DkimKey) -> bytes:
    import dkim  # only when signing is configured

    return dkim.sign(data, selector, domain, key.key, canonicalize=(b"relaxed", b"relaxed"),
                     include_headers=_signed_headers(data),
                     signature_algorithm=key.algorithm) + data
