"""What goes out when: every send (scheduled ones first, soonest first), the drafts nobody
scheduled, and the recurring digests' next times, for `dispatch schedule list` and the web
console. Its own module because it reads the digests (schedule/digests.py), which import
schedule/planning.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from dispatch.compose.issues import issue_folders
from dispatch.config import RecurringSchedule, Settings
from dispatch.schedule.digests import next_digest
from dispatch.states import RowState, SendStatus
from dispatch.store import progress, sends
from dispatch.store.sends import SendInfo, is_internal


@dataclass(frozen=True)
class Overview:
    sends: list[SendInfo]  # scheduled first, soonest first; then the rest, oldest first
    sent: dict[str, int]  # issue -> messages sent so far
    drafts: list[str]  # issue folders with no send
    recurring: list[tuple[RecurringSchedule, datetime | None]]  # with the next fire time

    @property
    def waiting(self) -> bool:
        """Whether any issue waits for a daemon to send it."""
        return any(s.status == SendStatus.SCHEDULED for s in self.sends)

    def as_json(self) -> dict[str, Any]:
        return {
            "sends": [{"issue": s.issue, "status": s.status, "subject": s.subject,
                       "send_at": s.send_at.isoformat() if s.send_at else None,
                       "local_time": s.local_time, "recipients": s.recipients,
                       "sent": self.sent[s.issue], "reason": s.reason}
                      for s in self.sends],
            "drafts": self.drafts,
            "recurring": [{"name": r.name, "cron": r.cron, "timezone": r.timezone,
                           "folder": r.folder, "next": n.isoformat() if n else None}
                          for r, n in self.recurring]}


def schedule_overview(engine: Engine, settings: Settings, now: datetime) -> Overview:
    listed = [s for s in sends.list_sends(engine) if not is_internal(s.issue)]
    listed.sort(key=lambda s: (s.status != SendStatus.SCHEDULED, s.send_at or s.created_at))
    counts = progress.state_counts(engine)
    known = {s.issue for s in listed}
    return Overview(
        sends=listed,
        sent={s.issue: counts[s.issue][RowState.SENT] if s.issue in counts else 0
              for s in listed},
        drafts=[f.name for f in issue_folders(settings) if f.name not in known],
        recurring=[(r, next_digest(r, now)) for r in settings.schedules])
