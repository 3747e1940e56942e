"""SendGrid: the signed event webhook, an ECDSA (P-256, SHA-256) signature over the timestamp
header and the body, checked with the verification key SendGrid shows (base64 DER); a
timestamp outside inbound.webhooks.sendgrid.max_age is a replay. Our row token comes back
among the event's custom arguments (top-level fields)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from dispatch.inbound.providers.base import (
    Event,
    Incoming,
    Malformed,
    Provider,
    Unverified,
    Verified,
    bracketed,
    json_object,
    one_line,
    parse_json,
    secret,
    severe,
    strings,
)
from dispatch.states import ReportKind

SIGNATURE = "x-twilio-email-event-webhook-signature"
TIMESTAMP = "x-twilio-email-event-webhook-timestamp"
# SendGrid's own fields of an event; the others are custom arguments.
OWN = {"email", "timestamp", "smtp-id", "event", "category", "sg_event_id",
       "sg_message_id", "reason", "status", "type", "response", "attempt",
       "ip", "tls", "cert_err", "useragent", "url", "asm_group_id",
       "bounce_classification"}


class Sendgrid(Provider):
    name = "sendgrid"
    echoes_metadata = True

    def verify(self, incoming: Incoming) -> Verified:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import load_der_public_key

        signature, timestamp = incoming.headers.get(SIGNATURE), incoming.headers.get(TIMESTAMP)
        if not signature or not timestamp:
            raise Unverified("no X-Twilio-Email-Event-Webhook-Signature and -Timestamp")
        try:
            key = load_der_public_key(base64.b64decode(secret(self.config.public_key)))
        except (binascii.Error, ValueError):
            raise Unverified("inbound.webhooks.sendgrid.public_key_env does not hold a "
                             "base64 public key") from None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise Unverified("the SendGrid verification key is not an ECDSA key")
        try:
            key.verify(base64.b64decode(signature, validate=True),
                       timestamp.encode("utf-8", "replace") + incoming.body,
                       ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, binascii.Error, ValueError):
            raise Unverified("the SendGrid signature does not verify") from None
        self.fresh(timestamp, self.config.max_age.total_seconds())
        events = parse_json(incoming.body)
        if not isinstance(events, list):
            raise Malformed("SendGrid posts a JSON array of events")
        return Verified(events)

    def events(self, payload: Any) -> list[Event]:
        return [e for item in payload for e in event(json_object(item, "an event"))]


def event(data: dict[str, Any]) -> list[Event]:
    name = data.get("event")
    event_id = data.get("sg_event_id")
    if not isinstance(event_id, str) or not event_id:
        raise Malformed("a SendGrid event without an sg_event_id")
    ids = tuple(i for i in [bracketed(data.get("smtp-id"))] if i)
    echoed = tuple(s for key, value in data.items() if key not in OWN for s in strings(value))
    status, text = str(data.get("status") or ""), str(data.get("reason") or "")
    if name == "bounce":
        found = (ReportKind.SOFT if data.get("type") == "blocked"
                 else severe(status, text, True))
        reason = one_line(f"SendGrid {data.get('type') or 'bounce'}", status, text)
    elif name == "deferred":
        found = ReportKind.SOFT
        reason = one_line("SendGrid deferred:", data.get("response"))
    elif name == "spamreport":
        found, reason = ReportKind.COMPLAINT, "SendGrid spam report"
    elif name in ("unsubscribe", "group_unsubscribe"):
        found, reason = ReportKind.UNSUBSCRIBE, "SendGrid unsubscribe"
    else:
        return []
    return [Event("sendgrid", event_id, found, str(data.get("email") or ""), reason, ids,
                  echoed)]
