"""Signed, opaque tokens: the links in every email (unsubscribe, preferences), confirmation
links, and the hidden field that ties a web form to the page that served it.

The key comes from the store (store/secrets.py); this module does no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
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
# Purposes whose tokens may also name the outbox row (the message) their link came in, so an
# unsubscribe counts for the send it came from; links sent before they did still verify.
ROW_LINKS = frozenset({"unsubscribe", "preferences"})
# Tokens naming one outbox row and its subscriber in an address on the inbound domain: the
# VERP envelope sender ("b-…", bounces come back to it) and the List-Unsubscribe mailto
# ("u-…"). The subscriber is named too because SQLite may give a deleted row's id to a new
# row. Lower-case base36 and base32, since some MTAs fold the case of local parts; 46 octets
# at most, inside RFC 5321's 64.
ROW_PURPOSES = {"bounce": "b", "mailto": "u"}
ROW_ADDRESS = re.compile(r"^(?P<prefix>[bu])-(?P<row>[0-9a-z]{1,13})-(?P<sid>[0-9a-z]{1,13})"
                         r"-(?P<mac>[a-z2-7]{16})$")


class BadToken(Exception):
    """A token that was forged, altered, made for another purpose, or has expired."""

    def __init__(self, expired: bool = False) -> None:
        super().__init__("expired" if expired else "invalid")
        self.expired = expired


@dataclass(frozen=True)
class RowClaim:
    """What a verified row token says: what it is for, the outbox row and its subscriber."""

    purpose: str  # bounce or mailto
    row_id: int
    subscriber_id: int


@dataclass(frozen=True)
class Claim:
    """What a valid token says: whose it is, and a tag of their address."""

    subscriber_id: int
    tag: bytes
    row_id: int | None = None  # the outbox row whose message carried the link, when named

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
        self._key = hashlib.sha256(b"dispatch.rows\0" + key.encode("utf-8")).digest()
        # The confirmation link's life is an operator's choice (web.confirm_expiry); a form's
        # is how long a page may sit open before it is sent.
        self.expiry = {"confirm": WebSettings().confirm_expiry, "form": FORM_EXPIRY,
                       **(expiry or {})}

    def token(self, purpose: str, subscriber_id: int, email: str = "",
              issued: datetime | None = None, row: int | None = None) -> str:
        """`row`: the outbox row whose message carries the link (ROW_LINKS purposes only)."""
        parts = [base64_encode(_int_bytes(subscriber_id)), base64_encode(address_tag(email))]
        if PURPOSES[purpose]:
            moment = issued.timestamp() if issued else time.time()
            parts.append(base64_encode(_int_bytes(int(moment))))
        if row is not None:
            assert purpose in ROW_LINKS, purpose
            parts.append(base64_encode(_int_bytes(row)))
        return self._signers[purpose].sign(b".".join(parts)).decode("ascii")

    def read(self, purpose: str, token: str, now: datetime | None = None) -> Claim:
        """The claim in a valid token; BadToken otherwise."""
        try:
            payload = self._signers[purpose].unsign(token.encode("ascii", "replace"))
            parts = [base64_decode(p) for p in payload.split(b".")]
        except (BadSignature, ValueError):
            raise BadToken() from None
        base = 2 + PURPOSES[purpose]
        with_row = purpose in ROW_LINKS and len(parts) == base + 1
        if (len(parts) != base and not with_row) or len(parts[1]) != 4:
            raise BadToken()
        if PURPOSES[purpose]:
            age = (now.timestamp() if now else time.time()) - int.from_bytes(parts[2], "big")
            if not 0 <= age <= self.expiry[purpose].total_seconds() + 60:  # 60 s of clock skew
                raise BadToken(expired=age > 0)
        row = int.from_bytes(parts[base], "big") if with_row else None
        return Claim(int.from_bytes(parts[0], "big"), parts[1], row)

    def _row_mac(self, purpose: str, row_id: int, subscriber_id: int) -> str:
        data = f"{purpose}\0{row_id}\0{subscriber_id}".encode()
        mac = hmac.digest(self._key, data, "sha256")  # one-shot: a third of hmac.new's time
        return base64.b32encode(mac[:10]).decode("ascii").lower()  # 80 bits, 16 characters

    def row_local_part(self, purpose: str, row_id: int, subscriber_id: int) -> str:
        """The local part of an inbound-domain address that names one outbox row and its
        subscriber: "b-ROW-SUBSCRIBER-MAC" for bounces (the VERP sender), "u-…" for the
        mailto unsubscribe."""
        return (f"{ROW_PURPOSES[purpose]}-{_base36(row_id)}-{_base36(subscriber_id)}-"
                f"{self._row_mac(purpose, row_id, subscriber_id)}")

    def read_row_local_part(self, local_part: str) -> RowClaim:
        """What a local part made by row_local_part names; BadToken otherwise."""
        found = ROW_ADDRESS.match(local_part.strip().lower())
        if not found:
            raise BadToken()
        purpose = next(p for p, prefix in ROW_PURPOSES.items() if prefix == found["prefix"])
        row_id, sid = int(found["row"], 36), int(found["sid"], 36)
        if not secrets.compare_digest(found["mac"], self._row_mac(purpose, row_id, sid)):
            raise BadToken()
        return RowClaim(purpose, row_id, sid)

    def digest(self, purpose: str, text: str) -> str:
        """A keyed hash (hex, 128 bits) nobody without the secret can compute: Message-IDs."""
        data = f"{purpose}\0{text}".encode()
        return hmac.digest(self._key, data, "sha256").hex()[:32]


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out
