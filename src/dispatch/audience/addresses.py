"""Email addresses as subscribers give them: checked (syntax only, no DNS) and reduced to
the key that makes one subscriber per mailbox, and the hash that outlives deletion."""

from __future__ import annotations

import hashlib

from email_validator import EmailNotValidError, validate_email

from dispatch.text import header_problem


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


def name_problem(name: str) -> str | None:
    """Why `name` is no display name for a To header, or None when it is one: at most 200
    characters and no control characters (dispatch.text's rule, C1 and U+2028/2029 included)."""
    if len(name) > MAX_NAME:
        return f"name longer than {MAX_NAME} characters ({len(name)})"
    problem = header_problem(name)
    return f"name {problem}" if problem else None


def valid_name(name: str) -> bool:
    return name_problem(name) is None
