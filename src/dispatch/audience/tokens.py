"""Signed, opaque tokens: the links in every email (unsubscribe, preferences), confirmation
links, and the hidden field that ties a web form to the page that served it.

The secret comes from DISPATCH_SECRET, or is generated once and kept in the store, so links
stay valid across restarts and on every machine that shares the store.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from itsdangerous import BadSignature
from itsdangerous import Signer as HmacSigner
from itsdangerous.encoding import base64_decode, base64_encode
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from dispatch.store.schema import settings_table

SECRET_ENV = "DISPATCH_SECRET"
# Purpose -> whether its tokens carry their issue time and expire.
PURPOSES = {"unsubscribe": False, "preferences": False, "confirm": True, "form": True}


_QUERY = select(settings_table.c.value).where(settings_table.c.key == "token_secret")


def existing_secret(engine: Engine) -> str | None:
    """DISPATCH_SECRET, else the secret kept in the store, else None (nothing is written)."""
    if value := os.environ.get(SECRET_ENV):
        return value
    with engine.connect() as conn:
        return conn.execute(_QUERY).scalar()


def secret(engine: Engine) -> str:
    """The token secret, generated and kept in the store on first use."""
    if (found := existing_secret(engine)) is not None:
        return found
    try:
        with engine.begin() as conn:
            conn.execute(settings_table.insert().values(key="token_secret",
                                                        value=secrets.token_urlsafe(32)))
    except IntegrityError:
        pass  # another process made it first: use theirs
    with engine.connect() as conn:
        return conn.execute(_QUERY).scalar_one()


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
        self.expiry = {"confirm": timedelta(days=2), "form": timedelta(hours=12),
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
