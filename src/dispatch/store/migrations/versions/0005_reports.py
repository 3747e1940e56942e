"""What comes back: received reports, why a subscriber left, Message-IDs looked up.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reports",
        sa.Column("fingerprint", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("via", sa.String(16)),
        sa.Column("outbox_id", sa.Integer, sa.ForeignKey("outbox.id", ondelete="SET NULL")),
        sa.Column("issue", sa.String(200)),
        sa.Column("subscriber_id", sa.Integer,
                  sa.ForeignKey("subscribers.id", ondelete="SET NULL")),
        sa.Column("reason", sa.Text),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_reports_issue_kind", "reports", ["issue", "kind"])
    op.create_index("ix_reports_subscriber_kind", "reports",
                    ["subscriber_id", "kind", "received_at"])
    op.create_index("ix_outbox_message_id", "outbox", ["message_id"])
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("status_reason", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("status_reason")
    op.drop_index("ix_outbox_message_id", "outbox")
    op.drop_table("reports")
