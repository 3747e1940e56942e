"""Mailgun: each JSON webhook is signed with HMAC-SHA256 of its timestamp and token under the
HTTP webhook signing key; a timestamp outside inbound.webhooks.mailgun.max_age, or a token
seen before, is a replay. Our row token comes back in the event's user-variables."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

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
    secret,
    severe,
    strings,
    sub_object,
)
from dispatch.states import ReportKind


class Mailgun(Provider):
    name = "mailgun"
    echoes_metadata = True
    content_type = "application/json"  # the legacy form-encoded webhooks are not taken

    def __init__(self, config: Any, clock: Callable[[], datetime], fetch: Fetcher) -> None:
        super().__init__(config, clock, fetch)
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()

    def verify(self, incoming: Incoming) -> Verified:
        payload = json_object(parse_json(incoming.body), "the Mailgun webhook")
        signature = payload.get("signature")
        if not isinstance(signature, dict) or not all(
                isinstance(signature.get(k), (str, int)) for k in
                ("timestamp", "token", "signature")):
            raise Unverified("no Mailgun signature (timestamp, token, signature)")
        timestamp, token = str(signature["timestamp"]), str(signature["token"])
        key = secret(self.config.signing_key).encode()
        expected = hmac.new(key, (timestamp + token).encode(), hashlib.sha256).hexdigest()
        # As bytes: compare_digest refuses a str with anything but ASCII in it (a 500).
        given = str(signature["signature"]).lower().encode("utf-8", "replace")
        if not secrets.compare_digest(expected.encode(), given):
            raise Unverified("the Mailgun signature does not verify")
        window = self.config.max_age.total_seconds()
        self.fresh(timestamp, window)
        self._once(token, window)
        return Verified(json_object(payload.get("event-data"), "event-data"))

    def _once(self, token: str, window: float) -> None:
        """Refuse a token seen before. Tokens outside the freshness window are refused by
        their timestamp, so remembering them for twice the window is enough."""
        now = time.monotonic()
        with self._lock:
            self._tokens = {t: at for t, at in self._tokens.items() if now - at < 2 * window}
            if token in self._tokens:
                raise Unverified("the Mailgun token was used before (a replay)")
            self._tokens[token] = now

    def events(self, payload: Any) -> list[Event]:
        name = payload.get("event")
        event_id = payload.get("id")
        if not isinstance(event_id, str) or not event_id:
            raise Malformed("a Mailgun event without an id")
        headers = sub_object(sub_object(payload, "message"), "headers")
        ids = tuple(i for i in [bracketed(headers.get("message-id"))] if i)
        echoed = tuple(strings(payload.get("user-variables")))
        recipient = str(payload.get("recipient") or "")
        if name == "failed":
            status = sub_object(payload, "delivery-status")
            code = str(status.get("enhanced-code") or "")
            text = one_line(status.get("code"), status.get("message"),
                            status.get("description"))
            found = severe(code, text or "", payload.get("severity") == "permanent")
            reason = one_line(f"Mailgun {payload.get('severity')} failure",
                              payload.get("reason"), code, text)
        elif name == "complained":
            found, reason = ReportKind.COMPLAINT, "Mailgun complaint"
        elif name == "unsubscribed":
            found, reason = ReportKind.UNSUBSCRIBE, "Mailgun unsubscribe"
        else:
            return []
        return [Event("mailgun", event_id, found, recipient, reason, ids, echoed)]
