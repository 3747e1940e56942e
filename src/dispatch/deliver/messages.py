"""Building one recipient's message for the wire: the variant's template (serialised once per
variant), the recipient's slot values and tokens, DKIM when configured, and what the envelope
needs (VERP sender, the address as the wire wants it, whether SMTPUTF8 is needed)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from dispatch.compose.message import (
    MessageTemplate,
    Recipient,
    envelope_sender,
    needs_smtputf8,
    personalize,
    template_from_parts,
    wire_address,
)
from dispatch.compose.recipients import Reader, Tokens, build_recipient
from dispatch.config import Settings
from dispatch.config.dkim import DkimKey, dkim_key
from dispatch.deliver.transport import Envelope
from dispatch.store.outbox import Job
from dispatch.store.sends import CONFIRMATIONS


class TemplateSource(Protocol):
    def template_parts(self, issue: str, variant: str) -> tuple[str, str, str]: ...


class NoTemplates:
    """The source of a builder that is handed its templates (test copies)."""

    def template_parts(self, issue: str, variant: str) -> tuple[str, str, str]:
        raise LookupError(f"no stored template for {issue}/{variant}")


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

    def __init__(self, outbox: TemplateSource, settings: Settings, signer: Tokens) -> None:
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
        sid, email = job.subscriber_id, job.email
        assert email is not None and sid is not None
        reader = Reader(email=email, name=job.name, topics=job.topics, subscriber_id=sid,
                        row_id=job.row_id)
        return build_recipient(reader, job.issue, job.variant, self.signer, self.settings, now,
                               confirmation=job.issue == CONFIRMATIONS)

    def build(self, job: Job, now: datetime) -> Built:
        """One job's message; any exception means it cannot be built (that row fails)."""
        recipient = self.recipient(job, now)
        assert job.subscriber_id is not None
        sender = envelope_sender(self.settings, self.signer.row_local_part(
            "bounce", job.row_id, job.subscriber_id))
        return self.seal(self.template(job.issue, job.variant), recipient, sender, now)

    def seal(self, template: MessageTemplate, recipient: Recipient, sender: str,
             now: datetime) -> Built:
        """The message bytes every path sends (subscribers' messages, test copies): the
        template personalised, DKIM-signed when configured, with its envelope."""
        data = personalize(template, recipient, now.replace(microsecond=0), self.settings)
        if self._dkim:
            data = sign_dkim(data, *self._dkim)
        email = recipient.email
        return Built(sender, wire_address(email), data, recipient.message_id,
                     needs_smtputf8(email))


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
