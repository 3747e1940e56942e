"""Delivery throughput: 20,000 messages of the example issue to Postfix's smtp-sink on
localhost, beside Postfix's own smtp-source sending the same message size over the same
number of connections. The target is a ratio of at least 0.8 (issue 17).

Needs Debian's postfix package for smtp-sink and smtp-source (tests/install-services.sh
installs it without starting the postfix daemon).

The second benchmark runs 1, 2 and 4 worker processes on one PostgreSQL
(DISPATCH_TEST_PG_URL) and prints their combined rate.

Run: pytest -m bench -s tests/bench/test_delivery_bench.py
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dispatch.compose.issues import load_issue
from dispatch.config import Settings
from dispatch.deliver.sending import dry_run, launch_issue, run_worker
from dispatch.deliver.transport import smtp_transport
from dispatch.devtools.demo import generate_subscribers
from dispatch.devtools.sink import free_port
from dispatch.store import imports
from dispatch.store.db import open_store
from dispatch.store.launch import plan_audience
from dispatch.store.progress import state_counts
from dispatch.store.schema import outbox
from tests.helpers import EXAMPLE_ISSUE, PG_URL, reset_postgres

MESSAGES = int(os.environ.get("DISPATCH_BENCH_MESSAGES", "20000"))
CONNECTIONS = 4
SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"

pytestmark = pytest.mark.skipif(not (os.path.exists(SINK) and os.path.exists(SOURCE)),
                                reason="Postfix's smtp-sink/smtp-source not installed "
                                       "(apt-get install postfix)")


@pytest.fixture
def sink() -> Iterator[int]:
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    proc = subprocess.Popen([SINK, *user, f"127.0.0.1:{port}", "1024"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.3)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    yield port
    proc.terminate()
    proc.wait(timeout=10)


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.bench
def test_dispatch_against_postfix_smtp_source(sink: int, settings: Settings, tmp_path: Path):
    settings = settings.model_copy(update=dict(
        smtp=settings.smtp.model_copy(update=dict(host="127.0.0.1", port=sink,
                                                  security="none")),
        delivery=settings.delivery.model_copy(update=dict(connections=CONNECTIONS, rate=0.0))))
    engine = open_store(f"sqlite:///{tmp_path / 'bench.db'}")
    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    now = datetime.now(UTC)
    imports.import_rows(engine, generate_subscribers(settings, issue.topics, MESSAGES), now)
    sizes = dry_run(engine, issue, settings, tmp_path / "dry", now, sample=0).data["variants"]
    mean_size = sum(v["message_bytes"]["mean"] * v["recipients"] for v in sizes) // MESSAGES

    started = time.perf_counter()
    assert launch_issue(engine, issue, plan_audience(engine, issue, settings), settings, now)
    launched = time.perf_counter()
    cpu_before = cpu()
    stats = run_worker(engine, settings, smtp_transport(settings.smtp), issue=issue.slug)
    elapsed = time.perf_counter() - launched
    cpu_used = cpu() - cpu_before
    assert state_counts(engine)[issue.slug] == {"sent": MESSAGES}, stats
    ours = MESSAGES / elapsed

    source_started = time.perf_counter()
    source = subprocess.run(
        [SOURCE, "-s", str(CONNECTIONS), "-m", str(MESSAGES), "-l", str(mean_size), "-d",
         "-f", "briefs@example.org", "-t", "reader@example.com", f"127.0.0.1:{sink}"],
        check=False, capture_output=True, text=True, timeout=600)
    source_elapsed = time.perf_counter() - source_started
    assert source.returncode == 0, source.stderr
    theirs = MESSAGES / source_elapsed

    print(f"\n{MESSAGES:,} messages, mean {mean_size / 1024:.1f} KB, {CONNECTIONS} connections "
          f"to Postfix smtp-sink on 127.0.0.1")
    print(f"  launch (snapshot + render {len(sizes)} variants): {launched - started:.2f} s")
    print(f"  dispatch:            {ours:8,.0f} msg/s ({elapsed:.2f} s; "
          f"{cpu_used / MESSAGES * 1e6:.0f} µs CPU per message in this process)")
    print(f"  Postfix smtp-source: {theirs:8,.0f} msg/s ({source_elapsed:.2f} s)")
    print(f"  ratio dispatch / smtp-source: {ours / theirs:.2f} (target ≥ 0.8)")


def _worker(url: str, settings: Settings, issue: str) -> None:
    """One worker process: its own engine and registration, as `dispatch worker` has."""
    engine = open_store(url)
    run_worker(engine, settings, smtp_transport(settings.smtp), issue=issue)


@pytest.mark.bench
def test_several_workers_on_one_postgresql(sink: int, settings: Settings):
    """1, 2 and 4 worker processes (4 connections each) deliver one send from one PostgreSQL:
    the combined rate, and every row sent once with one attempt (no row claimed twice)."""
    if (reason := reset_postgres(PG_URL)) is not None:
        pytest.skip(f"PostgreSQL not reachable at DISPATCH_TEST_PG_URL: {reason}")
    settings = settings.model_copy(update=dict(
        smtp=settings.smtp.model_copy(update=dict(host="127.0.0.1", port=sink,
                                                  security="none")),
        delivery=settings.delivery.model_copy(update=dict(connections=CONNECTIONS, rate=0.0))))
    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    fork = multiprocessing.get_context("fork")
    print(f"\n{MESSAGES:,} messages, {CONNECTIONS} connections per worker, one PostgreSQL, "
          f"Postfix smtp-sink on 127.0.0.1")
    for workers in (1, 2, 4):
        reset_postgres(PG_URL)
        engine = open_store(PG_URL)
        now = datetime.now(UTC)
        imports.import_rows(engine, generate_subscribers(settings, issue.topics, MESSAGES), now)
        assert launch_issue(engine, issue, plan_audience(engine, issue, settings), settings, now)
        engine.dispose()  # forked children must not share its connections
        started = time.perf_counter()
        procs = [fork.Process(target=_worker, args=(PG_URL, settings, issue.slug))
                 for _ in range(workers)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=600)
            assert proc.exitcode == 0
        elapsed = time.perf_counter() - started
        engine = open_store(PG_URL)
        assert state_counts(engine)[issue.slug] == {"sent": MESSAGES}
        with engine.connect() as conn:
            attempts = conn.execute(select(func.max(outbox.c.attempts))).scalar_one()
        engine.dispose()
        assert attempts == 1  # no row went out twice
        print(f"  {workers} worker(s): {MESSAGES / elapsed:8,.0f} msg/s combined "
              f"({elapsed:.2f} s, start-up included)")
