"""`dispatch run` in real time: a real daemon process, a real SMTP server, SIGTERM to stop; and
the scheduling commands as an editor types them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from dispatch import schedule as scheduling
from dispatch.config import load_settings
from dispatch.devtools.sink import RecordingHandler, smtp_sink
from dispatch.store.db import open_store
from dispatch.store.sends import get_send
from tests.helpers import EXAMPLE_ISSUE, eventually, prepare_project, run_cli

GUARD = 120.0  # seconds: a failure guard for a loaded machine, never what a test measures


class StampingHandler(RecordingHandler):
    """Also notes when each message arrived (wall clock)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[float] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.arrivals.append(time.time())
        return await super().handle_DATA(server, session, envelope)


def start_run(project: Path) -> tuple[subprocess.Popen[str], Path]:
    """`dispatch run` in `project`, logging to run.log, once it has said it is up (or died)."""
    log_path = project / "run.log"
    with log_path.open("w") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "dispatch", "run"], cwd=project,
                                  stdout=log, stderr=subprocess.STDOUT, text=True)
    if not eventually(lambda: "dispatch run:" in log_path.read_text()
                      or daemon.poll() is not None, GUARD):
        daemon.kill()  # never leave a daemon behind a failed test
        raise AssertionError(log_path.read_text())
    return daemon, log_path


def test_the_daemon_sends_a_scheduled_issue_on_time_and_stops_on_sigterm(project: Path):
    handler = StampingHandler()
    with smtp_sink(handler) as (_, port):
        emails = prepare_project(project, port)
        config = project / "config.toml"
        text = config.read_text()
        assert '\ngrace = "1h"' in text
        config.write_text(text.replace('\ngrace = "1h"', '\ngrace = "1h"\nsync = 1'))
        daemon, log_path = start_run(project)
        try:
            assert daemon.poll() is None, log_path.read_text()
            # From another "shell": two seconds ahead, with seconds and an offset.
            settings = load_settings(config)
            engine = open_store(settings.store.url)
            at = datetime.now(UTC).astimezone(timezone(timedelta(hours=9))) \
                + timedelta(seconds=2)
            scheduling.schedule_issue(engine, settings, EXAMPLE_ISSUE, at=at.isoformat(),
                                      tz=None, local=False, now=datetime.now(UTC))
            assert eventually(lambda: len(handler.received) >= len(emails), GUARD), \
                (len(handler.received), log_path.read_text())
            # Anything doubled would have gone out before the daemon exits: it finishes
            # what is in flight, and the send is finished in the store first.
            assert eventually(lambda: get_send(engine, EXAMPLE_ISSUE).status == "sent", GUARD)
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=GUARD) == 0, log_path.read_text()
        finally:
            if daemon.poll() is None:
                daemon.kill()
    log_text = log_path.read_text()
    assert sorted(r.recipient for r in handler.received) == sorted(emails)
    print(f"\nfirst message {min(handler.arrivals) - at.timestamp():.2f} s after its time, "
          f"all {len(emails):,} within {max(handler.arrivals) - at.timestamp():.2f} s")
    assert min(handler.arrivals) >= at.timestamp() - 0.05, "sent before its time"
    send = get_send(engine, EXAMPLE_ISSUE)
    assert send.launched_at is not None and send.send_at is not None
    assert send.launched_at >= send.send_at, "launched before its time"
    # How late it started depends on the machine's load: a failure guard only.
    assert min(handler.arrivals) <= at.timestamp() + GUARD, "never started"
    assert f"{EXAMPLE_ISSUE}: launched: {len(emails):,} recipient(s)" in log_text
    assert "dispatch run: stopped" in log_text and "Traceback" not in log_text
    assert get_send(engine, EXAMPLE_ISSUE).status == "sent"
    engine.dispose()


def test_sighup_reloads_the_schedules_and_a_bad_file_keeps_the_old_ones(project: Path):
    prepare_project(project, 1)  # nothing is sent here
    config = project / "config.toml"
    text = config.read_text()
    # No sync tick during the test: only the signal can bring the change in.
    text = text.replace('\ngrace = "1h"', '\ngrace = "1h"\nsync = 3600')
    config.write_text(text)
    weekly = ('\n[[schedules]]\nname = "weekly"\ncron = "0 7 * * fri"\nfolder = "inbox"\n'
              'subject = "Digest"\n')
    daemon, log_path = start_run(project)
    try:
        config.write_text(text + weekly)
        daemon.send_signal(signal.SIGHUP)
        assert eventually(lambda: "config.toml reloaded (SIGHUP): 1 recurring schedule(s): "
                          "weekly" in log_path.read_text(), GUARD), log_path.read_text()

        config.write_text(text + weekly.replace("0 7 * * fri", "0 7 * * someday"))
        daemon.send_signal(signal.SIGHUP)
        assert eventually(lambda: "not reloaded (SIGHUP)" in log_path.read_text(), GUARD), \
            log_path.read_text()
        assert daemon.poll() is None
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=GUARD) == 0, log_path.read_text()
    finally:
        if daemon.poll() is None:
            daemon.kill()
    log_text = log_path.read_text()
    error = next(line for line in log_text.splitlines() if "not reloaded (SIGHUP)" in line)
    assert " ERROR " in error and "keeping the 1 recurring schedule(s) in use" in error
    line = (text + weekly).count("\n") - 2
    assert f"config.toml:{line}: schedules[0].cron:" in log_text, log_text
    assert "Traceback" not in log_text


def test_schedule_commands_as_an_editor_types_them(project: Path):
    prepare_project(project, 1)  # nothing is sent here
    bad = run_cli(project, "schedule", EXAMPLE_ISSUE, "--at", "2020-01-01 07:00")
    assert bad.returncode == 1 and "is in the past" in bad.stderr and "Traceback" not in bad.stderr

    made = run_cli(project, "schedule", EXAMPLE_ISSUE, "--at", "2099-12-01 07:00",
               "--tz", "Asia/Seoul")
    assert made.returncode == 0, made.stderr
    assert "2099-12-01 07:00 Asia/Seoul (2099-11-30 22:00 UTC)" in made.stdout
    assert "no `dispatch run` daemon is running" in made.stderr

    listed = run_cli(project, "schedule", "list")
    assert listed.returncode == 0
    row = next(line for line in listed.stdout.splitlines() if EXAMPLE_ISSUE in line)
    assert "scheduled" in row and "2099-12-01 07:00" in row and "2099-11-30 22:00" in row

    moved = run_cli(project, "schedule", "move", EXAMPLE_ISSUE, "--at", "2099-12-02T08:15:00+09:00")
    assert moved.returncode == 0 and "2099-12-01 23:15 UTC" in moved.stdout, moved.stderr
    data = json.loads(run_cli(project, "schedule", "list", "--json").stdout)
    assert data["sends"][0]["send_at"] == "2099-12-01T23:15:00+00:00"

    paused = run_cli(project, "pause", EXAMPLE_ISSUE)
    assert paused.returncode == 1 and "only a send in progress can be paused" in paused.stderr
    cancelled = run_cli(project, "schedule", "cancel", EXAMPLE_ISSUE)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    listed = run_cli(project, "schedule", "list", "--json")
    assert json.loads(listed.stdout)["sends"][0]["status"] == "cancelled"

    local = run_cli(project, "schedule", "add", EXAMPLE_ISSUE, "--at", "2099-12-03 07:00",
                "--local-time")
    assert local.returncode == 0, local.stderr
    assert "in each subscriber's zone" in local.stdout and "Asia/Seoul: 2099-12-02 22:00 UTC" \
        in local.stdout
    send = run_cli(project, "send", EXAMPLE_ISSUE, "--yes")
    assert send.returncode == 1 and "schedule cancel" in send.stderr
