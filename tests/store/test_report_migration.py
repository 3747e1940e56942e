"""Migration 0010_reports on SQLite and PostgreSQL: relay unsubscribes stored as "mailto"
become "webhook", and unsubscribed readers with no reason get their last report's way."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from alembic.config import Config
from sqlalchemy import insert, select, text

from dispatch.audience.addresses import email_hash
from dispatch.store import db
from dispatch.store.schema import reports, subscribers

NOW = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)


def test_webhook_unsubscribes_and_empty_reasons_are_repaired(store_url, settings):
    engine = db.create(store_url)
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0009")
    with engine.begin() as conn:  # the rows as they stood at 0009 (no store code: it is newer)
        for sid, (name, source) in enumerate((("ana", "postmark"), ("ben", "smtp")), 1):
            key = f"{name}@example.com"
            conn.execute(text(
                "INSERT INTO subscribers (id, email, email_key, email_hash, status, created_at, "
                "unsubscribed_at) VALUES (:id, :key, :key, :hash, 'unsubscribed', :now, :now)"),
                {"id": sid, "key": key, "hash": email_hash(key), "now": NOW})
            conn.execute(insert(reports).values(
                fingerprint=f"f-{sid}", kind="unsubscribe", source=source, via="mailto",
                issue="2026-11-27-thaw", subscriber_id=sid, received_at=NOW))
    db.upgrade(engine)
    with engine.connect() as conn:
        assert dict(conn.execute(select(reports.c.source, reports.c.via)).all()) == {
            "postmark": "webhook", "smtp": "mailto"}
        assert dict(conn.execute(select(subscribers.c.email, subscribers.c.status_reason)
                                 ).all()) == {
            "ana@example.com": "unsubscribed by webhook from 2026-11-27-thaw",
            "ben@example.com": "unsubscribed by mailto from 2026-11-27-thaw"}
    engine.dispose()
