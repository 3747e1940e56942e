"""Scheduling costs: what the daemon's `tick` costs every `schedule.sync` seconds with many
issues waiting, and launching a local-time issue for 20,000 subscribers in many zones.

Run: pytest -m bench -s tests/bench/test_schedule_bench.py
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select

from dispatch import schedule as scheduling
from dispatch.compose.issues import load_issue
from dispatch.config import Settings
from dispatch.devtools.demo import generate_subscribers
from dispatch.store import imports
from dispatch.store.db import open_store
from dispatch.store.schema import outbox, sends, subscribers
from tests.helpers import EXAMPLE_ISSUE

pytestmark = pytest.mark.bench
SUBSCRIBERS = 20_000
WAITING = 1_000
ZONES = ["Asia/Seoul", "Asia/Tokyo", "Europe/Berlin", "Europe/London", "America/New_York",
         "America/Los_Angeles", "Australia/Sydney", "Pacific/Auckland", None]
NOW = datetime(2026, 11, 1, tzinfo=UTC)


def test_tick_and_local_time_launch(settings: Settings) -> None:
    engine = open_store(settings.store.url)
    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    imports.import_rows(engine, generate_subscribers(settings, issue.topics, SUBSCRIBERS), NOW)
    rng = random.Random(5)
    with engine.begin() as conn:
        ids = conn.execute(select(subscribers.c.id)).scalars().all()
        for sid in ids:
            conn.execute(subscribers.update().where(subscribers.c.id == sid)
                         .values(timezone=rng.choice(ZONES)))
        conn.execute(insert(sends), [
            {"issue": f"waiting-{i}", "subject": "s", "status": "scheduled", "recipients": 0,
             "created_at": NOW, "send_at": NOW + timedelta(days=30, minutes=i), "zone": "UTC"}
            for i in range(WAITING)])

    started = time.perf_counter()
    rounds = 20
    for _ in range(rounds):
        assert scheduling.tick(engine, settings, NOW) == []
    idle = (time.perf_counter() - started) / rounds

    settings = settings.model_copy(update={"schedule": settings.schedule.model_copy(
        update={"default_timezone": "UTC"})})
    started = time.perf_counter()
    _, when = scheduling.schedule_issue(engine, settings, EXAMPLE_ISSUE, at="2026-11-27 07:00",
                                        tz=None, local=True, now=NOW)
    scheduled = time.perf_counter() - started
    started = time.perf_counter()
    events = scheduling.tick(engine, settings, when.send_at)
    launch = time.perf_counter() - started
    assert [e.kind for e in events] == ["launched"]
    with engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(outbox)).scalar_one()
        releases = conn.execute(select(func.count(func.distinct(outbox.c.next_attempt_at))))\
            .scalar_one()
    print(f"\ntick with {WAITING:,} issues waiting and nothing due: {idle * 1000:.1f} ms")
    print(f"schedule --local-time (check renders every variant): {scheduled:.2f} s")
    print(f"local-time launch, {rows:,} recipients in {len(ZONES)} zones "
          f"({releases} distinct release times): {launch:.2f} s")
    # Seoul and Tokyo share +09:00, London and UTC share +00:00 in November: 7 instants.
    assert releases == 7
    engine.dispose()
