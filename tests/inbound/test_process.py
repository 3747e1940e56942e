"""What comes back, end to end through the store: an issue sent to a sink with a VERP domain,
then the hand-written reports in tests/fixtures/inbound filled in for the messages the sink
received, each processed (twice), leaving every subscriber in the state it should."""

from __future__ import annotations

import mailbox
import random
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from dispatch.audience.tokens import Signer
from dispatch.compose.issues import load_issue
from dispatch.config import Settings
from dispatch.deliver.sending import launch_issue, run_worker
from dispatch.deliver.transport import smtp_transport
from dispatch.devtools.sink import smtp_sink
from dispatch.errors import DispatchError
from dispatch.inbound.classify import classify
from dispatch.inbound.process import process, read_messages, web_unsubscribe
from dispatch.states import ReportKind, ReportVia
from dispatch.store import reports
from dispatch.store import subscribers as subs
from dispatch.store.launch import plan_audience
from dispatch.store.schema import outbox
from dispatch.store.secrets import secret
from dispatch.store.sends import get_send
from tests.helpers import EXAMPLE_ISSUE, FIXTURES, configure_delivery, populate_audience
from tests.smtp_server import FaultyHandler

SAMPLES = FIXTURES / "inbound"
NOW = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
INBOUND = "bounces.example.org"


@dataclass(frozen=True)
class Sent:
    """What the sink received for one subscriber."""

    email: str
    verp: str
    mailto: str
    message_id: str


def fill(sample: str, sent: Sent, **overrides: str) -> bytes:
    values = {"VERP": sent.verp, "MAILTO": sent.mailto, "RCPT": sent.email,
              "MSGID": sent.message_id} | overrides
    text = (SAMPLES / sample).read_text()
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value)
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def send_issue(engine: Engine, settings: Settings, slug: str, at: datetime) -> dict[str, Sent]:
    """Launch and deliver one issue to a sink; what each subscriber's message carried."""
    issue = load_issue(settings.issues_dir / slug, settings)
    with smtp_sink() as (handler, port):
        wired = configure_delivery(settings, port)
        assert launch_issue(engine, issue, plan_audience(engine, issue, wired), wired, at)
        run_worker(engine, wired, smtp_transport(wired.smtp), issue=issue.slug)
    found = {}
    for item in handler.received:
        msg = message_from_bytes(item.data, policy=policy.SMTP)
        mailto = str(msg["List-Unsubscribe"]).split(",")[1].strip(" <>")
        found[item.recipient] = Sent(item.recipient, item.sender,
                                     mailto.removeprefix("mailto:").split("?")[0],
                                     str(msg["Message-ID"]))
    return found


@pytest.fixture
def inbound_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"delivery": settings.delivery.model_copy(
        update={"verp_domain": INBOUND})})


@pytest.fixture
def sent(engine: Engine, inbound_settings: Settings) -> list[Sent]:
    rows = populate_audience(engine, inbound_settings, 12, NOW)
    by_email = send_issue(engine, inbound_settings, EXAMPLE_ISSUE, NOW)
    return [by_email[r.email] for r in rows]


def status(engine: Engine, email: str) -> str:
    found = subs.get(engine, email)
    assert found is not None
    return found.status


def run(engine: Engine, settings: Settings, raw: bytes, source: str = "file"):
    return process(engine, raw, settings, Signer(secret(engine)), NOW + timedelta(hours=1),
                   source=source)


@pytest.mark.parametrize("sample, kind, becomes", [
    ("postfix-user-unknown.eml", ReportKind.BOUNCED, "bounced"),
    ("exchange-recipient-not-found.eml", ReportKind.BOUNCED, "bounced"),
    ("gmail-no-such-user.eml", ReportKind.BOUNCED, "bounced"),
    ("exim-prose-bounce.eml", ReportKind.BOUNCED, "bounced"),
    ("qmail-prose-bounce.eml", ReportKind.BOUNCED, "bounced"),
    ("gmail-mailbox-full.eml", ReportKind.SOFT, "active"),
    ("postfix-delayed.eml", ReportKind.SOFT, "active"),
    ("arf-abuse.eml", ReportKind.COMPLAINT, "complained"),
    ("vacation-auto-submitted.eml", ReportKind.AUTO_REPLY, "active"),
    ("vacation-subject-only.eml", ReportKind.AUTO_REPLY, "active"),
    ("mailto-unsubscribe.eml", ReportKind.UNSUBSCRIBE, "unsubscribed"),
])
def test_each_kind_of_report_leaves_its_subscriber_in_the_right_state(
        engine, inbound_settings, sent, sample, kind, becomes):
    target, bystander = sent[0], sent[1]
    outcome = run(engine, inbound_settings, fill(sample, target))
    assert outcome.kind == kind, outcome.describe()
    assert outcome.recorded is not None and outcome.recorded.email == target.email
    with engine.connect() as conn:
        row = conn.execute(select(outbox.c.id).where(
            outbox.c.message_id == target.message_id)).scalar()
    assert outcome.recorded.row_id == row
    assert status(engine, target.email) == becomes
    assert status(engine, bystander.email) == "active"
    # The same report again, by another way in: nothing more happens.
    again = run(engine, inbound_settings, fill(sample, target), source="smtp")
    assert again.recorded is not None and again.recorded.repeat
    assert status(engine, target.email) == becomes
    counted = reports.counts(engine, EXAMPLE_ISSUE)[EXAMPLE_ISSUE]
    key = {ReportKind.BOUNCED: "bounced", ReportKind.SOFT: "soft_bounced",
           ReportKind.COMPLAINT: "complained", ReportKind.AUTO_REPLY: "auto_replies",
           ReportKind.UNSUBSCRIBE: "unsubscribed_mailto"}[kind]
    assert counted[key] == 1 and sum(counted.values()) == 1


def test_each_way_of_naming_the_message_is_enough_on_its_own(engine, inbound_settings, sent):
    # By the VERP token alone (no Message-ID quoted) and by the Message-ID alone (the report
    # came to an address that is not the VERP one, as feedback loops do).
    first, second = sent[0], sent[1]
    by_token = fill("postfix-user-unknown.eml", first, MSGID="<someone-else@example.net>")
    assert run(engine, inbound_settings, by_token).kind == ReportKind.BOUNCED
    by_id = fill("gmail-no-such-user.eml", second, VERP="postmaster@example.org")
    assert run(engine, inbound_settings, by_id).kind == ReportKind.BOUNCED
    assert status(engine, first.email) == status(engine, second.email) == "bounced"


def test_forged_reports_change_nothing_and_are_counted_unmatched(engine, inbound_settings,
                                                                 sent):
    victim = sent[0]
    local, _, domain = victim.verp.partition("@")
    row, sid, mac = local.split("-")[1:]
    other_row = f"b-{int(row, 36) + 1:x}-{sid}-{mac}@{domain}"  # someone else's row, same MAC
    tampered_mac = f"b-{row}-{sid}-{'a' * 16}@{domain}"
    guessed_id = f"<{EXAMPLE_ISSUE}.0123456789abcdef0123@example.org>"
    distinct = set()
    for verp in (other_row, tampered_mac, f"bounces+{victim.email.replace('@', '=')}@{domain}"):
        for sample in ("forged-dsn.eml", "arf-abuse.eml", "mailto-unsubscribe.eml"):
            raw = fill(sample, victim, VERP=verp, MAILTO=verp.replace("b-", "u-"),
                       MSGID=guessed_id)
            outcome = run(engine, inbound_settings, raw)
            assert outcome.kind == ReportKind.UNMATCHED, (sample, verp, outcome.describe())
            distinct.add(outcome.report.fingerprint)
    # A bounce token is no unsubscribe token: the mailto address must be the "u-" one.
    raw = fill("mailto-unsubscribe.eml", victim, MAILTO=victim.verp)
    assert run(engine, inbound_settings, raw).kind == ReportKind.UNMATCHED
    assert {s.status for s in subs.list_subscribers(engine)} == {"active"}
    # Counted once per distinct report (the same report with another To is the same one),
    # under the issue its Message-ID claims, or under none.
    counted = reports.counts(engine)
    assert counted[EXAMPLE_ISSUE]["unmatched"] + counted[None]["unmatched"] == len(distinct)
    assert counted[EXAMPLE_ISSUE]["unmatched"] >= 2 and counted[None]["unmatched"] >= 1


def test_a_signed_token_must_name_the_rows_own_subscriber(engine, inbound_settings, sent):
    # SQLite may give a deleted row's id to a new row: a genuine token made for that id and
    # another subscriber (an old message's bounce) must not touch the new row's subscriber.
    signer = Signer(secret(engine))
    claim = signer.read_row_local_part(sent[0].verp.partition("@")[0])
    stale = signer.row_local_part("bounce", claim.row_id, claim.subscriber_id + 1000)
    raw = fill("postfix-user-unknown.eml", sent[0], VERP=f"{stale}@{INBOUND}",
               MSGID="<other@example.net>")
    assert run(engine, inbound_settings, raw).kind == ReportKind.UNMATCHED
    assert status(engine, sent[0].email) == "active"


def test_not_an_email_is_said_so_and_recorded_nowhere(engine, inbound_settings, sent):
    outcome = run(engine, inbound_settings, (SAMPLES / "not-an-email.txt").read_bytes())
    assert outcome.kind == ReportKind.NOT_EMAIL and outcome.recorded is None
    assert reports.counts(engine) == {}


def test_a_hard_bounce_marks_the_row_and_keeps_the_reason(engine, inbound_settings, sent):
    target = sent[0]
    run(engine, inbound_settings, fill("postfix-user-unknown.eml", target))
    found = subs.get(engine, target.email)
    assert found is not None and found.status_reason is not None
    assert found.status_reason.startswith("5.1.1 smtp; 550 5.1.1")
    assert found.unsubscribed_at == NOW + timedelta(hours=1)
    with engine.connect() as conn:
        states = dict(conn.execute(select(outbox.c.message_id, outbox.c.state)).all())
    assert states[target.message_id] == "bounced"
    assert sorted(states.values()).count("sent") == len(sent) - 1
    # A complaint is stronger than a bounce: who complained stays complained.
    other = sent[1]
    run(engine, inbound_settings, fill("arf-abuse.eml", other))
    run(engine, inbound_settings, fill("gmail-no-such-user.eml", other))
    assert status(engine, other.email) == "complained"


def test_soft_bounces_suppress_only_after_the_limit_across_different_issues(
        engine, inbound_settings, project):
    populate_audience(engine, inbound_settings, 2, NOW)
    issues = [EXAMPLE_ISSUE]
    for n in (2, 3):  # two more issues, copies of the example under other names
        slug = f"2026-12-0{n}-thaw"
        shutil.copytree(project / "issues" / EXAMPLE_ISSUE, project / "issues" / slug)
        issues.append(slug)
    target = None
    for number, slug in enumerate(issues):
        sent = send_issue(engine, inbound_settings, slug, NOW + timedelta(days=number))
        target = sent[sorted(sent)[0]]
        # Two soft bounces for the same issue count once.
        run(engine, inbound_settings, fill("postfix-delayed.eml", target))
        run(engine, inbound_settings, fill("gmail-mailbox-full.eml", target))
        expected = "bounced" if number == 2 else "active"
        assert status(engine, target.email) == expected, slug
    assert target is not None
    found = subs.get(engine, target.email)
    assert found is not None and found.status_reason is not None
    assert found.status_reason.startswith("3 soft bounces in 30 days")
    assert get_send(engine, issues[-1]) is not None


def test_soft_bounces_older_than_the_window_do_not_count(engine, inbound_settings, project):
    populate_audience(engine, inbound_settings, 1, NOW)
    shutil.copytree(project / "issues" / EXAMPLE_ISSUE, project / "issues" / "2026-12-02-thaw")
    signer = Signer(secret(engine))
    for slug, at in ((EXAMPLE_ISSUE, NOW), ("2026-12-02-thaw", NOW + timedelta(days=40))):
        (target,) = send_issue(engine, inbound_settings, slug, at).values()
        tight = inbound_settings.model_copy(update={"delivery": inbound_settings.delivery
                                                    .model_copy(update={"soft_bounce_limit": 2})})
        process(engine, fill("postfix-delayed.eml", target), tight, signer, at)
    assert status(engine, target.email) == "active"


def test_the_classifier_reads_every_sample(tmp_path: Path):
    # Independent of any store: the kinds each hand-written sample stands for.
    sent = Sent("ana@example.com", f"b-1-abcdefghijklmnop@{INBOUND}",
                f"u-1-abcdefghijklmnop@{INBOUND}", "<thaw.00ff@example.org>")
    kinds = {p.name: classify(fill(p.name, sent)).kind for p in SAMPLES.glob("*.eml")}
    assert kinds["gmail-mailbox-full.eml"] == ReportKind.SOFT  # 5.2.2 is not permanent
    assert kinds["vacation-auto-submitted.eml"] == ReportKind.AUTO_REPLY
    # Bounces carry Auto-Submitted: auto-replied too; their content decides.
    assert kinds["postfix-user-unknown.eml"] == ReportKind.BOUNCED
    assert classify(b"").kind == ReportKind.NOT_EMAIL


def test_a_sending_issue_pauses_when_its_hard_bounce_rate_passes_the_limit(
        engine, inbound_settings):
    # 25 subscribers; one stays retrying (a 4xx, retried an hour later), so the send is still
    # sending when the bounces come back.
    rows = populate_audience(engine, inbound_settings, 25, NOW)
    slow = sorted(r.email for r in rows)[-1]
    issue = load_issue(inbound_settings.issues_dir / EXAMPLE_ISSUE, inbound_settings)
    handler = FaultyHandler(rcpt_script={slow: ["451 4.3.0 Try again later"]})
    with smtp_sink(handler) as (_, port):
        wired = configure_delivery(inbound_settings, port, retry_backoff=3600.0)
        assert launch_issue(engine, issue, plan_audience(engine, issue, wired), wired, NOW)
        run_worker(engine, wired, smtp_transport(wired.smtp), issue=issue.slug,
                   wait_for_retries=False)
    assert get_send(engine, EXAMPLE_ISSUE).status == "sending"  # type: ignore[union-attr]
    sent = []
    for item in sorted(handler.received, key=lambda r: r.recipient):
        msg = message_from_bytes(item.data, policy=policy.SMTP)
        sent.append(Sent(item.recipient, item.sender, "", str(msg["Message-ID"])))
    assert len(sent) == 24
    # One hard bounce in 24 delivered is 4.2 %: under delivery.max_bounce_rate (5 %).
    first = run(engine, inbound_settings, fill("postfix-user-unknown.eml", sent[0]))
    still = get_send(engine, EXAMPLE_ISSUE)
    assert still is not None and still.status == "sending", first.describe()
    second = run(engine, inbound_settings, fill("gmail-no-such-user.eml", sent[1]))
    paused = get_send(engine, EXAMPLE_ISSUE)
    assert paused is not None and paused.status == "paused"
    assert paused.reason is not None and paused.reason.startswith("hard-bounce rate 8.3 %")
    assert "delivery.max_bounce_rate 5 %" in paused.reason
    assert second.recorded is not None
    assert any("paused" in change for change in second.recorded.changes)


def test_a_sending_issue_pauses_when_its_complaint_rate_passes_the_limit(
        engine, inbound_settings):
    rows = populate_audience(engine, inbound_settings, 21, NOW)
    slow = sorted(r.email for r in rows)[-1]
    issue = load_issue(inbound_settings.issues_dir / EXAMPLE_ISSUE, inbound_settings)
    handler = FaultyHandler(rcpt_script={slow: ["451 4.3.0 Try again later"]})
    with smtp_sink(handler) as (_, port):
        wired = configure_delivery(inbound_settings, port, retry_backoff=3600.0)
        assert launch_issue(engine, issue, plan_audience(engine, issue, wired), wired, NOW)
        run_worker(engine, wired, smtp_transport(wired.smtp), issue=issue.slug,
                   wait_for_retries=False)
    item = sorted(handler.received, key=lambda r: r.recipient)[0]
    msg = message_from_bytes(item.data, policy=policy.SMTP)
    target = Sent(item.recipient, item.sender, "", str(msg["Message-ID"]))
    run(engine, inbound_settings, fill("arf-abuse.eml", target))
    paused = get_send(engine, EXAMPLE_ISSUE)
    assert paused is not None and paused.status == "paused"
    assert paused.reason == ("complaint rate 5.00 % (1 of 20 delivered) passed "
                             "delivery.max_complaint_rate 0.3 %")


def test_web_unsubscribes_from_links_naming_no_row_count_for_the_last_issue_sent(
        engine, inbound_settings, sent):
    # Links in messages sent before they named their row: the last issue the reader was sent.
    ids = {p.email: p.id for p in subs.list_subscribers(engine)}
    later = NOW + timedelta(hours=2)
    signer = Signer(secret(engine))

    def unsubscribe(email: str, via: ReportVia) -> bool:
        outcome = web_unsubscribe(engine, inbound_settings, signer, ids[email], None, via, later)
        assert outcome.recorded is not None
        return not outcome.recorded.repeat

    assert unsubscribe(sent[0].email, ReportVia.ONE_CLICK)
    assert not unsubscribe(sent[0].email, ReportVia.ONE_CLICK)  # nothing more to record
    assert unsubscribe(sent[1].email, ReportVia.PREFERENCES)
    run(engine, inbound_settings, fill("mailto-unsubscribe.eml", sent[2]))
    counted = reports.counts(engine)[EXAMPLE_ISSUE]
    assert (counted["unsubscribed_one_click"], counted["unsubscribed_preferences"],
            counted["unsubscribed_mailto"]) == (1, 1, 1)
    assert [status(engine, s.email) for s in sent[:4]] == ["unsubscribed"] * 3 + ["active"]
    assert [subs.get(engine, s.email).status_reason for s in sent[:3]] == [  # type: ignore[union-attr]
        f"unsubscribed by one-click from {EXAMPLE_ISSUE}",
        f"unsubscribed by preferences from {EXAMPLE_ISSUE}",
        f"unsubscribed by mailto from {EXAMPLE_ISSUE}"]


def test_hostile_messages_are_classified_without_an_exception_or_a_traceback(capfd, caplog):
    # Every sample cut short at 40 places and with bytes flipped, a charset nobody knows,
    # deep nesting: each is some kind of report (most often ignored), never an error, and
    # nothing is printed (flufl.bounce's detectors log a traceback when one trips).
    sent = Sent("ana@example.com", f"b-1-1-abcdefghijklmnop@{INBOUND}",
                f"u-1-1-abcdefghijklmnop@{INBOUND}", "<thaw.00ff@example.org>")
    rnd = random.Random(16)
    hostile = []
    for path in sorted(SAMPLES.glob("*.eml")):
        raw = fill(path.name, sent)
        hostile += [raw[:cut] for cut in range(0, len(raw), max(1, len(raw) // 40))]
        for _ in range(40):
            flipped = bytearray(raw)
            for _ in range(rnd.randint(1, 12)):
                flipped[rnd.randrange(len(flipped))] = rnd.randrange(256)
            hostile.append(bytes(flipped))
    hostile.append(fill("exim-prose-bounce.eml", sent).replace(
        b"Date:", b"Content-Type: text/plain; charset=no-such-charset\r\nDate:"))
    nested = b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n" + b"".join(
        f"--b{i}\r\nContent-Type: multipart/mixed; boundary=b{i + 1}\r\n\r\n".encode()
        for i in range(300))
    hostile += [nested, b"Content-Type: message/rfc822\r\n\r\n" * 300 + b"Subject: x\r\n\r\n"]
    # A byte no header may hold where flufl.bounce's Postfix detector reads: it raises.
    hostile.append(b"From: MAILER-DAEMON@mx.example.net\r\nTo: " + sent.verp.encode() +
                   b"\r\nSubject: Undelivered Mail\r\nContent-Type: multipart/mixed; "
                   b"boundary=q\r\n\r\n--q\r\nContent-Description: Notification \xff\r\n"
                   b"Content-Type: text/plain\r\n\r\nx\r\n--q--\r\n")
    kinds = {classify(raw).kind for raw in hostile}
    assert kinds <= set(ReportKind) and ReportKind.IGNORED in kinds
    printed = capfd.readouterr()
    assert printed.out == "" and printed.err == ""
    # Where no logging is set up (`dispatch inbound process`) a log record is a traceback on
    # the terminal.
    assert [r.getMessage() for r in caplog.records] == []


def test_reading_files_names_what_cannot_be_read(tmp_path: Path):
    sent = Sent("ana@example.com", f"b-1-1-abcdefghijklmnop@{INBOUND}",
                f"u-1-1-abcdefghijklmnop@{INBOUND}", "<thaw.00ff@example.org>")
    one = tmp_path / "one.eml"
    one.write_bytes(fill("postfix-delayed.eml", sent))
    assert [label for label, _ in read_messages(one, 100_000)] == [str(one)]
    box = mailbox.mbox(tmp_path / "box.mbox")
    for sample in ("arf-abuse.eml", "qmail-prose-bounce.eml"):
        box.add(message_from_bytes(fill(sample, sent)))
    box.flush()
    read = list(read_messages(tmp_path / "box.mbox", 100_000))
    assert [label.rpartition("#")[2] for label, _ in read] == ["1", "2"]
    assert classify(read[0][1]).kind == ReportKind.COMPLAINT
    for path, size, message in ((tmp_path / "none.eml", 100_000, "cannot read: No such file"),
                                (tmp_path, 100_000, "cannot read: Is a directory"),
                                (one, 1_000, "larger than inbound.max_size (1,000 octets)")):
        with pytest.raises(DispatchError) as info:
            list(read_messages(path, size))
        (problem,) = info.value.problems
        assert problem.path == str(path) and problem.message.startswith(message)
    with pytest.raises(DispatchError, match="larger than inbound.max_size"):
        list(read_messages(tmp_path / "box.mbox", 1_500))
