"""`dispatch demo`: the whole path on embedded defaults, to show the product working.

A fresh SQLite store with generated subscribers across the example issue's topics, an
in-process SMTP server on localhost, a real send of the issue, and a check of what arrived.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path

from dispatch.audience.csvio import Row
from dispatch.clock import utcnow
from dispatch.compose.models import Issue
from dispatch.config import Settings
from dispatch.deliver.recording import Stats
from dispatch.deliver.sending import launch_issue, run_worker
from dispatch.deliver.transport import smtp_transport
from dispatch.devtools.sink import RecordingHandler, smtp_sink
from dispatch.store import imports
from dispatch.store.db import open_store
from dispatch.store.launch import plan_audience

FIRST = ("Ana", "Bo-ra", "Chen", "Dara", "Emeka", "Fatima", "Goro", "Hana", "Ines", "Jun",
         "Kofi", "Lena", "Min-jun", "Noor", "Oren", "Priya", "Quinn", "Rafael", "Sora", "Tomás")
LAST = ("Kim", "Sato", "Lee", "Okafor", "Silva", "Nguyen", "Park", "Haddad", "Ito", "Moreau")
REQUIRED_HEADERS = ("Date", "From", "To", "Subject", "Message-ID", "MIME-Version", "List-Id",
                    "List-Unsubscribe", "List-Unsubscribe-Post")


@dataclass
class DemoResult:
    subscribers: int
    recipients: int
    received: int
    per_variant: Counter[str]
    problems: list[str]
    stats: Stats
    mailbox: Path
    store_url: str


def generate_subscribers(settings: Settings, topics: tuple[str, ...], count: int,
                         seed: int = 7) -> list[Row]:
    """Deterministic fake readers on example.com, each following one to three topics."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        email = f"reader{i + 1:05d}@example.com"
        picked = rng.sample(topics, rng.randint(1, min(3, len(topics))))
        rows.append(Row(line=i + 1, email=email, key=email, name=name, topics=picked,
                             timezone=None))
    return rows


def run_demo(settings: Settings, issue: Issue, folder: Path, count: int = 500,
             progress: Callable[[Stats], None] = lambda _: None) -> DemoResult:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("demo.db*"):
        old.unlink()
    mailbox = folder / "mailbox"
    mailbox.mkdir(exist_ok=True)
    for old in mailbox.glob("*.eml"):
        old.unlink()
    store_url = f"sqlite:///{folder / 'demo.db'}"
    handler = RecordingHandler()
    with smtp_sink(handler) as (_, port):
        demo_settings = settings.model_copy(update={
            "store": settings.store.model_copy(update={"url": store_url}),
            "smtp": settings.smtp.model_copy(update={"host": "127.0.0.1", "port": port,
                                                     "security": "none", "username": None}),
            "delivery": settings.delivery.model_copy(update={"rate": 0.0, "retry_backoff": 1.0,
                                                             "verp_domain": None}),
            "dkim": None})
        engine = open_store(store_url)
        now = utcnow()
        imports.import_rows(engine, generate_subscribers(settings, issue.topics, count), now)
        audience = plan_audience(engine, issue, demo_settings)
        launch_issue(engine, issue, audience, demo_settings, now)
        stats = run_worker(engine, demo_settings, smtp_transport(demo_settings.smtp),
                           issue=issue.slug, progress=progress)
        engine.dispose()
    per_variant: Counter[str] = Counter()
    problems = []
    for i, item in enumerate(handler.received):
        msg = message_from_bytes(item.data, policy=policy.SMTP)
        missing = [h for h in REQUIRED_HEADERS if h not in msg]
        if missing:
            problems.append(f"{item.recipient}: missing {', '.join(missing)}")
        per_variant[str(msg["X-Dispatch-Variant"])] += 1
        if i < 5:
            (mailbox / f"{item.recipient}.eml").write_bytes(item.data)
    duplicates = len(handler.received) - len({r.recipient for r in handler.received})
    if duplicates:
        problems.append(f"{duplicates} recipient(s) received more than one message")
    return DemoResult(subscribers=count, recipients=audience.recipients,
                      received=len(handler.received), per_variant=per_variant,
                      problems=problems, stats=stats, mailbox=mailbox, store_url=store_url)
