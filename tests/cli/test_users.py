"""`dispatch users …` as an admin runs it on the server: passwords only from standard input
or a prompt, every change in the audit log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dispatch.config import load_settings
from dispatch.store import accounts, audit
from dispatch.store.db import open_store

PASSWORD = "correct horse battery staple"


def run(project: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dispatch", *args], cwd=project, input=stdin,
                          check=False, capture_output=True, text=True, timeout=120)


def test_accounts_are_managed_from_the_command_line(project: Path):
    added = run(project, "users", "add", "Ana@Example.org", "--role", "editor",
                "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert "added ana@example.org (editor)" in added.stdout
    assert run(project, "users", "set-role", "ana@example.org", "operator").returncode == 0
    assert run(project, "users", "disable", "ana@example.org").returncode == 0
    listed = run(project, "users", "list")
    assert "ana@example.org" in listed.stdout and "operator" in listed.stdout
    assert "disabled" in listed.stdout
    assert run(project, "users", "disable", "ana@example.org", "--enable").returncode == 0
    reset = run(project, "users", "reset", "ana@example.org", "--password-stdin",
                stdin="another long passphrase\n")
    assert reset.returncode == 0, reset.stderr
    engine = open_store(load_settings(project / "config.toml").store.url)
    assert accounts.authenticate(engine, "ana@example.org", "another long passphrase", "t",
                                 accounts.require_user(engine, "ana@example.org").created_at,
                                 limit=10, window=__import__("datetime").timedelta(1))
    assert [e.action for e in reversed(audit.entries(engine))] == [
        "user.add", "user.set-role", "user.disable", "user.enable", "user.reset"]
    assert all(e.actor.startswith("cli:") for e in audit.entries(engine))
    engine.dispose()


def test_a_password_is_never_an_argument_and_bad_input_changes_nothing(project: Path):
    as_argument = run(project, "users", "add", "bo@example.org", "--role", "editor",
                      "--password", PASSWORD)
    assert as_argument.returncode != 0 and "No such option" in as_argument.stderr
    no_terminal = run(project, "users", "add", "bo@example.org", "--role", "editor")
    assert no_terminal.returncode == 1
    assert "no terminal to prompt on: use --password-stdin" in no_terminal.stderr
    short = run(project, "users", "add", "bo@example.org", "--role", "editor",
                "--password-stdin", stdin="short\n")
    assert "password: at least 12 characters" in short.stderr
    role = run(project, "users", "add", "bo@example.org", "--role", "boss",
               "--password-stdin", stdin=PASSWORD + "\n")
    assert "--role: expected one of editor, operator, admin, got 'boss'" in role.stderr
    assert "users" not in run(project, "users", "list").stderr
    assert "0 account(s)" in run(project, "users", "list").stdout
    missing = run(project, "users", "set-role", "nobody@example.org", "admin")
    assert missing.returncode == 1 and "no such account" in missing.stderr
