"""Sends keep who was left out of their audience and why, so status and a dry run agree.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # JSON {reason: count} from the audience snapshot; NULL for sends launched before.
    with op.batch_alter_table("sends") as batch:
        batch.add_column(sa.Column("skipped", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("sends") as batch:
        batch.drop_column("skipped")
