"""Migration 0014_launch on SQLite and PostgreSQL: subscribers already in the store get the
topic masks the store would keep for them, every followed topic a bit."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from alembic.config import Config
from sqlalchemy import select, text

from dispatch.audience.addresses import email_hash
from dispatch.store import db
from dispatch.store.schema import subscribers, topic_bits

NOW = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
FOLLOWED = {1: ["security", "diplomacy"], 2: [], 3: ["economy"], 4: ["economy", "east-asia",
                                                                     "security"]}


def test_existing_subscribers_get_their_masks(store_url):
    engine = db.create(store_url)
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0013_web")
    with engine.begin() as conn:  # the rows as they stood at 0013 (no store code: it is newer)
        for sid, topics in FOLLOWED.items():
            key = f"reader{sid}@example.com"
            conn.execute(text(
                "INSERT INTO subscribers (id, email, email_key, email_hash, status, created_at) "
                "VALUES (:id, :key, :key, :hash, 'active', :now)"),
                {"id": sid, "key": key, "hash": email_hash(key), "now": NOW})
            for topic in topics:
                conn.execute(text("INSERT INTO subscriber_topics (subscriber_id, topic) "
                                  "VALUES (:id, :topic)"), {"id": sid, "topic": topic})
    db.upgrade(engine)
    with engine.connect() as conn:
        bits = dict(conn.execute(select(topic_bits.c.topic, topic_bits.c.bit)).all())
        masks = dict(conn.execute(select(subscribers.c.id, subscribers.c.topic_mask)).all())
    assert bits == {"diplomacy": 0, "east-asia": 1, "economy": 2, "security": 3}
    assert masks == {sid: sum(1 << bits[t] for t in topics) for sid, topics in FOLLOWED.items()}
    assert masks[2] == 0 and masks[4] == 0b1110
    engine.dispose()
