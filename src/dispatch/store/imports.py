"""Bulk import of checked CSV rows (audience/csvio.py reads them): new subscribers added and
existing ones' topics merged, in one transaction, suppressed addresses refused."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine, insert, select, update

from dispatch.audience.addresses import email_hash
from dispatch.audience.csvio import Row
from dispatch.states import SUPPRESSING, SubscriberStatus
from dispatch.store.schema import subscriber_topics, subscribers, suppressions
from dispatch.store.subscribers import BATCH, IN_CHUNK, chunks, topics_by_id


@dataclass
class ImportReport:
    read: int = 0
    added: int = 0
    updated: int = 0
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # line, email, reason
    dry_run: bool = False


def import_rows(engine: Engine, rows: list[Row], now: datetime, *, dry_run: bool = False,
                progress: Callable[[int], None] = lambda _: None) -> ImportReport:
    """Add new subscribers and merge topics into existing ones, in one transaction: a failure
    anywhere leaves the store exactly as it was. Suppressed addresses are rejected."""
    report = ImportReport(dry_run=dry_run)
    try:
        _import(engine, rows, now, report, progress)
    except _DryRun:
        pass
    return report


class _DryRun(Exception):
    """Raised inside the import transaction to roll a dry run back."""


def _import(engine: Engine, rows: list[Row], now: datetime, report: ImportReport,
            progress: Callable[[int], None]) -> None:
    with engine.begin() as conn:
        existing: dict[str, tuple[int, str]] = {}
        suppressed: dict[str, str] = {}
        keys = [r.key for r in rows]
        for chunk in chunks(keys, IN_CHUNK):
            for sid, key, status in conn.execute(
                    select(subscribers.c.id, subscribers.c.email_key, subscribers.c.status)
                    .where(subscribers.c.email_key.in_(chunk))):
                existing[key] = (sid, status)
        by_hash = {email_hash(k): k for k in keys}
        hashes = list(by_hash)
        for chunk in chunks(hashes, IN_CHUNK):
            for digest, reason in conn.execute(
                    select(suppressions.c.email_hash, suppressions.c.reason)
                    .where(suppressions.c.email_hash.in_(chunk))):
                suppressed[by_hash[digest]] = reason
        new: list[Row] = []
        old: list[tuple[int, Row]] = []
        for row in rows:
            if row.key in suppressed or existing.get(row.key, (0, ""))[1] in SUPPRESSING:
                reason = suppressed.get(row.key) or existing[row.key][1]
                report.rejected.append((row.line, row.email, f"suppressed ({reason}): never "
                                                             "mailed again unless it "
                                                             "re-subscribes"))
            elif row.key in existing:
                old.append((existing[row.key][0], row))
            else:
                new.append(row)
        report.added, report.updated = len(new), len(old)
        done = 0
        for chunk in chunks(new, BATCH):
            ids = conn.execute(
                insert(subscribers).returning(subscribers.c.id, sort_by_parameter_order=True),
                [{"email": r.email, "email_key": r.key, "name": r.name, "timezone": r.timezone,
                  "status": SubscriberStatus.ACTIVE, "created_at": now, "confirmed_at": now}
                 for r in chunk]
            ).scalars().all()
            topic_rows = [{"subscriber_id": sid, "topic": t}
                          for sid, r in zip(ids, chunk, strict=True) for t in r.topics]
            if topic_rows:
                conn.execute(insert(subscriber_topics), topic_rows)
            done += len(chunk)
            progress(done)
        for chunk in chunks(old, IN_CHUNK):
            current = topics_by_id(conn, [sid for sid, _ in chunk])
            for sid, row in chunk:
                values = {k: v for k, v in (("name", row.name), ("timezone", row.timezone)) if v}
                if values:
                    conn.execute(update(subscribers).where(subscribers.c.id == sid)
                                 .values(**values))
                missing = [t for t in row.topics if t not in current[sid]]
                if missing:
                    conn.execute(insert(subscriber_topics),
                                 [{"subscriber_id": sid, "topic": t} for t in missing])
            done += len(chunk)
            progress(done)
        if report.dry_run:
            raise _DryRun
