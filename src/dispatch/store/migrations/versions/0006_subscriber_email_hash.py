"""subscribers.email_hash: the suppression key of each subscriber, so a launch finds the
suppressed in SQL.

Revision ID: 0006
Revises: 0005
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BATCH = 10_000


def upgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("email_hash", sa.String(64)))
    conn = op.get_bind()
    table = sa.table("subscribers", sa.column("id", sa.Integer),
                     sa.column("email_key", sa.String), sa.column("email_hash", sa.String))
    update = (sa.update(table).where(table.c.id == sa.bindparam("sid"))
              .values(email_hash=sa.bindparam("digest")))
    last = 0
    while True:
        rows = conn.execute(sa.select(table.c.id, table.c.email_key)
                            .where(table.c.id > last).order_by(table.c.id).limit(BATCH)).all()
        if not rows:
            break
        conn.execute(update, [{"sid": sid, "digest": hashlib.sha256(key.encode()).hexdigest()}
                              for sid, key in rows])
        last = rows[-1][0]
    op.create_index("ix_subscribers_email_hash", "subscribers", ["email_hash"])


def downgrade() -> None:
    op.drop_index("ix_subscribers_email_hash", table_name="subscribers")
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("email_hash")
