"""The send report: one typed value per send, which `dispatch status` (text and `--json`), the
console and any other shell render. Built in a fixed number of queries whatever the number
of sends: each figure is read for all the sends at once, never once per send.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from dispatch.errors import DispatchError, Problem
from dispatch.states import RowState, SendStatus
from dispatch.store import progress, reports, sends

LEFT_BEFORE_SENDING = "left the list before their message went out"
LAST_ERRORS = 5


@dataclass(frozen=True)
class ErrorLine:
    """One of the latest problem replies of a send."""

    email: str | None  # None: the subscriber was erased since
    state: RowState
    attempts: int
    reply: str
    updated_at: datetime


@dataclass(frozen=True)
class SendReport:
    """Where one send stands: its status, its outbox rows per state, who got nothing and
    why, what came back (store.reports.COUNT_KEYS: bounces, complaints, unsubscribes by
    way, auto-replies, unmatched reports), its latest errors and, when one send is asked for,
    its delivery timeline (bucket start, messages)."""

    issue: str
    status: SendStatus
    recipients: int
    reason: str | None
    send_at: datetime | None
    launched_at: datetime | None
    finished_at: datetime | None
    states: Mapping[RowState, int]
    skipped: Mapping[str, int]
    came_back: Mapping[str, int]
    last_errors: tuple[ErrorLine, ...] = ()
    timeline: tuple[tuple[datetime, int], ...] = field(default=())

    @property
    def unsubscribed(self) -> int:
        """Unsubscribes from this send, by every way together."""
        return sum(n for key, n in self.came_back.items() if key.startswith("unsubscribed"))

    def to_json(self) -> dict[str, Any]:
        """The value `dispatch status --json` prints: stable keys, times as ISO 8601."""
        def when(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment else None
        return {"issue": self.issue, "status": str(self.status), "recipients": self.recipients,
                "reason": self.reason, "send_at": when(self.send_at),
                "launched_at": when(self.launched_at), "finished_at": when(self.finished_at),
                "states": {str(k): v for k, v in self.states.items()},
                "skipped": dict(self.skipped), "reports": dict(self.came_back),
                "last_errors": [{"email": e.email, "state": str(e.state),
                                 "attempts": e.attempts, "reply": e.reply,
                                 "updated_at": e.updated_at.isoformat()}
                                for e in self.last_errors],
                "timeline": [[start.isoformat(), n] for start, n in self.timeline]}


def send_reports(engine: Engine, issue: str | None = None) -> list[SendReport]:
    """The report of one send (given as a slug or an issue folder) or of every send but
    dispatch's own pseudo-sends (those only when asked for by name)."""
    slug = Path(issue).name if issue else None
    if slug is not None:
        send = sends.get_send(engine, slug)
        if send is None:
            raise DispatchError(Problem(issue or slug, "no send for this issue yet "
                                                       "(dispatch send …)"))
        chosen = [send]
    else:
        chosen = [s for s in sends.list_sends(engine) if not sends.is_internal(s.issue)]
    names = None if slug is None else [slug]
    counts = progress.state_counts(engine, slug)
    came_back = reports.counts(engine, slug)
    errors = progress.last_errors(engine, names, LAST_ERRORS)
    timeline = tuple(progress.delivery_timeline(engine, slug)) if slug else ()
    nothing = dict.fromkeys(reports.COUNT_KEYS, 0)
    found = []
    for s in chosen:
        rows: Mapping[str, int] = counts.get(s.issue, {})
        states = {state: rows.get(state, 0) for state in RowState}
        # Who got nothing, and why: left out of the audience at launch (as a dry run counts
        # them), or in it but gone (unsubscribed, bounced) before their message went out.
        # "skipped" is that one figure everywhere (text, --json, the console).
        skipped = dict(s.skipped)
        if states[RowState.SKIPPED]:
            skipped[LEFT_BEFORE_SENDING] = states[RowState.SKIPPED]
        states[RowState.SKIPPED] = sum(skipped.values())
        found.append(SendReport(
            issue=s.issue, status=s.status, recipients=s.recipients, reason=s.reason,
            send_at=s.send_at, launched_at=s.launched_at, finished_at=s.finished_at,
            states=states, skipped=skipped, came_back=came_back.get(s.issue, nothing),
            last_errors=tuple(ErrorLine(e["email"], RowState(e["state"]), e["attempts"],
                                        e["reply"], e["updated_at"])
                              for e in errors.get(s.issue, [])),
            timeline=timeline))
    return found
