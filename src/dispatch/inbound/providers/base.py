"""What every relay's webhook provider is made of: the request as it came (`Incoming`), the
`Provider` class each provider module subclasses (its `verify` and `events`), the `Event` one
verified request reports, the refusals (403, 401, 400, 503) and the small readers of JSON and
of relays' failure texts the providers share. dispatch.inbound.webhooks records the events.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from dispatch.errors import ConfigError
from dispatch.inbound.classify import STATUS, severity
from dispatch.states import ReportKind

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


@dataclass(frozen=True)
class Incoming:
    """One POST to /hooks/<provider>: its raw body and its headers (names lower-case)."""

    body: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Verified:
    """What a request proved: its payload, for `events`, and a note for the answer (an SNS
    subscription confirmed, say)."""

    payload: Any
    note: str = ""


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


class Provider(ABC):
    """A relay's webhook. A subclass names itself, says whether it hands back our
    delivery.relay_metadata, and reads its own table of [inbound.webhooks]; registering it in
    dispatch.inbound.providers is all a new provider needs besides its settings table."""

    name: ClassVar[str]
    echoes_metadata: ClassVar[bool] = False  # a delivery.relay_metadata choice
    content_type: ClassVar[str | None] = None  # the only media type taken, when it says so

    def __init__(self, config: Any, clock: Callable[[], datetime], fetch: Fetcher) -> None:
        self.config, self.clock, self.fetch = config, clock, fetch

    @abstractmethod
    def verify(self, incoming: Incoming) -> Verified:
        """The payload, once the request proves it comes from the provider; Unverified,
        Unauthenticated, Malformed or Misconfigured before anything is believed."""

    @abstractmethod
    def events(self, payload: Any) -> list[Event]:
        """The bounce, complaint and unsubscribe events in a verified payload (Malformed
        for one that is not the provider's format)."""

    def fresh(self, timestamp: str, window: float) -> None:
        """Refuse a signed timestamp outside the window either way (a replay, or a clock
        far off)."""
        try:
            age = self.clock().timestamp() - int(timestamp)
        except ValueError:
            raise Unverified(f"the {self.name} timestamp is not a number") from None
        if abs(age) > window:
            raise Unverified(f"the {self.name} timestamp is {int(age)} s old, outside "
                             f"{int(window)} s (a replay, or a clock far off)")


def secret(read: Callable[[], str]) -> str:
    """A provider's secret from the environment; Misconfigured when it is not there."""
    try:
        return read()
    except ConfigError as exc:
        raise Misconfigured(str(exc)) from None


def bracketed(message_id: object) -> str | None:
    if not isinstance(message_id, str) or not message_id.strip():
        return None
    text = message_id.strip()[:500]
    return text if text.startswith("<") else f"<{text}>"


def severe(code: str, text: str, permanent: bool) -> ReportKind:
    """A relay's failure by its RFC 3463 status when it gives one (a relay's "permanent"
    includes 5.2.2 mailbox full, which is soft here); else by the relay's own word."""
    if STATUS.search(code) or STATUS.search(text):
        return severity("failed", code, text) or ReportKind.SOFT
    return ReportKind.BOUNCED if permanent else ReportKind.SOFT


def one_line(*texts: object) -> str | None:
    words = " ".join(str(t) for t in texts if t not in (None, ""))
    return " ".join(words.split())[:MAX_REASON] or None


def strings(value: object) -> Iterator[str]:
    """Every string in a JSON value (metadata, custom arguments)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Malformed("the body is not JSON") from None


def json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Malformed(f"{what} is not a JSON object")
    return value


def sub_object(parent: dict[str, Any], key: str) -> dict[str, Any]:
    """parent[key] when it is an object, else empty: an optional part of an event."""
    value = parent.get(key)
    return value if isinstance(value, dict) else {}
