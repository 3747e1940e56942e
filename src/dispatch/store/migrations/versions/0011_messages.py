"""Outbox ids are never reused on SQLite (AUTOINCREMENT), as PostgreSQL's sequence never
reuses them: a repeated confirmation replaces its deleted row, and without AUTOINCREMENT
SQLite gave the new row the old one's id, hence the old message's Message-ID.

Revision ID: 0011_messages
Revises: 0010_reports
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_messages"
down_revision = "0010_reports"
branch_labels = None
depends_on = None


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # The rebuild drops the old table; with foreign keys on (they are, and cannot be turned
    # off inside the migration's transaction) that sets reports.outbox_id to NULL, so the
    # links are kept aside and written back.
    op.execute("CREATE TEMP TABLE report_rows AS SELECT fingerprint, outbox_id FROM reports "
               "WHERE outbox_id IS NOT NULL")
    with op.batch_alter_table("outbox", recreate="always",
                              table_kwargs={"sqlite_autoincrement": autoincrement}) as batch:
        batch.alter_column("id", existing_type=sa.Integer, autoincrement=True)
    op.execute("UPDATE reports SET outbox_id = (SELECT outbox_id FROM report_rows "
               "WHERE report_rows.fingerprint = reports.fingerprint) "
               "WHERE fingerprint IN (SELECT fingerprint FROM report_rows)")
    op.execute("DROP TABLE report_rows")


def upgrade() -> None:
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
