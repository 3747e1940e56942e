"""The streamed CSV import: batch by batch from a file, with the answers of the in-memory path
(csvio.read_csv then import_rows) even when duplicates, suppressed addresses and existing
subscribers fall in different batches. Real SQLite file and real PostgreSQL server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from dispatch.audience import csvio
from dispatch.errors import ContentError
from dispatch.store import imports
from dispatch.store import subscribers as subs
from dispatch.store.db import open_store
from dispatch.store.schema import subscribers
from dispatch.store.segments import suppressed

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
TOPICS = {"east-asia": 1, "security": 1, "economy": 1, "diplomacy": 1}

CSV = (
    "\ufeffemail,name,topics,timezone\r\n"
    "a@example.com,,security,\r\n"                      # 2: new, no name yet
    "old@example.com,Renamed,economy,\r\n"               # 3: existing: renamed, topic added
    "gone@example.com,G,security,\r\n"                   # 4: suppressed
    "bad@,B,,\r\n"                                       # 5: invalid
    "A@example.com,Ana,diplomacy,Asia/Seoul\r\n"         # 6: duplicate of 2: name, zone, topic
    "b@example.com,Bo,east-asia,\r\n"                    # 7
    "gone@example.com,G2,economy,\r\n"                   # 8: duplicate of the suppressed 4
    "OLD@example.com,Again,security,Europe/Berlin\r\n"   # 9: duplicate of 3: zone, not name
    "a@example.com,Late,economy,Europe/Paris\r\n"        # 10: duplicate of 2: topic only
    "c@example.com,Cy,astrology,\r\n"                    # 11: unknown topic
    "pending@example.com,P,economy,\r\n"                 # 12: existing pending
)


def prepare(url: str):
    engine = open_store(url)
    subs.add(engine, "old@example.com", name="Old", topics=["security"], timezone=None,
             known_topics=TOPICS, now=NOW)
    subs.add(engine, "pending@example.com", name=None, topics=[], timezone=None,
             known_topics=TOPICS, now=NOW, status="pending")
    gone = subs.add(engine, "gone@example.com", name=None, topics=["security"], timezone=None,
                    known_topics=TOPICS, now=NOW)
    subs.unsubscribe(engine, gone.id, NOW)
    return engine


def state(engine):
    people = {p.email.lower(): (p.name, p.timezone, p.topics, p.status)
              for p in subs.iter_subscribers(engine)}
    with engine.connect() as conn:
        hashes = conn.execute(select(subscribers.c.email_key, subscribers.c.email_hash)).all()
        flagged = conn.execute(select(subscribers.c.email_key).where(suppressed())).all()
    return people, sorted(hashes), sorted(flagged)


@pytest.mark.parametrize("batch", [1, 2, 3, 100])
def test_streamed_import_answers_as_the_in_memory_one(store_url, tmp_path, batch):
    reference = prepare(f"sqlite:///{tmp_path / 'reference.db'}")
    rows, rejected, read = csvio.read_csv(CSV, TOPICS)
    expected = imports.import_rows(reference, rows, NOW)
    expected_rejected = sorted(rejected + expected.rejected)

    engine = prepare(store_url)
    path = tmp_path / "in.csv"
    path.write_bytes(CSV.encode())
    with csvio.CsvFile(path) as lines:
        report = imports.import_rows(engine, csvio.iter_csv(lines, TOPICS, lines.source), NOW,
                                     batch=batch)
    assert sorted(report.rejected) == expected_rejected
    assert (report.read, report.added, report.updated) == (read, expected.added,
                                                           expected.updated)
    assert state(engine) == state(reference)


@pytest.mark.parametrize("batch", [1, 4])
def test_streamed_import_on_both_backends(store_url, tmp_path, batch):
    engine = prepare(store_url)
    path = tmp_path / "in.csv"
    path.write_bytes(CSV.encode())
    with csvio.CsvFile(path) as lines:
        report = imports.import_rows(engine, csvio.iter_csv(lines, TOPICS, lines.source), NOW,
                                     batch=batch)
    reasons = {line: reason for line, _, reason in report.rejected}
    assert reasons[4].startswith("suppressed (unsubscribed)")
    assert reasons[6] == reasons[10] == "duplicate of line 2 (topics merged)"
    assert reasons[8] == "duplicate of line 4 (topics merged)"
    assert reasons[9] == "duplicate of line 3 (topics merged)"
    assert (report.read, report.added, report.updated) == (11, 2, 2)
    a = subs.get(engine, "a@example.com")
    assert (a.name, a.timezone, a.topics) == ("Ana", "Asia/Seoul",
                                              ("diplomacy", "economy", "security"))
    old = subs.get(engine, "old@example.com")
    assert (old.name, old.timezone, old.topics) == ("Renamed", "Europe/Berlin",
                                                    ("economy", "security"))
    assert subs.get(engine, "pending@example.com").status == "pending"
    assert subs.get(engine, "b@example.com").created_at == NOW  # stored as SQLAlchemy stores it
    # Imported rows carry their suppression key like any other insert.
    people, hashes, _ = state(engine)
    from dispatch.audience.addresses import email_hash
    assert all(digest == email_hash(key) for key, digest in hashes)
    # More subscribers later get fresh ids (the ids the import gave did not collide).
    subs.add(engine, "later@example.com", name=None, topics=[], timezone=None,
             known_topics=TOPICS, now=NOW)


def test_a_failure_midway_leaves_nothing_and_a_dry_run_changes_nothing(store_url, tmp_path):
    engine = prepare(store_url)
    before = state(engine)
    path = tmp_path / "in.csv"
    path.write_bytes(CSV.encode() + b"broken@example.com,\xff\xfe,,\r\n")
    with pytest.raises(ContentError) as caught, csvio.CsvFile(path) as lines:
        imports.import_rows(engine, csvio.iter_csv(lines, TOPICS, lines.source), NOW, batch=2)
    assert caught.value.problems[0].line == 13 and "not UTF-8" in str(caught.value.problems[0])
    assert state(engine) == before
    path.write_bytes(CSV.encode())
    with csvio.CsvFile(path) as lines:
        report = imports.import_rows(engine, csvio.iter_csv(lines, TOPICS, lines.source), NOW,
                                     dry_run=True)
    assert report.added == 2 and state(engine) == before


def test_old_mac_line_endings_and_a_missing_file(tmp_path):
    path = tmp_path / "mac.csv"
    path.write_bytes(b"email,name\ra@example.com,A\rb@example.com,B\r")
    with csvio.CsvFile(path) as lines:
        items = list(csvio.iter_csv(lines, TOPICS, lines.source))
    assert [(i.line, i.key) for i in items] == [(2, "a@example.com"), (3, "b@example.com")]
    with pytest.raises(ContentError, match="file not found"), csvio.CsvFile(tmp_path / "no.csv"):
        pass
