"""The bounce mailbox over IMAP against a real Dovecot: a private instance (its own config,
passwd-file user and Maildir under a temporary folder, on a loopback port; the system's
Dovecot config is never read), an issue sent to a sink, the hand-written reports in
tests/fixtures/inbound filled in for those messages and put in the mailbox by IMAP APPEND,
then `dispatch inbound poll`'s function and command."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from imap_tools import AND, MailBoxUnencrypted
from sqlalchemy import Engine

from dispatch.audience.tokens import Signer
from dispatch.config import ImapSettings, InboundSettings, Settings
from dispatch.errors import DispatchError
from dispatch.inbound.imap import poll
from dispatch.inbound.process import process
from dispatch.states import ReportKind
from dispatch.store import reports
from dispatch.store import subscribers as subs
from dispatch.store.secrets import secret
from tests.helpers import (
    EXAMPLE_ISSUE,
    FIXTURES,
    eventually,
    populate_audience,
    run_cli,
    send_example_to_sink,
)

pytestmark = [
    pytest.mark.skipif(shutil.which("dovecot") is None
                       or not Path("/usr/lib/dovecot/imap").exists(),
                       reason="Dovecot is not installed (tests/install-services.sh installs "
                              "dovecot-imapd)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="a private Dovecot instance needs root"),
]

SAMPLES = FIXTURES / "inbound"
NOW = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
INBOUND = "bounces.example.org"
USER, PASSWORD = "bounces", "imap-test-password"
NOBODY = 65534


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Dovecot:
    port: int
    home: Path

    def mailbox(self) -> MailBoxUnencrypted:
        return MailBoxUnencrypted("127.0.0.1", self.port, timeout=10).login(USER, PASSWORD)


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    # Not pytest's tmp_path: its folders are private to root, and the mail processes run as
    # nobody, who must reach the Maildir.
    root = Path(tempfile.mkdtemp(prefix="dispatch-dovecot-"))
    root.chmod(0o755)
    port = free_port()
    home = root / "home"
    (home / "Maildir").mkdir(parents=True)
    shutil.chown(home, NOBODY, NOBODY)
    shutil.chown(home / "Maildir", NOBODY, NOBODY)
    (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
    config = root / "dovecot.conf"
    config.write_text(f"""\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = {NOBODY}
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={NOBODY} gid={NOBODY} home={home}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
""")
    # Not captured through pipes: the daemon would hold them open and the call never return.
    errors = root / "start.err"
    with errors.open("w") as sink:
        started = subprocess.run(["dovecot", "-c", str(config)], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=sink, check=False,
                                 timeout=30)
    try:
        if started.returncode != 0:
            pytest.fail(f"dovecot did not start: {errors.read_text()}")
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    log = (root / "dovecot.log").read_text() if (root / "dovecot.log"
                                                                  ).exists() else ""
                    pytest.fail(f"dovecot is not listening on {port}: {log}")
                time.sleep(0.05)
        yield Dovecot(port, home)
    finally:
        subprocess.run(["dovecot", "-c", str(config), "stop"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                       timeout=30)
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class Sent:
    email: str
    verp: str
    mailto: str
    message_id: str


def send(engine: Engine, settings: Settings) -> list[Sent]:
    found = []
    for item in send_example_to_sink(engine, settings, NOW):
        msg = message_from_bytes(item.data, policy=policy.SMTP)
        mailto = str(msg["List-Unsubscribe"]).split(",")[1].strip(" <>")
        found.append(Sent(item.recipient, item.sender,
                          mailto.removeprefix("mailto:").split("?")[0], str(msg["Message-ID"])))
    return sorted(found, key=lambda s: s.email)


def fill(sample: str, sent: Sent, **overrides: str) -> bytes:
    values = {"VERP": sent.verp, "MAILTO": sent.mailto, "RCPT": sent.email,
              "MSGID": sent.message_id} | overrides
    text = (SAMPLES / sample).read_text()
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value)
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def with_imap(settings: Settings, port: int, **imap: object) -> Settings:
    config = ImapSettings.model_validate({
        "host": "127.0.0.1", "port": port, "security": "none", "username": USER,
        "password_env": "H7_IMAP_PASSWORD", "interval": 1, **imap})
    inbound = InboundSettings.model_validate({"smtp": False}).model_copy(
        update={"imap": config})
    return settings.model_copy(update={
        "delivery": settings.delivery.model_copy(update={"verp_domain": INBOUND}),
        "inbound": inbound})


# Which sample does what to whom (by index into the sent messages).
MAIL = [("postfix-user-unknown.eml", 0, ReportKind.BOUNCED, "bounced"),
        ("arf-abuse.eml", 1, ReportKind.COMPLAINT, "complained"),
        ("mailto-unsubscribe.eml", 2, ReportKind.UNSUBSCRIBE, "unsubscribed"),
        ("vacation-auto-submitted.eml", 3, ReportKind.AUTO_REPLY, "active"),
        ("gmail-mailbox-full.eml", 4, ReportKind.SOFT, "active")]


@pytest.fixture
def world(engine: Engine, settings: Settings, dovecot: Dovecot,
          monkeypatch: pytest.MonkeyPatch) -> tuple[Settings, list[Sent]]:
    monkeypatch.setenv("H7_IMAP_PASSWORD", PASSWORD)
    configured = with_imap(settings, dovecot.port)
    populate_audience(engine, configured, 6, NOW)
    sent = send(engine, configured)
    with dovecot.mailbox() as box:
        for sample, index, _, _ in MAIL:
            box.append(fill(sample, sent[index]), "INBOX")
        # A forged bounce (a made-up token) and a message that is no report at all.
        local, _, domain = sent[5].verp.partition("@")
        forged = fill("postfix-user-unknown.eml", sent[5], VERP=f"{local[:-16]}{'a' * 16}@{domain}",
                      MSGID=f"<{EXAMPLE_ISSUE}.0123456789abcdef0123456789abcdef@example.org>")
        box.append(forged, "INBOX")
    return configured, sent


def statuses(engine: Engine) -> dict[str, str]:
    return {s.email: s.status for s in subs.list_subscribers(engine)}


def later() -> datetime:
    return NOW + timedelta(hours=1)


def test_poll_acts_on_each_message_then_flags_it_and_reads_it_only_once(engine, world,
                                                                        dovecot):
    settings, sent = world
    signer = Signer(secret(engine))
    done = poll(engine, settings, signer, later)
    kinds = sorted(str(p.outcome.kind) for p in done)
    assert kinds == sorted([str(k) for _, _, k, _ in MAIL] + ["unmatched"])
    found = statuses(engine)
    for _, index, _, becomes in MAIL:
        assert found[sent[index].email] == becomes, sent[index].email
    assert found[sent[5].email] == "active"  # the forged one changed nothing
    with dovecot.mailbox() as box:
        assert len(box.uids(AND(seen=False))) == 0
        assert len(box.uids(AND(seen=True))) == len(MAIL) + 1
    # The next poll has nothing new to read.
    assert poll(engine, settings, signer, later) == []
    counted = reports.counts(engine, EXAMPLE_ISSUE)[EXAMPLE_ISSUE]
    assert (counted["bounced"], counted["complained"], counted["unsubscribed_mailto"],
            counted["auto_replies"], counted["soft_bounced"]) == (1, 1, 1, 1, 1)


def test_a_message_processed_but_not_flagged_is_read_again_and_changes_nothing_more(
        engine, world, dovecot):
    # As if a poll crashed after processing and before flagging: the messages were recorded
    # but are still unseen. The next poll reads them again; nothing more happens.
    settings, _ = world
    signer = Signer(secret(engine))
    with dovecot.mailbox() as box:
        raws = [box.client.uid("fetch", uid, "(BODY.PEEK[])")[1][0][1]
                for uid in box.uids(AND(seen=False))]
    for raw in raws:
        process(engine, raw, settings, signer, later(), source="imap")
    before = (statuses(engine), reports.counts(engine))
    done = poll(engine, settings, signer, later)
    assert len(done) == len(raws) and all(p.outcome.recorded and p.outcome.recorded.repeat
                                          for p in done)
    assert (statuses(engine), reports.counts(engine)) == before
    with dovecot.mailbox() as box:
        assert box.uids(AND(seen=False)) == []


def test_processed_messages_can_be_moved_instead(engine, world, dovecot):
    settings, _ = world
    assert settings.inbound is not None and settings.inbound.imap is not None
    moving = settings.model_copy(update={"inbound": settings.inbound.model_copy(update={
        "imap": settings.inbound.imap.model_copy(update={"move_to": "Processed"})})})
    done = poll(engine, moving, Signer(secret(engine)), later)
    assert len(done) == len(MAIL) + 1
    with dovecot.mailbox() as box:
        assert box.uids() == []
        box.folder.set("Processed")
        assert len(box.uids()) == len(MAIL) + 1


def configure_project(project: Path, port: int) -> None:
    config = project / "config.toml"
    text = config.read_text().replace("[delivery]", f'[delivery]\nverp_domain = "{INBOUND}"')
    config.write_text(text + f"""
[inbound]
smtp = false

[inbound.imap]
host = "127.0.0.1"
port = {port}
security = "none"
username = "{USER}"
password_env = "H7_IMAP_PASSWORD"
interval = 1
""")


def test_the_command_reports_each_message_and_refuses_a_wrong_password_clearly(
        project, dovecot, monkeypatch):
    configure_project(project, dovecot.port)
    with dovecot.mailbox() as box:
        box.append((SAMPLES / "vacation-subject-only.eml").read_bytes(), "INBOX")
    monkeypatch.setenv("H7_IMAP_PASSWORD", "wrong")
    refused = run_cli(project, "inbound", "poll")
    assert refused.returncode != 0
    assert "inbound.imap (127.0.0.1" in refused.stderr and "refused the login" in refused.stderr
    assert "Traceback" not in refused.stderr
    monkeypatch.delenv("H7_IMAP_PASSWORD")
    unset = run_cli(project, "inbound", "poll")
    assert unset.returncode != 0 and "H7_IMAP_PASSWORD is not set" in unset.stderr
    monkeypatch.setenv("H7_IMAP_PASSWORD", PASSWORD)
    polled = run_cli(project, "inbound", "poll")
    assert polled.returncode == 0, polled.stderr
    assert "auto-reply" in polled.stdout and "1 message(s)" in polled.stdout
    assert "0 message(s)" in run_cli(project, "inbound", "poll").stdout


def test_an_unreachable_server_is_a_located_error(engine, settings, monkeypatch):
    monkeypatch.setenv("H7_IMAP_PASSWORD", PASSWORD)
    configured = with_imap(settings, free_port())
    with pytest.raises(DispatchError) as info:
        poll(engine, configured, Signer(secret(engine)), later)
    assert "cannot connect" in str(info.value.problems[0])


def test_a_poll_that_fails_while_processing_leaves_the_messages_unread(engine, world,
                                                                       dovecot):
    # The store is down (nothing listens on its port): processing fails, the poll stops,
    # and every message stays unseen to be read again.
    from sqlalchemy import create_engine

    settings, sent = world
    down = create_engine("postgresql+psycopg://dispatch:dispatch@127.0.0.1:1/none",
                         connect_args={"connect_timeout": 2})
    with pytest.raises(Exception):  # noqa: B017 (whatever the driver raises)
        poll(down, settings, Signer(secret(engine)), later)
    with dovecot.mailbox() as box:
        assert len(box.uids(AND(seen=False))) == len(MAIL) + 1
    assert len(poll(engine, settings, Signer(secret(engine)), later)) == len(MAIL) + 1
    assert statuses(engine)[sent[0].email] == "bounced"


def test_dispatch_run_reads_the_mailbox_every_interval(project, dovecot, monkeypatch):
    configure_project(project, dovecot.port)
    monkeypatch.setenv("H7_IMAP_PASSWORD", PASSWORD)
    log_path = project / "run.log"
    with log_path.open("w") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "dispatch", "run"], cwd=project,
                                  stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        assert eventually(lambda: "reading the bounce mailbox" in log_path.read_text()
                          or daemon.poll() is not None, 30), log_path.read_text()
        # Mail arriving while it runs is read at the next poll.
        with dovecot.mailbox() as box:
            box.append((SAMPLES / "vacation-subject-only.eml").read_bytes(), "INBOX")
        assert eventually(lambda: "inbound imap: auto-reply" in log_path.read_text(), 20), (
            log_path.read_text())
        with dovecot.mailbox() as box:
            assert box.uids(AND(seen=False)) == []
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    text = log_path.read_text()
    assert "inbound SMTP on" not in text  # inbound.smtp = false
    assert "Traceback" not in text
