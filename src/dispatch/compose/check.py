"""`dispatch check`: validate briefs and issues, collecting every problem instead of stopping."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from dispatch.compose.briefs import load_brief
from dispatch.compose.issues import ISSUE_FILE, issue_folders, load_draft_issue
from dispatch.compose.models import Issue
from dispatch.compose.render import render_checked
from dispatch.compose.variants import possible_variants
from dispatch.config import Settings
from dispatch.errors import DispatchError, Problem, display_path


@dataclass
class CheckReport:
    issues: list[Issue] = field(default_factory=list)
    briefs: int = 0
    problems: list[Problem] = field(default_factory=list)


def check(settings: Settings, now: datetime, path: Path | None = None) -> CheckReport:
    """Check one brief, one issue folder, a folder of briefs, or (by default) every issue."""
    report = CheckReport()
    try:
        settings.smtp.check_credentials()  # found now rather than at the first send
    except DispatchError as exc:
        report.problems.extend(exc.problems)
    if path is None:
        folders = issue_folders(settings)
        if not folders:
            report.problems.append(Problem(display_path(settings.issues_dir),
                                           "no issues found (expected issues/<slug>/issue.toml)"))
        for folder in folders:
            _check_issue(folder, settings, report, now)
    elif path.is_file() and path.name == ISSUE_FILE:
        _check_issue(path.parent, settings, report, now)
    elif path.is_file():
        _check_brief(path, settings, report)
    elif (path / ISSUE_FILE).is_file():
        _check_issue(path, settings, report, now)
    elif path.is_dir():
        folders = sorted(p.parent for p in path.glob(f"*/{ISSUE_FILE}"))
        briefs = sorted(path.glob("*.md"))
        if not folders and not briefs:
            report.problems.append(Problem(display_path(path), "no issues or briefs here"))
        for folder in folders:
            _check_issue(folder, settings, report, now)
        for brief in briefs:
            _check_brief(brief, settings, report)
    else:
        report.problems.append(Problem(display_path(path), "no such file or folder"))
    return report


def _check_issue(folder: Path, settings: Settings, report: CheckReport, now: datetime) -> None:
    try:
        # As far as it goes: a draft's rendered problems are listed with its briefs' own.
        issue, problems = load_draft_issue(folder, settings)
    except DispatchError as exc:
        report.problems.extend(exc.problems)
        return
    report.problems.extend(problems)
    report.issues.append(issue)
    report.briefs += len(issue.briefs)
    # Render every variant: template errors and email-correctness failures are problems too,
    # each named once (a brief's problem shows in every variant that carries the brief).
    for variant in possible_variants(issue).values():
        try:
            _, found = render_checked(issue, variant, settings, now)
        except DispatchError as exc:
            report.problems.extend(exc.problems)
            break  # a template or MJML error breaks every variant alike
        report.problems.extend(p for p in found if p not in report.problems)


def _check_brief(path: Path, settings: Settings, report: CheckReport) -> None:
    try:
        load_brief(path, settings.topics)
        report.briefs += 1
    except DispatchError as exc:
        report.problems.extend(exc.problems)
