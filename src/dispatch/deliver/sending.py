"""Sending an issue: launch (snapshot + render once), deliver, dry runs and test sends.

`dispatch demo` and the scheduler's firing call these functions directly; every command that
delivers (`dispatch send`, `dispatch worker`, `dispatch run`, `dispatch serve`) goes through
deliver/loop.run_delivery, which records a pause; deliver/control.py decides what a send's
state calls for.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from dispatch.audience.tokens import Signer
from dispatch.clock import utcnow
from dispatch.compose.message import template_from_parts
from dispatch.compose.models import Issue
from dispatch.compose.recipients import Placeholders, Reader, build_recipient
from dispatch.compose.render import Rendered, render_variant
from dispatch.compose.variants import (
    Variant,
    possible_variants,
    smallest_mix,
    variant_label,
)
from dispatch.config import Settings
from dispatch.config.defaults import TUNING, Tuning
from dispatch.deliver.messages import Messages, NoTemplates
from dispatch.deliver.outcomes import Kind
from dispatch.deliver.recording import MemoryOutbox, Stats
from dispatch.deliver.transport import FileWriter, Reply, Transport, smtp_transport
from dispatch.deliver.worker import deliver
from dispatch.errors import DispatchError, Problem
from dispatch.store.launch import Audience, audience_rows, launch, plan_audience
from dispatch.store.outbox import Job, SqlOutbox
from dispatch.store.secrets import existing_secret, secret
from dispatch.store.subscribers import topics_for

TEST_BANNER = "This is a test send of this issue; subscribers have not received it."


class WorkerBusy(DispatchError):
    """Another process is delivering from this SQLite store."""


@contextmanager
def worker_lock(engine: Engine) -> Iterator[None]:
    """On SQLite, one delivering process at a time (the lock dies with its process, SIGKILL
    included); PostgreSQL workers coordinate through row locks instead."""
    url = make_url(str(engine.url))
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        yield
        return
    lock_path = Path(f"{url.database}.worker-lock")
    with lock_path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise WorkerBusy(Problem(str(lock_path), f"{holder} is already delivering from this "
                                     "SQLite store; SQLite allows one worker at a time (use "
                                     "PostgreSQL for several)")) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def render_audience(issue: Issue, variants: dict[str, Variant], settings: Settings,
                    now: datetime, test_banner: str | None = None, day: date | None = None
                    ) -> dict[str, Rendered]:
    return {vid: render_variant(issue, variant, settings, now, test_banner, day)
            for vid, variant in variants.items()}


def launch_issue(engine: Engine, issue: Issue, audience: Audience, settings: Settings,
                 now: datetime, *, scheduled_for: datetime | None = None,
                 release: Callable[[str | None], datetime] | None = None,
                 day: date | None = None) -> bool:
    """Render the audience's variants and snapshot it into the outbox (one transaction);
    see store.launch.launch for `scheduled_for` and `release`. The masthead says `day`, or today
    in the editors' zone: the issue goes out now."""

    def render(variants: dict[str, Variant]) -> dict[str, tuple[str, str]]:
        return {vid: (r.html, r.text)
                for vid, r in render_audience(issue, variants, settings, now, day=day).items()}

    return launch(engine, issue, audience, render(audience.variants), now, render=render,
                  scheduled_for=scheduled_for, release=release)


def run_worker(engine: Engine, settings: Settings, transport: Transport, *,
               issue: str | None = None, stop: threading.Event | None = None,
               until_done: bool = True, wait_for_retries: bool = True,
               progress: Callable[[Stats], None] = lambda _: None,
               wake: threading.Event | None = None, clock: Callable[[], datetime] = utcnow,
               tuning: Tuning = TUNING) -> Stats:
    """One run of deliveries of the running sends' rows (one issue's, or all) as a
    registered worker; deliver/loop.run_delivery is the loop every command runs, and the one
    that pauses a send the relay refuses."""
    outbox = SqlOutbox(engine, settings, issue)
    with worker_lock(engine):
        outbox.register(clock())
        try:
            stats = deliver(outbox, transport, settings, Signer(secret(engine)), stop=stop,
                            until_done=until_done, wait_for_retries=wait_for_retries,
                            heartbeat=outbox.heartbeat, progress=progress, wake=wake,
                            clock=clock, tuning=tuning)
        finally:
            outbox.unregister()
    return stats


# ---- Dry runs --------------------------------------------------------------------------

@dataclass
class DryRunReport:
    data: dict[str, Any]
    out_dir: Path


def dry_run(engine: Engine, issue: Issue, settings: Settings, out_dir: Path, now: datetime,
            sample: int | None = None, progress: Callable[[Stats], None] = lambda _: None
            ) -> DryRunReport:
    """The send's own path (snapshot query, render, build, deliver) with an in-memory outbox
    and a transport that writes .eml files: nothing in the store changes."""
    audience = plan_audience(engine, issue, settings)
    rendered = render_audience(issue, audience.variants, settings, now)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.eml"):
        old.unlink()
    people = list(audience_rows(engine, issue, settings))
    topics = topics_for(engine, [sid for sid, _, _, _ in people])
    jobs = deque(Job(row_id=i, issue=issue.slug, variant=vid, attempts=0, subscriber_id=sid,
                     email=email, name=name, topics=tuple(topics[sid]))
                 for i, (sid, vid, email, name) in enumerate(people))
    variant_of = {job.email: job.variant for job in jobs}
    outbox = MemoryOutbox(jobs, {(issue.slug, vid): (issue.subject, r.html, r.text)
                                 for vid, r in rendered.items()})
    writer = FileWriter(out_dir, sample)
    # Tokens in dry-run files use the real secret when one exists, but a dry run never
    # creates one: it writes nothing to the store.
    key = existing_secret(engine) or "dry-run: no secret in the store yet"
    stats = deliver(outbox, writer, settings, Signer(key), progress=progress)
    sizes: dict[str, list[int]] = {}
    for email, size in writer.sizes.items():
        sizes.setdefault(variant_of[email], []).append(size)
    data: dict[str, Any] = {
        "issue": issue.slug, "subject": issue.subject, "dry_run": True,
        "recipients": audience.recipients,
        "messages_built": stats.outcomes[Kind.SENT], "files_written": writer.written,
        "counted_not_written": writer.counted,
        "skipped": dict(sorted(audience.skipped.items())),
        "variants": [{
            "id": vid, "label": variant_label(issue, variant, settings.topics),
            "briefs": [b.path.name for b in variant.briefs],
            "topics": list(variant.topics), "recipients": audience.per_variant[vid],
            "html_bytes": len(rendered[vid].html.encode()),
            "message_bytes": _size_summary(sizes.get(vid, [])),
            "warnings": list(rendered[vid].warnings)}
            for vid, variant in audience.variants.items()],
    }
    (out_dir / "report.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n",
                                         encoding="utf-8")
    return DryRunReport(data, out_dir)


def _size_summary(sizes: list[int]) -> dict[str, int]:
    if not sizes:
        return {}
    return {"min": min(sizes), "max": max(sizes), "mean": sum(sizes) // len(sizes)}


# ---- Test sends ------------------------------------------------------------------------

def send_test_copies(engine: Engine, issue: Issue, settings: Settings, address: str,
                     now: datetime, transport: Transport | None = None
                     ) -> list[tuple[str, Reply]]:
    """Every variant the audience needs (every possible one when there is no audience yet)
    sent once to `address` with a test banner; the outbox is not touched. Each copy is built
    as a subscriber's message is (deliver.messages: the same headers and DKIM signature) for
    a reader following the variant's smallest topic mix, with placeholder tokens; its
    envelope sender is the From address, so a bounce of a test reaches a person."""
    audience = plan_audience(engine, issue, settings)
    variants = audience.variants or possible_variants(issue)
    rendered = render_audience(issue, variants, settings, now, TEST_BANNER)
    messages = Messages(NoTemplates(), settings, Placeholders("TEST-SEND", ""))
    connection = (transport or smtp_transport(settings.smtp))()
    replies = []
    try:
        for vid, result in rendered.items():
            # Each copy's subject says which variant it is, so an inbox of copies tells them
            # apart: "[TEST · East Asia + Security] Seoul and Tokyo…".
            label = variant_label(issue, result.variant, settings.topics)
            template = template_from_parts(vid, result.html, result.text,
                                           f"[TEST · {label}] {issue.subject}", issue.slug,
                                           settings)
            tokens = Placeholders("TEST-SEND", secrets.token_hex(16))
            reader = Reader(address, None, smallest_mix(issue, result.variant))
            built = messages.seal(
                template, build_recipient(reader, issue.slug, vid, tokens, settings, now),
                settings.newsletter.from_email, now)
            replies.append((vid, connection.send(built.sender, built.recipient, built.data,
                                                 utf8=built.utf8)))
    finally:
        connection.close()
    return replies


def variant_table(issue: Issue, audience: Audience, settings: Settings
                  ) -> list[tuple[str, int, str]]:
    """(variant label, recipients, variant id) rows for the confirmation prompt."""
    return [(variant_label(issue, v, settings.topics), audience.per_variant[vid], vid)
            for vid, v in audience.variants.items()]


def skipped_lines(skipped: Counter[str]) -> list[str]:
    return [f"{n:,} {reason}" for reason, n in sorted(skipped.items())]
