"""Killing `dispatch send` at random moments, SIGKILL included, and running it again: every
recipient gets the message, and only messages in flight at a kill may arrive twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from dispatch.config import load_settings
from dispatch.devtools.sink import RecordingHandler, smtp_sink
from dispatch.store.db import open_store
from dispatch.store.outbox import state_counts
from tests.helpers import (
    EXAMPLE_ISSUE,
    PREPARED_CONNECTIONS,
    PREPARED_RECIPIENTS,
    prepare_project,
)

# delivery.deliver claims max(25, connections * 25) rows whenever it holds no more than that,
# so a worker never holds more than twice that many: the bound on messages in flight.
IN_FLIGHT_BOUND = 2 * max(25, PREPARED_CONNECTIONS * 25)


def start_send(project: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "dispatch", "send", EXAMPLE_ISSUE, "--yes"],
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def wait_for(handler: RecordingHandler, count: int, proc: subprocess.Popen[str]) -> bool:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(handler.received) >= count:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    raise AssertionError(f"no progress: {len(handler.received)} received")


def test_sigkill_at_random_points_then_restart_loses_nobody(project: Path):
    rng = random.Random(int(os.environ.get("DISPATCH_CRASH_SEED", "5")))
    handler = RecordingHandler()
    with smtp_sink(handler) as (_, port):
        emails = prepare_project(project, port)
        kills = 0
        while True:
            proc = start_send(project)
            target = len(handler.received) + rng.randint(20, 300)
            if kills < 4 and wait_for(handler, target, proc):
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                kills += 1
                continue
            output, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0, output
            break
    received = Counter(r.recipient for r in handler.received)
    duplicates = sum(received.values()) - len(received)
    print(f"\n{kills} SIGKILLs, {len(handler.received)} deliveries, {duplicates} duplicate(s)")
    assert kills == 4
    assert set(received) == set(emails)  # nobody skipped
    assert duplicates <= kills * IN_FLIGHT_BOUND
    assert max(received.values()) <= 1 + kills
    settings = load_settings(project / "config.toml")
    engine = open_store(settings.store.url)
    assert state_counts(engine)[EXAMPLE_ISSUE] == {"sent": PREPARED_RECIPIENTS}


def test_sigterm_stops_cleanly_and_a_rerun_sends_no_duplicate(project: Path):
    handler = RecordingHandler()
    with smtp_sink(handler) as (_, port):
        emails = prepare_project(project, port)
        proc = start_send(project)
        assert wait_for(handler, 200, proc)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 1 and "run `dispatch send" in output, output
        settings = load_settings(project / "config.toml")
        engine = open_store(settings.store.url)
        counts = state_counts(engine)[EXAMPLE_ISSUE]
        assert "sending" not in counts  # nothing left half-claimed
        assert counts["sent"] == len(handler.received) < PREPARED_RECIPIENTS
        proc = start_send(project)
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, output
    assert Counter(r.recipient for r in handler.received) == {e: 1 for e in emails}
