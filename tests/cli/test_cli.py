"""The command line as a user meets it: real processes, exit codes, help text."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command

from dispatch.cli import app
from tests.helpers import EXAMPLE_ISSUE, FIXTURES, ROOT


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dispatch", *args], cwd=cwd,
                          check=False, capture_output=True, text=True, timeout=60)


def all_commands() -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = []

    def walk(prefix: str, command) -> None:
        found.append((prefix, command))
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(f"{prefix} {name}".strip(), sub)

    walk("", get_command(app))
    return found


@pytest.mark.parametrize("name, command", all_commands(), ids=lambda x: str(x) or "root")
def test_every_command_has_help_with_an_example(name, command):
    if hasattr(command, "commands"):
        assert command.help
        return
    assert command.help and "Example: dispatch" in command.help, name


def test_check_is_clean_on_shipped_content():
    result = run("check", cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 issue(s), 5 brief(s) ok" in result.stdout


def test_brief_import_then_check_flags_missing_topics(project):
    source = project / "pasted.txt"
    source.write_text("Soup Season Opens\n\nThe first pot of the year was served on Monday.\n\n"
                      "Details\n- Barley and leeks were used.\n")
    result = run("brief", "import", str(source), "--out", "drafts", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "no topic matched" in result.stderr
    written = project / "drafts" / "soup-season-opens.md"
    assert "topics: []" in written.read_text()
    check = run("check", "drafts", cwd=project)
    assert check.returncode == 1
    assert "drafts/soup-season-opens.md:3: topics: no topics yet" in check.stdout


def test_brief_import_refuses_to_overwrite_and_validates_topics(project):
    fixture = FIXTURES / "pasted" / "chip-alliance.txt"
    first = run("brief", "import", str(fixture), "--out", "d", "--topics", "technology",
                cwd=project)
    assert first.returncode == 0, first.stderr
    assert "topics (given): technology" in first.stdout
    again = run("brief", "import", str(fixture), "--out", "d", cwd=project)
    assert again.returncode == 1 and "already exists" in again.stderr
    bad = run("brief", "import", str(fixture), "--topics", "astrology", cwd=project)
    assert bad.returncode == 2 and "unknown topic(s) astrology" in bad.stderr


@pytest.mark.parametrize("args, expected", [
    (("check", "issues/nope"), "issues/nope: no such file or folder"),
    (("brief", "import", "missing.txt"), "missing.txt: file not found"),
])
def test_errors_are_one_located_line(project, args, expected):
    (project / "empty.txt").write_text("")
    result = run(*args, cwd=project)
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_empty_import_file(project):
    (project / "empty.txt").write_text("")
    result = run("brief", "import", "empty.txt", cwd=project)
    assert result.returncode == 1
    assert result.stderr.strip() == "empty.txt:1: empty file: nothing to import"


def test_version():
    assert run("--version", cwd=ROOT).stdout.startswith("dispatch ")


def hostile(project: Path, file: str, old: str, new: str) -> bytes:
    """Edit a file of the example issue; the bytes of the whole issue folder after the edit."""
    path = project / "issues" / EXAMPLE_ISSUE / file
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return snapshot(project)


def snapshot(project: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(project.rglob("*")) if p.is_file())


@pytest.mark.parametrize("file, old, new, expected", [
    # 3: a subject that would add header lines
    ("issue.toml", 'subject = "Seoul', r'subject = "Hi\r\nBcc: all@example.org\r\nX-Injected: '
                                       r'yes\r\nSeoul',
     "issue.toml:1: subject: contains the control character U+000D at position 3"),
    # 6: a date YAML cannot build
    ("03-missile-warnings.md", "date: 2023-05-20", "date: 2026-02-30",
     "03-missile-warnings.md:4: date: '2026-02-30' is not a valid date (day is out of range "
     "for month)"),
    # 12: briefs from outside the issue folder
    ("issue.toml", '"05-taiwan-strait.md",', '"05-taiwan-strait.md", "../../config.toml",',
     "issue.toml:5: briefs[5]: '../../config.toml' lies outside the issue folder"),
    ("issue.toml", '"05-taiwan-strait.md",', '"05-taiwan-strait.md", "/etc/passwd",',
     "issue.toml:5: briefs[5]: '/etc/passwd' lies outside the issue folder"),
])
def test_check_locates_hostile_content(project, file, old, new, expected):
    before = hostile(project, file, old, new)
    result = run("check", cwd=project)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert f"issues/{EXAMPLE_ISSUE}/{expected}" in output, output
    assert "Traceback" not in output
    assert not any(line.startswith(("Bcc:", "X-Injected:")) for line in output.splitlines())
    assert snapshot(project) == before  # nothing changed


def test_check_reports_an_unset_password_variable(project, monkeypatch):
    config = project / "config.toml"
    config.write_text(config.read_text().replace(
        '# username = "dispatch"\n# password_env', 'username = "dispatch"\npassword_env'))
    monkeypatch.delenv("DISPATCH_SMTP_PASSWORD", raising=False)
    result = run("check", cwd=project)
    assert result.returncode == 1
    assert ("smtp.password_env: the environment variable DISPATCH_SMTP_PASSWORD is not set: "
            "set it to the SMTP password") in result.stdout + result.stderr
    monkeypatch.setenv("DISPATCH_SMTP_PASSWORD", "s3cret")
    assert run("check", cwd=project).returncode == 0


def test_a_password_pasted_as_password_env_is_not_shown(project):
    config = project / "config.toml"
    config.write_text(config.read_text().replace(
        '# password_env = "DISPATCH_SMTP_PASSWORD"', 'password_env = "hunter2 s3cret!"'))
    result = run("check", cwd=project)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "config.toml:18: smtp.password_env: does not look like an environment variable name "
        "(letters, digits and _, not starting with a digit); the value is not shown")
    assert "hunter2" not in result.stdout + result.stderr


def test_check_warns_about_clear_text_transport_and_missing_dkim_without_failing(project):
    config = project / "config.toml"
    shipped = run("check", cwd=project)
    assert shipped.returncode == 0
    # The shipped file talks to 127.0.0.1: only the missing [dkim] is worth a warning.
    assert "warning: no [dkim]" in shipped.stderr
    assert "smtp.security" not in shipped.stderr and "base_url" not in shipped.stderr
    config.write_text(config.read_text()
                      .replace('host = "127.0.0.1"', 'host = "smtp.example.net"', 1)
                      .replace('base_url = "http://127.0.0.1:8025"',
                               'base_url = "http://news.example.org"'))
    result = run("check", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if "warning:" in line]
    assert len(lines) == 3, result.stderr
    assert lines[0].startswith("config.toml:16: warning: smtp.security = \"none\"")
    assert "smtp.example.net unencrypted" in lines[0]
    assert lines[1].startswith("config.toml:7: warning: newsletter.base_url is http")
    (project / "dkim.pem").write_text("A" * 43 + "=")  # an Ed25519 seed as dknewkey writes
    config.write_text(config.read_text()
                      .replace('security = "none"', 'security = "starttls"')
                      .replace("http://news", "https://news")
                      + '\n[dkim]\ndomain = "example.org"\nselector = "news"\n'
                        'key_file = "dkim.pem"\n')
    quiet = run("check", cwd=project)
    assert quiet.returncode == 0 and "warning" not in quiet.stderr, quiet.stderr


def test_the_command_line_starts_without_the_heavy_stack():
    # --help and --version must not pay for the database, renderer or web stack: those are
    # imported inside the commands that use them.
    heavy = ("sqlalchemy", "mjml", "premailer", "jinja2", "aiosmtpd", "selenium", "starlette",
             "alembic", "email_validator", "psycopg")
    probe = ("import sys, dispatch.cli; "
             f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert result.stdout.strip() == "[]"


def test_a_progress_log_ends_on_the_last_figures(capsys):
    """Off a terminal, progress is a log line every few seconds; the last one written must
    be the final count, not whatever the first call saw (it read "0/500 done")."""
    from dispatch.cli.common import DeliveryProgress
    from dispatch.deliver.outcomes import Kind
    from dispatch.deliver.recording import Stats
    stats = Stats()
    with DeliveryProgress(3, "sending", every=3600) as progress:
        progress(stats)
        for _ in range(3):
            stats.outcomes[Kind.SENT] += 1
            progress(stats)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("sending: 0/3 done")
    assert lines[-1].startswith("sending: 3/3 done; 3 sent") and len(lines) == 2
