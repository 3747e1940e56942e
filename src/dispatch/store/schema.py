"""The store's tables (SQLAlchemy Core). Migrations in migrations/versions/ create them."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (Column, DateTime, Dialect, ForeignKey, Index, Integer, MetaData, String,
                        Table, Text, TypeDecorator)

metadata = MetaData()


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, also on SQLite (which keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value

STATUSES = ("pending", "active", "unsubscribed", "bounced", "complained")
SUPPRESSING = ("unsubscribed", "bounced", "complained")

subscribers = Table(
    "subscribers", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False),  # as given
    Column("email_key", String(320), nullable=False, unique=True),  # normalised, lower-case
    Column("name", String(200)),
    Column("timezone", String(64)),
    Column("status", String(16), nullable=False, index=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("confirmed_at", UTCDateTime()),
    Column("unsubscribed_at", UTCDateTime()),
    Column("last_sent_at", UTCDateTime()),
)

subscriber_topics = Table(
    "subscriber_topics", metadata,
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"),
           primary_key=True),
    Column("topic", String(64), primary_key=True),
    Index("ix_subscriber_topics_topic", "topic", "subscriber_id"),
)

# Outlives deletion: only a hash of the normalised address is kept.
suppressions = Table(
    "suppressions", metadata,
    Column("email_hash", String(64), primary_key=True),
    Column("reason", String(32), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

settings_table = Table(
    "store_settings", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
