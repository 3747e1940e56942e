"""Email addresses as subscribers give them: checked (syntax only, no DNS) and reduced to
the key that makes one subscriber per mailbox, and the hash that outlives deletion."""

from __future__ import annotations

import hashlib

from email_validator import EmailNotValidError, validate_email


def normalize(email: str) -> str:
    """The unique key of an address: syntax-checked (no DNS), normalised, lower-cased.
    Raises ValueError with the reason."""
    if any(c in email for c in "\r\n"):
        raise ValueError("line break in the address (header injection attempt)")
    try:
        return validate_email(email.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None


def email_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


MAX_NAME = 200


def valid_name(name: str) -> bool:
    """A display name fit for a To header: at most 200 characters, no control characters."""
    return len(name) <= MAX_NAME and not any(ord(c) < 32 or ord(c) == 127 for c in name)
