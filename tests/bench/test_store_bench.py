"""Store scale: import 100,000 generated subscribers from CSV, and count segments over
1,000,000 subscribers.

Run: pytest -m bench -s tests/bench/test_store_bench.py
"""

from __future__ import annotations

import random
import resource
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert

from dispatch.audience import csvio
from dispatch.config import Segment
from dispatch.store import imports
from dispatch.store.db import open_store
from dispatch.store.schema import subscriber_topics, subscribers
from dispatch.store.segments import segment_counts

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
TOPICS = ["east-asia", "diplomacy", "security", "technology", "economy"]
ZONES = ["Asia/Seoul", "Europe/Berlin", "America/New_York", ""]
SEGMENTS = {
    "asia": Segment(name="asia", topics=("east-asia",)),
    "security-and-tech": Segment(name="security-and-tech", topics=("security", "technology"),
                                 match="all"),
    "security-desk": Segment(name="security-desk", topics=("security", "diplomacy"),
                             exclude=("economy",)),
}


def generated_csv(n: int, rng: random.Random) -> str:
    lines = ["email,name,topics,timezone"]
    for i in range(n):
        topics = ";".join(rng.sample(TOPICS, rng.randint(1, 3)))
        lines.append(f"reader{i}@example.com,Reader {i},{topics},{rng.choice(ZONES)}")
    return "\n".join(lines) + "\n"


@pytest.mark.bench
def test_import_100k(store_url):
    rng = random.Random(1)
    text = generated_csv(100_000, rng)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    engine = open_store(store_url)
    start = time.perf_counter()
    rows, rejected, read = csvio.read_csv(text, dict.fromkeys(TOPICS))
    validated = time.perf_counter()
    report = imports.import_rows(engine, rows, NOW)
    elapsed = time.perf_counter() - start
    assert report.added == 100_000 and not rejected
    backend = store_url.split(":")[0]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n[{backend}] imported {read:,} rows in {elapsed:.1f} s: {read / elapsed:,.0f} rows/s "
          f"(validation {validated - start:.1f} s, "
          f"database {elapsed - (validated - start):.1f} s); "
          f"peak memory (process max RSS) {peak:.0f} MiB "
          f"({before / 1024:.0f} MiB before the import)")


@pytest.mark.bench
def test_segment_counts_1m(store_url):
    rng = random.Random(2)
    engine = open_store(store_url)
    total = 1_000_000
    start = time.perf_counter()
    with engine.begin() as conn:
        for base in range(0, total, 50_000):
            ids = range(base + 1, base + 50_001)
            conn.execute(insert(subscribers), [
                {"id": i, "email": f"r{i}@example.com", "email_key": f"r{i}@example.com",
                 "status": "active" if i % 20 else "unsubscribed", "created_at": NOW}
                for i in ids])
            conn.execute(insert(subscriber_topics), [
                {"subscriber_id": i, "topic": t} for i in ids
                for t in rng.sample(TOPICS, rng.randint(1, 3))])
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    counts = segment_counts(engine, SEGMENTS)
    elapsed = time.perf_counter() - start
    backend = store_url.split(":")[0]
    print(f"\n[{backend}] loaded {total:,} subscribers in {loaded:.0f} s; counted "
          f"{len(SEGMENTS)} segments in {elapsed:.2f} s ({elapsed / len(SEGMENTS):.2f} s each): "
          + ", ".join(f"{k}={v:,}" for k, v in counts.items()))
    assert all(v > 0 for v in counts.values())
