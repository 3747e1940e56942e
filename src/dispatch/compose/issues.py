"""Issues: `issues/<slug>/issue.toml` (a model on config's Table base, with config.toml's
`path:line: key: message` errors) plus the briefs it carries → an `Issue` value."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ConfigDict, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError, core_schema

from dispatch.compose.briefs import load_draft
from dispatch.compose.front_matter import Words
from dispatch.compose.models import Brief, Issue
from dispatch.config import Settings, toml_error, toml_line
from dispatch.config.base import Table
from dispatch.config.fields import Flag, fail
from dispatch.config.load import key_path, problems_of
from dispatch.config.suggest import did_you_mean, zone_names
from dispatch.errors import ContentError, Problem, display_path
from dispatch.text import header_problem

ISSUE_FILE = "issue.toml"
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
            raise ValueError(f"unknown IANA time zone {zone_name!r}"
                             f"{did_you_mean(zone_name, zone_names())}") from None
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
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ContentError(Problem(shown, *toml_error(exc))) from None
    problems: list[Problem] = []
    try:
        spec = IssueFile.model_validate(data, context={"segments": settings.segments,
                                                       "folder": folder})
    except ValidationError as exc:
        problems = problems_of(exc, shown, lambda loc: toml_line(text, key_path(loc)))
        raise ContentError(problems + _brief_problems(folder, data, settings)) from None
    paths = list(spec.briefs) if spec.briefs is not None else _folder_briefs(folder, problems)
    if not paths and not problems:
        problems.append(Problem(shown, "the issue carries no briefs: add *.md files to the "
                                       "folder"))
    briefs: list[Brief] = []
    brief_problems: list[Problem] = []
    for path in paths:
        brief, found = load_draft(path, settings.topics)
        brief_problems.extend(found)
        if brief is not None:
            briefs.append(brief)

    if problems or not briefs:
        raise ContentError(problems + brief_problems)
    return (Issue(path=folder, slug=folder.name, subject=spec.subject, briefs=tuple(briefs),
                  preheader=spec.preheader, send_at=spec.send_at, segments=spec.segments,
                  personalize=spec.personalize), brief_problems)


def _folder_briefs(folder: Path, problems: list[Problem]) -> list[Path]:
    """Without `briefs = [...]`: the folder's *.md files, sorted; a link pointing out of the
    folder is a problem (an issue carries only what lies in its own folder)."""
    paths = []
    for candidate in sorted(folder.glob("*.md")):
        if _outside(candidate, folder):
            problems.append(Problem(display_path(candidate), "a symbolic link to a file "
                                    "outside the issue folder; briefs must be inside it"))
        else:
            paths.append(candidate)
    return paths


def _brief_problems(folder: Path, data: dict[str, Any], settings: Settings) -> list[Problem]:
    """The briefs' own problems when issue.toml has some: every problem is found at once."""
    names = data.get("briefs")
    if names is None:
        paths = _folder_briefs(folder, [])
    else:
        paths = []
        for name in names if isinstance(names, list) else ():
            try:
                paths.append(_brief_path(name, folder))
            except PydanticCustomError:
                pass  # reported at briefs[i]
    return [problem for path in dict.fromkeys(paths)
            for problem in load_draft(path, settings.topics)[1]]


def _outside(candidate: Path, folder: Path) -> bool:
    # Resolved, so "../x.md", "/etc/passwd" and symlinks pointing out are all caught.
    return not candidate.resolve().is_relative_to(folder.resolve())


class _When:
    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(_when)


def _when(value: Any) -> datetime:
    try:
        return parse_when(value)
    except ValueError as exc:
        raise fail(str(exc)) from None


def _segment(value: Any, info: ValidationInfo) -> str:
    known: Mapping[str, Any] = (info.context or {}).get("segments", {})
    if not isinstance(value, str):
        raise fail(f"expected a segment name, got {value!r}")
    if value not in known:
        raise fail(f"unknown segment {value!r}{did_you_mean(value, known)} (config.toml "
                   f"declares: {', '.join(known) or 'none'})")
    return value


def _brief(value: Any, info: ValidationInfo) -> Path:
    return _brief_path(value, (info.context or {})["folder"])


def _brief_path(value: Any, folder: Path) -> Path:
    if not isinstance(value, str):
        raise fail(f"expected a file name, got {value!r}")
    if "\0" in value:  # no file has it; Path.resolve would raise
        raise fail(f"{value!r} is not a file name")
    candidate = folder / value
    if _outside(candidate, folder):
        raise fail(f"{value!r} lies outside the issue folder {display_path(folder)}; "
                   "briefs must be inside it")
    if not candidate.is_file():
        raise fail(f"no brief named {value!r} in {display_path(folder)}")
    return candidate


class _Named:
    """A plain validator that reads the validation context."""

    def __init__(self, check: Any) -> None:
        self.check = check

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(self.check)


class IssueFile(Table):
    """issue.toml's keys, validated with context {"segments": config.toml's segments,
    "folder": the issue folder}."""

    model_config = ConfigDict(strict=False)  # every leaf has its own validator
    subject: Annotated[str, Words(500, header=True, fold=False)]
    # The inbox preview line: held to the subject's rule.
    preheader: Annotated[str, Words(500, header=True, fold=False)] | None = None
    send_at: Annotated[datetime, _When()] | None = None
    segments: tuple[Annotated[str, _Named(_segment)], ...] = ()  # empty: everyone
    briefs: tuple[Annotated[Path, _Named(_brief)], ...] | None = None  # None: every *.md
    personalize: Annotated[bool, Flag()] = True

    @field_validator("segments", "briefs", mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        if not isinstance(value, list):
            raise fail("expected a list of names")
        return tuple(value)

    @field_validator("briefs")
    @classmethod
    def _once(cls, paths: tuple[Path, ...] | None) -> tuple[Path, ...] | None:
        twice = [p.name for i, p in enumerate(paths or ()) if p in (paths or ())[:i]]
        if twice:
            raise fail(f"{twice[0]!r} is listed twice")
        return paths
