"""Postmark: webhooks secured by HTTP basic auth credentials put in the webhook's URL
(inbound.webhooks.postmark); our row token comes back in the event's Metadata."""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import Any

from dispatch.inbound.providers.base import (
    Event,
    Incoming,
    Malformed,
    Provider,
    Unauthenticated,
    Unverified,
    Verified,
    json_object,
    one_line,
    parse_json,
    secret,
    severe,
    strings,
)
from dispatch.states import ReportKind

KINDS = {
    "HardBounce": ReportKind.BOUNCED, "BadEmailAddress": ReportKind.BOUNCED,
    "SoftBounce": ReportKind.SOFT, "Transient": ReportKind.SOFT, "DnsError": ReportKind.SOFT,
    "Blocked": ReportKind.SOFT, "Undeliverable": ReportKind.SOFT,
    "SpamComplaint": ReportKind.COMPLAINT, "AutoResponder": ReportKind.AUTO_REPLY,
    "Unsubscribe": ReportKind.UNSUBSCRIBE,
}


class Postmark(Provider):
    name = "postmark"
    echoes_metadata = True

    def verify(self, incoming: Incoming) -> Verified:
        authorization = incoming.headers.get("authorization")
        if not authorization:
            raise Unauthenticated("HTTP basic auth credentials are required")
        scheme, _, encoded = authorization.partition(" ")
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise Unverified("unreadable basic auth credentials") from None
        expected = f"{self.config.username}:{secret(self.config.password)}".encode()
        if scheme.lower() != "basic" or not secrets.compare_digest(given, expected):
            raise Unverified("wrong basic auth credentials")
        return Verified(json_object(parse_json(incoming.body), "the Postmark event"))

    def events(self, payload: Any) -> list[Event]:
        record = payload.get("RecordType")
        if record == "SubscriptionChange":
            return subscription_change(payload)
        if record not in ("Bounce", "SpamComplaint"):
            return []  # deliveries, opens, clicks: nothing to record
        kind = "SpamComplaint" if record == "SpamComplaint" else str(payload.get("Type", ""))
        found = KINDS.get(kind, ReportKind.IGNORED)
        if found == ReportKind.BOUNCED:
            found = severe("", str(payload.get("Details") or ""), True)
        event_id = payload.get("ID")
        if not isinstance(event_id, (int, str)) or isinstance(event_id, bool):
            raise Malformed("a Postmark bounce without an ID")
        reason = one_line(f"Postmark {kind}", payload.get("Description"),
                          payload.get("Details"))
        return [Event("postmark", f"{record}:{event_id}", found,
                      str(payload.get("Email") or ""), reason, (),
                      tuple(strings(payload.get("Metadata"))))]


def subscription_change(payload: dict[str, Any]) -> list[Event]:
    """Postmark's own unsubscribe (its link or list-unsubscribe handling): a suppression by
    the recipient ("ManualSuppression"). Suppressions for bounces and complaints come as
    those events already, and a reactivation changes nothing here."""
    if payload.get("SuppressSending") is not True or payload.get(
            "SuppressionReason") != "ManualSuppression":
        return []
    message, changed = payload.get("MessageID"), payload.get("ChangedAt")
    if not isinstance(message, str) or not isinstance(changed, str):
        raise Malformed("a Postmark subscription change without MessageID and ChangedAt")
    return [Event("postmark", f"SubscriptionChange:{message}:{changed}",
                  ReportKind.UNSUBSCRIBE, str(payload.get("Recipient") or ""),
                  "Postmark unsubscribe", (), tuple(strings(payload.get("Metadata"))))]
