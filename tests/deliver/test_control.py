"""deliver/control.py and schedule/overview.py directly, on a real SQLite store: what sending
an issue does in each state of its send, the pause a refusing relay leaves, and the reports
`dispatch status` and `dispatch schedule list` print."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select, update

from dispatch.compose.issues import load_issue
from dispatch.compose.models import Issue
from dispatch.config import Settings
from dispatch.deliver import control
from dispatch.deliver.control import SendAction
from dispatch.deliver.loop import run_delivery
from dispatch.deliver.report import LEFT_BEFORE_SENDING, send_reports
from dispatch.deliver.transport import Reply
from dispatch.errors import DispatchError
from dispatch.schedule import schedule_overview
from dispatch.states import RowState, SendStatus, SendStep
from dispatch.store import sends
from dispatch.store import subscribers as subs
from dispatch.store.db import open_store
from dispatch.store.schema import outbox
from tests.helpers import EXAMPLE_ISSUE

NOW = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)  # before the real clock: rows are due
READERS = {"ana@example.com": ["east-asia"], "bo@example.com": ["security"],
           "chen@example.com": ["technology", "economy"]}


@pytest.fixture
def engine(tmp_path) -> Iterator[Engine]:
    engine = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def issue(settings: Settings) -> Issue:
    return load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)


def add_readers(engine: Engine, settings: Settings) -> None:
    for email, topics in READERS.items():
        subs.add(engine, email, name=None, topics=topics, timezone=None,
                 known_topics=settings.topics, now=NOW)


def launched(engine: Engine, issue: Issue, settings: Settings) -> None:
    add_readers(engine, settings)
    plan = control.prepare_send(engine, issue, settings)
    assert plan.action is SendAction.LAUNCH
    assert control.launch_planned(engine, plan, settings, NOW)


def status(engine: Engine, slug: str = EXAMPLE_ISSUE) -> SendStatus | None:
    send = sends.get_send(engine, slug)
    return send.status if send else None


def outbox_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(outbox)).scalar_one()


def test_a_new_issue_is_planned_read_only_then_launched(engine, settings, issue):
    add_readers(engine, settings)
    plan = control.prepare_send(engine, issue, settings)
    assert plan.action is SendAction.LAUNCH and plan.send is None
    assert plan.audience is not None and plan.audience.recipients == len(READERS)
    assert status(engine) is None and outbox_rows(engine) == 0
    assert control.launch_planned(engine, plan, settings, NOW)
    assert status(engine) == SendStatus.SENDING
    assert control.unfinished(engine, EXAMPLE_ISSUE) == len(READERS)


def test_nobody_to_send_to_is_refused_before_anything_is_written(engine, settings, issue):
    plan = control.prepare_send(engine, issue, settings)
    with pytest.raises(DispatchError, match="nobody to send to"):
        plan.require_audience()
    with pytest.raises(DispatchError, match="nobody to send to"):
        control.launch_planned(engine, plan, settings, NOW)
    assert status(engine) is None and outbox_rows(engine) == 0


def test_a_scheduled_issue_is_refused_and_left_scheduled(engine, settings, issue):
    add_readers(engine, settings)
    at = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
    assert sends.schedule_send(engine, issue, at, NOW, zone=settings.newsletter.timezone)
    with pytest.raises(DispatchError) as refused:
        control.prepare_send(engine, issue, settings)
    message = str(refused.value)
    assert f"scheduled for {control.describe_when(sends.get_send(engine, issue.slug), settings)}"\
        in message
    assert f"dispatch schedule cancel {EXAMPLE_ISSUE} first" in message
    assert status(engine) == SendStatus.SCHEDULED and outbox_rows(engine) == 0


def test_a_cancelled_schedule_can_be_sent_now(engine, settings, issue):
    add_readers(engine, settings)
    at = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
    assert sends.schedule_send(engine, issue, at, NOW, zone=settings.newsletter.timezone)
    assert sends.cancel_send(engine, issue.slug, "by a test", NOW) == 0
    plan = control.prepare_send(engine, issue, settings)
    assert plan.action is SendAction.LAUNCH and plan.send is not None
    assert plan.send.status == SendStatus.CANCELLED


def test_a_sent_issue_is_reported_and_nothing_changes(engine, settings, issue):
    launched(engine, issue, settings)
    assert sends.set_status(engine, issue.slug, SendStep.FINISH)
    plan = control.prepare_send(engine, issue, settings)
    assert plan.action is SendAction.SENT and plan.audience is None
    assert plan.send is not None and plan.send.status == SendStatus.SENT
    assert status(engine) == SendStatus.SENT


def test_a_launched_then_cancelled_send_is_refused(engine, settings, issue):
    launched(engine, issue, settings)
    sends.cancel_send(engine, issue.slug, "by a test", NOW)
    with pytest.raises(DispatchError, match="this send was cancelled"):
        control.prepare_send(engine, issue, settings)
    assert status(engine) == SendStatus.CANCELLED


def test_a_paused_send_is_resumed(engine, settings, issue):
    launched(engine, issue, settings)
    assert sends.set_status(engine, issue.slug, SendStep.PAUSE,
                            reason="paused by an editor")
    plan = control.prepare_send(engine, issue, settings)
    assert plan.action is SendAction.RESUMED
    assert plan.send is not None and plan.send.reason == "paused by an editor"
    assert status(engine) == SendStatus.SENDING


def test_a_running_send_is_continued_as_it_is(engine, settings, issue):
    launched(engine, issue, settings)
    plan = control.prepare_send(engine, issue, settings)
    assert plan.action is SendAction.CONTINUE
    assert status(engine) == SendStatus.SENDING


def test_resuming_moves_a_send_only_from_paused(engine, settings, issue, monkeypatch):
    """A send seen paused but cancelled by another process before the resume stays
    cancelled: the resume step comes from paused only (states.SEND_STEPS)."""
    launched(engine, issue, settings)
    assert sends.set_status(engine, issue.slug, SendStep.PAUSE)
    seen = sends.get_send(engine, issue.slug)
    sends.cancel_send(engine, issue.slug, "cancelled meanwhile", NOW)
    monkeypatch.setattr(sends, "get_send", lambda _engine, _slug: seen)
    plan = control.prepare_send(engine, issue, settings)
    monkeypatch.undo()
    assert plan.action is SendAction.RESUMED
    assert status(engine) == SendStatus.CANCELLED


class _Refusing:
    """A relay that refuses us, not the recipients: authentication failed."""

    smtputf8 = True

    def send(self, sender: str, recipient: str, data: bytes, **_: object) -> Reply:
        return Reply(535, "5.7.8 authentication credentials invalid")

    def close(self) -> None:
        pass


def test_a_run_the_relay_refuses_pauses_the_send(engine, settings, issue):
    settings = settings.model_copy(update={"delivery": settings.delivery.model_copy(
        update={"connections": 1, "sender_failures": 2})})
    launched(engine, issue, settings)
    stats = run_delivery(engine, settings, _Refusing, issue=issue.slug)
    assert stats.paused and "authentication" in stats.paused
    send = sends.get_send(engine, issue.slug)
    assert send is not None and send.status == SendStatus.PAUSED
    assert send.reason == stats.paused
    assert control.prepare_send(engine, issue, settings).action is SendAction.RESUMED


def test_status_report_counts_rows_per_state_and_lists_last_errors(engine, settings, issue):
    launched(engine, issue, settings)
    with engine.begin() as conn:
        first = conn.execute(select(func.min(outbox.c.id))).scalar_one()
        conn.execute(update(outbox).where(outbox.c.id == first).values(
            state=RowState.FAILED, attempts=5, reply="550 5.2.0 mailbox unavailable",
            updated_at=NOW + timedelta(minutes=1)))
        conn.execute(update(outbox).where(outbox.c.id == first + 1).values(
            state=RowState.SENT, attempts=1, reply="250 ok", updated_at=NOW))
    [entry] = send_reports(engine, f"issues/{EXAMPLE_ISSUE}")
    assert entry.issue == EXAMPLE_ISSUE and entry.status == SendStatus.SENDING
    assert entry.recipients == len(READERS)
    assert entry.states == {**{state: 0 for state in RowState}, RowState.QUEUED: 1,
                            RowState.SENT: 1, RowState.FAILED: 1}
    assert list(entry.to_json()["states"]) == list(RowState)  # the JSON's key order
    [error] = entry.last_errors
    assert error.state == RowState.FAILED and error.attempts == 5
    assert error.reply == "550 5.2.0 mailbox unavailable"
    assert entry.to_json()["last_errors"][0]["updated_at"] == (
        NOW + timedelta(minutes=1)).isoformat()
    assert control.unfinished(engine, EXAMPLE_ISSUE) == 1
    assert [e.issue for e in send_reports(engine)] == [EXAMPLE_ISSUE]


def test_status_report_of_an_issue_never_sent_is_refused(engine, settings, issue):
    with pytest.raises(DispatchError, match="no send for this issue yet"):
        send_reports(engine, "issues/never-sent")
    assert send_reports(engine) == []


def test_schedule_overview_lists_scheduled_first_then_the_rest_and_drafts(engine, settings,
                                                                          issue):
    launched(engine, issue, settings)
    later = dataclasses.replace(issue, slug="2026-12-01-later")
    sooner = dataclasses.replace(issue, slug="2026-11-30-sooner")
    for item, at in ((later, datetime(2026, 12, 1, tzinfo=UTC)),
                     (sooner, datetime(2026, 11, 30, tzinfo=UTC))):
        assert sends.schedule_send(engine, item, at, NOW, zone="UTC")
    with engine.begin() as conn:
        conn.execute(update(outbox).values(state=RowState.SENT))
    overview = schedule_overview(engine, settings, NOW)
    assert [s.issue for s in overview.sends] == [sooner.slug, later.slug, EXAMPLE_ISSUE]
    assert overview.sent == {sooner.slug: 0, later.slug: 0, EXAMPLE_ISSUE: len(READERS)}
    assert overview.drafts == [] and overview.waiting
    data = overview.as_json()
    assert data["sends"][2]["sent"] == len(READERS)
    assert data["sends"][0]["send_at"] == "2026-11-30T00:00:00+00:00"


def test_status_and_dry_run_agree_on_who_is_skipped_and_why(engine, settings, issue, tmp_path):
    from datetime import timedelta as td

    from dispatch.deliver.sending import dry_run
    from dispatch.deliver.signup_mail import prepare_confirmations

    add_readers(engine, settings)
    # Two people who get nothing: one follows no topic, one no topic any brief carries.
    for email in ("none@example.com", "quiet@example.com"):
        subs.add(engine, email, name=None, topics=[], timezone=None,
                 known_topics=settings.topics, now=NOW)
    subs.add(engine, "gone@example.com", name=None, topics=["security"], timezone=None,
             known_topics=settings.topics, now=NOW)
    subs.update_subscriber(engine, "gone@example.com", now=NOW, known_topics=settings.topics,
                           status="unsubscribed")
    rehearsal = dry_run(engine, issue, settings, tmp_path / "dry", NOW).data["skipped"]
    assert rehearsal["no topics chosen"] == 2
    prepare_confirmations(engine, settings, td(days=2), NOW)  # dispatch's own ~confirmations
    plan = control.prepare_send(engine, issue, settings)
    assert control.launch_planned(engine, plan, settings, NOW)
    # One reader unsubscribes after the launch: their row is skipped when it comes up.
    with engine.begin() as conn:
        first = conn.execute(select(func.min(outbox.c.id))).scalar_one()
        conn.execute(update(outbox).where(outbox.c.id == first)
                     .values(state=RowState.SKIPPED))
    [entry] = send_reports(engine)  # ~confirmations is dispatch's own: not listed
    assert entry.issue == EXAMPLE_ISSUE
    assert entry.skipped == {**rehearsal, LEFT_BEFORE_SENDING: 1}
    # The one "skipped" figure (text, --json, the console) is everyone who got nothing.
    assert entry.states[RowState.SKIPPED] == sum(rehearsal.values()) + 1
    assert send_reports(engine, "~confirmations")[0].issue == "~confirmations"
