"""dispatch.audience.signup on its own: the sign-up form's checks, the confirmation message
as the shipped templates render it, and what a request leaves in a real SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update

from dispatch.audience import signup
from dispatch.audience.signup import Signup, confirmation_message, read_signup
from dispatch.compose.rules import check_rendered
from dispatch.compose.slots import TOKENS
from dispatch.config import Settings
from dispatch.deliver.report import send_reports
from dispatch.deliver.signup_mail import prepare_confirmations
from dispatch.errors import RenderError
from dispatch.schedule import schedule_overview
from dispatch.store import signups, suppressions
from dispatch.store import subscribers as subs
from dispatch.store.confirmations import confirm
from dispatch.store.confirmations import request_confirmation as request
from dispatch.store.db import open_store
from dispatch.store.schema import outbox
from dispatch.store.sends import CONFIRMATIONS, WELCOME, archived_sends, list_sends

NOW = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
EXPIRY = timedelta(days=2)


def good(settings: Settings, email: str = "ana@example.com", name: str = "Ana",
         topics: list[str] | None = None) -> Signup:
    wanted, errors = read_signup(settings, email, name, topics or ["security"])
    assert wanted is not None and errors == {}, errors
    return wanted


# ---- The form's fields ------------------------------------------------------------------


@pytest.mark.parametrize("email", ["", "ana", "ana@", "@example.com", "ana@@example.com",
                                   "ana example@example.com", "ana@example"])
def test_an_address_that_is_not_one_is_refused(settings, email):
    wanted, errors = read_signup(settings, email, "Ana", ["security"])
    assert wanted is None
    assert set(errors) == {"email"} and errors["email"].startswith("That address does not")


@pytest.mark.parametrize("email", ["ana@example.com\r\nBcc: all@example.com",
                                   "ana@example.com\nBcc: all@example.com",
                                   "ana@example.com\r", "ana@example.com\n",
                                   "\nana@example.com"])
def test_a_line_break_in_the_address_is_refused_even_at_the_ends(settings, email):
    # A line break is how a header gets injected; it is refused before any trimming.
    wanted, errors = read_signup(settings, email, "Ana", ["security"])
    assert wanted is None and "line break" in errors["email"], errors


@pytest.mark.parametrize("name", ["Ana\x00", "Ana\x07Reader", "\x1b[31mAna", "Ana\x7f",
                                  "A" * (signup.MAX_NAME + 1),
                                  "Ana " * (signup.MAX_NAME // 4 + 1)])
def test_a_name_with_control_characters_or_too_long_is_refused(settings, name):
    wanted, errors = read_signup(settings, "ana@example.com", name, ["security"])
    assert wanted is None
    assert set(errors) == {"name"} and str(signup.MAX_NAME) in errors["name"]


def test_a_name_of_the_longest_length_is_accepted(settings):
    assert good(settings, name="A" * signup.MAX_NAME).name == "A" * signup.MAX_NAME


@pytest.mark.parametrize("topics", [["astrology"], ["security", "astrology"],
                                    ["Security"], [""]])
def test_an_unknown_topic_is_refused_by_name(settings, topics):
    wanted, errors = read_signup(settings, "ana@example.com", "Ana", topics)
    assert wanted is None and set(errors) == {"topics"}
    unknown = [t for t in topics if t not in settings.topics]
    assert errors["topics"] == f"Unknown topic(s): {', '.join(unknown)}."


def test_no_topic_is_refused(settings):
    wanted, errors = read_signup(settings, "ana@example.com", "Ana", [])
    assert wanted is None and errors == {"topics": "Choose at least one topic."}


def test_every_field_at_fault_gets_its_message_at_once(settings):
    wanted, errors = read_signup(settings, "nobody", "\x00", [])
    assert wanted is None and set(errors) == {"email", "name", "topics"}


def test_good_input_is_trimmed_normalised_and_deduplicated(settings):
    wanted = good(settings, "  Ana.Reader@Example.COM \t", "  Ana \t  Reader\n",
                  ["security", "economy", "security", "economy"])
    assert wanted == Signup(email="Ana.Reader@Example.COM", key="ana.reader@example.com",
                            name="Ana Reader", topics=("security", "economy"))


@pytest.mark.parametrize("name", ["", "   ", "\t\n"])
def test_a_blank_name_is_no_name(settings, name):
    assert good(settings, name=name).name is None


# ---- The confirmation message -----------------------------------------------------------


def test_the_confirmation_message_is_rendered_with_the_project_settings(settings):
    subject, html, text = confirmation_message(settings, EXPIRY)
    assert subject == "Confirm your subscription to The Pacific Brief"
    assert settings.newsletter.name == "The Pacific Brief"  # the shipped config the above reads
    for part in (html, text):
        assert part.count(TOKENS["confirm_url"]) >= 1
        assert TOKENS["unsubscribe_url"] in part  # a confirmation may be unwanted too
        assert settings.newsletter.address in " ".join(part.split())
    assert check_rendered(html, text, settings) == []
    assert text.endswith("\n") and "\n\n\n" not in text


@pytest.mark.parametrize("expiry, words", [
    (timedelta(days=2), "2 days"), (timedelta(days=3), "3 days"),
    (timedelta(hours=36), "36 hours"), (timedelta(days=1), "24 hours"),
    (timedelta(hours=12), "12 hours"),
    (timedelta(hours=1), "1 hour"), (timedelta(minutes=30), "30 minutes"),
])
def test_the_message_says_how_long_the_link_works(settings, expiry, words):
    _, html, text = confirmation_message(settings, expiry)
    for part in (html, text):
        assert f"The link works for {words}." in " ".join(part.split())


def test_a_project_template_without_the_link_is_refused(settings, project: Path):
    # Editors may override any template; one that drops the link would make every sign-up
    # impossible to confirm, so it must fail when rendered, not when mailed.
    override = project / "templates" / "email"
    override.mkdir(parents=True)
    (override / "confirm.txt.j2").write_text(
        "{{ newsletter.name }}\n\nHi {{ slots.name }}, welcome.\n\n"
        "Unsubscribe: {{ slots.unsubscribe_url }}\n")
    with pytest.raises(RenderError) as caught:
        confirmation_message(settings, EXPIRY)
    assert "the confirmation link is missing" in str(caught.value)


# ---- Requests against the store ---------------------------------------------------------


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = open_store(settings.store.url)
    # What the web app does when it starts: the message every confirmation row points at.
    prepare_confirmations(engine, settings, EXPIRY, NOW)
    yield engine
    engine.dispose()


def confirmations(engine: Engine) -> list[tuple[int, int | None, str]]:
    """(row id, subscriber id, state) of every confirmation row."""
    with engine.connect() as conn:
        rows = conn.execute(select(outbox.c.id, outbox.c.subscriber_id, outbox.c.state)
                            .where(outbox.c.issue == CONFIRMATIONS).order_by(outbox.c.id))
        return [tuple(row) for row in rows]


def delivered(engine: Engine, at: datetime) -> None:
    """Mark every confirmation row sent at `at`, as the worker would."""
    with engine.begin() as conn:
        conn.execute(update(outbox).where(outbox.c.issue == CONFIRMATIONS)
                     .values(state="sent", updated_at=at))


def subscriber(engine: Engine, email: str) -> subs.Subscriber:
    found = subs.get(engine, email)
    assert found is not None, email
    return found


def suppressed(engine: Engine, key: str = "ana@example.com") -> str | None:
    with engine.connect() as conn:
        return suppressions.suppression_reason(conn, key)


def add_active(engine: Engine, settings: Settings, email: str) -> subs.Subscriber:
    return subs.add(engine, email, name="Ana", topics=["security"], timezone=None,
                    known_topics=settings.topics, now=NOW - timedelta(days=30))


def test_a_new_address_becomes_pending_with_one_confirmation_queued(engine, settings):
    assert request(engine, good(settings, "Ana@Example.com", "Ana",
                                ["economy", "security"]), NOW) is True
    ana = subscriber(engine, "ana@example.com")
    assert (ana.email, ana.name, ana.status) == ("Ana@Example.com", "Ana", "pending")
    assert set(ana.topics) == {"economy", "security"} and ana.confirmed_at is None
    [(_, sid, state)] = confirmations(engine)
    assert (sid, state) == (ana.id, "queued")


def test_a_repeat_while_the_first_waits_queues_nothing(engine, settings):
    assert request(engine, good(settings), NOW) is True
    before = confirmations(engine)
    for later in (timedelta(seconds=1), timedelta(minutes=9), timedelta(hours=5)):
        assert request(engine, good(settings), NOW + later) is False, later
    assert confirmations(engine) == before


def test_a_repeat_within_ten_minutes_of_the_last_message_queues_nothing(engine, settings):
    assert request(engine, good(settings), NOW) is True
    delivered(engine, NOW)
    before = confirmations(engine)
    assert request(engine, good(settings), NOW + timedelta(minutes=9, seconds=59)) is False
    assert confirmations(engine) == before

    assert request(engine, good(settings), NOW + timedelta(minutes=10, seconds=1)) is True
    [(_, sid, state)] = confirmations(engine)
    assert state == "queued" and sid == before[0][1]


def test_a_repeated_confirmation_is_a_new_row_with_its_own_id(engine, settings):
    # The worker builds a confirmation's Message-ID from subscriber id and row id; a mailbox
    # may fold a second message with the first one's Message-ID into it, and the repeat is
    # sent precisely because the first one was not found.
    assert request(engine, good(settings), NOW) is True
    delivered(engine, NOW)
    [(first, _, _)] = confirmations(engine)
    assert request(engine, good(settings), NOW + timedelta(minutes=11)) is True
    [(second, _, _)] = confirmations(engine)
    assert second != first


def test_a_repeat_with_other_topics_waits_for_the_click_then_applies(engine, settings):
    assert request(engine, good(settings, name="Ana", topics=["security"]), NOW)
    before = subscriber(engine, "ana@example.com")
    request(engine, good(settings, name="Ana R.", topics=["economy"]), NOW + timedelta(minutes=1))
    assert subscriber(engine, "ana@example.com") == before  # whoever sent it may not be Ana
    assert len(confirmations(engine)) == 1
    assert signups.confirm(engine, before.id, NOW + timedelta(minutes=2)) == "active"
    ana = subscriber(engine, "ana@example.com")
    assert (ana.name, ana.topics, ana.status) == ("Ana R.", ("economy",), "active")
    assert signups.signup_request(engine, ana.id) is None


def test_an_active_subscriber_is_left_as_it_is(engine, settings):
    before = add_active(engine, settings, "ana@example.com")
    assert request(engine, good(settings, "ANA@example.com", "Mallory", ["economy"]),
                   NOW) is False
    assert subscriber(engine, "ana@example.com") == before
    assert confirmations(engine) == []


def test_a_sign_up_leaves_an_unsubscribed_address_as_it_is_until_the_click(engine, settings):
    ana = add_active(engine, settings, "ana@example.com")
    assert subs.unsubscribe(engine, ana.id, NOW - timedelta(days=1))
    before = subscriber(engine, "ana@example.com")
    assert request(engine, good(settings, name="Mallory", topics=["economy"]), NOW) is True
    assert subscriber(engine, "ana@example.com") == before  # unsubscribed, same name, topics
    assert suppressed(engine) == "unsubscribed"
    assert [(sid, state) for _, sid, state in confirmations(engine)] == [(ana.id, "queued")]

    assert signups.confirm(engine, ana.id, NOW + timedelta(minutes=5)) == "active"
    again = subscriber(engine, "ana@example.com")
    assert (again.id, again.status, again.name, again.topics) == (ana.id, "active", "Mallory",
                                                                   ("economy",))
    assert suppressed(engine) is None


def test_an_unsubscribed_address_without_a_request_cannot_be_confirmed(engine, settings):
    # An old confirmation link from before the unsubscribe must not bring the address back.
    ana = add_active(engine, settings, "ana@example.com")
    assert subs.unsubscribe(engine, ana.id, NOW - timedelta(days=1))
    assert signups.confirm(engine, ana.id, NOW) == "unsubscribed"
    assert subscriber(engine, "ana@example.com").status == "unsubscribed"


def test_unsubscribing_withdraws_a_waiting_request_and_its_confirmation(engine, settings):
    ana = add_active(engine, settings, "ana@example.com")
    assert subs.unsubscribe(engine, ana.id, NOW - timedelta(days=1))
    assert request(engine, good(settings, topics=["economy"]), NOW) is True
    # "Unsubscribe" in the confirmation someone else asked for: already unsubscribed, but
    # the request and the message not yet sent are dropped.
    assert subs.unsubscribe(engine, ana.id, NOW + timedelta(minutes=1)) is False
    assert signups.signup_request(engine, ana.id) is None
    assert [state for _, _, state in confirmations(engine)] == ["skipped"]
    assert signups.confirm(engine, ana.id, NOW + timedelta(minutes=2)) == "unsubscribed"


@pytest.mark.parametrize("status", ["bounced", "complained"])
def test_an_address_that_bounced_or_complained_is_never_mailed(engine, settings, status):
    ana = add_active(engine, settings, "ana@example.com")
    if status == "bounced":
        with engine.begin() as conn:
            subs.mark_bounced(conn, ana.id, NOW - timedelta(days=1))
    else:
        subs.update_subscriber(engine, "ana@example.com", now=NOW - timedelta(days=1),
                               known_topics=settings.topics, status="complained")
    before = subscriber(engine, "ana@example.com")
    assert before.status == status
    for later in (timedelta(0), timedelta(days=30)):
        assert request(engine, good(settings, topics=["economy"]), NOW + later) is False
    assert subscriber(engine, "ana@example.com") == before
    assert confirmations(engine) == []


# ---- The welcome message ----------------------------------------------------------------


def test_the_welcome_message_passes_every_check_and_carries_each_readers_links(settings):
    subject, html, text = signup.welcome_message(settings)
    assert subject == "Welcome to The Pacific Brief"
    assert check_rendered(html, text, settings) == []
    for slot in ("name", "unsubscribe_url", "preferences_url"):
        assert TOKENS[slot] in html and TOKENS[slot] in text, slot
    assert TOKENS["confirm_url"] not in html + text
    assert f"{settings.newsletter.base_url}/a" in text.split()


def welcomes(engine: Engine) -> list[tuple[int | None, str]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(  # type: ignore[misc]
            select(outbox.c.subscriber_id, outbox.c.state).where(outbox.c.issue == WELCOME))]


def test_a_confirmation_queues_one_welcome_and_no_later_one(engine, settings):
    assert request(engine, good(settings), NOW)
    ana = subscriber(engine, "ana@example.com")
    assert confirm(engine, ana.id, NOW, welcome=True) == ("active", True)
    assert confirm(engine, ana.id, NOW, welcome=True) == ("active", False)
    assert welcomes(engine) == [(ana.id, "queued")]
    # Unsubscribed, signed up and confirmed again: she had hers.
    assert subs.unsubscribe(engine, ana.id, NOW + timedelta(hours=1))
    assert request(engine, good(settings), NOW + timedelta(hours=2))
    assert confirm(engine, ana.id, NOW + timedelta(hours=3), welcome=True) == ("active", False)
    assert welcomes(engine) == [(ana.id, "queued")]
    # Both pseudo-sends are running now, and neither is an issue to an editor.
    assert {s.issue for s in list_sends(engine)} == {CONFIRMATIONS, WELCOME}
    assert send_reports(engine) == [] and schedule_overview(engine, settings, NOW).sends == []
    assert archived_sends(engine) == []


def test_with_welcome_off_a_confirmation_queues_none(engine, settings):
    assert request(engine, good(settings), NOW)
    ana = subscriber(engine, "ana@example.com")
    assert confirm(engine, ana.id, NOW, welcome=False) == ("active", False)
    assert welcomes(engine) == []
