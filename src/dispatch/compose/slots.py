"""Slots: the per-recipient fields left open in a rendered variant as tokens
(`__DSP_NAME__` …), so a variant is rendered once and personalised by substituting bytes
(compose/message.py); previews and the archive fill them as text."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable

from dispatch.config import Settings
from dispatch.config.topics import topic_labels

SLOTS = ("name", "topics", "unsubscribe_url", "preferences_url", "view_url", "confirm_url")
NO_TOPICS = "no topic yet"  # the topics slot of a reader who follows none


def slot_token(name: str) -> str:
    return f"__DSP_{name.upper()}__"


TOKENS = {name: slot_token(name) for name in SLOTS}
TOKEN_PATTERN = re.compile("|".join(map(re.escape, TOKENS.values())))


def topic_list(labels: Iterable[str]) -> str:
    """A reader's topics as the footer names them: "East Asia, Security"."""
    return ", ".join(labels) or NO_TOPICS


def sample_values(settings: Settings, name: str = "Sample Reader") -> dict[str, str]:
    """Every slot filled for a sample reader who follows every topic: the longest footer,
    so the plaintext rules are checked against it."""
    base = settings.newsletter.base_url
    return {"name": name, "topics": topic_list(topic_labels(settings.topics)),
            "unsubscribe_url": f"{base}/u/SAMPLE-TOKEN",
            "preferences_url": f"{base}/p/SAMPLE-TOKEN", "view_url": f"{base}/a/sample",
            "confirm_url": f"{base}/c/SAMPLE-TOKEN"}


def fill_slots(text: str, values: dict[str, str]) -> str:
    """Substitute slot tokens in a rendered string (previews; delivery works on bytes)."""
    by_token = {TOKENS[name]: value for name, value in values.items()}
    return TOKEN_PATTERN.sub(lambda m: by_token[m[0]], text)


def fill_text_slots(text: str, values: dict[str, str]) -> str:
    """fill_slots for a plaintext part: each value as plain_value gives it."""
    return fill_slots(text, {slot: plain_value(slot, value) for slot, value in values.items()})


def plain_name(name: str) -> str:
    """A name as the plaintext carries it: on a line of its own after "Hi ", wrapped so no
    line passes 76 characters (names run to 200; a long word is cut)."""
    return textwrap.fill(" ".join(name.split()), width=72, break_on_hyphens=False)


def plain_topics(topics: str) -> str:
    """The topics slot as the plaintext carries it: at the start of a line, followed by
    ".", wrapped so no line passes 76 characters."""
    return textwrap.fill(topics, width=75, break_on_hyphens=False)


_PLAIN = {"name": plain_name, "topics": plain_topics}


def plain_value(slot: str, value: str) -> str:
    """A slot's value as the plaintext part carries it (the templates put the name and the
    topics where these widths hold; links stand on lines of their own, unwrapped)."""
    wrap = _PLAIN.get(slot)
    return wrap(value) if wrap else value


PERSONAL = re.compile(r"<!--personal-->.*?<!--/personal-->", re.DOTALL)


def public_copy(html: str) -> str:
    """A rendered issue as the web archive shows it to anyone: without the parts marked
    personal in the template (the greeting, why you receive it, your links)."""
    return PERSONAL.sub("", html)
