"""One subscriber's story for the console: status changes, every message of every send,
every report about them, and the changes recorded in the audit log about them (their own
preferences: store.subscribers.set_preferences)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select

from dispatch.states import RowState
from dispatch.store import audit
from dispatch.store.schema import outbox, reports
from dispatch.store.subscribers import by_id


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime
    what: str  # "added", "confirmed", "unsubscribed", an outbox state, or a report's kind
    issue: str | None = None
    reply: str | None = None  # the relay's reply, or what a change was
    by: str | None = None  # who made a change: audit.READER, an account's email


def history(engine: Engine, subscriber_id: int) -> list[HistoryEntry]:
    """One subscriber's story, newest first: the status changes the row records and every
    message of every send (sent, bounced, failed...) and every report that came back about
    them (bounces, complaints, unsubscribes by way)."""
    found = by_id(engine, subscriber_id)
    if found is None:
        return []
    entries = [HistoryEntry(found.created_at, "added")]
    if found.confirmed_at:
        entries.append(HistoryEntry(found.confirmed_at, "confirmed"))
    if found.unsubscribed_at:
        entries.append(HistoryEntry(found.unsubscribed_at, "unsubscribed"))
    with engine.connect() as conn:
        for issue, state, reply, at in conn.execute(
                select(outbox.c.issue, outbox.c.state, outbox.c.reply, outbox.c.updated_at)
                .where(outbox.c.subscriber_id == subscriber_id)):
            entries.append(HistoryEntry(at, state, issue,
                                        reply if state != RowState.SENT else None))
        for kind, via, issue, reason, at in conn.execute(
                select(reports.c.kind, reports.c.via, reports.c.issue, reports.c.reason,
                       reports.c.received_at).where(reports.c.subscriber_id == subscriber_id)):
            entries.append(HistoryEntry(at, f"{kind} ({via})" if via else str(kind), issue,
                                        reason))
        for entry in audit.about(conn, audit.subscriber_target(subscriber_id)):
            entries.append(HistoryEntry(entry.at, entry.action, reply=entry.detail,
                                        by=entry.actor))
    return sorted(entries, key=lambda e: e.at, reverse=True)
