"""Signed, opaque tokens: the links in every email (unsubscribe, preferences), confirmation
links, and the hidden field that ties a web form to the page that served it.

The key comes from the store (store/secrets.py); this module does no I/O.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from itsdangerous import BadSignature
from itsdangerous import Signer as HmacSigner
from itsdangerous.encoding import base64_decode, base64_encode

from dispatch.config import WebSettings

FORM_EXPIRY = timedelta(hours=12)
# Purpose -> whether its tokens carry their issue time and expire.
PURPOSES = {"unsubscribe": False, "preferences": False, "confirm": True, "form": True}


class BadToken(Exception):
    """A token that was forged, altered, made for another purpose, or has expired."""

    def __init__(self, expired: bool = False) -> None:
        super().__init__("expired" if expired else "invalid")
        self.expired = expired


@dataclass(frozen=True)
class Claim:
    """What a valid token says: whose it is, and a tag of their address."""

    subscriber_id: int
    tag: bytes

    def matches(self, email: str) -> bool:
        """Whether the token was made for this address: a token outlives a forgotten
        subscriber, and SQLite may give their id to someone new."""
        return secrets.compare_digest(self.tag, address_tag(email))


def address_tag(email: str) -> bytes:
    return hashlib.sha256(email.strip().lower().encode("utf-8")).digest()[:4]


def _int_bytes(n: int) -> bytes:
    return n.to_bytes(8, "big").lstrip(b"\0") or b"\0"


class Signer:
    """Makes and reads tokens; a token for one purpose is refused by another.

    A token is the subscriber id, a 4-byte tag of their address and, for purposes that
    expire, the time it was made (URL-safe base64, dot-separated), then its HMAC-SHA1
    signature (itsdangerous's Signer: a few µs, where its serializers spend 25 µs compressing
    two bytes per message)."""

    def __init__(self, key: str, *, expiry: dict[str, timedelta] | None = None) -> None:
        self._signers = {p: HmacSigner(key, salt=f"dispatch.{p}") for p in PURPOSES}
        # The confirmation link's life is an operator's choice (web.confirm_expiry); a form's
        # is how long a page may sit open before it is sent.
        self.expiry = {"confirm": WebSettings().confirm_expiry, "form": FORM_EXPIRY,
                       **(expiry or {})}

    def token(self, purpose: str, subscriber_id: int, email: str = "",
              issued: datetime | None = None) -> str:
        parts = [base64_encode(_int_bytes(subscriber_id)), base64_encode(address_tag(email))]
        if PURPOSES[purpose]:
            moment = issued.timestamp() if issued else time.time()
            parts.append(base64_encode(_int_bytes(int(moment))))
        return self._signers[purpose].sign(b".".join(parts)).decode("ascii")

    def read(self, purpose: str, token: str, now: datetime | None = None) -> Claim:
        """The claim in a valid token; BadToken otherwise."""
        try:
            payload = self._signers[purpose].unsign(token.encode("ascii", "replace"))
            parts = [base64_decode(p) for p in payload.split(b".")]
        except (BadSignature, ValueError):
            raise BadToken() from None
        if len(parts) != 2 + PURPOSES[purpose] or len(parts[1]) != 4:
            raise BadToken()
        if PURPOSES[purpose]:
            age = (now.timestamp() if now else time.time()) - int.from_bytes(parts[2], "big")
            if not 0 <= age <= self.expiry[purpose].total_seconds() + 60:  # 60 s of clock skew
                raise BadToken(expired=age > 0)
        return Claim(int.from_bytes(parts[0], "big"), parts[1])
