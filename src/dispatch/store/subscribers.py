"""Subscribers, their topics, segments and the suppression list: every query lives here."""

from __future__ import annotations

import csv
from collections import Counter
import hashlib
import io
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from itertools import groupby
from typing import Any, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Connection, Engine, and_, delete, exists, func, insert, select, update
from sqlalchemy.sql.elements import ColumnElement

from dispatch.config import Segment
from dispatch.errors import ContentError, DispatchError, Problem
from dispatch.store.schema import STATUSES, SUPPRESSING, subscriber_topics, subscribers, \
    suppressions

BATCH = 5_000
IN_CHUNK = 900  # stays under SQLite's bound-parameter limit


@dataclass(frozen=True)
class Subscriber:
    id: int
    email: str
    name: str | None
    topics: tuple[str, ...]
    timezone: str | None
    status: str
    created_at: datetime
    confirmed_at: datetime | None = None
    unsubscribed_at: datetime | None = None
    last_sent_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {"email": self.email, "name": self.name, "topics": list(self.topics),
                "timezone": self.timezone, "status": self.status,
                "created_at": _iso(self.created_at), "confirmed_at": _iso(self.confirmed_at),
                "unsubscribed_at": _iso(self.unsubscribed_at),
                "last_sent_at": _iso(self.last_sent_at)}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def normalize(email: str) -> str:
    """The unique key of an address: syntax-checked (no DNS), normalised, lower-cased.
    Raises ValueError with the reason."""
    if any(c in email for c in "\r\n"):
        raise ValueError("line break in the address (header injection attempt)")
    try:
        return validate_email(email.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None


def email_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _topics_by_id(conn: Connection, ids: list[int]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {i: [] for i in ids}
    for chunk in _chunks(ids, IN_CHUNK):
        rows = conn.execute(select(subscriber_topics.c.subscriber_id, subscriber_topics.c.topic)
                            .where(subscriber_topics.c.subscriber_id.in_(chunk))
                            .order_by(subscriber_topics.c.topic))
        for sid, topic in rows:
            found[sid].append(topic)
    return found


def _subscribers(conn: Connection, condition: ColumnElement[bool] | None = None,
                 limit: int | None = None) -> list[Subscriber]:
    query = select(subscribers).order_by(subscribers.c.id)
    if condition is not None:
        query = query.where(condition)
    if limit is not None:
        query = query.limit(limit)
    rows = conn.execute(query).mappings().all()
    topics = _topics_by_id(conn, [r["id"] for r in rows])
    return [Subscriber(id=r["id"], email=r["email"], name=r["name"], topics=tuple(topics[r["id"]]),
                       timezone=r["timezone"], status=r["status"], created_at=r["created_at"],
                       confirmed_at=r["confirmed_at"], unsubscribed_at=r["unsubscribed_at"],
                       last_sent_at=r["last_sent_at"]) for r in rows]


def suppression_reason(conn: Connection, key: str) -> str | None:
    return conn.execute(select(suppressions.c.reason)
                        .where(suppressions.c.email_hash == email_hash(key))).scalar()


def _suppress(conn: Connection, key: str, reason: str, now: datetime) -> None:
    digest = email_hash(key)
    if conn.execute(select(suppressions.c.email_hash)
                    .where(suppressions.c.email_hash == digest)).first():
        conn.execute(update(suppressions).where(suppressions.c.email_hash == digest)
                     .values(reason=reason))
    else:
        conn.execute(insert(suppressions).values(email_hash=digest, reason=reason,
                                                 created_at=now))


def mark_bounced(conn: Connection, subscriber_id: int, now: datetime) -> None:
    """A hard bounce (5.1.x): the subscriber becomes bounced and the address suppressed."""
    key = conn.execute(select(subscribers.c.email_key)
                       .where(subscribers.c.id == subscriber_id)).scalar()
    if key is None:
        return
    conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id)
                 .values(status="bounced"))
    _suppress(conn, key, "bounced", now)


def _check_topics(topics: Iterable[str], known: Mapping[str, object]) -> list[str]:
    topics = list(dict.fromkeys(t.strip() for t in topics if t.strip()))
    unknown = [t for t in topics if t not in known]
    if unknown:
        raise DispatchError(Problem("--topics", f"unknown topic(s) {', '.join(unknown)} "
                                                f"(declared: {', '.join(known)})"))
    return topics


def _check_zone(zone: str | None) -> str | None:
    if zone is None:
        return None
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise DispatchError(Problem("--tz", f"unknown IANA time zone {zone!r}")) from None
    return zone


def get(engine: Engine, email: str) -> Subscriber | None:
    """A subscriber by address, matched case-insensitively."""
    try:
        key = normalize(email)
    except ValueError:
        return None
    with engine.connect() as conn:
        found = _subscribers(conn, subscribers.c.email_key == key)
    return found[0] if found else None


def require(engine: Engine, email: str) -> Subscriber:
    found = get(engine, email)
    if found is None:
        raise DispatchError(Problem(email, "no such subscriber"))
    return found


def add(engine: Engine, email: str, *, name: str | None, topics: Iterable[str],
        timezone: str | None, known_topics: Mapping[str, object], now: datetime,
        status: str = "active", resubscribe: bool = False) -> Subscriber:
    """Add one subscriber. A suppressed address is refused unless `resubscribe` is set: the
    explicit act of someone re-subscribing."""
    try:
        key = normalize(email)
    except ValueError as exc:
        raise DispatchError(Problem(email, f"invalid address: {exc}")) from None
    chosen = _check_topics(topics, known_topics)
    zone = _check_zone(timezone)
    with engine.begin() as conn:
        if conn.execute(select(subscribers.c.id).where(subscribers.c.email_key == key)).first():
            raise DispatchError(Problem(email, "already subscribed (use `dispatch subscribers "
                                               "set` to change topics or status)"))
        reason = suppression_reason(conn, key)
        if reason and not resubscribe:
            raise DispatchError(Problem(email, f"suppressed ({reason}): it is never mailed "
                                               "again unless it re-subscribes (--resubscribe)"))
        if reason:
            conn.execute(delete(suppressions).where(suppressions.c.email_hash == email_hash(key)))
        sid = conn.execute(insert(subscribers).values(
            email=email.strip(), email_key=key, name=name, timezone=zone, status=status,
            created_at=now, confirmed_at=now if status == "active" else None)
        ).inserted_primary_key[0]
        if chosen:
            conn.execute(insert(subscriber_topics),
                         [{"subscriber_id": sid, "topic": t} for t in chosen])
        return _subscribers(conn, subscribers.c.id == sid)[0]


def update_subscriber(engine: Engine, email: str, *, now: datetime,
                      known_topics: Mapping[str, object], topics: Iterable[str] | None = None,
                      status: str | None = None, timezone: str | None = None) -> Subscriber:
    """Change topics, status or timezone. Setting a suppressing status adds the address to the
    suppression list; setting `active` again is an explicit re-subscription and lifts it."""
    current = require(engine, email)
    key = normalize(current.email)
    if status is not None and status not in STATUSES:
        raise DispatchError(Problem("--status", f"expected one of {', '.join(STATUSES)}, "
                                                f"got {status!r}"))
    chosen = _check_topics(topics, known_topics) if topics is not None else None
    zone = _check_zone(timezone)
    with engine.begin() as conn:
        values: dict[str, Any] = {}
        if zone is not None:
            values["timezone"] = zone
        if status is not None and status != current.status:
            values["status"] = status
            if status in SUPPRESSING:
                values["unsubscribed_at"] = now
                _suppress(conn, key, status, now)
            elif status == "active":
                values["confirmed_at"] = current.confirmed_at or now
                conn.execute(delete(suppressions)
                             .where(suppressions.c.email_hash == email_hash(key)))
        if values:
            conn.execute(update(subscribers).where(subscribers.c.id == current.id)
                         .values(**values))
        if chosen is not None:
            conn.execute(delete(subscriber_topics)
                         .where(subscriber_topics.c.subscriber_id == current.id))
            if chosen:
                conn.execute(insert(subscriber_topics),
                             [{"subscriber_id": current.id, "topic": t} for t in chosen])
        return _subscribers(conn, subscribers.c.id == current.id)[0]


def forget(engine: Engine, email: str, now: datetime) -> None:
    """Erase a subscriber's personal data; keep only a hashed suppression entry."""
    current = require(engine, email)
    key = normalize(current.email)
    with engine.begin() as conn:
        _suppress(conn, key, "forgotten", now)
        conn.execute(delete(subscriber_topics)
                     .where(subscriber_topics.c.subscriber_id == current.id))
        conn.execute(delete(subscribers).where(subscribers.c.id == current.id))


# ---- Segments --------------------------------------------------------------------------

def _follows(topics: Iterable[str]) -> ColumnElement[bool]:
    return exists().where(and_(subscriber_topics.c.subscriber_id == subscribers.c.id,
                               subscriber_topics.c.topic.in_(list(topics))))


def segment_condition(segment: Segment) -> ColumnElement[bool]:
    """The segment as a SQL condition on subscribers (never a Python loop over people)."""
    if segment.match == "all":
        parts = [_follows([topic]) for topic in segment.topics]
    else:
        parts = [_follows(segment.topics)] if segment.topics else []
    if segment.exclude:
        parts.append(~_follows(segment.exclude))
    return and_(*parts) if parts else subscribers.c.id.is_not(None)


def list_subscribers(engine: Engine, *, topic: str | None = None, status: str | None = None,
                     segment: Segment | None = None, limit: int | None = None
                     ) -> list[Subscriber]:
    conditions = []
    if topic:
        conditions.append(_follows([topic]))
    if status:
        conditions.append(subscribers.c.status == status)
    if segment:
        conditions.append(segment_condition(segment))
    with engine.connect() as conn:
        return _subscribers(conn, and_(*conditions) if conditions else None, limit)


def segment_counts(engine: Engine, segments: Mapping[str, Segment]) -> dict[str, int]:
    """Active subscribers in each segment, counted by the database."""
    with engine.connect() as conn:
        return {name: conn.execute(select(func.count()).select_from(subscribers).where(
                    and_(subscribers.c.status == "active", segment_condition(segment)))).scalar_one()
                for name, segment in segments.items()}


def active_topic_mixes(engine: Engine) -> dict[frozenset[str], int]:
    """How many active subscribers follow each distinct set of topics (read-only)."""
    query = (select(subscribers.c.id, subscriber_topics.c.topic)
             .join(subscriber_topics, subscriber_topics.c.subscriber_id == subscribers.c.id,
                   isouter=True)
             .where(subscribers.c.status == "active").order_by(subscribers.c.id))
    with engine.connect() as conn:
        rows = conn.execute(query)
        return Counter(frozenset(topic for _, topic in group if topic)
                       for _, group in groupby(rows, key=lambda row: row[0]))


def count(engine: Engine, status: str | None = None) -> int:
    query = select(func.count()).select_from(subscribers)
    if status:
        query = query.where(subscribers.c.status == status)
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


# ---- CSV import and export -------------------------------------------------------------

@dataclass
class Row:
    line: int
    email: str
    key: str
    name: str | None
    topics: list[str]
    timezone: str | None


@dataclass
class ImportReport:
    read: int = 0
    added: int = 0
    updated: int = 0
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # line, email, reason
    dry_run: bool = False


def read_csv(text: str, known_topics: Mapping[str, object], source: str = "import.csv"
             ) -> tuple[list[Row], list[tuple[int, str, str]], int]:
    """Validate every row: (good rows merged by address, rejected rows, rows read)."""
    text = text.lstrip("\ufeff")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if "email" not in header:
        raise ContentError(Problem(source, "the first row must be a header naming the columns "
                                           "email, name, topics, timezone", 1))
    unknown = [h for h in header if h not in ("email", "name", "topics", "timezone")]
    if unknown:
        raise ContentError(Problem(source, f"unknown column(s) {', '.join(unknown)} (expected "
                                           "email, name, topics, timezone)", 1))
    reader.fieldnames = header
    rows: dict[str, Row] = {}
    rejected: list[tuple[int, str, str]] = []
    read = 0
    start_line = 2
    for record in reader:
        line, start_line = start_line, reader.line_num + 1
        read += 1
        if None in record:
            rejected.append((line, str(record.get("email") or ""), "more fields than columns"))
            continue
        values = {k: (v or "").strip() for k, v in record.items()}
        email = values.get("email", "")
        if not email:
            rejected.append((line, email, "empty address"))
            continue
        if any(c in v for v in values.values() for c in "\r\n"):
            rejected.append((line, email.splitlines()[0] if email else "",
                             "line break inside a field (header injection attempt)"))
            continue
        try:
            key = normalize(email)
        except ValueError as exc:
            rejected.append((line, email, f"invalid address: {exc}"))
            continue
        topics = [t.strip() for t in values.get("topics", "").replace("|", ";").split(";")
                  if t.strip()]
        bad = [t for t in topics if t not in known_topics]
        if bad:
            rejected.append((line, email, f"unknown topic(s) {', '.join(bad)}"))
            continue
        zone = values.get("timezone") or None
        if zone:
            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError):
                rejected.append((line, email, f"unknown time zone {zone!r}"))
                continue
        name = values.get("name") or None
        if name and (len(name) > 200 or any(ord(c) < 32 for c in name)):
            rejected.append((line, email, "name longer than 200 characters or with control "
                                          "characters"))
            continue
        if key in rows:
            first = rows[key]
            first.topics = list(dict.fromkeys(first.topics + topics))
            first.name = first.name or name
            first.timezone = first.timezone or zone
            rejected.append((line, email, f"duplicate of line {first.line} (topics merged)"))
            continue
        rows[key] = Row(line=line, email=email, key=key, name=name, topics=topics,
                        timezone=zone)
    return list(rows.values()), rejected, read


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
        for chunk in _chunks(keys, IN_CHUNK):
            for sid, key, status in conn.execute(
                    select(subscribers.c.id, subscribers.c.email_key, subscribers.c.status)
                    .where(subscribers.c.email_key.in_(chunk))):
                existing[key] = (sid, status)
        by_hash = {email_hash(k): k for k in keys}
        hashes = list(by_hash)
        for chunk in _chunks(hashes, IN_CHUNK):
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
        for chunk in _chunks(new, BATCH):
            ids = conn.execute(
                insert(subscribers).returning(subscribers.c.id, sort_by_parameter_order=True),
                [{"email": r.email, "email_key": r.key, "name": r.name, "timezone": r.timezone,
                  "status": "active", "created_at": now, "confirmed_at": now} for r in chunk]
            ).scalars().all()
            topic_rows = [{"subscriber_id": sid, "topic": t}
                          for sid, r in zip(ids, chunk) for t in r.topics]
            if topic_rows:
                conn.execute(insert(subscriber_topics), topic_rows)
            done += len(chunk)
            progress(done)
        for chunk in _chunks(old, IN_CHUNK):
            current = _topics_by_id(conn, [sid for sid, _ in chunk])
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


def export_csv(engine: Engine, out: TextIO) -> int:
    """Every subscriber as CSV in the import format (plus status), streamed in batches."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["email", "name", "topics", "timezone", "status"])
    written = 0
    last_id = 0
    with engine.connect() as conn:
        while True:
            batch = _subscribers(conn, subscribers.c.id > last_id, limit=BATCH)
            if not batch:
                return written
            for s in batch:
                writer.writerow([s.email, s.name or "", ";".join(s.topics), s.timezone or "",
                                 s.status])
            written += len(batch)
            last_id = batch[-1].id


def active_zones(engine: Engine) -> set[str | None]:
    """The distinct time zones of active subscribers (None for those without one)."""
    with engine.connect() as conn:
        return set(conn.execute(select(subscribers.c.timezone).distinct()
                                .where(subscribers.c.status == "active")).scalars())


# ---- What subscribers do on the web ----------------------------------------------------

def by_id(engine: Engine, subscriber_id: int) -> Subscriber | None:
    with engine.connect() as conn:
        found = _subscribers(conn, subscribers.c.id == subscriber_id)
    return found[0] if found else None


def unsubscribe(engine: Engine, subscriber_id: int, now: datetime) -> bool:
    """Stop all mail to an active or pending subscriber and suppress the address; False when
    they receive nothing already (repeating an unsubscribe changes nothing)."""
    with engine.begin() as conn:
        key = conn.execute(select(subscribers.c.email_key).where(and_(
            subscribers.c.id == subscriber_id,
            subscribers.c.status.in_(("active", "pending"))))).scalar()
        if key is None:
            return False
        conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id)
                     .values(status="unsubscribed", unsubscribed_at=now))
        _suppress(conn, key, "unsubscribed", now)
    return True


def resubscribe(engine: Engine, subscriber_id: int, now: datetime) -> bool:
    """An unsubscribed reader, back through a link only their mailbox received, is active
    again and no longer suppressed; False for any other status."""
    with engine.begin() as conn:
        key = conn.execute(select(subscribers.c.email_key).where(and_(
            subscribers.c.id == subscriber_id,
            subscribers.c.status == "unsubscribed"))).scalar()
        if key is None:
            return False
        _activate(conn, subscriber_id, key, now)
    return True


def _activate(conn: Connection, subscriber_id: int, key: str, now: datetime) -> None:
    conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id).values(
        status="active", unsubscribed_at=None,
        confirmed_at=func.coalesce(subscribers.c.confirmed_at, now)))
    conn.execute(delete(suppressions).where(suppressions.c.email_hash == email_hash(key)))


def set_preferences(engine: Engine, subscriber_id: int, *, topics: Iterable[str],
                    timezone: str | None, known_topics: Mapping[str, object]) -> None:
    """Replace a subscriber's topics and time zone (None: the newsletter's default)."""
    chosen = _check_topics(topics, known_topics)
    zone = _check_zone(timezone)
    with engine.begin() as conn:
        conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id)
                     .values(timezone=zone))
        conn.execute(delete(subscriber_topics)
                     .where(subscriber_topics.c.subscriber_id == subscriber_id))
        if chosen:
            conn.execute(insert(subscriber_topics),
                         [{"subscriber_id": subscriber_id, "topic": t} for t in chosen])


def signup_row(conn: Connection, email: str, key: str, *, name: str | None,
               topics: list[str], now: datetime) -> int | None:
    """The pending subscriber a sign-up form asks to confirm: created, or an existing pending
    or unsubscribed one updated to what was asked. None (nothing changes) for an active
    address, whose topics a stranger must not change, and for one that bounced or
    complained, which is never mailed again."""
    row = conn.execute(select(subscribers.c.id, subscribers.c.status)
                       .where(subscribers.c.email_key == key)).first()
    if row is None:
        if suppression_reason(conn, key) in ("bounced", "complained"):
            return None
        sid: int = conn.execute(insert(subscribers).values(
            email=email, email_key=key, name=name, status="pending", created_at=now)
        ).inserted_primary_key[0]
    elif row.status in ("pending", "unsubscribed"):
        sid = row.id
        conn.execute(update(subscribers).where(subscribers.c.id == sid)
                     .values(status="pending", name=name))
        conn.execute(delete(subscriber_topics).where(subscriber_topics.c.subscriber_id == sid))
    else:
        return None
    if topics:
        conn.execute(insert(subscriber_topics),
                     [{"subscriber_id": sid, "topic": t} for t in topics])
    return sid


def confirm(engine: Engine, subscriber_id: int, now: datetime) -> str | None:
    """Activate a pending subscriber; their status afterwards, or None if they are gone."""
    with engine.begin() as conn:
        row = conn.execute(select(subscribers.c.email_key, subscribers.c.status)
                           .where(subscribers.c.id == subscriber_id)).first()
        if row is None:
            return None
        if row.status != "pending":
            return str(row.status)
        _activate(conn, subscriber_id, row.email_key, now)
    return "active"
