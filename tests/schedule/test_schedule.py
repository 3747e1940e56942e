"""Scheduling with an injected clock: the store decides, `tick(now)` acts, a real SMTP server
(aiosmtpd) receives. No test sleeps through the minutes it checks."""

from __future__ import annotations

import os
import shutil
import threading
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from dispatch import schedule as scheduling
from dispatch.audience.tokens import Signer
from dispatch.compose.issues import load_issue
from dispatch.config import RecurringSchedule, Settings
from dispatch.deliver.outcomes import Kind
from dispatch.deliver.recording import Stats
from dispatch.deliver.transport import smtp_transport
from dispatch.deliver.worker import deliver
from dispatch.devtools.demo import generate_subscribers
from dispatch.devtools.sink import smtp_sink
from dispatch.errors import DispatchError
from dispatch.store import imports
from dispatch.store import subscribers as subs
from dispatch.store.db import open_store
from dispatch.store.launch import plan_audience
from dispatch.store.outbox import SqlOutbox
from dispatch.store.schema import outbox
from dispatch.store.secrets import secret
from dispatch.store.sends import get_send
from tests.helpers import EXAMPLE_ISSUE, configure_delivery, eventually

# 2026-12-01 07:00 in Seoul, the editors' zone in the shipped config.toml.
T = datetime(2026, 11, 30, 22, 0, tzinfo=UTC)
DAY_BEFORE = T - timedelta(days=1)
SEC = timedelta(seconds=1)


@pytest.fixture
def server():
    with smtp_sink() as (handler, port):
        yield handler, port


@pytest.fixture
def sqlite_engine(settings: Settings) -> Engine:
    engine = open_store(settings.store.url)
    yield engine
    engine.dispose()


@pytest.fixture
def cfg(settings: Settings, server) -> Settings:
    return configure_delivery(settings, server[1])


def populate(engine: Engine, settings: Settings, count: int = 30) -> int:
    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    imports.import_rows(engine, generate_subscribers(settings, issue.topics, count), DAY_BEFORE)
    return plan_audience(engine, issue, settings).recipients


def schedule(engine: Engine, settings: Settings, at: str = "2026-12-01 07:00", *,
             tz: str | None = None, local: bool = False, now: datetime = DAY_BEFORE):
    return scheduling.schedule_issue(engine, settings, EXAMPLE_ISSUE, at=at, tz=tz,
                                     local=local, now=now)


def deliver_at(engine: Engine, settings: Settings, now: datetime,
               stop: threading.Event | None = None, **kwargs) -> Stats:
    """One delivery run with the clock stopped at `now`: only rows due by then go out."""
    return deliver(SqlOutbox(engine, settings), smtp_transport(settings.smtp), settings,
                   Signer(secret(engine)), clock=lambda: now, wait_for_retries=False,
                   stop=stop, **kwargs)


def outbox_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(outbox)).scalar_one()


def received_once(handler, expected: int) -> None:
    recipients = [r.recipient for r in handler.received]
    assert len(recipients) == expected
    assert len(set(recipients)) == expected, "somebody got the issue twice"


def test_a_scheduled_issue_fires_once_at_its_time(engine, cfg, server):
    handler, _ = server
    expected = populate(engine, cfg)
    issue, when = schedule(engine, cfg)
    assert when.send_at == T and when.zone == "Asia/Seoul"
    stale = get_send(engine, issue.slug)
    assert stale.status == "scheduled" and stale.send_at == T

    assert scheduling.tick(engine, cfg, T - SEC) == []
    assert get_send(engine, issue.slug).status == "scheduled" and outbox_rows(engine) == 0

    events = scheduling.tick(engine, cfg, T)
    assert [(e.kind, e.subject) for e in events] == [("launched", EXAMPLE_ISSUE)]
    assert get_send(engine, issue.slug).status == "sending"
    assert outbox_rows(engine) == expected
    # Later wake-ups, and a second daemon acting on what it read before the launch, add nothing.
    assert scheduling.tick(engine, cfg, T + SEC) == []
    assert scheduling.tick(engine, cfg, T + timedelta(minutes=5)) == []
    assert scheduling.fire(engine, cfg, stale, T + SEC) is None
    assert outbox_rows(engine) == expected

    stats = deliver_at(engine, cfg, T + SEC)
    assert stats.outcomes[Kind.SENT] == expected
    received_once(handler, expected)
    assert get_send(engine, issue.slug).status == "sent"


def test_a_cancelled_issue_never_goes_out_and_can_be_scheduled_again(sqlite_engine, cfg,
                                                                      server):
    engine = sqlite_engine
    populate(engine, cfg)
    schedule(engine, cfg)
    assert scheduling.cancel_issue(engine, EXAMPLE_ISSUE, DAY_BEFORE) == 0
    for moment in (T, T + timedelta(minutes=30), T + timedelta(days=2)):
        assert scheduling.tick(engine, cfg, moment) == []
    assert get_send(engine, EXAMPLE_ISSUE).status == "cancelled"
    assert outbox_rows(engine) == 0
    deliver_at(engine, cfg, T + timedelta(days=2))
    assert server[0].received == []
    with pytest.raises(DispatchError, match="nothing to cancel: it is cancelled"):
        scheduling.cancel_issue(engine, EXAMPLE_ISSUE, DAY_BEFORE)

    schedule(engine, cfg, "2026-12-03 07:00")
    assert get_send(engine, EXAMPLE_ISSUE).status == "scheduled"


def test_a_moved_issue_goes_out_at_the_new_time_only(sqlite_engine, cfg, server):
    engine = sqlite_engine
    expected = populate(engine, cfg)
    schedule(engine, cfg)
    when = scheduling.move_issue(engine, cfg, EXAMPLE_ISSUE, at="2026-12-01 09:30", tz=None,
                                 now=DAY_BEFORE)
    moved = T + timedelta(hours=2, minutes=30)
    assert when.send_at == moved
    assert scheduling.tick(engine, cfg, T) == []
    assert scheduling.tick(engine, cfg, moved - SEC) == []
    assert [e.kind for e in scheduling.tick(engine, cfg, moved)] == ["launched"]
    deliver_at(engine, cfg, moved)
    received_once(server[0], expected)


def test_a_restart_in_the_middle_of_a_send_sends_nobody_twice(settings, server):
    handler, port = server
    cfg = configure_delivery(settings, port)
    engine = open_store(cfg.store.url)
    expected = populate(engine, cfg, 240)
    schedule(engine, cfg)
    assert [e.kind for e in scheduling.tick(engine, cfg, T)] == ["launched"]
    stop = threading.Event()

    def halfway(stats: Stats) -> None:
        if stats.outcomes[Kind.SENT] >= 60:
            stop.set()

    first = deliver_at(engine, cfg, T + SEC, stop=stop, progress=halfway)
    assert 60 <= first.outcomes[Kind.SENT] < expected
    engine.dispose()

    # The daemon comes back: the store says the issue is sending, so nothing is relaunched.
    engine = open_store(cfg.store.url)
    assert scheduling.tick(engine, cfg, T + timedelta(minutes=3)) == []
    second = deliver_at(engine, cfg, T + timedelta(minutes=3))
    assert first.outcomes[Kind.SENT] + second.outcomes[Kind.SENT] == expected
    received_once(handler, expected)
    assert get_send(engine, EXAMPLE_ISSUE).status == "sent"
    engine.dispose()


@pytest.mark.parametrize("late, outcome", [(timedelta(minutes=59), "launched"),
                                           (timedelta(minutes=61), "missed")])
def test_an_issue_missed_while_down_is_sent_within_grace_else_reported(
        sqlite_engine, cfg, server, late, outcome):
    engine = sqlite_engine
    expected = populate(engine, cfg)
    schedule(engine, cfg)
    # No daemon ran at T; one starts `late` afterwards.
    events = scheduling.tick(engine, cfg, T + late)
    assert [e.kind for e in events] == [outcome]
    send = get_send(engine, EXAMPLE_ISSUE)
    if outcome == "missed":
        assert send.status == "missed" and outbox_rows(engine) == 0
        assert "1 h 1 min late" in send.reason and "schedule.grace is 1 h 0 min" in send.reason
        assert events[0].message == send.reason
        assert scheduling.tick(engine, cfg, T + late + SEC) == []  # reported once
        deliver_at(engine, cfg, T + late)
        assert server[0].received == []
    else:
        assert send.status == "sending"
        deliver_at(engine, cfg, T + late)
        received_once(server[0], expected)


# Expected instants are written out by hand, not computed with zoneinfo, so they check it.
DST_CASES = {
    # US clocks spring forward on 8 March 2026: New York's 07:00 is 11:00 UTC, not 12:00.
    "2026-03-08": {"seoul": "2026-03-07T22:00", "berlin": "2026-03-08T06:00",
                   "new-york": "2026-03-08T11:00", "no-zone": "2026-03-08T07:00"},
    # Europe springs forward on 29 March: Berlin 05:00 UTC, London (the default zone) 06:00.
    "2026-03-29": {"seoul": "2026-03-28T22:00", "berlin": "2026-03-29T05:00",
                   "new-york": "2026-03-29T11:00", "no-zone": "2026-03-29T06:00"},
    # US clocks fall back on 1 November: New York's 07:00 is 12:00 UTC again.
    "2026-11-01": {"seoul": "2026-10-31T22:00", "berlin": "2026-11-01T06:00",
                   "new-york": "2026-11-01T12:00", "no-zone": "2026-11-01T07:00"},
}
ZONES = {"seoul": "Asia/Seoul", "berlin": "Europe/Berlin", "new-york": "America/New_York",
         "no-zone": None}


@pytest.mark.parametrize("day", sorted(DST_CASES))
def test_local_time_releases_each_reader_at_their_seven_oclock(sqlite_engine, cfg, server,
                                                               day):
    engine = sqlite_engine
    handler, _ = server
    # Editors in Honolulu: at the launch (Seoul's 07:00) it is still the day before there, but
    # every reader gets it on `day` in their own zone, and the masthead says so.
    cfg = cfg.model_copy(update={
        "schedule": cfg.schedule.model_copy(update={"default_timezone": "Europe/London"}),
        "newsletter": cfg.newsletter.model_copy(update={"timezone": "Pacific/Honolulu"})})
    topics = list(load_issue(cfg.issues_dir / EXAMPLE_ISSUE, cfg).topics)
    for who, zone in ZONES.items():
        subs.add(engine, f"{who}@example.com", name=who, topics=topics, timezone=zone,
                 known_topics=cfg.topics, now=DAY_BEFORE)
    expected = {f"{who}@example.com": datetime.fromisoformat(at).replace(tzinfo=UTC)
                for who, at in DST_CASES[day].items()}
    now = min(expected.values()) - timedelta(hours=12)
    _, when = schedule(engine, cfg, f"{day} 07:00", local=True, now=now)
    assert when.send_at == min(expected.values())
    assert dict(when.releases)["America/New_York"] == expected["new-york@example.com"]

    assert [e.kind for e in scheduling.tick(engine, cfg, when.send_at)] == ["launched"]
    for email, moment in sorted(expected.items(), key=lambda item: item[1]):
        deliver_at(engine, cfg, moment - SEC)
        assert email not in {r.recipient for r in handler.received}, f"{email} got it early"
        deliver_at(engine, cfg, moment)
        assert email in {r.recipient for r in handler.received}, f"{email} not at {moment}"
    received_once(handler, len(expected))
    assert get_send(engine, EXAMPLE_ISSUE).status == "sent"
    masthead = datetime.fromisoformat(day).strftime("%A, %-d %B %Y")
    for item in handler.received:
        text = message_from_bytes(item.data, policy=policy.default).get_body(("plain",))
        assert text.get_content().splitlines()[1] == masthead, item.recipient


def test_local_time_refuses_a_time_already_past_somewhere(sqlite_engine, cfg):
    subs.add(sqlite_engine, "ana@example.com", name=None, topics=["security"],
             timezone="Pacific/Kiritimati", known_topics=cfg.topics, now=DAY_BEFORE)
    # 07:00 on 1 December has passed on Kiritimati (UTC+14) by 17:30 UTC the day before.
    with pytest.raises(DispatchError, match="already passed in Pacific/Kiritimati"):
        schedule(sqlite_engine, cfg, "2026-12-01 07:00", local=True,
                 now=datetime(2026, 11, 30, 17, 30, tzinfo=UTC))
    with pytest.raises(DispatchError, match="without an offset"):
        schedule(sqlite_engine, cfg, "2026-12-01T07:00+09:00", local=True)


# ---- Recurring digests ---------------------------------------------------------------

FRIDAY = datetime(2026, 12, 3, 22, 0, tzinfo=UTC)  # Friday 4 December, 07:00 in Seoul
WEEK = timedelta(days=7)


def test_recurring_digest_collects_only_new_briefs_once(sqlite_engine, cfg, server):
    engine = sqlite_engine
    inbox = cfg.root / "inbox"
    inbox.mkdir()
    source = cfg.issues_dir / EXAMPLE_ISSUE
    for name in ("01-hiroshima-meeting.md", "03-missile-warnings.md"):
        shutil.copy(source / name, inbox / name)
    cfg = cfg.model_copy(update={"schedules": (RecurringSchedule(
        name="weekly", cron="0 7 * * 5", timezone="Asia/Seoul", folder="inbox",
        subject="The week in Asia, {date:%d %B}"),)})
    populate(engine, cfg)

    # "5" is Friday, as in crontab (APScheduler 3 alone would read it as Saturday).
    assert scheduling.next_digest(cfg.schedules[0], FRIDAY - timedelta(days=1)) == FRIDAY
    assert scheduling.tick(engine, cfg, FRIDAY - SEC) == []
    events = scheduling.tick(engine, cfg, FRIDAY)
    assert [(e.kind, e.subject) for e in events] == [("digest", "weekly")]
    assert "built 2026-12-04-weekly from 2 new brief(s)" in events[0].message
    issue = load_issue(cfg.issues_dir / "2026-12-04-weekly", cfg)
    assert issue.subject == "The week in Asia, 04 December"
    assert [b.path.name for b in issue.briefs] == ["01-hiroshima-meeting.md",
                                                  "03-missile-warnings.md"]
    assert get_send(engine, issue.slug).status == "sending"
    assert scheduling.tick(engine, cfg, FRIDAY + timedelta(minutes=1)) == []
    deliver_at(engine, cfg, FRIDAY + SEC)
    assert server[0].received

    # Nothing new by the next Friday: skipped, with a line saying so, once.
    events = scheduling.tick(engine, cfg, FRIDAY + WEEK)
    assert [e.kind for e in events] == ["nothing-new"]
    assert "nothing new in inbox/" in events[0].message
    assert not (cfg.issues_dir / "2026-12-11-weekly").exists()
    assert scheduling.tick(engine, cfg, FRIDAY + WEEK + SEC) == []

    # A new brief: the next digest carries it alone.
    shutil.copy(source / "05-taiwan-strait.md", inbox / "05-taiwan-strait.md")
    events = scheduling.tick(engine, cfg, FRIDAY + 2 * WEEK + timedelta(minutes=10))
    assert [e.kind for e in events] == ["digest"]
    issue = load_issue(cfg.issues_dir / "2026-12-18-weekly", cfg)
    assert [b.path.name for b in issue.briefs] == ["05-taiwan-strait.md"]

    # Down for two weeks: the digest due beyond the grace is reported, never built late.
    shutil.copy(source / "04-trade-lists.md", inbox / "04-trade-lists.md")
    events = scheduling.tick(engine, cfg, FRIDAY + 4 * WEEK + timedelta(hours=2))
    assert [e.kind for e in events] == ["digest-missed"]
    assert "2026-12-31 22:00 UTC" in events[0].message
    assert not (cfg.issues_dir / "2027-01-01-weekly").exists()
    assert scheduling.tick(engine, cfg, FRIDAY + 4 * WEEK + timedelta(hours=3)) == []


BROKEN_YAML = "---\ntitle: [never closed\ntopics: [security]\n---\n\nBody.\n"


def weekly_inbox(cfg: Settings, *briefs: str) -> Settings:
    inbox = cfg.root / "inbox"
    inbox.mkdir()
    for name in briefs:
        shutil.copy(cfg.issues_dir / EXAMPLE_ISSUE / name, inbox / name)
    return cfg.model_copy(update={"schedules": (RecurringSchedule(
        name="weekly", cron="0 7 * * 5", timezone="Asia/Seoul", folder="inbox",
        subject="The week in Asia, {date:%d %B}"),)})


def test_a_brief_that_fails_its_check_is_left_out_with_an_error_and_goes_once_fixed(
        sqlite_engine, cfg, server, caplog):
    engine = sqlite_engine
    cfg = weekly_inbox(cfg, "01-hiroshima-meeting.md", "03-missile-warnings.md")
    (cfg.root / "inbox" / "02-broken.md").write_text(BROKEN_YAML)
    populate(engine, cfg)

    with caplog.at_level("INFO", logger="dispatch.schedule"):
        events = scheduling.tick(engine, cfg, FRIDAY)
    assert [e.kind for e in events] == ["digest"], events
    assert "built 2026-12-04-weekly from 2 new brief(s); left out" in events[0].message
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith("digest weekly: left out inbox/02-broken.md: ")
    assert "02-broken.md:" in errors[0] and "YAML" in errors[0], errors
    issue = load_issue(cfg.issues_dir / "2026-12-04-weekly", cfg)
    assert [b.path.name for b in issue.briefs] == ["01-hiroshima-meeting.md",
                                                  "03-missile-warnings.md"]
    assert get_send(engine, issue.slug).status == "sending"

    # Fixed by the next Friday: it goes out then, alone.
    shutil.copy(cfg.issues_dir / EXAMPLE_ISSUE / "05-taiwan-strait.md",
                cfg.root / "inbox" / "02-broken.md")
    assert [e.kind for e in scheduling.tick(engine, cfg, FRIDAY + WEEK)] == ["digest"]
    issue = load_issue(cfg.issues_dir / "2026-12-11-weekly", cfg)
    assert [b.path.name for b in issue.briefs] == ["02-broken.md"]


def test_a_failed_digest_leaves_no_folder_behind(sqlite_engine, cfg, server, caplog):
    engine = sqlite_engine
    cfg = weekly_inbox(cfg)
    inbox = cfg.root / "inbox"
    populate(engine, cfg)
    before = sorted(cfg.issues_dir.rglob("*"))

    # Every new brief fails its check.
    (inbox / "02-broken.md").write_text(BROKEN_YAML)
    events = scheduling.tick(engine, cfg, FRIDAY)
    assert [e.kind for e in events] == ["failed"], events
    assert "left out (failed their check): 02-broken.md" in events[0].message

    # Each brief passes, the issue does not (an image without alt text fails the email rules).
    (inbox / "02-broken.md").unlink()
    text = (cfg.issues_dir / EXAMPLE_ISSUE / "03-missile-warnings.md").read_text()
    (inbox / "03-no-alt.md").write_text(text + "\n![](https://example.com/radar.png)\n")
    for week in (1, 2):
        events = scheduling.tick(engine, cfg, FRIDAY + week * WEEK)
        assert [e.kind for e in events] == ["failed"], events
        assert "alt" in events[0].message, events[0].message
    (inbox / "03-no-alt.md").unlink()
    assert sorted(cfg.issues_dir.rglob("*")) == before  # no draft left under issues/
    assert list(cfg.root.glob(".digest-*")) == []  # nor a scratch folder beside it


@pytest.mark.parametrize("expr, weekdays", [
    ("0 7 * * 5", "fri"), ("0 7 * * 0", "sun"), ("0 7 * * 7", "sun"),
    ("0 7 * * 1-5", "mon,tue,wed,thu,fri"), ("0 7 * * fri-sun", "sun,fri,sat"),
    ("0 7 * * */2", "sun,tue,thu,sat"), ("0 7 * * mon,wed", "mon,wed")])
def test_cron_weekdays_mean_what_crontab_means(expr, weekdays):
    trigger = scheduling.cron_trigger(expr, "UTC")
    fields = {f.name: str(f) for f in trigger.fields}
    assert fields["day_of_week"] == weekdays


def test_cron_rejects_day_and_weekday_together():
    with pytest.raises(ValueError, match="not both"):
        scheduling.cron_trigger("0 7 1 * mon", "UTC")


# ---- Editor commands' rules -----------------------------------------------------------

def test_scheduling_checks_the_time_and_the_issue(sqlite_engine, cfg, project):
    engine = sqlite_engine
    with pytest.raises(DispatchError, match="is in the past"):
        schedule(engine, cfg, "2026-11-30 06:59", now=T)
    with pytest.raises(DispatchError, match="carries its own offset"):
        schedule(engine, cfg, "2026-12-01T07:00:00+09:00", tz="Europe/Berlin")
    with pytest.raises(DispatchError, match="unknown IANA time zone"):
        schedule(engine, cfg, "2026-12-01 07:00", tz="Mars/Olympus")
    with pytest.raises(DispatchError, match="not an ISO 8601 time"):
        schedule(engine, cfg, "next tuesday")
    # Seconds and an offset; then a bare time in a named zone.
    _, when = schedule(engine, cfg, "2026-12-01T07:00:30+09:00")
    assert when.send_at == T + timedelta(seconds=30)
    with pytest.raises(DispatchError, match="already scheduled .* schedule move"):
        schedule(engine, cfg, "2026-12-02 07:00")
    scheduling.cancel_issue(engine, EXAMPLE_ISSUE, DAY_BEFORE)
    _, when = schedule(engine, cfg, "2026-12-01 07:00", tz="Europe/Berlin")
    assert when.send_at == datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
    scheduling.cancel_issue(engine, EXAMPLE_ISSUE, DAY_BEFORE)
    # No --at: the issue's own send_at (2026-11-27T07:00 Asia/Seoul).
    _, when = schedule(engine, cfg, None, now=datetime(2026, 11, 1, tzinfo=UTC))
    assert when.send_at == datetime(2026, 11, 26, 22, 0, tzinfo=UTC)
    scheduling.cancel_issue(engine, EXAMPLE_ISSUE, DAY_BEFORE)

    # An issue with a problem is refused, and nothing is stored.
    brief = project / "issues" / EXAMPLE_ISSUE / "03-missile-warnings.md"
    brief.write_text(brief.read_text().replace("topics: [security, east-asia]",
                                               "topics: [security, sport]"))
    with pytest.raises(DispatchError, match="sport"):
        schedule(engine, cfg, "2026-12-05 07:00")
    assert get_send(engine, EXAMPLE_ISSUE).status == "cancelled"


def test_pause_and_resume_follow_the_states(sqlite_engine, cfg, server):
    engine = sqlite_engine
    expected = populate(engine, cfg)
    schedule(engine, cfg)
    with pytest.raises(DispatchError, match="only a send in progress can be paused"):
        scheduling.pause_issue(engine, EXAMPLE_ISSUE)
    scheduling.tick(engine, cfg, T)
    scheduling.pause_issue(engine, EXAMPLE_ISSUE)
    assert get_send(engine, EXAMPLE_ISSUE).reason == "paused by an editor"
    deliver_at(engine, cfg, T + SEC)
    assert server[0].received == []  # a paused send's rows are not claimed
    with pytest.raises(DispatchError, match="only a scheduled issue can be moved"):
        scheduling.move_issue(engine, cfg, EXAMPLE_ISSUE, at="2026-12-02 07:00", tz=None,
                              now=DAY_BEFORE)
    scheduling.resume_issue(engine, EXAMPLE_ISSUE)
    with pytest.raises(DispatchError, match="only a paused send can be resumed"):
        scheduling.resume_issue(engine, EXAMPLE_ISSUE)
    deliver_at(engine, cfg, T + SEC)
    received_once(server[0], expected)


def test_cancelling_a_send_in_progress_drops_what_is_left(sqlite_engine, cfg, server):
    engine = sqlite_engine
    expected = populate(engine, cfg)
    schedule(engine, cfg)
    scheduling.tick(engine, cfg, T)
    assert scheduling.cancel_issue(engine, EXAMPLE_ISSUE, T) == expected
    deliver_at(engine, cfg, T + SEC)
    assert server[0].received == []
    assert get_send(engine, EXAMPLE_ISSUE).status == "cancelled"
    with pytest.raises(DispatchError, match="already cancelled"):
        schedule(engine, cfg, "2026-12-02 07:00")


# ---- The daemon's job table ----------------------------------------------------------

def test_the_daemon_keeps_its_triggers_in_step_with_the_store(sqlite_engine, cfg):
    engine = sqlite_engine
    populate(engine, cfg, 5)
    cfg = cfg.model_copy(update={"schedule": cfg.schedule.model_copy(update={"sync": 0.2})})
    daemon = scheduling.Daemon(engine, cfg, smtp_transport(cfg.smtp))
    daemon.start()
    try:
        far = datetime.now(UTC) + timedelta(days=3)
        # Another shell schedules, moves and cancels; the running daemon follows within seconds.
        scheduling.schedule_issue(engine, cfg, EXAMPLE_ISSUE, at=far.isoformat(), tz=None,
                                  local=False, now=datetime.now(UTC))
        assert eventually(lambda: daemon.jobs().get(f"issue:{EXAMPLE_ISSUE}") == far)
        later = far + timedelta(hours=5)
        scheduling.move_issue(engine, cfg, EXAMPLE_ISSUE, at=later.isoformat(), tz=None,
                              now=datetime.now(UTC))
        assert eventually(lambda: daemon.jobs().get(f"issue:{EXAMPLE_ISSUE}") == later)
        scheduling.cancel_issue(engine, EXAMPLE_ISSUE, datetime.now(UTC))
        assert eventually(lambda: f"issue:{EXAMPLE_ISSUE}" not in daemon.jobs())
        assert "sync" in daemon.jobs()
    finally:
        daemon.stop()
    assert not daemon.scheduler.running


def schedule_toml(name: str, cron: str) -> str:
    return (f'\n[[schedules]]\nname = "{name}"\ncron = "{cron}"\nfolder = "inbox"\n'
            f'subject = "Digest"\n')


def save(config: Path, text: str) -> None:
    """Write config.toml as an editor saves it: its modification time moves on (set here, as
    two saves within one clock tick of the file system could share it)."""
    before = config.stat().st_mtime_ns
    config.write_text(text)
    os.utime(config, ns=(before + 1_000_000_000, before + 1_000_000_000))


def test_the_daemon_reloads_schedules_when_config_toml_changes(sqlite_engine, cfg, caplog):
    config = cfg.path
    original = config.read_text()
    cfg = cfg.model_copy(update={"schedule": cfg.schedule.model_copy(update={"sync": 0.2})})
    daemon = scheduling.Daemon(sqlite_engine, cfg, smtp_transport(cfg.smtp))
    daemon.start()

    def recurring() -> set[str]:
        return {job for job in daemon.jobs() if job.startswith("recurring:")}

    try:
        assert recurring() == set()
        save(config, original + schedule_toml("weekly", "0 7 * * fri"))
        assert eventually(lambda: recurring() == {"recurring:weekly"}), daemon.jobs()
        assert daemon.jobs()["recurring:weekly"].weekday() in (3, 4)  # Fri 07:00 in Seoul

        # A mistake: logged with its line, and the schedules in use are kept.
        with caplog.at_level("INFO", logger="dispatch.schedule"):
            save(config, original + schedule_toml("weekly", "0 7 * * fri")
                 + schedule_toml("daily", "61 7 * * *"))
            def errors() -> list[str]:
                return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]

            assert eventually(errors)
            # Reported once, not on every sync tick until someone fixes the file.
            assert not eventually(lambda: len(errors()) > 1, 1.0), errors()
        [error] = errors()
        line = (original + schedule_toml("weekly", "0 7 * * fri")).count("\n") + 4
        assert "config.toml not reloaded (config.toml changed)" in error
        assert f"config.toml:{line}: schedules[1].cron:" in error, error
        assert recurring() == {"recurring:weekly"}
        assert [r.name for r in daemon.settings.schedules] == ["weekly"]

        save(config, original + schedule_toml("daily", "0 7 * * *"))
        assert eventually(lambda: recurring() == {"recurring:daily"}), daemon.jobs()
        assert daemon.settings.smtp == cfg.smtp  # only the schedules are taken from the file
    finally:
        daemon.stop()


def test_migration_keeps_sends_made_before_scheduling_existed(tmp_path: Path):
    """A store at revision 0002 with a finished and a running send upgrades in place."""
    from alembic import command
    from sqlalchemy import text

    from dispatch.store.db import _alembic_config, create

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create(url)
    config = _alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0002")
    with engine.begin() as conn:
        for slug, status in (("old-finished", "finished"), ("old-running", "running")):
            conn.execute(text("INSERT INTO sends (issue, subject, status, recipients, created_at,"
                              " paused_reason) VALUES (:s, 'x', :st, 1, '2026-01-01 00:00:00', "
                              "NULL)"), {"s": slug, "st": status})
        conn.execute(text("INSERT INTO send_variants VALUES ('old-running', 'v', 'h', 't')"))
    engine.dispose()
    engine = open_store(url)
    assert get_send(engine, "old-finished").status == "sent"
    running = get_send(engine, "old-running")
    assert running.status == "sending" and running.launched_at is not None
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM send_variants")).scalar_one() == 1
    engine.dispose()


def test_two_digests_on_one_day_get_their_own_issues(sqlite_engine, cfg, server):
    engine = sqlite_engine
    inbox = cfg.root / "inbox"
    inbox.mkdir()
    source = cfg.issues_dir / EXAMPLE_ISSUE
    cfg = cfg.model_copy(update={"schedules": (RecurringSchedule(
        name="briefing", cron="0 7,19 * * *", timezone="Asia/Seoul", folder="inbox",
        subject="Briefing"),)})
    populate(engine, cfg)
    shutil.copy(source / "01-hiroshima-meeting.md", inbox)
    morning = datetime(2026, 12, 3, 22, 0, tzinfo=UTC)  # 07:00 on 4 December in Seoul
    assert [e.kind for e in scheduling.tick(engine, cfg, morning)] == ["digest"]
    shutil.copy(source / "03-missile-warnings.md", inbox)
    events = scheduling.tick(engine, cfg, morning + timedelta(hours=12))
    assert [e.kind for e in events] == ["digest"], events
    assert "built 2026-12-04-1900-briefing from 1 new brief(s)" in events[0].message
    assert get_send(engine, "2026-12-04-briefing").status == "sending"
    assert get_send(engine, "2026-12-04-1900-briefing").status == "sending"
