"""DSNs from a real MTA: Debian's Postfix, run as a private instance (its own config, queue
and data directories under a temporary folder, listening on a loopback port), is the relay
dispatch sends through. It relays the subscribers' domain to a next hop that refuses two
recipients (550 5.1.1 user unknown, 552 5.2.2 mailbox full), so Postfix itself writes the
DSNs, and delivers them to `dispatch inbound serve` on the VERP domain."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dispatch.compose.issues import load_issue
from dispatch.config import load_settings
from dispatch.devtools.demo import generate_subscribers
from dispatch.devtools.sink import RecordingHandler, free_port, smtp_sink
from dispatch.store import imports
from dispatch.store import subscribers as subs
from dispatch.store.db import open_store
from tests.helpers import EXAMPLE_ISSUE, eventually, run_cli

POSTFIX = Path("/usr/sbin/postfix")
MASTER = Path("/usr/lib/postfix/sbin/master")
INBOUND = "bounces.example.org"
NOW = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)

pytestmark = [
    pytest.mark.skipif(not (POSTFIX.exists() and MASTER.exists()),
                       reason="Debian's postfix is not installed (tests/install-services.sh)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="a private Postfix instance needs root"),
]

# Every service the instance needs, none chrooted (the queue is a temporary folder).
MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 1 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


class NextHop(RecordingHandler):
    """The subscribers' mail server: some mailboxes do not exist, one is full."""

    refusals = {"gone": "550 5.1.1 <{}>: Recipient address rejected: User unknown",
                "full": "552 5.2.2 <{}>: Mailbox full"}

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        for prefix, reply in self.refusals.items():
            if address.startswith(prefix):
                return reply.format(address)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"


def postfix(etc: Path, command: str) -> subprocess.CompletedProcess[str]:
    # Postfix logs its own errors to syslog (absent here), or to maillog once it runs; a
    # terminal would show them, so `script` gives it one.
    return subprocess.run(["script", "-qc", f"{POSTFIX} -c {etc} {command}", "/dev/null"],
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def relay() -> Iterator[tuple[int, int, int, Path]]:
    """(postfix port, next hop port, inbound port, maillog): a private Postfix instance that
    relays example.com to the next hop and the VERP domain to the inbound port."""
    listen, next_hop, inbound = free_port(), free_port(), free_port()
    # Not under pytest's tmp_path: Postfix's unprivileged daemons must reach the queue.
    root = Path(tempfile.mkdtemp(prefix="dispatch-postfix-"))
    os.chmod(root, 0o755)
    etc, queue, data = root / "etc", root / "queue", root / "data"
    for folder in (etc, queue, data):
        folder.mkdir()
    shutil.chown(data, "postfix", "postfix")
    routes = f"example.com=smtp:[127.0.0.1]:{next_hop}, {INBOUND}=smtp:[127.0.0.1]:{inbound}"
    (etc / "main.cf").write_text(textwrap.dedent(f"""\
        compatibility_level = 3.6
        queue_directory = {queue}
        data_directory = {data}
        meta_directory = /etc/postfix
        shlib_directory = /usr/lib/postfix
        command_directory = /usr/sbin
        daemon_directory = /usr/lib/postfix/sbin
        mail_owner = postfix
        setgid_group = postdrop
        myhostname = relay.dispatch.test
        mydomain = dispatch.test
        myorigin = relay.dispatch.test
        mydestination =
        inet_interfaces = 127.0.0.1
        inet_protocols = ipv4
        mynetworks = 127.0.0.0/8
        relay_domains = example.com, {INBOUND}
        transport_maps = inline:{{ {routes} }}
        default_transport = error:this test relays nowhere else
        smtp_dns_support_level = disabled
        smtp_host_lookup = native
        maillog_file = {root}/maillog
        maillog_file_prefixes = {root}
        queue_run_delay = 1s
        minimal_backoff_time = 1s
        maximal_backoff_time = 2s
        smtputf8_enable = no
        alias_maps =
        alias_database =
        biff = no
        """))
    (etc / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{listen}"))
    started = postfix(etc, "start")
    if started.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"postfix did not start: {started.stdout}{started.stderr}")
    try:
        yield listen, next_hop, inbound, root / "maillog"
    finally:
        postfix(etc, "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_postfix_bounces_come_back_and_the_subscriber_ends_bounced(project: Path, relay):
    listen, next_hop, inbound, maillog = relay
    config = project / "config.toml"
    text = re.sub(r"(?m)^port = \d+", f"port = {listen}", config.read_text())
    text = text.replace('# verp_domain = "bounces.example.org"', f'verp_domain = "{INBOUND}"')
    config.write_text(text + f'\n[inbound]\nport = {inbound}\nspool = "spool"\n')
    settings = load_settings(config)
    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    rows = generate_subscribers(settings, issue.topics, 6)
    # Two addresses the next hop refuses; all on example.com, which Postfix relays.
    gone, full = f"gone.{rows[0].email}", f"full.{rows[1].email}"
    rows[:2] = [dataclasses.replace(rows[0], email=gone, key=gone),
                dataclasses.replace(rows[1], email=full, key=full)]
    engine = open_store(settings.store.url)
    imports.import_rows(engine, rows, NOW)
    engine.dispose()

    log_path = project / "inbound.log"
    with log_path.open("w") as log:
        server = subprocess.Popen([sys.executable, "-m", "dispatch", "inbound", "serve"],
                                  cwd=project, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        assert eventually(lambda: "SMTP on" in log_path.read_text() or
                          server.poll() is not None, 30), log_path.read_text()
        handler = NextHop()
        with smtp_sink(handler, port=next_hop):
            sent = run_cli(project, "send", EXAMPLE_ISSUE, "--yes")
            assert sent.returncode == 0, sent.stderr
            # Postfix accepted every message (250): dispatch marked them all sent.
            assert "this run: 6 sent" in sent.stdout, sent.stdout
            assert eventually(lambda: log_path.read_text().count("inbound: ") >= 2, 60), (
                log_path.read_text() + maillog.read_text())
            assert len(handler.received) == 4
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    states = _statuses(project)
    assert states[gone] == "bounced"
    assert states[full] == "active"  # 5.2.2 mailbox full is a soft bounce
    assert sorted(states.values()) == ["active"] * 5 + ["bounced"]
    logged = log_path.read_text()
    assert "dsn=5.1.1, status=bounced" in maillog.read_text()  # Postfix's own DSN
    assert f"bounced {gone} ({EXAMPLE_ISSUE}): 5.1.1" in logged
    assert f"soft-bounce {full} ({EXAMPLE_ISSUE}): 5.2.2" in logged
    listed = run_cli(project, "subscribers", "list", "--status", "bounced", "--json")
    (person,) = json.loads(listed.stdout)
    assert "User unknown" in person["status_reason"]


def _statuses(project: Path) -> dict[str, str]:
    engine = open_store(load_settings(project / "config.toml").store.url)
    try:
        return {p.email: p.status for p in subs.list_subscribers(engine)}
    finally:
        engine.dispose()
