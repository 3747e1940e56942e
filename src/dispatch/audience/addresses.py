"""Email addresses as subscribers give them: checked (syntax only, no DNS) and reduced to
the key that makes one subscriber per mailbox, and the hash that outlives deletion."""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

from dispatch.text import header_problem

# RFC 5322's dot-atom, as email-validator checks an ASCII local part (rfc_constants.ATEXT).
_DOT_ATOM = re.compile(r"[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+(?:\.[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+)*")
_MAX_ADDRESS = 254  # email-validator's EMAIL_MAX_LENGTH


def normalize(email: str) -> str:
    """The unique key of an address: syntax-checked (no DNS), normalised, lower-cased.
    Raises ValueError with the reason.

    Plain ASCII addresses take a fast path with email-validator's own answers: a dot-atom
    local part is valid as it is, and the domain is checked by email-validator itself, once
    per domain (a list has far fewer domains than addresses). Anything else, and every
    address the fast path would refuse, goes to email-validator whole, so the answers and
    the error messages are its own (tests/audience/test_addresses.py compares both paths)."""
    if "\r" in email or "\n" in email:
        raise ValueError("line break in the address (header injection attempt)")
    address = email.strip()
    if address.isascii() and len(address) <= _MAX_ADDRESS:
        local, at, domain = address.rpartition("@")
        if at and _DOT_ATOM.fullmatch(local) and _plain_domain(domain):
            return address.lower()
    return _validated(address)


def _validated(address: str) -> str:
    try:
        return validate_email(address, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None


@lru_cache(maxsize=65536)
def _plain_domain(domain: str) -> bool:
    """email-validator accepts the domain and normalises it to its lower case."""
    try:
        checked = validate_email("a@" + domain, check_deliverability=False)
    except EmailNotValidError:
        return False
    return checked.domain == domain.lower()


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
