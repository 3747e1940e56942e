"""subscribers.topic_mask kept current by every store path that writes topics (the masks
equal those recomputed from subscriber_topics), and the 63 bits: taken back from topics
nobody follows, a located error when they are all in use. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from dispatch.audience import csvio
from dispatch.errors import DispatchError
from dispatch.store import imports, signups, topic_masks
from dispatch.store import subscribers as subs
from dispatch.store.schema import subscribers, topic_bits

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def masks(conn) -> dict[str, int]:
    return dict(conn.execute(select(subscribers.c.email, subscribers.c.topic_mask)).all())


def assert_current(engine) -> None:
    with engine.connect() as conn:
        kept = masks(conn)
        topic_masks.refresh_all(conn)  # recomputed from the rows; rolled back on leaving
        assert kept == masks(conn)


def test_every_path_that_writes_topics_keeps_the_mask(engine, settings):
    known = settings.topics
    subs.add(engine, "ana@example.com", name=None, topics=["security", "economy"],
             timezone=None, known_topics=known, now=NOW)
    ben = subs.add(engine, "ben@example.com", name=None, topics=[], timezone=None,
                   known_topics=known, now=NOW)
    assert_current(engine)
    subs.update_subscriber(engine, "ana@example.com", now=NOW, known_topics=known,
                           topics=["diplomacy"])
    subs.set_preferences(engine, ben.id, topics=["east-asia", "technology"], timezone=None,
                         known_topics=known, now=NOW)
    assert_current(engine)
    imports.import_rows(engine, [
        csvio.Row(line=2, email="ana@example.com", key="ana@example.com", name=None,
                  topics=["economy"], timezone=None),
        csvio.Row(line=3, email="cy@example.com", key="cy@example.com", name=None,
                  topics=["security"], timezone=None),
        csvio.Row(line=4, email="ana@example.com", key="ana@example.com", name=None,
                  topics=["technology"], timezone=None)], NOW)
    with engine.begin() as conn:
        sid = signups.signup_row(conn, "dee@example.com", "dee@example.com", name=None,
                                 topics=["economy"], now=NOW)
    assert sid is not None
    assert_current(engine)
    subs.unsubscribe(engine, sid, NOW, "test")
    with engine.begin() as conn:
        assert signups.signup_row(conn, "dee@example.com", "dee@example.com", name=None,
                                  topics=["security", "diplomacy"], now=NOW) == sid
    signups.confirm(engine, sid, NOW)
    assert_current(engine)
    with engine.connect() as conn:
        bits = topic_masks.bits(conn, known)
        assert masks(conn)["dee@example.com"] == bits["security"] | bits["diplomacy"]
        assert masks(conn)["ana@example.com"] == (bits["diplomacy"] | bits["economy"]
                                                  | bits["technology"])


def test_bits_of_topics_nobody_follows_are_taken_back_and_the_64th_is_refused(engine):
    many = [f"t{i:02}" for i in range(topic_masks.MAX_BITS)]
    with engine.begin() as conn:
        sid = conn.execute(subscribers.insert().values(
            email="a@example.com", email_key="a@example.com", status="active",
            created_at=NOW).returning(subscribers.c.id)).scalar_one()
        topic_masks.set_topics(conn, sid, many)
        assert masks(conn)["a@example.com"] == (1 << topic_masks.MAX_BITS) - 1
        with pytest.raises(DispatchError, match="at most 63 different topics"):
            topic_masks.assign(conn, ["one-more"])
        topic_masks.set_topics(conn, sid, many[1:])  # nobody follows t00 any more
        freed = conn.execute(select(topic_bits.c.bit).where(topic_bits.c.topic == "t00")
                             ).scalar_one()
        assert topic_masks.assign(conn, ["one-more"]) == {"one-more": 1 << freed}
        assert conn.execute(select(topic_bits.c.topic).where(topic_bits.c.topic == "t00")
                            ).first() is None
