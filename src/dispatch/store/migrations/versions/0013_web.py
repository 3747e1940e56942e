"""The login throttle counts attempts in one row per key (an atomic upsert) instead of one
row per failure counted afterwards (parallel attempts all read "under the limit").

Revision ID: 0013_web
Revises: 0012_lifecycle
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_web"
down_revision = "0012_lifecycle"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_attempts",
        sa.Column("key", sa.String(400), primary_key=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
    )
    # Failures of the last minutes only: forgetting them forgives, the safe direction.
    op.drop_index("ix_login_failures_key_at", "login_failures")
    op.drop_table("login_failures")


def downgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(400), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_login_failures_key_at", "login_failures", ["key", "at"])
    op.drop_table("login_attempts")
