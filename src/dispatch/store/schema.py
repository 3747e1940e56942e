"""The store's tables (SQLAlchemy Core). Migrations in migrations/versions/ create them.
Status and state columns hold the values of dispatch.states' enums."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)

from dispatch.audience.addresses import email_hash

metadata = MetaData()


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, also on SQLite (which keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def _key_hash(context: Any) -> str:
    return email_hash(context.get_current_parameters()["email_key"])


subscribers = Table(
    "subscribers", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False),  # as given
    Column("email_key", String(320), nullable=False, unique=True),  # normalised, lower-case
    # email_hash(email_key), filled on every insert: the launch joins it to suppressions in
    # SQL instead of hashing each subscriber in Python (by ix_subscribers_email_hash_status).
    Column("email_hash", String(64), default=_key_hash),
    Column("name", String(200)),
    Column("timezone", String(64)),
    Column("status", String(16), nullable=False, index=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("confirmed_at", UTCDateTime()),
    Column("unsubscribed_at", UTCDateTime()),
    Column("last_sent_at", UTCDateTime()),
    # Why a subscriber is bounced or complained ("5.1.1 user unknown", "ARF abuse report");
    # unsubscribed_at says when they left, whatever the status.
    Column("status_reason", Text),
    # The OR of topic_bits.bit of every topic they follow (0: none), kept by the store with
    # subscriber_topics (store/topic_masks.py): the launch and segments read this one column
    # instead of a lookup per topic.
    Column("topic_mask", BigInteger, nullable=False, server_default="0"),
    # The launch's plan: status, segments and topic mix counted from this index alone.
    Index("ix_subscribers_status_topic_mask", "status", "topic_mask"),
    # Suppressed subscribers found from the suppression list's side, a probe per entry.
    Index("ix_subscribers_email_hash_status", "email_hash", "status", "topic_mask"),
)

# Each topic followed by anyone: its bit in subscribers.topic_mask (a value of 1 << bit).
topic_bits = Table(
    "topic_bits", metadata,
    Column("topic", String(64), primary_key=True),
    Column("bit", Integer, nullable=False, unique=True),
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

# ---- Delivery ---------------------------------------------------------------------------

# One row per scheduled or launched issue: its state, when it goes out and why it stopped.
sends = Table(
    "sends", metadata,
    Column("issue", String(200), primary_key=True),
    Column("subject", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("recipients", Integer, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime()),
    Column("reason", Text),  # why it is paused, failed, missed or cancelled
    Column("send_at", UTCDateTime()),  # when a scheduled issue goes out (the first release)
    # Local-time delivery: the wall-clock time ("2026-12-01T07:00:00") each subscriber gets it
    # at in their own zone; None for one instant for everyone.
    Column("local_time", String(19)),
    Column("zone", String(64)),  # the zone the editor scheduled in, for display
    Column("launched_at", UTCDateTime()),  # audience snapshot taken; outbox rows exist
    # Who the audience snapshot left out and why: JSON {reason: count} (no brief matches
    # their topics, suppressed, outside the segments…), so status says what a dry run said.
    Column("skipped", Text),
    Index("ix_sends_status_send_at", "status", "send_at"),
)

# Each variant as rendered at launch, so every worker sends the same bytes even if the issue
# folder is edited (or absent on that machine) while the send runs.
send_variants = Table(
    "send_variants", metadata,
    Column("issue", String(200), ForeignKey("sends.issue", ondelete="CASCADE"),
           primary_key=True),
    Column("variant", String(64), primary_key=True),
    Column("html", Text, nullable=False),
    Column("text", Text, nullable=False),
)

# One row per (issue, subscriber): the unit of "nothing lost, nothing sent twice".
outbox = Table(
    "outbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("issue", String(200), ForeignKey("sends.issue", ondelete="CASCADE"),
           nullable=False),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="SET NULL")),
    Column("variant", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("claimed_by", String(120)),
    Column("message_id", String(250)),
    Column("reply", Text),
    # The connection was lost after an attempt's final dot: it may have arrived, so the row
    # is tried once more at most (deliver/outcomes.py).
    Column("outcome_unknown", Boolean, nullable=False, default=False,
           server_default=false()),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("issue", "subscriber_id", name="uq_outbox_issue_subscriber"),
    Index("ix_outbox_claim", "state", "next_attempt_at", "id"),
    Index("ix_outbox_issue_state", "issue", "state"),
    Index("ix_outbox_message_id", "message_id"),  # a report quoting one finds its row
    # Ids are never reused (SQLite would give a deleted row's id to the next one): a row's id
    # is in its tokens and a confirmation's Message-ID.
    sqlite_autoincrement=True,
)

# Live delivery processes; a row whose heartbeat is stale belongs to a dead worker, whose
# claimed rows go back to the queue.
workers = Table(
    "workers", metadata,
    Column("id", String(120), primary_key=True),
    Column("host", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("heartbeat_at", UTCDateTime(), nullable=False),
)


# ---- Scheduling --------------------------------------------------------------------------

# One row per fire time of a recurring schedule that was acted on, so a restart never builds
# the same digest twice and a missed one is reported once.
schedule_runs = Table(
    "schedule_runs", metadata,
    Column("name", String(100), primary_key=True),
    Column("fire_time", UTCDateTime(), primary_key=True),
    Column("outcome", String(16), nullable=False),  # created, nothing new, missed, failed
    Column("issue", String(200)),
    Column("note", Text),
    Column("created_at", UTCDateTime(), nullable=False),
)

# Briefs a recurring digest has carried, by file name within its folder: never carried twice.
carried_briefs = Table(
    "carried_briefs", metadata,
    Column("folder", String(300), primary_key=True),
    Column("name", String(300), primary_key=True),
    Column("issue", String(200), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)


# ---- Sign-up requests ----------------------------------------------------------------------

# What a sign-up form asked for an address that already has a subscriber row (pending or
# unsubscribed): kept aside and applied only when the confirmation link is clicked, so a
# stranger's form never changes someone else's subscription. One per subscriber: the latest.
signup_requests = Table(
    "signup_requests", metadata,
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"),
           primary_key=True),
    Column("name", String(200)),
    Column("topics", Text, nullable=False),  # a JSON list of topic keys
    Column("requested_at", UTCDateTime(), nullable=False),
)


# ---- What comes back ---------------------------------------------------------------------

# Every report received (bounce, complaint, auto-reply, mailto unsubscribe, unmatched), once:
# keyed by a fingerprint of the message, so the same report read again by any way in changes
# nothing. Web unsubscribes (one-click, preferences) are kept here too, for the per-send
# counts. The issue of an unmatched report is the one its Message-ID claims, if any.
reports = Table(
    "reports", metadata,
    Column("fingerprint", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # states.ReportKind
    Column("source", String(32), nullable=False),  # smtp, file, imap, a webhook, web
    Column("via", String(16)),  # unsubscribes: mailto, one-click, preferences
    Column("outbox_id", Integer, ForeignKey("outbox.id", ondelete="SET NULL")),
    Column("issue", String(200)),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="SET NULL")),
    Column("reason", Text),
    Column("received_at", UTCDateTime(), nullable=False),
    Index("ix_reports_issue_kind", "issue", "kind"),
    Index("ix_reports_subscriber_kind", "subscriber_id", "kind", "received_at"),
)


# ---- The archive ---------------------------------------------------------------------------

# Issues taken down from the public archive, or kept out of it before they go out: no foreign
# key, so an issue can be hidden while it is still a draft folder.
archive_hidden = Table(
    "archive_hidden", metadata,
    Column("issue", String(200), primary_key=True),
    Column("hidden_at", UTCDateTime(), nullable=False),
)


# ---- The console's accounts ------------------------------------------------------------------

# People who sign in to the console (web/console/); passwords as argon2 hashes only.
users = Table(
    "users", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),  # lower-case
    Column("role", String(16), nullable=False),  # states.Role
    Column("password_hash", Text, nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

# Signed-in browsers. Only a hash of the cookie's id is kept, so a copy of the store cannot
# be used to sign in; a row deleted is a session revoked.
user_sessions = Table(
    "user_sessions", metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False,
           index=True),
    Column("csrf", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("seen_at", UTCDateTime(), nullable=False),
)

# Sign-in attempts, by account ("account:<email>") and by client ("client:<address>"), for
# the login throttle: one row per key, counted up in the statement that reads the count (an
# upsert takes the row's lock), so parallel attempts cannot all read "under the limit".
login_attempts = Table(
    "login_attempts", metadata,
    Column("key", String(400), primary_key=True),
    Column("since", UTCDateTime(), nullable=False),  # the window's start
    Column("attempts", Integer, nullable=False),
)

# Who did what, when: every console action and every account change. Never updated.
audit_log = Table(
    "audit_log", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime(), nullable=False, index=True),
    Column("actor", String(320), nullable=False),  # an account's email, or "cli"
    Column("action", String(64), nullable=False),
    Column("target", Text, nullable=False),
    Column("detail", Text),
)
