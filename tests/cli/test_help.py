"""Help as a newcomer reads it at 80 columns, and every example in it run for real."""

from __future__ import annotations

import glob
import re
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from dispatch.cli import app
from tests.helpers import EXAMPLE_ISSUE

FIXTURES = Path(__file__).parents[1] / "fixtures" / "inbound"

# Each of these sends mail or runs until stopped: their examples are read, not run.
NOT_RUN = {"run": "the daemon runs until stopped and sends mail",
           "serve": "serves the web app until stopped",
           "worker": "delivers queued mail over SMTP",
           "users add": "asks for the new account's password at a prompt",
           "users reset": "asks for the new password at a prompt",
           "inbound serve": "receives mail until stopped",
           "sink": "receives mail until stopped (tests/cli/test_start.py runs it)",
           "inbound poll": "polls an IMAP mailbox the example project does not configure"}


def command_paths() -> list[str]:
    paths: list[str] = []

    def walk(prefix: str, command: object) -> None:
        paths.append(prefix)
        for name, sub in getattr(command, "commands", {}).items():
            walk(f"{prefix} {name}".strip(), sub)

    walk("", get_command(app))
    return paths


def help_text(path: str) -> str:
    result = CliRunner().invoke(app, [*path.split(), "--help"], env={"COLUMNS": "80"},
                                terminal_width=80, prog_name="dispatch")
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: p or "root")
def test_help_reads_as_sentences_at_80_columns(path):
    text = help_text(path)
    for line in text.split("\n"):
        assert len(line) <= 80, f"{path}: {line!r}"
    # No value named by its Python type, no command description cut off mid-sentence.
    assert not re.search(r"<(str|bool|int|float|path|int range)>", text), text
    assert "..." not in re.sub(r"(\[ARGS\]|[}\]])\.\.\.", "", text), text
    assert "[default: no-" not in text and "[default: False]" not in text, text


def test_values_have_readable_names():
    assert "--at WHEN" in help_text("schedule move")
    assert "--tz ZONE" in help_text("schedule add")
    assert "-c, --config PATH" in help_text("check")
    send = help_text("send")
    assert "{ISSUE}" in send and "  ISSUE  " in send
    assert re.search(r"^  --dry-run  ", send, re.MULTILINE)  # a flag shows no value
    assert "Usage: dispatch check [OPTIONS] [PATH]" in help_text("check")


def examples() -> dict[str, str]:
    found = {}
    groups = {p for p in command_paths() if any(o.startswith(p + " ") for o in command_paths())}
    for path in sorted(set(command_paths()) - (groups - {""})):
        match = re.search(r"Example:\s*(dispatch [^\n]+)", help_text(path))
        assert match, f"{path or 'dispatch'} has no example in its help"
        found[path] = match[1].strip()
    return found


def future(example: str) -> str:
    """The schedule examples name a date; once it has passed, the same one a year on."""
    def later(match: re.Match[str]) -> str:
        when = datetime.fromisoformat(match[1]).replace(tzinfo=UTC)
        years = max(0, datetime.now(UTC).year - when.year + 1) if when < datetime.now(UTC) else 0
        return f'"{when.year + years}{match[1][4:]}"'
    return re.sub(r'"(\d{4}-\d\d-\d\d \d\d:\d\d)"', later, example)


def test_every_example_in_help_works(project):
    """Each example, as printed, against a copy of the example project, in an order where
    each finds what it needs (a subscriber to change, a send to pause)."""
    found = examples()

    def run(command: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        args = shlex.split(command)
        assert args[0] == "dispatch"
        # Globs (returned/*.eml) expand as a shell would expand them.
        args = [m for a in args[1:] for m in (sorted(glob.glob(str(project / a))) or [a])]
        return subprocess.run([sys.executable, "-m", "dispatch", *args], cwd=project,
                               capture_output=True, text=True, timeout=600, check=False,
                               input=stdin)

    (project / "pasted.txt").write_text("Harbor Cranes Return\n\nThe cranes came back to "
                                        "Busan on Monday.\n\nDetails\n\nThree were fixed.\n")
    (project / "returned").mkdir()
    (project / "returned" / "one.eml").write_bytes(
        (FIXTURES / "postfix-user-unknown.eml").read_bytes())
    vacation = (FIXTURES / "vacation-auto-submitted.eml").read_bytes()
    (project / "bounces.mbox").write_bytes(b"From MAILER-DAEMON Sun Nov 22 06:00:00 2026\n"
                                           + vacation)
    (project / "readers.csv").write_text("email,name,topics\nbo@example.com,Bo,security\n")
    setup = {
        "subscribers import": ["dispatch subscribers import readers.csv"],
        "pause": [f"dispatch send {EXAMPLE_ISSUE} --launch-only --yes"],
        "users set-role": ["dispatch users add ana@example.org --role editor --password-stdin"],
    }
    stdin = {"users set-role": "correct horse battery staple\n"}
    order = ["", "check", "init", "issue new", "brief new", "brief import", "preview",
             "db upgrade", "subscribers add", "subscribers import", "subscribers export",
             "subscribers list", "subscribers set", "segments", "demo", "send",
             "schedule add", "schedule list", "schedule move", "schedule cancel",
             "pause", "status", "inbound process", "archive hide", "archive show", "resume",
             "subscribers forget", "users set-role", "users list", "users disable"]
    assert set(found) - set(NOT_RUN) == set(order), "every example is run or skipped"
    for path in order:
        for step in setup.get(path, []):
            done = run(step, stdin.get(path))
            assert done.returncode == 0, f"setup {step}: {done.stdout}{done.stderr}"
        command = future(found[path])
        result = run(command)
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    assert (project / "news" / "config.toml").is_file()
    assert (project / "inbox" / "ferry-service-resumes.md").is_file()
    assert (project / "issues" / "next" / "harbor-cranes-return.md").is_file()


def test_examples_are_runnable_as_printed():
    """The example line is the command, whole: never wrapped across lines."""
    for path, example in examples().items():
        assert shlex.split(example)[0] == "dispatch", path
        if path and path not in ("schedule",):
            assert example.startswith(f"dispatch {path}") or path == "schedule add", example


def test_schedule_example_date_helper():
    assert future('dispatch x --at "2999-12-01 07:00"') == 'dispatch x --at "2999-12-01 07:00"'
    assert future('x --at "2001-12-01 07:00"').startswith(
        f'x --at "{datetime.now(UTC).year + 1}-12-01')


def test_help_paths_cover_every_command():
    assert {"init", "issue new", "brief new", "status"} <= set(command_paths())
