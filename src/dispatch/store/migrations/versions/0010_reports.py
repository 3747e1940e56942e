"""Unsubscribes by their way: a relay's webhook unsubscribe was stored as via "mailto"
(issue 23); it is "webhook" now (its source names the relay). Unsubscribed readers whose
status_reason was left empty get the way and issue of their last unsubscribe report.

Revision ID: 0010_reports
Revises: 0009
"""

from alembic import op

revision = "0010_reports"
down_revision = "0009"
branch_labels = None
depends_on = None

MAIL_SOURCES = "('file', 'smtp', 'imap', 'web')"


def upgrade() -> None:
    op.execute("UPDATE reports SET via = 'webhook' WHERE kind = 'unsubscribe' AND "
               f"source NOT IN {MAIL_SOURCES}")
    op.execute(
        "UPDATE subscribers SET status_reason = ("
        " SELECT 'unsubscribed by ' || r.via || COALESCE(' from ' || r.issue, '')"
        " FROM reports r WHERE r.subscriber_id = subscribers.id AND r.kind = 'unsubscribe'"
        " AND r.via IS NOT NULL ORDER BY r.received_at DESC LIMIT 1)"
        " WHERE status = 'unsubscribed' AND status_reason IS NULL")


def downgrade() -> None:
    op.execute("UPDATE reports SET via = 'mailto' WHERE via = 'webhook'")
