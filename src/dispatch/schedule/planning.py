"""Scheduling an issue: when it goes out (checked against the clock and every subscriber's
zone for local-time sends), and the editor's actions on a send (schedule, move, cancel,
pause, resume, hide from the archive and show again). Every status change goes through
store/sends.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from dispatch.clock import is_zone, local_release
from dispatch.compose.check import check
from dispatch.compose.issues import ISSUE_FILE, load_issue, parse_when, resolve_issue_path
from dispatch.compose.models import Issue
from dispatch.config import Settings
from dispatch.errors import ContentError, DispatchError, Problem
from dispatch.states import SendStatus, SendStep
from dispatch.store import sends
from dispatch.store.sends import SendInfo
from dispatch.store.subscribers import active_zones
from dispatch.text import header_problem


def _wall_clock(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip().replace(" ", "T"))
    except ValueError:
        raise DispatchError(Problem("--at", f"{text!r} is not a time like 2026-12-01 07:00")
                            ) from None
    if moment.tzinfo is not None:
        raise DispatchError(Problem("--at", "--local-time takes a wall-clock time without an "
                                            "offset or zone: each subscriber's zone applies"))
    return moment


@dataclass(frozen=True)
class When:
    """When a scheduled issue goes out."""

    send_at: datetime  # UTC; for local-time sends, the first subscriber's release
    zone: str  # the zone it was given in, for display
    local_time: datetime | None = None  # the wall-clock time of a local-time send
    releases: tuple[tuple[str, datetime], ...] = ()  # local-time: (zone, UTC instant), sorted


def plan_time(engine: Engine, settings: Settings, issue: Issue, at: str | None,
              tz: str | None, local: bool, now: datetime) -> When:
    """The time an editor asked for (`--at`, else the issue's send_at), checked: never in the
    past, and for a local-time send not yet passed in any subscriber's zone."""
    if tz is not None and not is_zone(tz):
        raise DispatchError(Problem("--tz", f"unknown IANA time zone {tz!r}"))
    if at is None and issue.send_at is None:
        raise DispatchError(Problem(issue.slug, "no time given: use --at, or set send_at in "
                                                "issue.toml"))
    if local:
        if tz is not None:
            raise DispatchError(Problem("--tz", "--local-time uses each subscriber's own zone; "
                                                "leave out --tz"))
        if at is not None:
            wall = _wall_clock(at)
        else:
            assert issue.send_at is not None
            wall = issue.send_at.replace(tzinfo=None)  # its wall clock, wherever it was given
        default = settings.schedule.default_timezone
        zones = sorted({zone or default for zone in active_zones(engine)} | {default})
        releases = tuple(sorted(((z, local_release(wall, z)) for z in zones),
                                key=lambda item: item[1]))
        passed = [z for z, moment in releases if moment <= now]
        if passed:
            raise DispatchError(Problem("--at", f"{wall:%Y-%m-%d %H:%M} has already passed in "
                                                f"{', '.join(passed)}"))
        return When(send_at=releases[0][1], zone="local", local_time=wall, releases=releases)
    zone = tz or settings.newsletter.timezone
    if at is None:
        assert issue.send_at is not None
        moment = issue.send_at
    else:
        try:
            explicit: datetime | None = parse_when(at)  # carries its own offset or zone
        except ValueError:
            explicit = None
        if explicit is not None and tz is not None:
            raise DispatchError(Problem("--tz", f"{at!r} carries its own offset or zone; give "
                                                "the zone once"))
        try:
            moment = explicit or parse_when(at, default_zone=zone)
        except ValueError as exc:
            raise DispatchError(Problem("--at", str(exc))) from None
    shown = getattr(moment.tzinfo, "key", None) or zone
    moment = moment.astimezone(UTC)
    if moment <= now:
        raise DispatchError(Problem("--at", f"{moment:%Y-%m-%d %H:%M:%S} UTC is in the past "
                                            f"(now {now:%Y-%m-%d %H:%M:%S} UTC)"))
    return When(send_at=moment, zone=shown)


def validate(settings: Settings, folder: Path, now: datetime) -> Issue:
    """Load the issue and run `dispatch check` on it (every variant rendered): the problems
    are raised, so nothing with errors is ever scheduled."""
    if not (folder / ISSUE_FILE).is_file():
        raise ContentError(Problem(str(folder), f"no {ISSUE_FILE} here: not an issue folder"))
    report = check(settings, now, folder)
    if report.problems:
        raise ContentError(report.problems)
    return report.issues[0]


def schedule_issue(engine: Engine, settings: Settings, name: str, *, at: str | None,
                   tz: str | None, local: bool, now: datetime) -> tuple[Issue, When]:
    issue = validate(settings, resolve_issue_path(name, settings), now)
    existing = sends.get_send(engine, issue.slug)
    if existing and existing.status == SendStatus.SCHEDULED:
        raise DispatchError(Problem(issue.slug, f"already scheduled for "
                                                f"{existing.send_at:%Y-%m-%d %H:%M} UTC; use "
                                                f"dispatch schedule move {issue.slug} --at …"))
    if existing and existing.launched_at is not None:
        raise DispatchError(Problem(issue.slug, f"already {existing.status}; see dispatch "
                                                f"status {issue.slug}"))
    when = plan_time(engine, settings, issue, at, tz, local, now)
    if not sends.schedule_send(engine, issue, when.send_at, now, zone=when.zone,
                                local_time=_iso(when.local_time)):
        raise DispatchError(Problem(issue.slug, "another process scheduled or sent this issue "
                                                "a moment ago"))
    return issue, when


def move_issue(engine: Engine, settings: Settings, slug: str, *, at: str, tz: str | None,
               now: datetime) -> When:
    send = _send(engine, slug, SendStatus.SCHEDULED, "only a scheduled issue can be moved")
    issue = load_issue(resolve_issue_path(slug, settings), settings)
    when = plan_time(engine, settings, issue, at, tz, send.local_time is not None, now)
    if not sends.move_send(engine, slug, when.send_at, _iso(when.local_time)):
        raise DispatchError(Problem(slug, "it stopped being scheduled a moment ago (fired or "
                                          "cancelled)"))
    return when


def cancel_issue(engine: Engine, slug: str, now: datetime) -> int:
    """Cancel a scheduled or running send; returns how many unsent messages were dropped."""
    dropped = sends.cancel_send(engine, slug, "cancelled by an editor", now)
    if dropped is None:
        send = sends.get_send(engine, slug)
        raise DispatchError(Problem(slug, f"nothing to cancel: it is {send.status}" if send
                                    else "nothing to cancel: it was never scheduled"))
    return dropped


def pause_issue(engine: Engine, slug: str) -> None:
    if not sends.set_status(engine, slug, SendStep.PAUSE, reason="paused by an editor"):
        _send(engine, slug, SendStatus.SENDING, "only a send in progress can be paused (a "
                                                "scheduled one can be moved or cancelled)")


def resume_issue(engine: Engine, slug: str) -> None:
    if not sends.set_status(engine, slug, SendStep.RESUME):
        _send(engine, slug, SendStatus.PAUSED, "only a paused send can be resumed")


def _send(engine: Engine, slug: str, status: SendStatus, why: str) -> SendInfo:
    send = sends.get_send(engine, slug)
    if send is None:
        raise DispatchError(Problem(slug, "not scheduled or sent (dispatch schedule list)"))
    if send.status != status:
        raise DispatchError(Problem(slug, f"{why}; it is {send.status}"))
    return send


def _iso(wall: datetime | None) -> str | None:
    return wall.isoformat(timespec="seconds") if wall else None


@dataclass(frozen=True)
class ArchiveChange:
    """What `hide_issue` or `show_issue` did."""

    slug: str
    changed: bool  # False: it was hidden (or shown) already
    sent: bool  # it has gone out, so it is (or was) in the archive


def _known_issue(engine: Engine, settings: Settings, name: str) -> tuple[str, bool]:
    """(slug, whether it went out) of an issue named by slug or folder path: one with a send
    (scheduled, sent...) or a folder under issues/. DispatchError for anything else."""
    slug = Path(name).name if name.strip() else ""
    problem = header_problem(name) or (
        "is not an issue (names starting with ~ are dispatch's own messages)"
        if slug.startswith("~") else None)
    if not slug or problem or len(slug) > 200:
        raise DispatchError(Problem(repr(name)[1:-1] or "ISSUE", f"not an issue name: "
                                    f"{problem or 'give the issue folder name or its path'}"))
    send = sends.get_send(engine, slug)
    if send is None and not (settings.issues_dir / slug / ISSUE_FILE).is_file():
        raise DispatchError(Problem(slug, "no such issue: it was never sent or scheduled and "
                                          f"there is no folder {settings.issues_dir.name}/{slug}"))
    return slug, send is not None and send.launched_at is not None


def hide_issue(engine: Engine, settings: Settings, name: str, now: datetime) -> ArchiveChange:
    """Take an issue down from the public archive (list, feed and pages: 410 Gone), or keep a
    draft or scheduled one out of it when it goes out."""
    slug, sent = _known_issue(engine, settings, name)
    return ArchiveChange(slug, sends.hide_from_archive(engine, slug, now), sent)


def show_issue(engine: Engine, settings: Settings, name: str) -> ArchiveChange:
    """Put a hidden issue back in the public archive."""
    slug, sent = _known_issue(engine, settings, name)
    return ArchiveChange(slug, sends.show_in_archive(engine, slug), sent)
