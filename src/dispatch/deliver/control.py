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
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from dispatch.compose.models import Issue
from dispatch.config import Settings
from dispatch.deliver.sending import launch_issue
from dispatch.errors import DispatchError, Problem
from dispatch.states import UNFINISHED, RowState, SendStatus, SendStep
from dispatch.store import outbox, reports, sends
from dispatch.store.outbox import Audience
from dispatch.store.sends import SendInfo

LEFT_BEFORE_SENDING = "left the list before their message went out"


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
                        outbox.plan_audience(engine, issue, settings))
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
    counts = outbox.state_counts(engine, issue).get(issue, Counter())
    return sum(counts[state] for state in UNFINISHED)


def status_report(engine: Engine, issue: str | None = None) -> list[dict[str, Any]]:
    """Per send (one issue's, given as a slug or folder, or every one): its status, reason,
    time, outbox rows per state, what came back (bounces, complaints, unsubscribes by way,
    unmatched reports: store.reports.counts) and the last errors; `dispatch status --json`
    prints it."""
    slug = None
    if issue:
        slug = Path(issue).name
        if sends.get_send(engine, slug) is None:
            raise DispatchError(Problem(issue, "no send for this issue yet (dispatch send …)"))
    counts = outbox.state_counts(engine, slug)
    came_back = reports.counts(engine, slug)
    nothing = dict.fromkeys(reports.COUNT_KEYS, 0)
    report: list[dict[str, Any]] = []
    for s in sends.list_sends(engine):
        # dispatch's own messages (~confirmations) only when asked for by name.
        if not ((slug is None and not sends.is_internal(s.issue)) or s.issue == slug):
            continue
        states = {state: counts[s.issue][state] if s.issue in counts else 0
                  for state in RowState}
        # Who got nothing, and why: left out of the audience at launch (as a dry run reports
        # it), or in it but gone (unsubscribed, bounced) before their message went out.
        skipped = dict(s.skipped)
        if states[RowState.SKIPPED]:
            skipped[LEFT_BEFORE_SENDING] = states[RowState.SKIPPED]
        # One figure for "skipped" everywhere (text, --json, the console): everyone who got
        # nothing, as the dry run counts them; "skipped" below says why.
        states[RowState.SKIPPED] = sum(skipped.values())
        report.append({"issue": s.issue, "status": s.status, "recipients": s.recipients,
                       "reason": s.reason,
                       "send_at": s.send_at.isoformat() if s.send_at else None,
                       "states": states, "skipped": skipped,
                       "reports": came_back.get(s.issue, nothing),
                       "last_errors": [{**e, "updated_at": e["updated_at"].isoformat()}
                                       for e in outbox.last_errors(engine, s.issue)]})
    return report
