"""Delivery: sends, their rendered variants, the outbox and live workers.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sends",
        sa.Column("issue", sa.String(200), primary_key=True),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("recipients", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("paused_reason", sa.Text),
    )
    op.create_table(
        "send_variants",
        sa.Column("issue", sa.String(200), sa.ForeignKey("sends.issue", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("variant", sa.String(64), primary_key=True),
        sa.Column("html", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("issue", sa.String(200), sa.ForeignKey("sends.issue", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("subscriber_id", sa.Integer,
                  sa.ForeignKey("subscribers.id", ondelete="SET NULL")),
        sa.Column("variant", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(120)),
        sa.Column("message_id", sa.String(250)),
        sa.Column("reply", sa.Text),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("issue", "subscriber_id", name="uq_outbox_issue_subscriber"),
    )
    op.create_index("ix_outbox_claim", "outbox", ["state", "next_attempt_at", "id"])
    op.create_index("ix_outbox_issue_state", "outbox", ["issue", "state"])
    op.create_table(
        "workers",
        sa.Column("id", sa.String(120), primary_key=True),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("workers")
    op.drop_index("ix_outbox_issue_state", "outbox")
    op.drop_index("ix_outbox_claim", "outbox")
    op.drop_table("outbox")
    op.drop_table("send_variants")
    op.drop_table("sends")
