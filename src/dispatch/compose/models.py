"""Plain values passed between stages: frozen dataclasses, no behaviour that touches I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path


@dataclass(frozen=True)
class Image:
    src: str
    alt: str
    caption: str | None = None
    credit: str | None = None


@dataclass(frozen=True)
class Read:
    """One entry of a brief's "Good Reads" list; only the title is required."""

    title: str
    publisher: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class Brief:
    path: Path
    slug: str
    title: str
    topics: tuple[str, ...]
    summary: str
    body: str  # Markdown
    body_line: int  # line of the body's first line in the file, for error messages
    date: date | None = None
    author: str | None = None
    image: Image | None = None
    reads: tuple[Read, ...] = ()


@dataclass(frozen=True)
class Issue:
    path: Path
    slug: str
    subject: str
    briefs: tuple[Brief, ...]
    preheader: str | None = None
    send_at: datetime | None = None  # timezone-aware
    segments: tuple[str, ...] = ()  # empty: everyone
    personalize: bool = True

    @property
    def topics(self) -> tuple[str, ...]:
        return topics_of(self.briefs)


def topics_of(briefs: tuple[Brief, ...]) -> tuple[str, ...]:
    """Every topic the briefs carry, in first-seen order."""
    return tuple(dict.fromkeys(topic for brief in briefs for topic in brief.topics))
