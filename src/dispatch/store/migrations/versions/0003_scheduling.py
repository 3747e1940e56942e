"""Scheduling: send times and states on sends, recurring schedule runs, carried briefs.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE, not batch mode: rebuilding `sends` on SQLite would cascade-delete
    # the outbox rows that reference it.
    op.add_column("sends", sa.Column("send_at", sa.DateTime(timezone=True)))
    op.add_column("sends", sa.Column("local_time", sa.String(19)))
    op.add_column("sends", sa.Column("zone", sa.String(64)))
    op.add_column("sends", sa.Column("launched_at", sa.DateTime(timezone=True)))
    op.execute("ALTER TABLE sends RENAME COLUMN paused_reason TO reason")
    op.execute("UPDATE sends SET launched_at = created_at")
    op.execute("UPDATE sends SET status = 'sending' WHERE status = 'running'")
    op.execute("UPDATE sends SET status = 'sent' WHERE status = 'finished'")
    op.create_index("ix_sends_status_send_at", "sends", ["status", "send_at"])
    op.create_table(
        "schedule_runs",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("fire_time", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("issue", sa.String(200)),
        sa.Column("note", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "carried_briefs",
        sa.Column("folder", sa.String(300), primary_key=True),
        sa.Column("name", sa.String(300), primary_key=True),
        sa.Column("issue", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("carried_briefs")
    op.drop_table("schedule_runs")
    op.drop_index("ix_sends_status_send_at", "sends")
    op.execute("UPDATE sends SET status = 'running' WHERE status = 'sending'")
    op.execute("UPDATE sends SET status = 'finished' WHERE status = 'sent'")
    op.execute("ALTER TABLE sends RENAME COLUMN reason TO paused_reason")
    for column in ("launched_at", "zone", "local_time", "send_at"):
        op.drop_column("sends", column)
