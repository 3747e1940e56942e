"""`dispatch check`: validate briefs and issues, collecting every problem instead of stopping."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from dispatch.compose.briefs import load_brief
from dispatch.compose.issues import ISSUE_FILE, issue_folders, load_draft_issue
from dispatch.compose.models import Issue
from dispatch.compose.render import render_checked
from dispatch.compose.variants import possible_variants
from dispatch.config import Settings, toml_line
from dispatch.errors import DispatchError, Problem, display_path


@dataclass
class CheckReport:
    issues: list[Issue] = field(default_factory=list)
    briefs: int = 0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)  # worth fixing; nothing is refused


def is_local_host(host: str) -> bool:
    """localhost, a loopback address, or a name under .localhost (RFC 6761)."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def config_warnings(settings: Settings) -> list[Problem]:
    """What config.toml allows but a newsletter on the internet should not do."""
    try:
        text = settings.path.read_text(encoding="utf-8")
    except OSError:
        text = ""
    where = display_path(settings.path)
    warnings = []
    if settings.smtp.security == "none" and not is_local_host(settings.smtp.host):
        warnings.append(Problem(where, f'warning: smtp.security = "none" sends every message '
                                f"(and the password, if any) to {settings.smtp.host} "
                                'unencrypted: set "starttls" or "tls"',
                                toml_line(text, "smtp.security")))
    base = urlsplit(settings.newsletter.base_url)
    if base.scheme == "http" and not is_local_host(base.hostname or ""):
        warnings.append(Problem(where, "warning: newsletter.base_url is http: unsubscribe and "
                                "preference links carry their tokens unencrypted and mailbox "
                                "providers expect https for one-click unsubscribe",
                                toml_line(text, "newsletter.base_url")))
    if settings.dkim is None:
        warnings.append(Problem(where, "warning: no [dkim]: messages go out unsigned, so they "
                                "fail DMARC and their one-click unsubscribe headers cannot be "
                                "trusted (mailbox providers require DKIM for bulk senders)"))
    return warnings


def check(settings: Settings, now: datetime, path: Path | None = None) -> CheckReport:
    """Check one brief, one issue folder, a folder of briefs, or (by default) every issue."""
    report = CheckReport(warnings=config_warnings(settings))
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
