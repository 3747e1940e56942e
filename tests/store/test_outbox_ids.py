"""Outbox ids are never reused, on SQLite too (migration 0011_messages): a row's id is in its
tokens and a confirmation's Message-ID."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from dispatch.store import db

NOW = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)


def _rows(conn, *ids: int) -> None:
    for i in ids:
        conn.execute(text("INSERT INTO outbox (id, issue, subscriber_id, variant, state, "
                          "attempts, next_attempt_at, updated_at) VALUES (:i, 'i', :i, 'b1', "
                          "'sent', 1, :now, :now)"), {"i": i, "now": NOW})


def test_an_sqlite_store_at_0009_keeps_its_rows_and_report_links_and_never_reuses_an_id(
        tmp_path: Path):
    engine = db.create(f"sqlite:///{tmp_path / 'store.db'}")
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0009")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO sends (issue, subject, status, recipients, created_at) "
                          "VALUES ('i', 'S', 'sent', 2, :now)"), {"now": NOW})
        for sid in (1, 2):
            conn.execute(text("INSERT INTO subscribers (id, email, email_key, status, "
                              "created_at) VALUES (:i, :e, :e, 'active', :now)"),
                         {"i": sid, "e": f"r{sid}@example.com", "now": NOW})
        _rows(conn, 1, 2)
        conn.execute(text("INSERT INTO reports (fingerprint, kind, source, outbox_id, "
                          "received_at) VALUES ('f', 'bounce', 'file', 2, :now)"), {"now": NOW})

    db.upgrade(engine)

    with engine.begin() as conn:
        assert conn.execute(text("SELECT outbox_id FROM reports")).scalar_one() == 2
        assert conn.execute(text("SELECT count(*) FROM outbox")).scalar_one() == 2
        listed = conn.execute(text("PRAGMA index_list(outbox)")).all()
        indexes = {row[1] for row in listed}
        assert any(row[3] == "u" for row in listed)  # (issue, subscriber) stays unique
        assert {"ix_outbox_claim", "ix_outbox_issue_state", "ix_outbox_message_id"} <= indexes
        conn.execute(text("DELETE FROM outbox WHERE id = 2"))
        conn.execute(text("INSERT INTO outbox (issue, subscriber_id, variant, state, attempts, "
                          "next_attempt_at, updated_at) VALUES ('i', 2, 'b1', 'queued', 0, "
                          ":now, :now)"), {"now": NOW})
        assert conn.execute(text("SELECT max(id) FROM outbox")).scalar_one() == 3
    engine.dispose()
