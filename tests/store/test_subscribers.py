"""The subscriber store on a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from dispatch.audience import csvio
from dispatch.config import Segment
from dispatch.deliver.signup_mail import prepare_confirmations
from dispatch.errors import ContentError, DispatchError
from dispatch.store import imports, signups
from dispatch.store import subscribers as subs
from dispatch.store.confirmations import confirm
from dispatch.store.db import StoreError, current_revision, head_revision, open_store
from dispatch.store.schema import outbox
from dispatch.store.segments import segment_counts
from dispatch.store.sends import WELCOME

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
TOPICS = {"east-asia": 1, "security": 1, "economy": 1, "diplomacy": 1}


def add(engine, email, topics=(), **kw):
    return subs.add(engine, email, name=kw.pop("name", None), topics=topics,
                    timezone=kw.pop("timezone", None), known_topics=TOPICS, now=NOW, **kw)


def test_migrated_on_first_use_and_idempotent(store_url):
    engine = open_store(store_url)
    assert current_revision(engine) == head_revision()
    open_store(store_url)  # a second open applies nothing and does not fail
    if store_url.startswith("sqlite"):
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_newer_database_is_refused(store_url):
    engine = open_store(store_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(StoreError, match="newer than this dispatch"):
        open_store(store_url)


def test_unique_case_insensitively_and_found_in_any_case(engine):
    person = add(engine, "Ana.Reader@Example.COM", ["security"], name="Ana")
    assert person.email == "Ana.Reader@Example.COM" and person.created_at == NOW
    with pytest.raises(DispatchError, match="already subscribed"):
        add(engine, "ana.reader@example.com")
    assert subs.get(engine, "ANA.READER@example.com").id == person.id


def test_suppression_outlives_unsubscribe_and_forget(engine):
    add(engine, "gone@example.com", ["security"])
    subs.update_subscriber(engine, "GONE@example.com", now=NOW, known_topics=TOPICS,
                           status="unsubscribed")
    rows, _rejected, _ = csvio.read_csv("email\ngone@example.com\n", TOPICS)
    report = imports.import_rows(engine, rows, NOW)
    assert report.added == 0 and "suppressed (unsubscribed)" in report.rejected[0][2]

    subs.forget(engine, "gone@example.com", NOW)
    assert subs.get(engine, "gone@example.com") is None
    with engine.connect() as conn:
        stored = " ".join(str(v) for row in conn.execute(text("SELECT * FROM suppressions"))
                          for v in row)
    assert "gone@" not in stored  # only a hash outlives deletion
    with pytest.raises(DispatchError, match="suppressed"):
        add(engine, "Gone@Example.com")
    rows = csvio.read_csv("email\ngone@example.com\n", TOPICS)[0]
    report = imports.import_rows(engine, rows, NOW)
    assert report.added == 0 and report.rejected
    # Only an explicit re-subscription lifts it.
    assert add(engine, "gone@example.com", resubscribe=True).status == "active"


def test_set_topics_status_and_timezone(engine):
    add(engine, "x@example.com", ["security"])
    person = subs.update_subscriber(engine, "X@example.com", now=NOW, known_topics=TOPICS,
                                    topics=["economy", "diplomacy"], timezone="Europe/Berlin")
    assert person.topics == ("diplomacy", "economy") and person.timezone == "Europe/Berlin"
    with pytest.raises(DispatchError, match="unknown topic"):
        subs.update_subscriber(engine, "x@example.com", now=NOW, known_topics=TOPICS,
                               topics=["astrology"])
    with pytest.raises(DispatchError, match="no such subscriber"):
        subs.update_subscriber(engine, "nobody@example.com", now=NOW, known_topics=TOPICS,
                               status="active")


def test_segments_resolve_in_the_database(engine):
    topic_sets = [set(c) for n in range(4) for c in itertools.combinations(TOPICS, n)]
    rows = [csvio.Row(line=i, email=f"r{i}@example.com", key=f"r{i}@example.com", name=None,
                     topics=sorted(t), timezone=None) for i, t in enumerate(topic_sets)]
    imports.import_rows(engine, rows, NOW)
    add(engine, "paused@example.com", ["security"], status="pending")
    segments = {
        "any": Segment(name="any", topics=("security", "economy")),
        "all": Segment(name="all", topics=("security", "economy"), match="all"),
        "excl": Segment(name="excl", topics=("east-asia",), exclude=("security",)),
        "everyone": Segment(name="everyone", topics=()),
    }
    expected = {
        "any": sum(1 for t in topic_sets if t & {"security", "economy"}),
        "all": sum(1 for t in topic_sets if {"security", "economy"} <= t),
        "excl": sum(1 for t in topic_sets if "east-asia" in t and "security" not in t),
        "everyone": len(topic_sets),
    }
    assert segment_counts(engine, segments) == expected
    listed = subs.list_subscribers(engine, segment=segments["all"], status="active")
    assert len(listed) == expected["all"]
    assert all({"security", "economy"} <= set(p.topics) for p in listed)
    assert len(subs.list_subscribers(engine)) == len(topic_sets) + 1  # every status


BAD_CSV = (
    "\ufeffemail,name,topics,timezone\r\n"
    "good@example.com,Good,security;economy,Asia/Seoul\r\n"        # line 2
    ",No address,security,\r\n"                                     # 3
    "a@,Half,security,\r\n"                                         # 4
    "<script>@x.com,Script,security,\r\n"                           # 5
    "\"inject@example.com\r\nBcc: victim@example.com\",X,,\r\n"     # 6-7
    "topic@example.com,T,astrology,\r\n"                            # 8
    "GOOD@example.com,,diplomacy|east-asia,\r\n"                    # 9
    "zone@example.com,Z,,Mars/Olympus\r\n"                          # 10
    "second@example.com,Second,,\r\n"                               # 11
)


def test_bad_rows_rejected_with_line_and_reason_good_rows_land(engine):
    rows, rejected, read = csvio.read_csv(BAD_CSV, TOPICS)
    reasons = {line: reason for line, _, reason in rejected}
    assert reasons[3] == "empty address"
    assert reasons[4].startswith("invalid address")
    assert reasons[5].startswith("invalid address")
    assert "header injection" in reasons[6]
    assert reasons[8] == "unknown topic(s) astrology"
    assert reasons[9] == "duplicate of line 2 (topics merged)"
    assert "unknown time zone" in reasons[10]
    assert read == 9 and len(rejected) == 7
    report = imports.import_rows(engine, rows, NOW)
    assert report.added == 2 and not report.rejected
    good = subs.get(engine, "good@example.com")
    assert good.topics == ("diplomacy", "east-asia", "economy", "security")
    assert good.timezone == "Asia/Seoul" and good.status == "active"
    assert subs.count(engine) == 2


def test_import_is_one_transaction(engine):
    batch = 100  # rows per batch: the crash comes after one was written
    add(engine, "before@example.com")
    rows = [csvio.Row(line=i + 2, email=f"p{i}@example.com", key=f"p{i}@example.com",
                     name=None, topics=["security"], timezone=None)
            for i in range(batch * 2 + 10)]

    def crash_after_first_batch(done: int) -> None:
        if done >= batch:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        imports.import_rows(engine, rows, NOW, progress=crash_after_first_batch, batch=batch)
    assert subs.count(engine) == 1  # nothing from the interrupted import remains


def test_dry_run_changes_nothing(engine):
    rows, _, _ = csvio.read_csv(BAD_CSV, TOPICS)
    report = imports.import_rows(engine, rows, NOW, dry_run=True)
    assert report.added == 2 and subs.count(engine) == 0


def test_existing_subscribers_merge_topics(engine):
    add(engine, "m@example.com", ["security"], name="Old")
    rows, _, _ = csvio.read_csv("email,name,topics\nM@example.com,New,economy\n", TOPICS)
    report = imports.import_rows(engine, rows, NOW)
    assert (report.added, report.updated) == (0, 1)
    person = subs.get(engine, "m@example.com")
    assert person.topics == ("economy", "security") and person.name == "New"


def test_header_is_required(engine):
    with pytest.raises(ContentError, match="header"):
        csvio.read_csv("a@example.com,A,security\n", TOPICS)
    with pytest.raises(ContentError, match="unknown column"):
        csvio.read_csv("email,phone\n", TOPICS)


def test_export_round_trips(engine, tmp_path):
    rows, _, _ = csvio.read_csv(BAD_CSV, TOPICS)
    imports.import_rows(engine, rows, NOW)
    out = tmp_path / "out.csv"
    with out.open("w", newline="") as handle:
        assert csvio.write_csv(handle, subs.iter_subscribers(engine)) == 2
    again, rejected, _ = csvio.read_csv(out.read_text().replace(",status", "").replace(
        ",active", ""), TOPICS)
    assert not rejected and {r.key for r in again} == {r.key for r in rows}


def test_a_sign_up_request_waits_for_confirmation(engine):
    ana = add(engine, "ana@example.com", ["east-asia"], name="Ana")
    assert subs.unsubscribe(engine, ana.id, NOW)
    with engine.begin() as conn:
        assert signups.signup_row(conn, "ana@example.com", "ana@example.com", name="Ana Lee",
                               topics=["economy", "security"], now=NOW) == ana.id
    still = subs.require(engine, "ana@example.com")
    assert (still.status, still.name, still.topics) == ("unsubscribed", "Ana", ("east-asia",))
    wanted = signups.signup_request(engine, ana.id)
    assert wanted is not None and wanted.topics == ("economy", "security")
    assert wanted.requested_at == NOW
    assert signups.confirm(engine, ana.id, NOW) == "active"
    back = subs.require(engine, "ana@example.com")
    assert (back.name, back.topics) == ("Ana Lee", ("economy", "security"))


@pytest.mark.parametrize("name, expected", [
    ("Ana\r\nBcc: all@example.org", "name contains the control character U+000D"),
    ("Ana\x07", "U+0007"),
    ("\x1b[31mAna", "U+001B"),
    ("Ana\x85", "U+0085"),
    ("Ana\u2028", "U+2028"),
    ("x" * 10_000, "name longer than 200 characters (10000)"),
])
def test_names_are_held_to_the_import_rule(engine, name, expected):
    with pytest.raises(DispatchError) as info:
        add(engine, "ana@example.com", ["security"], name=name)
    assert str(info.value).startswith("ana@example.com: ") and expected in str(info.value)
    assert subs.get(engine, "ana@example.com") is None  # nothing added

    add(engine, "bo@example.com", ["security"], name="Bo")
    with pytest.raises(DispatchError) as info:
        subs.update_subscriber(engine, "bo@example.com", now=NOW, known_topics=TOPICS,
                               name=name, topics=["economy"])
    assert str(info.value).startswith("bo@example.com: ") and expected in str(info.value)
    unchanged = subs.get(engine, "bo@example.com")
    assert unchanged.name == "Bo" and unchanged.topics == ("security",)


def test_a_name_can_be_changed(engine):
    add(engine, "bo@example.com", ["security"], name="Bo")
    person = subs.update_subscriber(engine, "BO@example.com", now=NOW, known_topics=TOPICS,
                                    name="  Bo Reader ")
    assert person.name == "Bo Reader"


def test_a_confirmation_pressed_twice_at_once_welcomes_once(engine, settings):
    """Two presses of the confirmation button racing on two connections: one activation,
    one welcome row, and neither press fails."""
    prepare_confirmations(engine, settings, timedelta(days=2), NOW)
    with engine.begin() as conn:
        sid = signups.signup_row(conn, "ana@example.com", "ana@example.com", name=None,
                              topics=["security"], now=NOW)
    assert sid is not None
    start = threading.Barrier(4)

    def press(_: int) -> tuple[str | None, bool]:
        start.wait()
        return confirm(engine, sid, NOW, welcome=True)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(press, range(4)))
    assert sorted(results) == [("active", False)] * 3 + [("active", True)]
    with engine.connect() as conn:
        rows = conn.execute(select(outbox.c.subscriber_id).where(
            outbox.c.issue == WELCOME)).scalars().all()
    assert rows == [sid]


def test_resubscribe_brings_an_unsubscribed_reader_back(engine):
    """README: `subscribers add EMAIL --resubscribe` for a reader who left and asked back."""
    add(engine, "back@example.com", ["security"], name="Bo")
    subs.update_subscriber(engine, "back@example.com", now=NOW, known_topics=TOPICS,
                           status="unsubscribed")
    with pytest.raises(DispatchError, match="in the list as unsubscribed: --resubscribe"):
        add(engine, "back@example.com", ["economy"])
    person = add(engine, "Back@Example.com", ["economy"], resubscribe=True)
    assert person.status == "active" and person.unsubscribed_at is None
    assert person.topics == ("economy",) and person.name == "Bo"  # kept: none given
    assert person.id == subs.get(engine, "back@example.com").id  # the same row, not a copy
    rows = csvio.read_csv("email\nback@example.com\n", TOPICS)[0]
    assert imports.import_rows(engine, rows, NOW).rejected == []  # no longer suppressed
    with pytest.raises(DispatchError, match="already subscribed"):
        add(engine, "back@example.com", resubscribe=True)
