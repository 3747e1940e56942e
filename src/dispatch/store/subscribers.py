"""Subscribers and their topics: adding, reading, changing and forgetting them, and their
status changes (unsubscribed, bounced, complained). Addresses are checked by
audience/addresses.py first; the suppression list is store/suppressions.py, sign-up requests
store/signups.py, a subscriber's history store/history.py, segments store/segments.py."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, insert, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from dispatch.audience.addresses import name_problem, normalize
from dispatch.clock import is_zone
from dispatch.config import Segment
from dispatch.config.defaults import SUBSCRIBER_BATCH
from dispatch.config.topics import check_topics
from dispatch.errors import DispatchError, Problem
from dispatch.states import RECEIVING, SUPPRESSING, SubscriberStatus
from dispatch.store import audit
from dispatch.store.schema import (
    subscriber_topics,
    subscribers,
)
from dispatch.store.segments import follows, segment_condition, segment_topics
from dispatch.store.signups import withdraw_request
from dispatch.store.suppressions import activate, lift, suppress, suppression_reason
from dispatch.store.topic_masks import bits, set_topics

PREFERENCES_CHANGED = "preferences changed"  # the audit action of set_preferences
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
    status_reason: str | None = None  # why bounced or complained

    def as_json(self) -> dict[str, Any]:
        return {"email": self.email, "name": self.name, "topics": list(self.topics),
                "timezone": self.timezone, "status": self.status,
                "created_at": _iso(self.created_at), "confirmed_at": _iso(self.confirmed_at),
                "unsubscribed_at": _iso(self.unsubscribed_at),
                "last_sent_at": _iso(self.last_sent_at), "status_reason": self.status_reason}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def topics_by_id(conn: Connection, ids: list[int]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {i: [] for i in ids}
    for chunk in chunks(ids, IN_CHUNK):
        rows = conn.execute(select(subscriber_topics.c.subscriber_id, subscriber_topics.c.topic)
                            .where(subscriber_topics.c.subscriber_id.in_(chunk))
                            .order_by(subscriber_topics.c.topic))
        for sid, topic in rows:
            found[sid].append(topic)
    return found


def topics_for(engine: Engine, ids: list[int]) -> dict[int, list[str]]:
    """topics_by_id in a connection of its own."""
    with engine.connect() as conn:
        return topics_by_id(conn, ids)


def _subscribers(conn: Connection, condition: ColumnElement[bool] | None = None,
                 limit: int | None = None) -> list[Subscriber]:
    query = select(subscribers).order_by(subscribers.c.id)
    if condition is not None:
        query = query.where(condition)
    if limit is not None:
        query = query.limit(limit)
    rows = conn.execute(query).mappings().all()
    topics = topics_by_id(conn, [r["id"] for r in rows])
    return [Subscriber(id=r["id"], email=r["email"], name=r["name"], topics=tuple(topics[r["id"]]),
                       timezone=r["timezone"], status=r["status"], created_at=r["created_at"],
                       confirmed_at=r["confirmed_at"], unsubscribed_at=r["unsubscribed_at"],
                       last_sent_at=r["last_sent_at"], status_reason=r["status_reason"])
            for r in rows]


def mark_bounced(conn: Connection, subscriber_id: int, now: datetime,
                 reason: str | None = None) -> bool:
    """A hard bounce (5.1.x): the subscriber becomes bounced and the address suppressed."""
    return mark_suppressed(conn, subscriber_id, SubscriberStatus.BOUNCED, now, reason)


def mark_suppressed(conn: Connection, subscriber_id: int, status: SubscriberStatus,
                    now: datetime, reason: str | None = None) -> bool:
    """A bounce or a complaint: the subscriber becomes `status` (bounced or complained), the
    address is suppressed and the reason and time kept; False when nothing changed (gone,
    already so, or a complaint that a bounce must not overwrite: who complained stays
    complained)."""
    row = conn.execute(select(subscribers.c.email_key, subscribers.c.status)
                       .where(subscribers.c.id == subscriber_id)).first()
    if row is None or row.status == status or row.status == SubscriberStatus.COMPLAINED:
        return False
    conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id)
                 .values(status=status, status_reason=reason, unsubscribed_at=now))
    suppress(conn, row.email_key, status, now)
    withdraw_request(conn, subscriber_id, now)
    return True


def _check_zone(zone: str | None) -> str | None:
    if zone is not None and not is_zone(zone):
        raise DispatchError(Problem("timezone", f"unknown IANA time zone {zone!r}"))
    return zone


def _check_name(email: str, name: str | None) -> str | None:
    """A display name held to the rule of CSV import and the sign-up form: it reaches the To
    header of every message. Blank means none."""
    if name is None or not name.strip():
        return None
    problem = name_problem(name)
    if problem:
        raise DispatchError(Problem(email.strip(), problem))
    return name.strip()


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
        status: SubscriberStatus = SubscriberStatus.ACTIVE, resubscribe: bool = False
        ) -> Subscriber:
    """Add one subscriber. A suppressed address is refused unless `resubscribe` is set: the
    explicit act of someone re-subscribing."""
    try:
        key = normalize(email)
    except ValueError as exc:
        raise DispatchError(Problem(email, f"invalid address: {exc}")) from None
    chosen = check_topics(topics, known_topics)
    zone = _check_zone(timezone)
    name = _check_name(email, name)
    with engine.begin() as conn:
        existing = conn.execute(select(subscribers.c.id, subscribers.c.status)
                                .where(subscribers.c.email_key == key)).first()
        if existing is not None and (existing.status == SubscriberStatus.ACTIVE
                                     or not resubscribe):
            if existing.status == SubscriberStatus.ACTIVE:
                raise DispatchError(Problem(email, "already subscribed (use `dispatch "
                                                   "subscribers set` to change topics or "
                                                   "status)"))
            raise DispatchError(Problem(email, f"in the list as {existing.status}: "
                                               "--resubscribe makes them active again, if "
                                               "they asked to be"))
        reason = suppression_reason(conn, key)
        if reason and not resubscribe:
            raise DispatchError(Problem(email, f"suppressed ({reason}): it is never mailed "
                                               "again unless it re-subscribes (--resubscribe)"))
        if reason:
            lift(conn, key)
        if existing is not None:
            # An unsubscribed (bounced, complained, pending) reader re-subscribing, as they
            # asked: active again, with the name, topics and zone given here when given.
            withdraw_request(conn, existing.id, now)
            values: dict[str, Any] = {"status": status, "unsubscribed_at": None,
                                      "confirmed_at": now}
            values.update({k: v for k, v in (("name", name), ("timezone", zone)) if v})
            conn.execute(update(subscribers).where(subscribers.c.id == existing.id)
                         .values(**values))
            if chosen:
                set_topics(conn, existing.id, chosen)
            return _subscribers(conn, subscribers.c.id == existing.id)[0]
        sid = conn.execute(insert(subscribers).values(
            email=email.strip(), email_key=key, name=name, timezone=zone, status=status,
            created_at=now, confirmed_at=now if status == SubscriberStatus.ACTIVE else None)
            .returning(subscribers.c.id)).scalar_one()
        if chosen:
            set_topics(conn, sid, chosen)
        return _subscribers(conn, subscribers.c.id == sid)[0]


def update_subscriber(engine: Engine, email: str, *, now: datetime,
                      known_topics: Mapping[str, object], topics: Iterable[str] | None = None,
                      status: str | None = None, timezone: str | None = None,
                      name: str | None = None) -> Subscriber:
    """Change topics, status, timezone or name. Setting a suppressing status adds the address to the
    suppression list; setting `active` again is an explicit re-subscription and lifts it."""
    current = require(engine, email)
    key = normalize(current.email)
    if status is not None and status not in set(SubscriberStatus):
        raise DispatchError(Problem("status", f"expected one of "
                                              f"{', '.join(SubscriberStatus)}, got {status!r}"))
    chosen = check_topics(topics, known_topics) if topics is not None else None
    zone = _check_zone(timezone)
    checked_name = _check_name(current.email, name)
    with engine.begin() as conn:
        values: dict[str, Any] = {}
        if zone is not None:
            values["timezone"] = zone
        if checked_name is not None:
            values["name"] = checked_name
        if status is not None and status != current.status:
            values["status"] = status
            values["status_reason"] = "set by an operator" if status in SUPPRESSING else None
            withdraw_request(conn, current.id, now)  # an operator's decision settles it
            if status in SUPPRESSING:
                values["unsubscribed_at"] = now
                suppress(conn, key, status, now)
            elif status == SubscriberStatus.ACTIVE:
                values["confirmed_at"] = current.confirmed_at or now
                lift(conn, key)
        if values:
            conn.execute(update(subscribers).where(subscribers.c.id == current.id)
                         .values(**values))
        if chosen is not None:
            set_topics(conn, current.id, chosen)
        return _subscribers(conn, subscribers.c.id == current.id)[0]


def forget(engine: Engine, email: str, now: datetime) -> None:
    """Erase a subscriber's personal data; keep only a hashed suppression entry."""
    current = require(engine, email)
    key = normalize(current.email)
    with engine.begin() as conn:
        suppress(conn, key, "forgotten", now)
        conn.execute(delete(subscriber_topics)
                     .where(subscriber_topics.c.subscriber_id == current.id))
        conn.execute(delete(subscribers).where(subscribers.c.id == current.id))


def list_subscribers(engine: Engine, *, topic: str | None = None, status: str | None = None,
                     segment: Segment | None = None, limit: int | None = None,
                     search: str | None = None) -> list[Subscriber]:
    """Subscribers matching every filter given; `search` is a case-insensitive part of the
    address or the name."""
    conditions = []
    if search and search.strip():
        # LIKE's own wildcards in what was typed are matched literally.
        needle = "%" + re.sub(r"([\\%_])", r"\\\1", search.strip().lower()) + "%"
        conditions.append(or_(subscribers.c.email_key.like(needle, escape="\\"),
                              func.lower(subscribers.c.name).like(needle, escape="\\")))
    if topic:
        conditions.append(follows([topic]))
    if status:
        conditions.append(subscribers.c.status == status)
    with engine.connect() as conn:
        if segment:
            conditions.append(segment_condition(segment, bits(conn, segment_topics([segment]))))
        return _subscribers(conn, and_(*conditions) if conditions else None, limit)


def count(engine: Engine, status: str | None = None) -> int:
    query = select(func.count()).select_from(subscribers)
    if status:
        query = query.where(subscribers.c.status == status)
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


# ---- Export (the import: store/imports.py) ---------------------------------------------

def iter_subscribers(engine: Engine, batch: int = SUBSCRIBER_BATCH) -> Iterator[Subscriber]:
    """Every subscriber in id order, read in batches (constant memory for any list size)."""
    last_id = 0
    with engine.connect() as conn:
        while True:
            found = _subscribers(conn, subscribers.c.id > last_id, limit=batch)
            if not found:
                return
            yield from found
            last_id = found[-1].id


def active_zones(engine: Engine) -> set[str | None]:
    """The distinct time zones of active subscribers (None for those without one)."""
    with engine.connect() as conn:
        return set(conn.execute(select(subscribers.c.timezone).distinct()
                                .where(subscribers.c.status == SubscriberStatus.ACTIVE)).scalars())


# ---- What subscribers do on the web ----------------------------------------------------

def by_id(engine: Engine, subscriber_id: int) -> Subscriber | None:
    with engine.connect() as conn:
        found = _subscribers(conn, subscribers.c.id == subscriber_id)
    return found[0] if found else None


def unsubscribe(engine: Engine, subscriber_id: int, now: datetime,
                reason: str = "set by an operator") -> bool:
    """Stop all mail to an active or pending subscriber and suppress the address; False when
    they receive nothing already (repeating an unsubscribe changes nothing). A sign-up request
    waiting for confirmation is withdrawn either way: "unsubscribe" in a confirmation message
    someone else asked for means no. `reason`: how they left, as `subscribers list` shows it
    (a reader's own unsubscribes come through store.reports.record, which names the way)."""
    with engine.begin() as conn:
        return unsubscribe_in(conn, subscriber_id, now, reason)


def unsubscribe_in(conn: Connection, subscriber_id: int, now: datetime, reason: str) -> bool:
    """`unsubscribe` in the caller's transaction."""
    withdraw_request(conn, subscriber_id, now)
    key = conn.execute(select(subscribers.c.email_key).where(and_(
        subscribers.c.id == subscriber_id,
        subscribers.c.status.in_(RECEIVING)))).scalar()
    if key is None:
        return False
    conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id)
                 .values(status=SubscriberStatus.UNSUBSCRIBED, status_reason=reason,
                         unsubscribed_at=now))
    suppress(conn, key, SubscriberStatus.UNSUBSCRIBED, now)
    return True


def resubscribe(engine: Engine, subscriber_id: int, now: datetime) -> bool:
    """An unsubscribed reader, back through a link only their mailbox received, is active
    again and no longer suppressed; False for any other status."""
    with engine.begin() as conn:
        key = conn.execute(select(subscribers.c.email_key).where(and_(
            subscribers.c.id == subscriber_id,
            subscribers.c.status == SubscriberStatus.UNSUBSCRIBED))).scalar()
        if key is None:
            return False
        activate(conn, subscriber_id, key, now)
    return True


def set_preferences(engine: Engine, subscriber_id: int, *, topics: Iterable[str],
                    timezone: str | None, known_topics: Mapping[str, object], now: datetime,
                    actor: str = audit.READER) -> bool:
    """Replace a subscriber's topics and time zone (None: the newsletter's default), with an
    audit entry naming `actor` and what changed, in the same transaction (their history shows
    it). False when nothing changed: nothing is written."""
    chosen = check_topics(topics, known_topics)
    zone = _check_zone(timezone)
    with engine.begin() as conn:
        before = topics_by_id(conn, [subscriber_id])[subscriber_id]
        was = conn.execute(select(subscribers.c.timezone)
                           .where(subscribers.c.id == subscriber_id)).scalar()
        changes = []
        if sorted(chosen) != sorted(before):
            changes.append(f"topics {', '.join(chosen) or 'none'} "
                           f"(were {', '.join(before) or 'none'})")
        if zone != was:
            changes.append(f"zone {zone or 'default'} (was {was or 'default'})")
        if not changes:
            return False
        conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id)
                     .values(timezone=zone))
        set_topics(conn, subscriber_id, chosen)
        audit.record_in(conn, actor, PREFERENCES_CHANGED, audit.subscriber_target(subscriber_id),
                        now, "; ".join(changes))
    return True
