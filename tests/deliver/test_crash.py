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
from dispatch.store.progress import state_counts
from tests.helpers import (
    EXAMPLE_ISSUE,
    PREPARED_CONNECTIONS,
    PREPARED_RECIPIENTS,
    prepare_project,
)
from tests.smtp_server import PipeliningRecorder

# A connection writes a message's final dot only once the outcome of the message before it
# is committed (deliver/worker.py), so a SIGKILL can leave at most one accepted-but-unrecorded
# message per connection: the bound on duplicates per kill.
DUPLICATES_PER_KILL = PREPARED_CONNECTIONS


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
        time.sleep(0.002)
    raise AssertionError(f"no progress: {len(handler.received)} received")


def kill_and_restart(project: Path, kills: int, seed: int,
                     handler: RecordingHandler | None = None) -> None:
    """SIGKILL `dispatch send` `kills` times, each after a random number of deliveries, then
    let it finish: nobody lost, and at most one duplicate per connection per kill."""
    rng = random.Random(seed)
    handler = handler or RecordingHandler()
    spread = max(20, PREPARED_RECIPIENTS // (kills + 2))
    with smtp_sink(handler) as (_, port):
        emails = prepare_project(project, port)
        killed = 0
        while True:
            proc = start_send(project)
            target = len(handler.received) + rng.randint(5, spread)
            if killed < kills and wait_for(handler, target, proc):
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                killed += 1
                continue
            output, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0, output
            break
    received = Counter(r.recipient for r in handler.received)
    duplicates = sum(received.values()) - len(received)
    print(f"\n{killed} SIGKILLs over {PREPARED_CONNECTIONS} connections (seed {seed}): "
          f"{len(handler.received):,} deliveries to {len(received):,} recipients, "
          f"{duplicates} duplicate(s) (bound {killed * DUPLICATES_PER_KILL}: one per "
          f"connection per kill), {len(set(emails) - set(received))} lost")
    assert killed == kills
    assert set(received) == set(emails)  # nobody lost
    assert duplicates <= killed * DUPLICATES_PER_KILL
    assert max(received.values()) <= 1 + killed
    settings = load_settings(project / "config.toml")
    engine = open_store(settings.store.url)
    assert state_counts(engine)[EXAMPLE_ISSUE] == {"sent": PREPARED_RECIPIENTS}


def test_sigkill_at_a_dozen_random_points_loses_nobody_and_duplicates_one_per_connection(
        project: Path):
    # About 20 s; DISPATCH_CRASH_KILLS and DISPATCH_CRASH_SEED try other schedules.
    kill_and_restart(project, kills=int(os.environ.get("DISPATCH_CRASH_KILLS", "12")),
                     seed=int(os.environ.get("DISPATCH_CRASH_SEED", "7")))


def test_sigkill_with_pipelining_duplicates_no_more(project: Path):
    # The next envelope rides on each final dot; the dot itself still waits for the last
    # outcome to be stored, so the bound is the same.
    handler = PipeliningRecorder()
    kill_and_restart(project, kills=int(os.environ.get("DISPATCH_CRASH_KILLS", "12")),
                     seed=int(os.environ.get("DISPATCH_CRASH_SEED", "7")) + 1, handler=handler)
    assert handler.ahead > 0


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
