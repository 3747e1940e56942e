"""One test per relay, recipient or message fault, each against a real aiosmtpd server with
scripted replies (tests/smtp_server.py) and a real store (SQLite file and PostgreSQL): the
copies the server kept per recipient, and the state every outbox row ends in. Nothing one
subscriber, one recipient or one relay hiccup does stops the list; only a relay that refuses
the session pauses it (docs/architecture.md, "What pauses a send")."""

from __future__ import annotations

import itertools
import re
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, message_from_string, policy
from email.header import decode_header, make_header
from itertools import takewhile

import pytest
from sqlalchemy import Engine, select, update

from dispatch.compose.issues import load_issue
from dispatch.config import Settings
from dispatch.config.defaults import Tuning
from dispatch.deliver.loop import run_delivery
from dispatch.deliver.outcomes import Kind
from dispatch.deliver.sending import launch_issue
from dispatch.deliver.transport import smtp_transport
from dispatch.devtools.sink import free_port
from dispatch.schedule.planning import cancel_issue, pause_issue
from dispatch.store import subscribers as subs
from dispatch.store.db import open_store
from dispatch.store.launch import plan_audience
from dispatch.store.progress import state_counts
from dispatch.store.schema import outbox, subscribers
from dispatch.store.sends import get_send
from tests.helpers import (
    EXAMPLE_ISSUE,
    configure_delivery,
    launch_example_once,
    outbox_rows,
    populate_audience,
)
from tests.smtp_server import FaultyHandler, faulty_sink, refuse_login

NOW = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)


QUICK = Tuning(session_backoff=0.05, session_backoff_max=0.2)


def populate(engine: Engine, settings: Settings, count: int = 8,
             domains: tuple[str, ...] = ("example.com",)) -> list[str]:
    """The addresses of `count` subscribers who all receive the example issue."""
    return [row.email for row in populate_audience(engine, settings, count, NOW, domains)]


def add_one(engine: Engine, settings: Settings, email: str, name: str | None) -> None:
    subs.add(engine, email, name=name, topics=["economy"], timezone=None,
             known_topics=settings.topics, now=NOW)


def send(engine: Engine, settings: Settings, stop: threading.Event | None = None,
         clock: Callable[[], datetime] | None = None):
    """Launch the example issue once and deliver it as `dispatch send` does (a pause is
    recorded on the send)."""
    slug = launch_example_once(engine, settings, NOW)
    return run_delivery(engine, settings, smtp_transport(settings.smtp), issue=slug, stop=stop,
                        tuning=QUICK, **({"clock": clock} if clock else {}))


def stepping_clock(step: timedelta) -> Callable[[], datetime]:
    """A clock from NOW that moves `step` each time it is read: the session patience runs
    out by the loop's own clock, however slowly the machine runs."""
    ticks = itertools.count()
    return lambda: NOW + step * next(ticks)


rows = outbox_rows


def states(engine: Engine) -> dict[str, int]:
    return dict(state_counts(engine).get(EXAMPLE_ISSUE, {}))


def smtp(settings: Settings, **values: object) -> Settings:
    return settings.model_copy(update={"smtp": settings.smtp.model_copy(update=values)})


def delivery(settings: Settings, **values: object) -> Settings:
    return settings.model_copy(update={"delivery": settings.delivery.model_copy(
        update=values)})


# ---- The relay refuses or drops the session ----------------------------------------------

def test_421_at_the_greeting_three_times_then_accepted_uses_no_attempt(engine, settings):
    handler = FaultyHandler(greetings=["421 4.3.2 Too busy, try later"] * 3)
    with faulty_sink(handler) as (_, port):
        settings = configure_delivery(settings, port)
        emails = populate(engine, settings)
        stats = send(engine, settings)
    assert stats.paused is None
    assert handler.per_recipient() == {e: 1 for e in emails}
    assert {state for state, _, _ in rows(engine).values()} == {"sent"}
    assert {attempts for _, attempts, _ in rows(engine).values()} == {1}
    assert stats.outcomes[Kind.SESSION] >= 3


def test_a_relay_that_keeps_refusing_the_greeting_pauses_after_the_patience(engine, settings):
    handler = FaultyHandler(greetings=["421 4.3.2 Too busy, try later"] * 10_000)
    with faulty_sink(handler) as (_, port):
        settings = delivery(configure_delivery(settings, port), session_patience=60.0)
        emails = populate(engine, settings)
        stats = send(engine, settings, clock=stepping_clock(timedelta(seconds=1)))
    assert stats.paused and "421 4.3.2 Too busy" in stats.paused
    found = re.search(r"no session with the relay for (\d+) s since 2026-01-05 07:\d\d:\d\d "
                      r"UTC \((\d+) tries\)", stats.paused)
    assert found, stats.paused
    assert int(found[1]) >= 60 and int(found[2]) >= 1  # the patience, by the loop's clock
    send_row = get_send(engine, EXAMPLE_ISSUE)
    assert send_row is not None and send_row.status == "paused"
    assert send_row.reason == stats.paused
    assert handler.received == []
    assert states(engine) == {"queued": len(emails)}  # nothing burned, no attempt used
    assert {attempts for _, attempts, _ in rows(engine).values()} == {0}


def test_an_unreachable_relay_pauses_after_the_patience_saying_so(engine, settings):
    settings = delivery(configure_delivery(settings, free_port()), session_patience=0.5)
    emails = populate(engine, settings)
    stats = send(engine, settings)
    assert stats.paused and "cannot connect to 127.0.0.1" in stats.paused
    assert states(engine) == {"queued": len(emails)}


def test_421_mid_session_reconnects_and_uses_no_attempt(engine, settings):
    handler = FaultyHandler(mail_421_every=3)
    with faulty_sink(handler) as (_, port):
        settings = configure_delivery(settings, port)
        emails = populate(engine, settings, 12)
        stats = send(engine, settings)
    assert stats.paused is None
    assert handler.per_recipient() == {e: 1 for e in emails}
    assert {(state, attempts) for state, attempts, _ in rows(engine).values()} == {("sent", 1)}


def test_535_authentication_failed_pauses_and_burns_nothing(engine, settings, monkeypatch):
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "wrong")
    handler = FaultyHandler()
    with faulty_sink(handler, authenticator=refuse_login, auth_require_tls=False) as (_, port):
        settings = smtp(configure_delivery(settings, port), username="dispatch",
                        password_env="TEST_SMTP_PASSWORD")
        emails = populate(engine, settings)
        stats = send(engine, settings)
    assert stats.paused and "535" in stats.paused
    assert handler.received == []
    assert states(engine) == {"queued": len(emails)}
    assert get_send(engine, EXAMPLE_ISSUE).status == "paused"


# ---- One recipient's trouble ---------------------------------------------------------------

@pytest.mark.parametrize("reply", ["451 4.3.0 Temporary failure", "452 4.2.2 Mailbox full"])
def test_a_transient_refusal_at_rcpt_is_retried_with_an_attempt(engine, settings, reply):
    handler = FaultyHandler()
    with faulty_sink(handler) as (_, port):
        settings = configure_delivery(settings, port)
        emails = populate(engine, settings)
        handler.rcpt_script = {emails[2]: [reply]}
        stats = send(engine, settings)
    assert stats.paused is None
    assert handler.per_recipient() == {e: 1 for e in emails}
    found = rows(engine)
    assert found[emails[2]][:2] == ("sent", 2)
    assert {found[e][:2] for e in emails if e != emails[2]} == {("sent", 1)}


def test_a_stall_beyond_the_timeout_is_retried(engine, settings):
    handler = FaultyHandler()
    with faulty_sink(handler) as (_, port):
        settings = smtp(configure_delivery(settings, port), timeout=0.5)
        emails = populate(engine, settings)
        handler.rcpt_script = {emails[1]: ["slow:1.5"]}
        send(engine, settings)
    assert handler.per_recipient() == {e: 1 for e in emails}
    assert rows(engine)[emails[1]][:2] == ("sent", 2)


def test_a_connection_dropped_in_the_middle_of_the_data_is_sent_again(engine, settings):
    handler = FaultyHandler()
    with faulty_sink(handler) as (_, port):
        settings = configure_delivery(settings, port)
        emails = populate(engine, settings)
        handler.data_script = {emails[3]: ["drop"]}
        stats = send(engine, settings)
    assert stats.paused is None
    assert handler.per_recipient() == {e: 1 for e in emails}
    assert rows(engine)[emails[3]][:2] == ("sent", 2)


def test_550_5_1_1_bounces_that_address_only(engine, settings):
    handler = FaultyHandler()
    with faulty_sink(handler) as (_, port):
        settings = configure_delivery(settings, port)
        emails = populate(engine, settings)
        handler.rcpt_script = {emails[0]: ["550 5.1.1 No such user"]}
        stats = send(engine, settings)
    assert stats.paused is None
    assert handler.per_recipient() == {e: 1 for e in emails[1:]}
    assert rows(engine)[emails[0]] == ("bounced", 1, "550 5.1.1 No such user")
    assert subs.get(engine, emails[0]).status == "bounced"
    assert states(engine) == {"sent": len(emails) - 1, "bounced": 1}


def test_552_at_rcpt_and_554_to_the_data_fail_their_rows_with_the_reply(engine, settings):
    handler = FaultyHandler()
    with faulty_sink(handler) as (_, port):
        settings = configure_delivery(settings, port)
        emails = populate(engine, settings)
        handler.rcpt_script = {emails[0]: ["552 5.2.2 Quota exceeded"]}
        handler.data_script = {emails[1]: ["554 5.6.0 Message content rejected"]}
        stats = send(engine, settings)
    assert stats.paused is None
    assert handler.per_recipient() == {e: 1 for e in emails[2:]}
    found = rows(engine)
    assert found[emails[0]] == ("failed", 1, "552 5.2.2 Quota exceeded")
    assert found[emails[1]] == ("failed", 1, "554 5.6.0 Message content rejected")
    assert states(engine) == {"sent": len(emails) - 2, "failed": 2}


def test_5_7_1_for_one_recipient_fails_that_row_and_the_list_goes_on(engine, settings):
    handler = FaultyHandler()
    with faulty_sink(handler) as (_, port):
        settings = configure_delivery(settings, port)
        emails = populate(engine, settings, 200)
        handler.rcpt_script = {emails[150]: ["550 5.7.1 Recipient refuses your mail"] * 9}
        stats = send(engine, settings)
    assert stats.paused is None  # 199 sent, 1 failed: not "199 sent, 1 queued, paused"
    assert get_send(engine, EXAMPLE_ISSUE).status == "sent"
    assert handler.per_recipient() == {e: 1 for e in emails if e != emails[150]}
    assert rows(engine)[emails[150]] == ("failed", 1, "550 5.7.1 Recipient refuses your mail")
    assert states(engine) == {"sent": 199, "failed": 1}


def test_5_7_1_from_one_domain_fails_those_rows_without_pausing(engine, settings):
    handler = FaultyHandler()
    with faulty_sink(handler) as (_, port):
        settings = configure_delivery(settings, port)
        emails = populate(engine, settings, 12, domains=("example.com", "blocked.example"))
        handler.rcpt_script = {e: ["554 5.7.1 Blocked by policy"] for e in emails
                               if e.endswith("@blocked.example")}
        stats = send(engine, settings)
    assert stats.paused is None
    assert states(engine) == {"sent": 6, "failed": 6}


@pytest.mark.parametrize("stage", ["rcpt", "data"])
def test_5_7_1_for_everyone_pauses_and_burns_nothing(engine, settings, stage):
    handler = FaultyHandler()
    with faulty_sink(handler) as (_, port):
        settings = configure_delivery(settings, port)
        emails = populate(engine, settings, 30, domains=("example.com", "example.net"))
        if stage == "rcpt":
            handler.rcpt_script = {e: ["550 5.7.1 Relaying denied"] * 9 for e in emails}
        else:
            handler.data_reply = "554 5.7.1 Message rejected: sender reputation"
        stats = send(engine, settings)
    assert stats.paused and "5.7.1" in stats.paused and "2 domains" in stats.paused
    assert handler.received == []
    assert states(engine) == {"queued": len(emails)}
    assert {attempts for _, attempts, _ in rows(engine).values()} == {0}
    assert get_send(engine, EXAMPLE_ISSUE).status == "paused"


# ---- The reply to the final dot --------------------------------------------------------------

def test_a_250_later_than_the_command_timeout_but_within_data_timeout_is_one_copy(engine,
                                                                                   settings):
    handler = FaultyHandler()
    with faulty_sink(handler) as (_, port):
        settings = smtp(configure_delivery(settings, port, connections=4), timeout=0.5,
                        data_timeout=5.0)
        emails = populate(engine, settings, 8)
        handler.data_script = {e: ["slow:1.2"] for e in emails}
        stats = send(engine, settings)
    assert handler.per_recipient() == {e: 1 for e in emails}
    assert {(state, attempts) for state, attempts, _ in rows(engine).values()} == {("sent", 1)}
    assert stats.outcomes[Kind.SENT] == len(emails)


def test_a_reply_lost_after_the_final_dot_is_an_unknown_outcome_tried_once_more(engine,
                                                                               settings):
    handler = FaultyHandler()
    with faulty_sink(handler) as (_, port):
        settings = configure_delivery(settings, port, max_attempts=5)
        emails = populate(engine, settings)
        handler.data_script = {emails[0]: ["lost"], emails[1]: ["lost", "lost", "lost"]}
        send(engine, settings)
    copies = handler.per_recipient()
    assert copies == {**{e: 1 for e in emails}, emails[0]: 2, emails[1]: 2}  # never a third
    found = rows(engine)
    assert found[emails[0]][:2] == ("sent", 2)
    state, attempts, reply = found[emails[1]]
    assert (state, attempts) == ("failed", 2)
    assert reply.startswith("unknown outcome twice, not tried again (it may have arrived)")


def test_a_reply_later_than_data_timeout_is_unknown_and_tried_once_more(engine, settings):
    handler = FaultyHandler()
    with faulty_sink(handler) as (_, port):
        settings = smtp(configure_delivery(settings, port, max_attempts=5), timeout=0.3,
                        data_timeout=0.6)
        emails = populate(engine, settings, 4)
        handler.data_script = {emails[0]: ["slow:1.5"] * 5}
        send(engine, settings)
    assert handler.per_recipient()[emails[0]] == 2  # was 5 copies and "failed"
    state, attempts, reply = rows(engine)[emails[0]]
    assert (state, attempts) == ("failed", 2) and "unknown outcome" in reply


# ---- One subscriber's address or name --------------------------------------------------------

def test_a_non_ascii_local_part_goes_out_with_smtputf8_when_offered(engine, settings):
    handler = FaultyHandler()
    with faulty_sink(handler) as (_, port):
        settings = configure_delivery(settings, port)
        emails = populate(engine, settings, 53)
        add_one(engine, settings, "josé@example.com", "José")
        stats = send(engine, settings)
    assert stats.paused is None
    assert handler.per_recipient() == {**{e: 1 for e in emails}, "josé@example.com": 1}
    [copy] = [r for r in handler.received if r.recipient == "josé@example.com"]
    assert [o for o in handler.mail_options if "SMTPUTF8" in o] == [["SMTPUTF8"]]
    msg = message_from_string(copy.data.decode("utf-8"), policy=policy.SMTPUTF8)
    assert 'To: "José" <josé@example.com>\r\n'.encode() in copy.data  # raw UTF-8: RFC 6532
    [to] = msg["To"].addresses
    assert (to.display_name, to.addr_spec) == ("José", "josé@example.com")
    assert states(engine) == {"sent": 54}


def test_a_non_ascii_local_part_fails_its_row_alone_when_smtputf8_is_not_offered(engine,
                                                                                 settings):
    handler = FaultyHandler()
    with faulty_sink(handler, enable_SMTPUTF8=False) as (_, port):
        settings = configure_delivery(settings, port)
        emails = populate(engine, settings, 53)
        add_one(engine, settings, "josé@example.com", "José")
        stats = send(engine, settings)
    assert stats.paused is None  # was: paused at 52/54
    assert handler.per_recipient() == {e: 1 for e in emails}
    state, attempts, reply = rows(engine)["josé@example.com"]
    assert (state, attempts) == ("failed", 1) and "relay does not offer SMTPUTF8" in reply
    assert get_send(engine, EXAMPLE_ISSUE).status == "sent"


def test_unicode_display_names_are_rfc_2047_encoded_and_read_back_as_written(engine,
                                                                             settings):
    names = {"zoe@example.com": 'Zoë "Z" Müller, Łódź', "ew@example.com": "=?utf-8?q?x?=",
             "kanji@example.com": "東京 太郎" * 8, "quote@example.com": 'Ann "Nan" O\\Neil',
             "idn@bücher.example": "Bücher Fan"}
    handler = FaultyHandler()
    with faulty_sink(handler) as (_, port):
        settings = configure_delivery(settings, port)
        for email, name in names.items():
            add_one(engine, settings, email, name)
        send(engine, settings)
    received = {r.recipient: r.data for r in handler.received}
    assert set(received) == {*names.keys() - {"idn@bücher.example"},
                             "idn@xn--bcher-kva.example"}
    for email, name in names.items():
        wire = email.replace("bücher", "xn--bcher-kva")
        data = received[wire]
        assert data.isascii()  # no SMTPUTF8 needed: encoded words and an IDNA domain
        header = re.sub(r"\r?\n", "", message_from_bytes(data, policy=policy.compat32)["To"])
        display, _, address = header.rpartition(" <")
        assert address == f"{wire}>"
        if display.startswith('"'):  # a quoted string
            assert re.sub(r"\\(.)", r"\1", display[1:-1]) == name
        else:  # encoded words; the white space between them is not part of the name
            assert str(make_header(decode_header(display))) == name
        to_lines = data[data.index(b"\r\nTo: ") + 2:].split(b"\r\n")
        to_lines = to_lines[:1] + list(takewhile(lambda line: line[:1] == b" ", to_lines[1:]))
        assert all(len(line) <= 78 for line in to_lines)


def test_a_message_that_cannot_be_built_fails_only_its_row(engine, settings):
    handler = FaultyHandler()
    with faulty_sink(handler) as (_, port):
        settings = configure_delivery(settings, port)
        emails = populate(engine, settings, 10)
        with engine.begin() as conn:  # no command lets a line break into a name: simulate it
            conn.execute(update(subscribers).where(subscribers.c.email == emails[4])
                         .values(name="Evil\r\nBcc: everyone@example.net"))
        stats = send(engine, settings)
    assert stats.paused is None
    assert handler.per_recipient() == {e: 1 for e in emails if e != emails[4]}
    state, attempts, reply = rows(engine)[emails[4]]
    assert (state, attempts) == ("failed", 1)
    assert reply == "cannot build the message: control character in the display name"


# ---- An editor's pause or cancel -------------------------------------------------------------

@pytest.mark.parametrize("action", ["pause", "cancel"])
def test_a_pause_or_cancel_is_noticed_at_the_next_look(engine, settings, monkeypatch, action):
    """Noticed means: once the worker's look at the sends in hand (SqlOutbox.halted, every
    Tuning.status_every) returns the pause, no new message of the send starts; only those
    already past their last check may still go out: per connection, the one on the wire and
    one that checked just before the answer reached the connections. Asserted on that event
    and counts, not on how long a loaded machine took (it was "< 3 s", 7.5 s under load)."""
    from dispatch.store.outbox import SqlOutbox

    connections = 4
    seen: list[int] = []  # messages kept when the worker first saw the pause
    original = SqlOutbox.halted

    def halted(self: SqlOutbox, issues) -> dict[str, str]:
        found = original(self, issues)
        if found and not seen:
            seen.append(len(handler.received))
        return found

    monkeypatch.setattr(SqlOutbox, "halted", halted)  # a spy: the real query still answers

    def act() -> None:
        if action == "pause":
            pause_issue(engine, EXAMPLE_ISSUE)
        else:
            cancel_issue(engine, EXAMPLE_ISSUE, NOW)

    handler = FaultyHandler(on_kept=lambda kept: act() if kept == 20 else None)
    with faulty_sink(handler) as (_, port):
        settings = configure_delivery(settings, port, rate=40.0, connections=connections)
        emails = populate(engine, settings, 200)
        send(engine, settings)
    assert seen, "the worker never saw the pause"
    after = len(handler.received) - seen[0]
    print(f"\n{action}: {after} message(s) went out after the worker saw it")
    assert after <= 2 * connections  # was: at most a second of the rate (40)
    counts = states(engine)
    assert "sending" not in counts and counts["sent"] == len(handler.received)
    left = "queued" if action == "pause" else "skipped"
    assert counts[left] == len(emails) - counts["sent"] > 0
    assert {a for s, a, _ in rows(engine).values() if s == left} == {0}


# ---- Dead workers -------------------------------------------------------------------------

def test_a_dead_worker_on_this_host_has_its_rows_back_within_a_heartbeat(engine, settings):
    import subprocess
    import sys

    from dispatch.store.outbox import SqlOutbox
    from dispatch.store.schema import workers

    populate(engine, settings, 6)
    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    assert launch_issue(engine, issue, plan_audience(engine, issue, settings), settings, NOW)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    survivor = SqlOutbox(engine, settings)
    survivor.register(NOW)
    now = datetime.now(UTC)
    with engine.begin() as conn:  # a neighbour that claimed three rows, then was killed
        conn.execute(workers.insert().values(id="neighbour", host=survivor.host, pid=dead_pid,
                                             started_at=now, heartbeat_at=now))
        conn.execute(workers.insert().values(id="far", host="elsewhere", pid=dead_pid,
                                             started_at=now, heartbeat_at=now))
        ids = [r for r in conn.execute(select(outbox.c.id).order_by(outbox.c.id)).scalars()]
        conn.execute(update(outbox).where(outbox.c.id.in_(ids[:3]))
                     .values(state="sending", claimed_by="neighbour"))
        conn.execute(update(outbox).where(outbox.c.id.in_(ids[3:5]))
                     .values(state="sending", claimed_by="far"))
    assert survivor.heartbeat(now) == 3  # the same host's dead pid: back at once
    # Across hosts only the lease tells: still fresh, so its rows stay claimed.
    assert Counter(state for state, _, _ in rows(engine).values()) == {"queued": 4,
                                                                       "sending": 2}
    later = now + (survivor.lease * 1.01)
    with engine.begin() as conn:
        conn.execute(update(workers).where(workers.c.id == survivor.worker_id)
                     .values(heartbeat_at=later))
    assert survivor.heartbeat(later) == 2
    survivor.unregister()


def test_worker_lease_is_configurable(settings):
    from dispatch.store.outbox import SqlOutbox

    settings = delivery(settings, worker_lease=12.0)
    engine = open_store("sqlite://")
    assert SqlOutbox(engine, settings).lease.total_seconds() == 12.0
