"""The one rule for text that may reach a mail header (subjects, names, titles): no control
characters. A CR or LF would start a new header line (header injection); the other controls
are invisible, break terminals and are refused by careful mail servers."""

from __future__ import annotations

import unicodedata

# Cc is C0 (U+0000-001F), DEL and C1 (U+0080-009F); Zl and Zp are U+2028 and U+2029, which
# some clients treat as line breaks.
_CONTROL = ("Cc", "Zl", "Zp")


def control_character(value: str, allowed: str = "") -> str | None:
    """The first control character in `value` not in `allowed`, or None if there is none."""
    if value.isascii() and value.isprintable():  # printable ASCII holds none (the usual case)
        return None
    for c in value:
        if unicodedata.category(c) in _CONTROL and c not in allowed:
            return c
    return None


def header_problem(value: str) -> str | None:
    """Why `value` may not stand in a mail header, or None when it may."""
    c = control_character(value)
    if c is None:
        return None
    return (f"contains the control character U+{ord(c):04X} at position {value.index(c) + 1}: "
            "a header value must be one line of printable text")
