"""CSV import, streamed: `dispatch subscribers import`'s library path (csvio.CsvFile →
iter_csv → imports.import_rows) on a generated file, against the peer measured in the same
run — the database's own bulk load of the same valid rows, ready-made: COPY on PostgreSQL,
executemany in one transaction on SQLite. Targets: time ≤ 2.0 × the peer's; peak RSS
≤ 150 MB and flat from 100,000 to 1,000,000 rows (the import runs in a child process: its
own peak RSS, VmHWM).

    pytest -m "bench and not slow" -s tests/bench/test_import_bench.py   # 100,000 rows
    pytest -m bench -s tests/bench/test_import_bench.py                  # and 1,000,000
(PostgreSQL: DISPATCH_TEST_PG_URL names a database this benchmark may empty.)
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from dispatch.audience.addresses import email_hash
from dispatch.store.db import open_store
from tests.helpers import ROOT, reset_postgres

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
TOPICS = ["east-asia", "diplomacy", "security", "technology", "economy"]
ZONES = ["Asia/Seoul", "Europe/Berlin", "America/New_York", ""]

CHILD = """
import json, sys, time
def peak_mb():
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking pytest.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
from datetime import UTC, datetime
from pathlib import Path
from dispatch.audience import csvio
from dispatch.store import imports
from dispatch.store.db import open_store
url, path = sys.argv[1:3]
topics = dict.fromkeys(sys.argv[3].split(","))
engine = open_store(url)
start = time.perf_counter()
with csvio.CsvFile(Path(path)) as lines:
    report = imports.import_rows(engine, csvio.iter_csv(lines, topics, lines.source),
                                 datetime(2026, 11, 21, 9, 0, tzinfo=UTC))
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "read": report.read, "added": report.added,
                  "rejected": len(report.rejected),
                  "rss_mb": peak_mb()}))
"""


def write_csv(path: Path, n: int) -> list[tuple[str, str, str, str]]:
    """n rows, every one valid; (email, name, topics, zone) of each."""
    rng = random.Random(1)
    rows = []
    with path.open("w", encoding="utf-8") as out:
        out.write("email,name,topics,timezone\n")
        for i in range(n):
            row = (f"reader{i}@example{i % 97}.com", f"Reader {i}",
                   ";".join(rng.sample(TOPICS, rng.randint(1, 3))), rng.choice(ZONES))
            out.write(",".join(row) + "\n")
            rows.append(row)
    return rows


def peer(engine: Engine, rows: list[tuple[str, str, str, str]]) -> float:
    """The same valid rows, ready-made, through the database's own bulk path."""
    people = [(i, e, e.lower(), email_hash(e.lower()), name, zone or None, "active", NOW, NOW)
              for i, (e, name, _, zone) in enumerate(rows, 1)]
    topics = [(i, t) for i, (_, _, ts, _) in enumerate(rows, 1) for t in ts.split(";")]
    columns = ("id, email, email_key, email_hash, name, timezone, status, created_at, "
               "confirmed_at")
    start = time.perf_counter()
    with engine.begin() as conn:
        driver = conn.connection.driver_connection
        if engine.dialect.name == "postgresql":
            cursor = driver.cursor()
            with cursor.copy(f"COPY subscribers ({columns}) FROM STDIN") as copy:
                for person in people:
                    copy.write_row(person)
            with cursor.copy("COPY subscriber_topics (subscriber_id, topic) FROM STDIN") as copy:
                for pair in topics:
                    copy.write_row(pair)
        else:
            stamp = NOW.strftime("%Y-%m-%d %H:%M:%S.%f")
            conn.exec_driver_sql(
                f"INSERT INTO subscribers ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(*p[:7], stamp, stamp) for p in people])
            conn.exec_driver_sql(
                "INSERT INTO subscriber_topics (subscriber_id, topic) VALUES (?, ?)", topics)
    return time.perf_counter() - start


@pytest.mark.bench
@pytest.mark.parametrize("n", [100_000, pytest.param(1_000_000, marks=pytest.mark.slow)])
def test_import(store_url, tmp_path, n):
    path = tmp_path / "readers.csv"
    rows = write_csv(path, n)
    pg = store_url.startswith("postgresql")
    peer_url = store_url if pg else f"sqlite:///{tmp_path / 'peer.db'}"
    engine = open_store(peer_url)
    bare = peer(engine, rows)
    engine.dispose()
    del rows
    if pg:  # the import gets the same empty database the peer had
        reset_postgres(store_url)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    child = subprocess.run([sys.executable, "-c", CHILD, store_url, str(path), ",".join(TOPICS)],
                           capture_output=True, text=True, env=env)
    assert child.returncode == 0, child.stderr
    got = json.loads(child.stdout)
    assert got["added"] == n and got["rejected"] == 0
    backend = "postgresql" if pg else "sqlite"
    ours = got["seconds"]
    print(f"\n[{backend}] import {n:,} rows ({path.stat().st_size / 1e6:.0f} MB CSV): "
          f"{ours:.1f} s, {n / ours:,.0f} rows/s; the database's own bulk load of the same "
          f"valid rows ({'COPY' if pg else 'executemany'}): {bare:.1f} s, {n / bare:,.0f} "
          f"rows/s; ratio {ours / bare:.2f} (target ≤ 2.0)")
    print(f"[{backend}] import process peak RSS {got['rss_mb']:.0f} MB (target ≤ 150 MB, "
          f"the same at every size); machine load {os.getloadavg()[0]:.2f} (1 min)")
