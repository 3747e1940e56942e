"""A newcomer's first commands: `dispatch demo` anywhere, `dispatch init`, `issue new`,
`brief new`, as real processes in empty folders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import EXAMPLE_ISSUE, ROOT


def clean_env() -> dict[str, str]:
    """The environment without DISPATCH_CONFIG, so nothing points at the checkout's project."""
    return {k: v for k, v in os.environ.items() if k != "DISPATCH_CONFIG"}


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dispatch", *args], cwd=cwd, env=clean_env(),
                          check=False, capture_output=True, text=True, timeout=120)


def test_demo_runs_in_an_empty_folder(tmp_path):
    result = run("demo", "--subscribers", "30", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "using the example project shipped with dispatch" in result.stdout
    assert "30 message(s) received" in result.stdout
    assert (tmp_path / "out" / "demo" / "demo.db").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing else written here


def test_init_then_check_and_preview(tmp_path):
    made = run("init", "news", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines()[-3:] == ["  cd news", "  dispatch check",
                                             f"  dispatch preview {EXAMPLE_ISSUE}"]
    news = tmp_path / "news"
    assert (news / "inbox").is_dir() and not any((news / "inbox").iterdir())
    # Templates are overrides: none copied, so the shipped ones keep applying.
    assert [p.name for p in (news / "templates").iterdir()] == ["README.txt"]
    config = (news / "config.toml").read_text()
    assert config.startswith("# Made by `dispatch init`")
    checked = run("check", cwd=news)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    preview = run("preview", EXAMPLE_ISSUE, cwd=news)
    assert preview.returncode == 0, preview.stdout + preview.stderr
    assert (news / "out" / EXAMPLE_ISSUE / "index.html").is_file()


def test_init_never_overwrites(tmp_path):
    (tmp_path / "config.toml").write_text("# mine\n")
    result = run("init", cwd=tmp_path)
    assert result.returncode == 1
    assert "config.toml: already exists; dispatch init never overwrites" in result.stderr
    assert (tmp_path / "config.toml").read_text() == "# mine\n"
    assert not (tmp_path / "issues").exists()


def test_issue_new_and_brief_new(project):
    bad = run("issue", "new", "Next Week!", "--subject", "x", cwd=project)
    assert bad.returncode == 1
    assert "SLUG: 'Next Week!' is not a usable issue name" in bad.stderr
    no_subject = run("issue", "new", "next-week", cwd=project)
    assert "--subject: required when no readable brief is given" in no_subject.stderr
    assert not (project / "issues" / "next-week").exists()

    made = run("issue", "new", "next-week", "--subject", 'Rail "and" ferries', cwd=project)
    assert made.returncode == 0, made.stderr
    again = run("issue", "new", "next-week", "--subject", "x", cwd=project)
    assert again.returncode == 1 and "issues/next-week: already exists" in again.stderr

    unknown = run("brief", "new", "Ferries resume", "--topics", "economy,weather",
                  "--out", "issues/next-week", cwd=project)
    assert unknown.returncode == 1
    assert "--topics: unknown topic(s) weather" in unknown.stderr
    written = run("brief", "new", "Ferries resume", "--topics", "economy",
                  "--out", "issues/next-week", cwd=project)
    assert written.returncode == 0, written.stderr
    brief = project / "issues" / "next-week" / "ferries-resume.md"
    # The summary and body are the editor's to write: check says so, at their lines.
    pending = run("check", "issues/next-week", cwd=project)
    assert pending.returncode == 1
    assert "ferries-resume.md:5: summary: expected non-empty text" in pending.stdout
    brief.write_text(brief.read_text().replace('summary: ""', "summary: Ferries run again.")
                     + "The crossing reopened on Monday.\n")
    done = run("check", "issues/next-week", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    toml = (project / "issues" / "next-week" / "issue.toml").read_text()
    assert 'subject = "Rail \\"and\\" ferries"' in toml

    twice = run("brief", "new", "Ferries resume", "--topics", "economy",
                "--out", "issues/next-week", cwd=project)
    assert twice.returncode == 1 and "already exists; nothing was written" in twice.stderr


def test_issue_new_copies_briefs_and_reports_their_problems(project):
    source = project / "issues" / EXAMPLE_ISSUE / "01-hiroshima-meeting.md"
    draft = project / "draft.md"
    draft.write_text("---\ntitle: Ferries resume\ntopics: [economy]\nsummary: Soon.\n"
                     "image: {alt: A ferry, caption: A ferry at dawn}\n---\n\nBody.\n")
    missing = run("issue", "new", "copy", "nowhere.md", "notes.txt", cwd=project)
    assert missing.returncode == 1
    assert "nowhere.md: no such file" in missing.stderr
    assert not (project / "issues" / "copy").exists()
    # A draft waiting for its photo is copied; its problem is named at the copy's line.
    made = run("issue", "new", "copy", str(draft), str(source), cwd=project)
    assert made.returncode == 0, made.stderr
    assert ("to fix before sending: issues/copy/draft.md:5: image.src: required key is "
            "missing") in made.stderr
    assert (project / "issues" / "copy" / source.name).read_text() == source.read_text()
    toml = (project / "issues" / "copy" / "issue.toml").read_text()
    assert 'subject = "Ferries resume"' in toml
    assert run("check", "issues/copy", cwd=project).returncode == 1


@pytest.mark.slow
def test_installed_package_runs_its_demo_anywhere(tmp_path):
    """`pip install .` (not editable) into a fresh virtualenv, then `dispatch demo` from an
    empty folder: the wheel must carry the example project and the templates."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in clean_env().items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(ROOT)],
                               env=env, capture_output=True, text=True, timeout=900)
    assert installed.returncode == 0, installed.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    demo = subprocess.run([str(venv / "bin" / "dispatch"), "demo", "--subscribers", "20"],
                          cwd=empty, env=env, capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert str(venv) in demo.stdout  # the example came from the installed package
    assert "20 message(s) received" in demo.stdout
    init = subprocess.run([str(venv / "bin" / "dispatch"), "init", "news"], cwd=empty,
                          env=env, capture_output=True, text=True, timeout=60)
    assert init.returncode == 0, init.stderr
    preview = subprocess.run([str(venv / "bin" / "dispatch"), "preview", EXAMPLE_ISSUE],
                             cwd=empty / "news", env=env, capture_output=True, text=True,
                             timeout=300)
    assert preview.returncode == 0, preview.stdout + preview.stderr


def test_the_sink_receives_a_send_and_keeps_every_message(project):
    """`dispatch sink` on the config's smtp port is the relay the README's first send goes
    to: every message lands in its mailbox folder, and Ctrl-C stops it with a count."""
    from dispatch.devtools.sink import free_port
    port = free_port()
    config = project / "config.toml"
    config.write_text(config.read_text().replace("port = 8026", f"port = {port}", 1))
    sink = subprocess.Popen([sys.executable, "-m", "dispatch", "sink", "--mailbox", "mb"],
                            cwd=project, env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None
        assert f"SMTP sink on 127.0.0.1:{port}" in sink.stdout.readline()
        for email in ("ana@example.com", "bo@example.com"):
            added = run("subscribers", "add", email, "--topics", "security", cwd=project)
            assert added.returncode == 0, added.stderr
        sent = run("send", EXAMPLE_ISSUE, "--yes", cwd=project)
        assert sent.returncode == 0, sent.stdout + sent.stderr
    finally:
        sink.send_signal(signal.SIGINT)
        out, err = sink.communicate(timeout=30)
    assert sink.returncode == 0, err
    kept = sorted((project / "mb").glob("*.eml"))
    assert [p.name for p in kept] == ["000001.eml", "000002.eml"]
    assert {b"To: ana@example.com", b"To: bo@example.com"} == {
        next(line for line in p.read_bytes().splitlines() if line.startswith(b"To: "))
        for p in kept}
    assert "2 message(s) received" in out


def test_the_sink_listens_on_loopback_only(tmp_path):
    refused = run("sink", "--host", "0.0.0.0", cwd=tmp_path)
    assert refused.returncode == 1
    assert "0.0.0.0 is not a loopback address" in refused.stderr
    assert not (tmp_path / "out").exists()
