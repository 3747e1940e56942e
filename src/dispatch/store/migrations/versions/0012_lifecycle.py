"""An outbox row's unknown outcome (the connection lost after its final dot) as a column of
its own, not a phrase inside its reply text (issue 23).

Revision ID: 0012_lifecycle
Revises: 0011_messages
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_lifecycle"
down_revision = "0011_messages"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN, never a batch rebuild: on SQLite a rebuild would drop the outbox's
    # AUTOINCREMENT (0011) and blank the reports' links to its rows.
    op.add_column("outbox", sa.Column("outcome_unknown", sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    # Rows written before the column said so only in their reply.
    op.execute("UPDATE outbox SET outcome_unknown = true WHERE reply LIKE '%unknown outcome%'"
               " AND state IN ('queued', 'retrying', 'sending')")


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("outcome_unknown")
