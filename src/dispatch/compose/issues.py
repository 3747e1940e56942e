"""Issues: `issues/<slug>/issue.toml` plus the briefs it carries → an `Issue` value."""

from __future__ import annotations

import re
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dispatch.compose.briefs import load_draft
from dispatch.compose.models import Brief, Issue
from dispatch.config import Settings, toml_error, toml_line
from dispatch.errors import ContentError, Problem, display_path
from dispatch.text import header_problem

ISSUE_FILE = "issue.toml"
ISSUE_KEYS = {"subject", "preheader", "send_at", "segments", "briefs", "personalize"}
# A time followed by a zone: "2026-12-01T07:00 Asia/Seoul" or "2026-12-01T07:00[Asia/Seoul]".
_ZONED = re.compile(r"^(?P<when>\S+(?:[ T]\S+)?)\s*"
                    r"(?:\[(?P<bracket>[^\]]+)\]|\s(?P<zone>[A-Za-z_]+/[A-Za-z_/+-]+|UTC))$")


def parse_when(value: Any, default_zone: str | None = None) -> datetime:
    """An aware datetime from ISO 8601 with an offset, or followed by an IANA zone name
    ("2026-12-01T07:00 Asia/Seoul" or "2026-12-01T07:00[Asia/Seoul]"). A bare local time takes
    `default_zone` when one is given; otherwise it is refused, since it names no instant."""
    if isinstance(value, datetime):
        moment, zone_name = value, None
    elif isinstance(value, str):
        text = value.strip()
        zoned = _ZONED.match(text)
        zone_name = (zoned["bracket"] or zoned["zone"]) if zoned else None
        try:
            moment = datetime.fromisoformat((zoned["when"] if zoned else text).replace(" ", "T"))
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 time like "
                             "2026-12-01T07:00+09:00 or 2026-12-01T07:00 Asia/Seoul") from None
    else:
        raise ValueError(f"expected a time, got {value!r}")
    if zone_name:
        if moment.tzinfo is not None:
            raise ValueError(f"{value!r} gives both an offset and a zone; give one")
        try:
            return moment.replace(tzinfo=ZoneInfo(zone_name))
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {zone_name!r}") from None
    if moment.tzinfo is None:
        if default_zone:
            return moment.replace(tzinfo=ZoneInfo(default_zone))
        raise ValueError(f"{value!r} has no offset or zone; add one, e.g. +09:00 or Asia/Seoul")
    return moment


def issue_folders(settings: Settings) -> list[Path]:
    """Every folder under issues/ that holds an issue.toml, sorted by name."""
    if not settings.issues_dir.is_dir():
        return []
    return sorted(p.parent for p in settings.issues_dir.glob(f"*/{ISSUE_FILE}"))


def resolve_issue_path(name: str | Path, settings: Settings) -> Path:
    """An issue given as a folder path or as a slug under issues/."""
    path = Path(name)
    if path.is_dir() or path.name == ISSUE_FILE:
        return path.parent if path.name == ISSUE_FILE else path
    candidate = settings.issues_dir / str(name)
    if candidate.is_dir():
        return candidate
    known = ", ".join(p.name for p in issue_folders(settings)) or "none"
    raise ContentError(Problem(str(name), f"no such issue folder (issues here: {known})"))


def load_issue(folder: Path, settings: Settings) -> Issue:
    """Load an issue and every brief it carries; raise ContentError listing every problem."""
    issue, problems = load_draft_issue(folder, settings)
    if problems:
        raise ContentError(problems)
    return issue


def load_draft_issue(folder: Path, settings: Settings) -> tuple[Issue, list[Problem]]:
    """An issue as far as it can be rendered, and every problem found: briefs keep what is
    usable (see briefs.parse_draft) and a brief without a title or summary is left out.
    Raises ContentError only when nothing can be rendered (issue.toml itself is wrong, or
    no brief is usable)."""
    toml_path = folder / ISSUE_FILE
    shown = display_path(toml_path)
    if not folder.is_dir():
        raise ContentError(Problem(display_path(folder), "no such issue folder"))
    if not toml_path.is_file():
        raise ContentError(Problem(shown, "missing issue.toml (needs at least subject = \"…\")"))
    if folder.name.startswith("~"):
        raise ContentError(Problem(display_path(folder), "issue folder names may not start "
                                                         "with ~ (reserved for dispatch's own "
                                                         "messages)"))
    if problem := header_problem(folder.name):
        # The folder name is the issue's slug, written into headers and the Message-ID.
        raise ContentError(Problem(display_path(folder.parent),
                                   f"issue folder {folder.name!r}: the name {problem}"))
    text = toml_path.read_text(encoding="utf-8-sig")
    problems: list[Problem] = []

    def fail(key: str, message: str) -> None:
        problems.append(Problem(shown, f"{key}: {message}" if key else message,
                                toml_line(text, key) if key else None))

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ContentError(Problem(shown, *toml_error(exc))) from None

    for key in sorted(set(data) - ISSUE_KEYS):
        fail(key, f"unknown key (expected: {', '.join(sorted(ISSUE_KEYS))})")

    subject = data.get("subject")
    if not isinstance(subject, str) or not subject.strip():
        fail("subject", "required: the email subject line")
        subject = ""
    elif problem := header_problem(subject):
        fail("subject", problem)
    preheader = data.get("preheader")
    if preheader is not None and (not isinstance(preheader, str) or not preheader.strip()):
        fail("preheader", "expected non-empty text")
        preheader = None
    elif preheader is not None and (problem := header_problem(preheader)):
        # The preheader is the inbox preview line: held to the subject's rule.
        fail("preheader", problem)

    send_at = None
    if "send_at" in data:
        try:
            send_at = parse_when(data["send_at"])
        except ValueError as exc:
            fail("send_at", str(exc))

    segments = data.get("segments", [])
    if not isinstance(segments, list) or not all(isinstance(s, str) for s in segments):
        fail("segments", "expected a list of segment names")
        segments = []
    for name in segments:
        if name not in settings.segments:
            fail("segments", f"unknown segment {name!r} (config.toml declares: "
                             f"{', '.join(settings.segments) or 'none'})")

    personalize = data.get("personalize", True)
    if not isinstance(personalize, bool):
        fail("personalize", f"expected true or false, got {personalize!r}")
        personalize = True

    names = data.get("briefs")
    inside = folder.resolve()

    def outside(candidate: Path) -> bool:
        # Resolved, so "../x.md", "/etc/passwd" and symlinks pointing out are all caught: an
        # issue carries only what lies in its own folder.
        return not candidate.resolve().is_relative_to(inside)

    paths: list[Path] = []
    if names is None:
        for candidate in sorted(folder.glob("*.md")):
            if outside(candidate):
                problems.append(Problem(display_path(candidate), "a symbolic link to a file "
                                        "outside the issue folder; briefs must be inside it"))
            else:
                paths.append(candidate)
    elif not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        fail("briefs", "expected a list of file names")
    else:
        for name in names:
            candidate = folder / name
            if "\0" in name:  # no file has it; Path.resolve would raise
                fail("briefs", f"{name!r} is not a file name")
            elif outside(candidate):
                fail("briefs", f"{name!r} lies outside the issue folder "
                               f"{display_path(folder)}; briefs must be inside it")
            elif not candidate.is_file():
                fail("briefs", f"no brief named {name!r} in {display_path(folder)}")
            elif candidate in paths:
                fail("briefs", f"{name!r} is listed twice")
            else:
                paths.append(candidate)
    if not paths and not problems:
        fail("", "the issue carries no briefs: add *.md files to the folder")

    briefs: list[Brief] = []
    brief_problems: list[Problem] = []
    for path in paths:
        brief, found = load_draft(path, settings.topics)
        brief_problems.extend(found)
        if brief is not None:
            briefs.append(brief)

    if problems or not briefs:
        raise ContentError(problems + brief_problems)
    return (Issue(path=folder, slug=folder.name, subject=subject.strip(), briefs=tuple(briefs),
                 preheader=preheader.strip() if preheader else None, send_at=send_at,
                 segments=tuple(segments), personalize=personalize), brief_problems)
