"""The suppression list: addresses never mailed again (unsubscribed, bounced, complained,
forgotten), kept by hash so it outlives deletion; and lifting it when a reader comes back."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete, func, insert, select, update

from dispatch.audience.addresses import email_hash
from dispatch.states import SubscriberStatus
from dispatch.store.schema import subscribers, suppressions


def suppression_reason(conn: Connection, key: str) -> str | None:
    return conn.execute(select(suppressions.c.reason)
                        .where(suppressions.c.email_hash == email_hash(key))).scalar()


def suppress(conn: Connection, key: str, reason: str, now: datetime) -> None:
    digest = email_hash(key)
    if conn.execute(select(suppressions.c.email_hash)
                    .where(suppressions.c.email_hash == digest)).first():
        conn.execute(update(suppressions).where(suppressions.c.email_hash == digest)
                     .values(reason=reason))
    else:
        conn.execute(insert(suppressions).values(email_hash=digest, reason=reason,
                                                 created_at=now))


def lift(conn: Connection, key: str) -> None:
    """The address may be mailed again: an explicit re-subscription."""
    conn.execute(delete(suppressions).where(suppressions.c.email_hash == email_hash(key)))


def activate(conn: Connection, subscriber_id: int, key: str, now: datetime) -> None:
    """A returning or confirming reader: active, their leaving forgotten, no longer
    suppressed."""
    conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id).values(
        status=SubscriberStatus.ACTIVE, unsubscribed_at=None, status_reason=None,
        confirmed_at=func.coalesce(subscribers.c.confirmed_at, now)))
    lift(conn, key)
