"""An editor's controls over one send, shared by `dispatch send`, `dispatch worker`,
`dispatch status` and the web console to come: what sending an issue means in each state of
its send and the per-send status report (the delivery loop that records a pause is
deliver/loop.py).

Every decision about a send's status is made here (or in schedule/planning.py for the
scheduling actions) and written through store/sends.py; callers keep only presentation:
tables, prompts, progress and exit codes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from dispatch.compose.models import Issue
from dispatch.config import Settings
from dispatch.deliver.sending import launch_issue
from dispatch.errors import DispatchError, Problem
from dispatch.states import UNFINISHED, SendStatus, SendStep
from dispatch.store import launch, progress, sends
from dispatch.store.launch import Audience
from dispatch.store.sends import SendInfo


class SendAction(StrEnum):
    """What `prepare_send` found to do."""

    LAUNCH = "launch"  # never launched: the audience is planned, launch_planned sends it
    RESUMED = "resumed"  # was paused, is sending again: deliver the rest
    CONTINUE = "continue"  # launched and still sending (interrupted): deliver the rest
    SENT = "sent"  # finished earlier: nothing to do


@dataclass(frozen=True)
class SendPlan:
    issue: Issue
    action: SendAction
    send: SendInfo | None = None  # the send as found; None: never scheduled or launched
    audience: Audience | None = None  # LAUNCH only: who gets which variant

    def require_audience(self) -> Audience:
        """The planned audience; DispatchError when it is empty (or nothing is to launch),
        so nobody is asked to confirm a send to no one."""
        if self.action is not SendAction.LAUNCH or self.audience is None:
            raise DispatchError(Problem(self.issue.slug, f"nothing to launch: {self.action}"))
        if not self.audience.recipients:
            raise DispatchError(Problem(self.issue.slug, "nobody to send to: no active "
                                                         "subscriber matches this issue"))
        return self.audience


def describe_when(send: SendInfo, settings: Settings) -> str:
    """A send's time in the editors' zone and in UTC, as every message about it shows it."""
    if send.send_at is None:
        return "-"
    if send.local_time:
        return (f"{send.local_time.replace('T', ' ')[:16]} in each subscriber's zone "
                f"(first {send.send_at:%Y-%m-%d %H:%M} UTC)")
    zone = ZoneInfo(settings.newsletter.timezone)
    return (f"{send.send_at.astimezone(zone):%Y-%m-%d %H:%M} {settings.newsletter.timezone} "
            f"({send.send_at:%Y-%m-%d %H:%M} UTC)")


def prepare_send(engine: Engine, issue: Issue, settings: Settings) -> SendPlan:
    """Sending an issue now, by the state of its send: a scheduled one is refused (it would
    race the daemon), a launched-then-cancelled one too; a finished one is reported; a paused
    one is resumed; one never launched (no send, or cancelled, failed or missed before launch)
    gets its audience planned, read-only, for `launch_planned`."""
    existing = sends.get_send(engine, issue.slug)
    if existing is not None and existing.status == SendStatus.SCHEDULED:
        raise DispatchError(Problem(issue.slug, f"scheduled for "
                                                f"{describe_when(existing, settings)}; run "
                                                f"dispatch schedule cancel {issue.slug} first "
                                                "to send it now"))
    if existing is None or existing.launched_at is None:
        return SendPlan(issue, SendAction.LAUNCH, existing,
                        launch.plan_audience(engine, issue, settings))
    if existing.status == SendStatus.SENT:
        return SendPlan(issue, SendAction.SENT, existing)
    if existing.status == SendStatus.CANCELLED:
        raise DispatchError(Problem(issue.slug, "this send was cancelled"))
    if existing.status == SendStatus.PAUSED:
        # False means another process resumed or cancelled it meanwhile; either way the
        # delivery that follows finds whatever is still running.
        sends.set_status(engine, issue.slug, SendStep.RESUME)
        return SendPlan(issue, SendAction.RESUMED, existing)
    return SendPlan(issue, SendAction.CONTINUE, existing)


def launch_planned(engine: Engine, plan: SendPlan, settings: Settings, now: datetime) -> bool:
    """Render and snapshot a LAUNCH plan's audience into the outbox; False when another
    process launched the issue first (its rows are delivered all the same)."""
    return launch_issue(engine, plan.issue, plan.require_audience(), settings, now)


def unfinished(engine: Engine, issue: str) -> int:
    """An issue's messages not yet delivered or given up."""
    counts = progress.state_counts(engine, issue).get(issue, Counter())
    return sum(counts[state] for state in UNFINISHED)
