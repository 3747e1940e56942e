"""The whole flow as an operator runs it: `dispatch send` to a sink with a VERP domain, then
bounces, a complaint, an auto-reply, a mailto unsubscribe, a forged report and repeats, fed
through `dispatch run`'s inbound SMTP server and `dispatch inbound process` (.eml and mbox);
every subscriber ends in the state it should, and `dispatch status` counts what came back."""

from __future__ import annotations

import json
import mailbox
import re
import signal
import smtplib
import subprocess
import sys
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

from dispatch.config import load_settings
from dispatch.devtools.sink import RecordingHandler, free_port, smtp_sink
from dispatch.store import subscribers as subs
from dispatch.store.db import open_store
from tests.helpers import EXAMPLE_ISSUE, FIXTURES, eventually, populate_audience, run_cli

INBOUND = "bounces.example.org"
NOW = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)


def fill(sample: str, values: dict[str, str], **overrides: str) -> bytes:
    text = (FIXTURES / "inbound" / sample).read_text()
    for name, value in (values | overrides).items():
        text = text.replace("{{" + name + "}}", value)
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def configure(project: Path, smtp_port: int, inbound_port: int) -> None:
    config = project / "config.toml"
    text = config.read_text()
    text = re.sub(r"(?m)^port = \d+", f"port = {smtp_port}", text)
    text = re.sub(r"(?m)^retry_backoff = \d+", "retry_backoff = 0", text)
    text = text.replace('# verp_domain = "bounces.example.org"', f'verp_domain = "{INBOUND}"')
    text += f'\n[inbound]\nport = {inbound_port}\nspool = "spool"\n'
    config.write_text(text)


def start_run(project: Path) -> tuple[subprocess.Popen[str], Path]:
    log_path = project / "run.log"
    with log_path.open("w") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "dispatch", "run"], cwd=project,
                                  stdout=log, stderr=subprocess.STDOUT, text=True)
    if not eventually(lambda: "inbound SMTP on" in log_path.read_text()
                      or daemon.poll() is not None, 30):
        daemon.kill()
        raise AssertionError(log_path.read_text())
    return daemon, log_path


def statuses(project: Path) -> dict[str, str]:
    engine = open_store(load_settings(project / "config.toml").store.url)
    try:
        return {p.email: p.status for p in subs.list_subscribers(engine)}
    finally:
        engine.dispose()


def test_send_then_everything_that_comes_back(project: Path):
    inbound_port = free_port()
    handler = RecordingHandler()
    with smtp_sink(handler) as (_, port):
        configure(project, port, inbound_port)
        settings = load_settings(project / "config.toml")
        engine = open_store(settings.store.url)
        populate_audience(engine, settings, 12, NOW)
        engine.dispose()
        sent = run_cli(project, "send", EXAMPLE_ISSUE, "--yes")
        assert sent.returncode == 0, sent.stderr
    messages = []
    for item in sorted(handler.received, key=lambda r: r.recipient):
        msg = message_from_bytes(item.data, policy=policy.SMTP)
        mailto = str(msg["List-Unsubscribe"]).split(",")[1].strip(" <>")
        messages.append({"RCPT": item.recipient, "VERP": item.sender,
                         "MSGID": str(msg["Message-ID"]),
                         "MAILTO": mailto.removeprefix("mailto:").split("?")[0]})
    assert len(messages) == 12
    who = [m["RCPT"] for m in messages]
    forged_id = f"<{EXAMPLE_ISSUE}.00000000000000000000000000000000@example.org>"
    forged_verp = re.sub(r"-[a-z2-7]{16}@", "-" + "a" * 16 + "@", messages[8]["VERP"])

    # By SMTP, to the inbound server `dispatch run` starts with an [inbound] table.
    daemon, log = start_run(project)
    try:
        with smtplib.SMTP("127.0.0.1", inbound_port, timeout=10) as client:
            for sample, m in (("postfix-user-unknown.eml", messages[0]),
                              ("arf-abuse.eml", messages[5]),
                              ("vacation-auto-submitted.eml", messages[6]),
                              ("postfix-user-unknown.eml", messages[0])):  # a repeat
                client.sendmail("", [m["VERP"]], fill(sample, m))
            client.sendmail(messages[7]["RCPT"], [messages[7]["MAILTO"]],
                            fill("mailto-unsubscribe.eml", messages[7]))
            client.sendmail("", [forged_verp], fill("forged-dsn.eml", messages[8],
                                                    VERP=forged_verp, MSGID=forged_id))
            code, _ = client.rcpt("anyone@example.net")  # never a relay
            assert code in (503, 550)  # refused (503: no MAIL FROM in this transaction)
        assert eventually(lambda: log.read_text().count("inbound: ") >= 6, 20), log.read_text()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    assert daemon.returncode == 0, log.read_text()

    # From files: .eml files and an mbox, then all of them again.
    files = project / "returned"
    files.mkdir()
    (files / "exchange.eml").write_bytes(fill("exchange-recipient-not-found.eml", messages[1]))
    (files / "full.eml").write_bytes(fill("gmail-mailbox-full.eml", messages[3]))
    (files / "delayed.eml").write_bytes(fill("postfix-delayed.eml", messages[4]))
    (files / "junk.txt").write_bytes((FIXTURES / "inbound" / "not-an-email.txt").read_bytes())
    box = mailbox.mbox(files / "old.mbox")
    box.add(message_from_bytes(fill("exim-prose-bounce.eml", messages[2])))
    box.add(message_from_bytes(fill("vacation-subject-only.eml", messages[9])))
    box.flush()
    box.close()
    forged_mailto = re.sub(r"-[a-z2-7]{16}@", "-" + "b" * 16 + "@", messages[10]["MAILTO"])
    (files / "forged-mailto.eml").write_bytes(fill("mailto-unsubscribe.eml", messages[10],
                                                   MAILTO=forged_mailto))
    names = ["exchange.eml", "full.eml", "delayed.eml", "junk.txt", "old.mbox",
             "forged-mailto.eml"]
    first = run_cli(project, "inbound", "process", *(f"returned/{n}" for n in names))
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith(f"returned/exchange.eml: bounced {who[1]} ({EXAMPLE_ISSUE}): "
                               "5.1.10")
    assert lines[1].startswith(f"returned/full.eml: soft-bounce {who[3]}")
    assert lines[3] == "returned/junk.txt: not-an-email: not a mail message"
    assert lines[4].startswith(f"returned/old.mbox#1: bounced {who[2]}")
    assert lines[5].startswith(f"returned/old.mbox#2: auto-reply {who[9]}")
    assert lines[6].startswith("returned/forged-mailto.eml: unmatched: a message to the "
                               "List-Unsubscribe address")
    again = run_cli(project, "inbound", "process", *(f"returned/{n}" for n in names))
    assert again.returncode == 0
    assert again.stdout.count("already recorded, nothing changed") == 6

    unreadable = run_cli(project, "inbound", "process", "returned/full.eml", "nowhere.eml")
    assert unreadable.returncode == 1
    assert unreadable.stderr.strip() == "nowhere.eml: cannot read: No such file or directory"
    assert "Traceback" not in unreadable.stderr + unreadable.stdout

    expected = ["bounced", "bounced", "bounced", "active", "active", "complained", "active",
                "unsubscribed", "active", "active", "active", "active"]
    assert [statuses(project)[w] for w in who] == expected

    status = json.loads(run_cli(project, "status", EXAMPLE_ISSUE, "--json").stdout)[0]
    came_back = status["reports"]
    print(f"\nwhat came back for {EXAMPLE_ISSUE}: {came_back}")
    assert came_back == {"bounced": 3, "soft_bounced": 2, "complained": 1,
                         "unsubscribed_one_click": 0, "unsubscribed_page": 0,
                         "unsubscribed_preferences": 0, "unsubscribed_mailto": 1,
                         "unsubscribed_webhook": 0, "auto_replies": 2, "unmatched": 1}
    assert status["states"]["bounced"] == 3 and status["states"]["sent"] == 9
    text = run_cli(project, "status", EXAMPLE_ISSUE).stdout
    assert (f"{EXAMPLE_ISSUE}: came back: 3 bounced, 2 soft bounced, 1 complained, "
            "1 unsubscribed mailto, 2 auto replies, 1 unmatched") in text

    # The forged mailto request named no issue: counted apart.
    assert "reports naming no send: 1 unmatched" in run_cli(project, "status").stdout
    bounced = run_cli(project, "subscribers", "list", "--status", "bounced")
    assert bounced.returncode == 0
    assert "User unknown" in bounced.stdout or "5.1.1" in bounced.stdout
    assert "5.1.10" in bounced.stdout and "flufl.bounce" in bounced.stdout
    listed = json.loads(run_cli(project, "subscribers", "list", "--status", "complained",
                                "--json").stdout)
    assert [p["email"] for p in listed] == [who[5]]
    assert listed[0]["status_reason"] == "ARF abuse report (ExampleFBL/1.0)"
