"""Bulk import of checked CSV rows (audience/csvio.py reads them): new subscribers added and
existing ones' topics merged, in one transaction, suppressed addresses refused.

Rows are streamed in batches, so memory stays flat for any file: each batch looks up its
addresses and suppressions, and its new subscribers go in by the database's bulk path (COPY on
PostgreSQL, one executemany on SQLite). What this import did to each subscriber id (first
line, whether it gave a name or a zone) is kept in two flat arrays, five bytes per id, so a
duplicate address in a later batch is recognised and merged as read_csv merges it."""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, select, text, update

from dispatch.audience.addresses import email_hash
from dispatch.audience.csvio import Rejected, Row, merge_duplicate
from dispatch.config.defaults import IMPORT_BATCH
from dispatch.states import SUPPRESSING, SubscriberStatus
from dispatch.store.schema import subscribers
from dispatch.store.subscribers import IN_CHUNK, chunks, topics_by_id
from dispatch.store.topic_masks import add_topics, assign, mask_of

_TOUCHED, _NAMED, _ZONED = 1, 2, 4  # what this import did to a subscriber id


@dataclass
class ImportReport:
    read: int = 0
    added: int = 0
    updated: int = 0
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # line, email, reason
    dry_run: bool = False


def import_rows(engine: Engine, rows: Iterable[Row | Rejected], now: datetime, *,
                dry_run: bool = False, progress: Callable[[int], None] = lambda _: None,
                batch: int = IMPORT_BATCH) -> ImportReport:
    """Add new subscribers and merge topics into existing ones, in one transaction: a failure
    anywhere leaves the store exactly as it was. Suppressed addresses are rejected; a
    Rejected item (csvio.iter_csv's) is reported as it is; a later row for an address seen
    earlier is merged into the first (topics added, name and zone if the first had none) and
    reported as its duplicate. `progress` gets the number of rows handled so far; `batch` rows
    are read and written at a time."""
    report = ImportReport(dry_run=dry_run)
    try:
        with engine.begin() as conn:
            _Import(conn, now, report).run(rows, progress, batch)
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    return report


class _DryRun(Exception):
    """Raised inside the import transaction to roll a dry run back."""


def _batches(items: Iterable[Row | Rejected], size: int) -> Iterator[list[Row | Rejected]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


class _Import:
    def __init__(self, conn: Connection, now: datetime, report: ImportReport) -> None:
        self.conn = conn
        self.now = now
        self.report = report
        self.flags = bytearray()  # subscriber id -> _TOUCHED | _NAMED | _ZONED
        self.first_line = array("l")  # subscriber id -> the line that touched it first
        self.suppressed_lines: dict[str, int] = {}  # refused keys: a later line is a duplicate
        self.next_id: int | None = None
        self.values: dict[str, int] = {}  # topic -> its bit (store/topic_masks.py)
        self.postgres = conn.dialect.name == "postgresql"
        # The rows go to the driver as they are: on SQLite, times in the text form
        # SQLAlchemy's DateTime stores there (UTC, no offset).
        self.now_bound: Any = (now if self.postgres else
                               now.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"))

    def run(self, rows: Iterable[Row | Rejected], progress: Callable[[int], None],
            size: int) -> None:
        done = 0
        for batch in _batches(rows, size):
            self.report.read += len(batch)
            good: dict[str, Row] = {}
            for item in batch:
                if isinstance(item, Rejected):
                    self.report.rejected.append((item.line, item.email, item.reason))
                elif item.key in good:
                    self.report.rejected.append((item.line, item.email,
                                                 merge_duplicate(good[item.key], item)))
                else:
                    good[item.key] = item
            self._batch(list(good.values()))
            done += len(batch)
            progress(done)

    def _mark(self, sid: int, row: Row) -> None:
        if sid >= len(self.flags):
            grow = max(sid + 1 - len(self.flags), len(self.flags))
            self.flags.extend(bytes(grow))
            self.first_line.frombytes(bytes(self.first_line.itemsize * grow))
        self.flags[sid] = (_TOUCHED | (_NAMED if row.name else 0)
                           | (_ZONED if row.timezone else 0))
        self.first_line[sid] = row.line

    def _touched(self, sid: int) -> bool:
        return sid < len(self.flags) and bool(self.flags[sid] & _TOUCHED)

    def _batch(self, rows: list[Row]) -> None:
        hashes = {r.key: email_hash(r.key) for r in rows}
        existing = {key: (sid, status) for sid, key, status in self._lookup(
            "SELECT id, email_key, status FROM subscribers WHERE email_key", list(hashes))}
        suppressed = {digest: reason for digest, reason in self._lookup(
            "SELECT email_hash, reason FROM suppressions WHERE email_hash",
            list(hashes.values()))}
        new: list[Row] = []
        old: list[tuple[int, Row, bool]] = []  # (id, row, a duplicate of an earlier line)
        for row in rows:
            sid, status = existing.get(row.key, (0, ""))
            reason = suppressed.get(hashes[row.key]) or (status if status in SUPPRESSING
                                                         else None)
            if row.key in self.suppressed_lines:
                self.report.rejected.append((row.line, row.email, f"duplicate of line "
                                             f"{self.suppressed_lines[row.key]} (topics merged)"))
            elif reason:
                self.suppressed_lines[row.key] = row.line
                self.report.rejected.append((row.line, row.email, f"suppressed ({reason}): "
                                             "never mailed again unless it re-subscribes"))
            elif sid and self._touched(sid):
                self.report.rejected.append((row.line, row.email, f"duplicate of line "
                                             f"{self.first_line[sid]} (topics merged)"))
                old.append((sid, row, True))
            elif sid:
                self.report.updated += 1
                old.append((sid, row, False))
            else:
                new.append(row)
        if new:
            self._add(new, hashes)
        if old:
            self._merge(old)

    def _lookup(self, query: str, values: list[str]) -> Iterator[Any]:
        """`query` ending in a column, for the rows whose column is one of `values`: one
        array parameter on PostgreSQL (a 10,000-long IN list costs more to plan than to
        run), chunks under SQLite's parameter limit otherwise."""
        if self.postgres:
            yield from self.conn.exec_driver_sql(f"{query} = ANY(%s)", (values,))
            return
        for chunk in chunks(values, IN_CHUNK):
            marks = ", ".join("?" * len(chunk))
            yield from self.conn.exec_driver_sql(f"{query} IN ({marks})", tuple(chunk))

    def _add(self, rows: list[Row], hashes: dict[str, str]) -> None:
        ids = self._new_ids(len(rows))
        values = self._bits({t for r in rows for t in r.topics})
        masks: dict[tuple[str, ...], int] = {}  # a list has few distinct topic mixes
        for r in rows:
            mix = tuple(r.topics)
            if mix not in masks:
                masks[mix] = mask_of(values, mix)
        active = SubscriberStatus.ACTIVE.value
        people = [(sid, r.email, r.key, hashes[r.key], r.name, r.timezone, active,
                   self.now_bound, self.now_bound, masks[tuple(r.topics)])
                  for sid, r in zip(ids, rows, strict=True)]
        topics = [(sid, t) for sid, r in zip(ids, rows, strict=True) for t in r.topics]
        columns = ("id, email, email_key, email_hash, name, timezone, status, created_at, "
                   "confirmed_at, topic_mask")
        driver = self.conn.connection.driver_connection
        if self.postgres:
            cursor: Any = driver.cursor()  # type: ignore[union-attr]
            with cursor.copy(f"COPY subscribers ({columns}) FROM STDIN") as copy:
                for person in people:
                    copy.write_row(person)
            with cursor.copy("COPY subscriber_topics (subscriber_id, topic) FROM STDIN") as copy:
                for pair in topics:
                    copy.write_row(pair)
        else:
            self.conn.exec_driver_sql(
                f"INSERT INTO subscribers ({columns}) VALUES ({', '.join('?' * 10)})", people)
            if topics:
                self.conn.exec_driver_sql(
                    "INSERT INTO subscriber_topics (subscriber_id, topic) VALUES (?, ?)", topics)
        for sid, row in zip(ids, rows, strict=True):
            self._mark(sid, row)
        self.report.added += len(rows)

    def _bits(self, topics: set[str]) -> dict[str, int]:
        """Topic bits for the masks, read (or given) once per import, not per batch."""
        if not topics <= self.values.keys():
            self.values = assign(self.conn, topics | self.values.keys())
        return self.values

    def _new_ids(self, n: int) -> list[int]:
        """Ids for n new subscribers, given before the rows go in (COPY returns none).
        PostgreSQL: from the table's own sequence. SQLite: after the highest id, read in
        this write transaction (a writer that slipped in between fails the import whole)."""
        if self.postgres:
            return list(self.conn.execute(
                text("SELECT nextval(pg_get_serial_sequence('subscribers', 'id')) "
                     "FROM generate_series(1, :n)"), {"n": n}).scalars())
        if self.next_id is None:
            self.next_id = (self.conn.execute(select(func.max(subscribers.c.id))).scalar()
                            or 0) + 1
        start, self.next_id = self.next_id, self.next_id + n
        return list(range(start, start + n))

    def _merge(self, rows: list[tuple[int, Row, bool]]) -> None:
        """Existing subscribers: name and zone as given (for a duplicate line, only if no
        earlier line of this import gave one), missing topics added."""
        conn = self.conn
        current = topics_by_id(conn, sorted({sid for sid, _, _ in rows}))
        changes: list[dict[str, Any]] = []
        added: list[tuple[int, str]] = []
        for sid, row, duplicate in rows:
            flags = self.flags[sid] if duplicate else 0
            name = row.name if row.name and not flags & _NAMED else None
            zone = row.timezone if row.timezone and not flags & _ZONED else None
            if name or zone:
                changes.append({"sid": sid, "n": name, "z": zone})
            for topic in row.topics:
                if topic not in current[sid]:
                    current[sid].append(topic)
                    added.append((sid, topic))
            if duplicate:
                self.flags[sid] |= (_NAMED if name else 0) | (_ZONED if zone else 0)
            else:
                self._mark(sid, row)
        if changes:
            conn.execute(update(subscribers).where(subscribers.c.id == bindparam("sid"))
                         .values(name=func.coalesce(bindparam("n"), subscribers.c.name),
                                 timezone=func.coalesce(bindparam("z"),
                                                        subscribers.c.timezone)), changes)
        add_topics(conn, added)
