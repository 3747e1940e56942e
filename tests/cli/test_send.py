"""`dispatch send`, `status`, `worker` and `demo` as an operator runs them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from dispatch.devtools.sink import RecordingHandler, smtp_sink
from tests.helpers import EXAMPLE_ISSUE, prepare_project, run_cli


def test_send_confirms_then_delivers_and_status_reports_it(project: Path):
    handler = RecordingHandler()
    with smtp_sink(handler) as (_, port):
        emails = prepare_project(project, port)
        declined = run_cli(project, "send", EXAMPLE_ISSUE, stdin="n\n")
        assert declined.returncode == 1 and "Aborted" in declined.stdout + declined.stderr
        assert "recipient(s)" in declined.stdout and handler.received == []
        assert run_cli(project, "status").stdout.count(EXAMPLE_ISSUE) == 0  # nothing launched

        sent = run_cli(project, "send", EXAMPLE_ISSUE, stdin="y\n")
        assert sent.returncode == 0, sent.stderr
        assert len(handler.received) == len(emails)
        again = run_cli(project, "send", EXAMPLE_ISSUE, "--yes")
        assert again.returncode == 0 and "sent already" in again.stdout
        assert len(handler.received) == len(emails)

    status = run_cli(project, "status", EXAMPLE_ISSUE, "--json")
    report = json.loads(status.stdout)
    assert report[0]["status"] == "sent"
    assert report[0]["states"]["sent"] == len(emails) == report[0]["recipients"]
    missing = run_cli(project, "status", "no-such-issue")
    assert missing.returncode == 1 and "no send for this issue" in missing.stderr


def test_dry_run_from_the_command_line(project: Path):
    prepare_project(project, 1)  # nothing listens on port 1: a dry run must not connect
    result = run_cli(project, "send", EXAMPLE_ISSUE, "--dry-run", "--sample", "3",
                 "--out", "dry")
    assert result.returncode == 0, result.stderr
    assert "nothing sent, store unchanged" in result.stdout
    assert len(list((project / "dry").glob("*.eml"))) == 3
    report = json.loads((project / "dry" / "report.json").read_text())
    assert report["messages_built"] == report["recipients"] > 3
    assert run_cli(project, "status", "--json").stdout.strip() == "[]"


def test_unreachable_relay_pauses_with_a_clear_message_and_status_shows_it(project: Path):
    prepare_project(project, 1)
    config = project / "config.toml"  # retried for a second instead of five minutes
    config.write_text(re.sub(r"(?m)^session_patience = \d+", "session_patience = 1",
                             config.read_text()))
    result = run_cli(project, "send", EXAMPLE_ISSUE, "--yes")
    assert result.returncode == 1
    assert re.search(r"delivery: paused: the relay refuses us: no session with the relay for "
                     r"\d+ s .*cannot connect to 127\.0\.0\.1:1", result.stderr), result.stderr
    assert "Traceback" not in result.stderr
    status = run_cli(project, "status", EXAMPLE_ISSUE)
    assert "paused" in status.stdout
    test = run_cli(project, "send", EXAMPLE_ISSUE, "--test-to", "editor@example.net")
    assert test.returncode == 1 and "Traceback" not in test.stderr
    assert "smtp: test send failed: cannot connect to 127.0.0.1:1" in test.stderr, test.stderr


def test_demo_runs_the_whole_path(project: Path):
    result = run_cli(project, "demo", "--subscribers", "120", "--dir", "demo")
    assert result.returncode == 0, result.stderr
    assert "120 recipient(s) planned, 120 message(s) received" in result.stdout
    assert len(list((project / "demo" / "mailbox").glob("*.eml"))) == 5


def test_send_hands_over_to_a_running_sqlite_worker(project: Path):
    from dispatch.config import load_settings
    from dispatch.deliver.sending import worker_lock
    from dispatch.store.db import open_store

    prepare_project(project, 1)
    engine = open_store(load_settings(project / "config.toml").store.url)
    with worker_lock(engine):  # as a running `dispatch worker` holds it
        result = run_cli(project, "send", EXAMPLE_ISSUE, "--yes")
        second = run_cli(project, "worker", "--until-done")
    assert result.returncode == 0, result.stderr
    assert "is delivering from this store and will send them" in result.stdout
    assert second.returncode == 1 and "one worker at a time" in second.stderr


def test_an_unset_password_variable_stops_send_before_anything_happens(project: Path,
                                                                       monkeypatch):
    handler = RecordingHandler()
    with smtp_sink(handler) as (_, port):
        prepare_project(project, port)
        config = project / "config.toml"
        config.write_text(config.read_text().replace(
            '# username = "dispatch"\n# password_env', 'username = "dispatch"\npassword_env'))
        monkeypatch.delenv("DISPATCH_SMTP_PASSWORD", raising=False)
        for args in (("send", EXAMPLE_ISSUE, "--yes"), ("worker", "--until-done"),
                     ("send", EXAMPLE_ISSUE, "--test-to", "editor@example.net")):
            result = run_cli(project, *args)
            assert result.returncode == 2, (args, result.stderr)
            assert result.stderr == ("smtp.password_env: the environment variable "
                                     "DISPATCH_SMTP_PASSWORD is not set: set it to the SMTP "
                                     "password\n"), (args, result.stderr)
        assert handler.received == []  # refused before connecting: nothing sent
    assert run_cli(project, "status", "--json").stdout.strip() == "[]"  # nothing launched


def test_status_at_80_columns_names_every_column_and_who_was_skipped(project: Path):
    env = {**os.environ, "COLUMNS": "80"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dispatch", *args], cwd=project, env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    (project / "r.csv").write_text("email,name,topics\nbo@example.com,Bo,security\n"
                                   "no@example.com,No,\n")
    assert run("subscribers", "import", "r.csv").returncode == 0
    rehearsal = run("send", EXAMPLE_ISSUE, "--dry-run")
    assert "skipped 1: no topics chosen" in rehearsal.stdout
    assert run("send", EXAMPLE_ISSUE, "--launch-only", "--yes").returncode == 0
    shown = run("status")
    assert shown.returncode == 0, shown.stderr
    assert "…" not in shown.stdout and "~confirmations" not in shown.stdout
    assert all(len(line) <= 80 for line in shown.stdout.splitlines())
    for column in ("queued 1", "sending 0", "retrying 0", "bounced 0", "skipped 1"):
        assert column in shown.stdout
    assert f"{EXAMPLE_ISSUE}: skipped 1: no topics chosen" in shown.stdout
    wide = subprocess.run([sys.executable, "-m", "dispatch", "status"], cwd=project,
                          env={**env, "COLUMNS": "160"}, capture_output=True, text=True,
                          timeout=120, check=False).stdout
    assert "retrying" in wide and "┃ skipped ┃" in wide  # a table when it fits
