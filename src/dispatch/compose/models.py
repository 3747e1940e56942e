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


# The outbox "send" that carries double opt-in confirmation messages. "~" never starts an issue
# folder's name (issue.py refuses it), so it cannot collide with an issue.
CONFIRMATIONS = "~confirmations"


@dataclass(frozen=True)
class Job:
    """One claimed outbox row with what is needed to build and address its message."""

    row_id: int
    issue: str
    variant: str
    attempts: int  # before this one
    subscriber_id: int | None
    email: str | None  # None: the subscriber was erased after launch
    name: str | None = None
    status: str = "active"  # the subscriber's status at claim time

    @property
    def deliverable(self) -> bool:
        """Issues go to active subscribers only; a confirmation only to a pending one."""
        return self.status == ("pending" if self.issue == CONFIRMATIONS else "active")


# What became of one attempt to deliver a Job.
SENT, RETRY, FAILED, BOUNCED, SENDER, REQUEUE, SKIPPED = (
    "sent", "retry", "failed", "bounced", "sender", "requeue", "skipped")


@dataclass(frozen=True)
class Outcome:
    job: Job
    kind: str  # one of the constants above
    reply: str  # the server's reply or the reason
    message_id: str | None = None
