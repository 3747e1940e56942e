"""Who a message is for: the one builder of a recipient's per-message values (links, the
List-Unsubscribe mailto, the Message-ID, the topics the footer names), for a subscriber's
message, an editor's test copy and a preview's sample alike. Only the tokens differ: signed
ones (audience.tokens.Signer) for subscribers, placeholders for test copies and samples."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from dispatch.compose.message import Recipient, message_id
from dispatch.config import Settings
from dispatch.config.topics import followed_labels


class Tokens(Protocol):
    """What the builder needs of a token maker (audience.tokens.Signer has it)."""

    def token(self, purpose: str, subscriber_id: int, email: str = "",
              issued: datetime | None = None, row: int | None = None) -> str: ...

    def row_local_part(self, purpose: str, row_id: int, subscriber_id: int) -> str: ...

    def digest(self, purpose: str, text: str) -> str: ...


@dataclass(frozen=True)
class Placeholders:
    """Tokens that name nobody: every link carries `text`, the Message-ID `digest`. A link
    from a test copy or a sample opens the web app's "link no longer valid" page."""

    text: str
    digest_value: str

    def token(self, purpose: str, subscriber_id: int, email: str = "",
              issued: datetime | None = None, row: int | None = None) -> str:
        return self.text

    def row_local_part(self, purpose: str, row_id: int, subscriber_id: int) -> str:
        return f"{purpose[0]}-{self.text.lower()}"

    def digest(self, purpose: str, text: str) -> str:
        return self.digest_value


@dataclass(frozen=True)
class Reader:
    """Whom one message goes to, as its outbox row names them (row and subscriber 0 for a
    test copy or a sample)."""

    email: str
    name: str | None
    topics: tuple[str, ...] = ()  # topic keys they follow
    subscriber_id: int = 0
    row_id: int = 0


def build_recipient(reader: Reader, issue: str, variant: str, tokens: Tokens,
                    settings: Settings, now: datetime, *, confirmation: bool = False
                    ) -> Recipient:
    """A recipient's values for one message of `issue`'s `variant`. A confirmation carries
    its confirm link, and a Message-ID of its own per request (its row)."""
    base = settings.newsletter.base_url
    sid, email = reader.subscriber_id, reader.email
    key, confirm_url = str(sid), ""
    if confirmation:
        confirm_url = f"{base}/c/{tokens.token('confirm', sid, email, now)}"
        key = f"{sid}.{reader.row_id}"  # a new request is a new row: a new Message-ID
    inbound = settings.delivery.verp_domain
    mailto = (f"{tokens.row_local_part('mailto', reader.row_id, sid)}@{inbound}"
              if inbound else "")
    # The row in the links: an unsubscribe counts for the send it came from.
    row = reader.row_id or None
    return Recipient(
        email=email, name=reader.name,
        unsubscribe_url=f"{base}/u/{tokens.token('unsubscribe', sid, email, row=row)}",
        preferences_url=f"{base}/p/{tokens.token('preferences', sid, email, row=row)}",
        view_url=f"{base}/a/{issue}/{variant}", confirm_url=confirm_url,
        unsubscribe_address=mailto,
        topics=tuple(followed_labels(settings.topics, reader.topics)),
        message_id=message_id(issue, tokens.digest("message-id", f"{issue}\0{key}"), settings))
