"""Slots: the per-recipient fields left open in a rendered variant as tokens
(`__DSP_NAME__` …), so a variant is rendered once and personalised by substituting bytes
(compose/message.py); previews and the archive fill them as text."""

from __future__ import annotations

import re
import textwrap

from dispatch.config import Settings

SLOTS = ("name", "unsubscribe_url", "preferences_url", "view_url", "confirm_url")


def slot_token(name: str) -> str:
    return f"__DSP_{name.upper()}__"


TOKENS = {name: slot_token(name) for name in SLOTS}
TOKEN_PATTERN = re.compile("|".join(map(re.escape, TOKENS.values())))


def sample_values(settings: Settings, name: str = "Sample Reader") -> dict[str, str]:
    base = settings.newsletter.base_url
    return {"name": name, "unsubscribe_url": f"{base}/u/SAMPLE-TOKEN",
            "preferences_url": f"{base}/p/SAMPLE-TOKEN", "view_url": f"{base}/a/sample",
            "confirm_url": f"{base}/c/SAMPLE-TOKEN"}


def fill_slots(text: str, values: dict[str, str]) -> str:
    """Substitute slot tokens in a rendered string (previews; delivery works on bytes)."""
    by_token = {TOKENS[name]: value for name, value in values.items()}
    return TOKEN_PATTERN.sub(lambda m: by_token[m[0]], text)


def fill_text_slots(text: str, values: dict[str, str]) -> str:
    """fill_slots for a plaintext part: the name wrapped as plain_name does."""
    return fill_slots(text, {**values, "name": plain_name(values["name"])})


def plain_name(name: str) -> str:
    """A name as the plaintext carries it: on a line of its own after "Hi ", wrapped so no
    line passes 76 characters (names run to 200; a long word is cut)."""
    return textwrap.fill(" ".join(name.split()), width=72, break_on_hyphens=False)


PERSONAL = re.compile(r"<!--personal-->.*?<!--/personal-->", re.DOTALL)


def public_copy(html: str) -> str:
    """A rendered issue as the web archive shows it to anyone: without the parts marked
    personal in the template (the greeting, why you receive it, your links)."""
    return PERSONAL.sub("", html)
