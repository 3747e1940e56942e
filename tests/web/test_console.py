"""The newsroom console over real HTTP: uvicorn on a loopback port serving the web app with
/admin/, a real SQLite store, the in-process SMTP server, a delivery thread as `dispatch serve`
runs it; httpx for the security tests, headless Chromium (Selenium) for the walks through."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from markupsafe import escape
from sqlalchemy import Engine

from dispatch.compose.issues import load_issue
from dispatch.config import Settings, load_settings
from dispatch.config.defaults import Tuning
from dispatch.deliver.loop import Keep, run_delivery
from dispatch.deliver.transport import smtp_transport
from dispatch.devtools.sink import RecordingHandler, free_port, smtp_sink
from dispatch.states import ReportVia, Role, RowState, SendStatus
from dispatch.store import accounts, audit, sends
from dispatch.store import subscribers as subs
from dispatch.store.db import open_store
from dispatch.web.app import create_app
from dispatch.web.console.access import PREFIX, ROUTES, role_table
from dispatch.web.server import WebServer
from tests.helpers import (
    EXAMPLE_ISSUE,
    configure_web,
    eventually,
    outbox_rows,
    populate_audience,
)

PASSWORD = "correct horse battery staple"
PEOPLE = {Role.EDITOR: "ed@example.org", Role.OPERATOR: "op@example.org",
          Role.ADMIN: "ad@example.org"}
SCRIPT = "<script>alert(1)</script>"


@dataclass
class Console:
    url: str
    settings: Settings
    engine: Engine
    mail: RecordingHandler
    project: Path

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, headers=headers)

    def login(self, role: Role, client: httpx.Client | None = None) -> httpx.Client:
        client = client or self.client()
        page = client.get(f"{PREFIX}/login")
        response = client.post(f"{PREFIX}/login", data={
            "email": PEOPLE[role], "password": PASSWORD, "csrf": csrf(page)})
        assert response.status_code == 303, response.text
        return client


def csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found[1]


@pytest.fixture
def console(project: Path) -> Iterator[Console]:
    web_port = free_port()
    with smtp_sink(RecordingHandler()) as (handler, smtp_port):
        config = configure_web(project, smtp_port, web_port)
        text = re.sub(r"(?m)^rate = 0", "rate = 40", config.read_text())
        config.write_text(text + "\n[console]\nenabled = true\n")
        settings = load_settings(config)
        engine = open_store(settings.store.url)
        now = datetime.now(UTC)
        for role, email in PEOPLE.items():
            accounts.add_user(engine, email, PASSWORD, role, now)
        wake, stop = threading.Event(), threading.Event()
        server = WebServer(create_app(engine, settings, queued=wake.set), "127.0.0.1",
                           web_port, ("127.0.0.1",))
        sender = threading.Thread(target=run_delivery, args=(
            engine, settings, smtp_transport(settings.smtp)), kwargs={
            "keep": Keep.WHEN_DUE, "stop": stop, "wake": wake,
            "tuning": Tuning(look_every=0.5)})
        server.start()
        sender.start()
        try:
            yield Console(f"http://127.0.0.1:{web_port}", settings, engine, handler, project)
        finally:
            stop.set()
            wake.set()
            sender.join()
            server.stop()
            engine.dispose()


def example_path(console: Console, path: str, subscriber: int) -> str:
    """A route's path with real values for its parameters."""
    issue = load_issue(console.settings.issues_dir / EXAMPLE_ISSUE, console.settings)
    full = "b" + "-".join(str(i + 1) for i in range(len(issue.briefs)))
    return PREFIX + (path.replace("{slug}", EXAMPLE_ISSUE).replace("{variant}", full)
                     .replace("{name}", issue.briefs[0].path.name)
                     .replace("{id:int}", str(subscriber)))


def add_reader(console: Console, email: str = "reader@example.com", name: str = "Reader"
               ) -> subs.Subscriber:
    return subs.add(console.engine, email, name=name, topics=["east-asia"], timezone=None,
                    known_topics=console.settings.topics, now=datetime.now(UTC))


# ---- Access --------------------------------------------------------------------------------

def test_no_page_or_action_without_a_session(console: Console):
    reader = add_reader(console)
    with console.client() as anonymous:
        for action in ROUTES:
            if action.role is None:
                continue
            path = example_path(console, action.path, reader.id)
            response = anonymous.request(action.method, path, data={"confirm": "yes"})
            assert response.status_code == 303, (action, response.status_code)
            assert response.headers["location"].startswith(f"{PREFIX}/login?next="), action
        # A made-up session cookie is no session either.
        anonymous.cookies.set("dispatch_session", "forged-session-id", path=PREFIX)
        assert anonymous.get(f"{PREFIX}/").status_code == 303
    assert subs.by_id(console.engine, reader.id) is not None  # forget did not run
    assert audit.entries(console.engine) == []


def test_each_route_allows_exactly_the_roles_the_table_names(console: Console):
    print("\n" + role_table())
    reader = add_reader(console)
    sessions = {role: console.login(role) for role in Role}
    tokens = {role: csrf(client.get(f"{PREFIX}/")) for role, client in sessions.items()}
    checked = 0
    for action in ROUTES:
        if action.role is None:
            continue
        for role, client in sessions.items():
            path = example_path(console, action.path, reader.id)
            # No confirm=yes: the confirmed actions answer with their confirmation step.
            response = client.request(action.method, path,
                                      data={"csrf": tokens[role]} if action.method == "POST"
                                      else None)
            allowed = role.allows(action.role)
            if allowed:
                assert response.status_code not in (403, 303) or action.handler in (
                    "logout", "pause", "resume", "add_subscriber", "set_topics",
                    "unsubscribe", "user_role", "user_disable", "move", "cancel",
                    "test_send", "schedule"), (action, role, response.status_code)
                assert "needs the" not in response.text, (action, role)
            else:
                assert response.status_code == 403, (action, role, response.status_code)
                assert f"needs the {action.role} role" in response.text
            checked += 1
            if action.handler == "logout" and allowed:
                sessions[role] = console.login(role)
                tokens[role] = csrf(sessions[role].get(f"{PREFIX}/"))
    assert checked == 3 * sum(1 for a in ROUTES if a.role is not None)
    for client in sessions.values():
        client.close()


def altered(token: str) -> str:
    """The token with its first character changed (never to itself: 1 in 64 were)."""
    return ("y" if token[0] == "x" else "x") + token[1:]


def test_forms_without_the_sessions_csrf_token_or_from_another_site_are_refused(
        console: Console):
    operator = console.login(Role.OPERATOR)
    token = csrf(operator.get(f"{PREFIX}/subscribers"))
    new = {"email": "new@example.com", "topics": "east-asia"}
    assert operator.post(f"{PREFIX}/subscribers/add", data=new).status_code == 403
    assert operator.post(f"{PREFIX}/subscribers/add",
                         data={**new, "csrf": altered(token)}).status_code == 403
    # Another account's token is not this session's.
    editor_token = csrf(console.login(Role.EDITOR).get(f"{PREFIX}/"))
    assert operator.post(f"{PREFIX}/subscribers/add",
                         data={**new, "csrf": editor_token}).status_code == 403
    refused = operator.post(f"{PREFIX}/subscribers/add", data={**new, "csrf": token},
                            headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403
    assert operator.post(f"{PREFIX}/subscribers/add", data={**new, "csrf": token},
                         headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    # A sandboxed frame or a data: page sends Origin: null; it is no console page.
    assert operator.post(f"{PREFIX}/subscribers/add", data={**new, "csrf": token},
                         headers={"Origin": "null"}).status_code == 403
    assert subs.get(console.engine, "new@example.com") is None
    # The sign-in form has its own token: a login without it is refused.
    with console.client() as stranger:
        response = stranger.post(f"{PREFIX}/login", data={"email": PEOPLE[Role.ADMIN],
                                                          "password": PASSWORD})
        assert response.status_code == 403
        assert "dispatch_session" not in response.cookies
        page = stranger.get(f"{PREFIX}/login")
        response = stranger.post(f"{PREFIX}/login", headers={"Origin": "null"}, data={
            "email": PEOPLE[Role.ADMIN], "password": PASSWORD, "csrf": csrf(page)})
        assert response.status_code == 403
        assert "dispatch_session" not in response.cookies
    # With the token it works.
    done = operator.post(f"{PREFIX}/subscribers/add", data={**new, "csrf": token})
    assert done.status_code == 303
    assert subs.get(console.engine, "new@example.com") is not None


def test_the_session_id_changes_at_sign_in_and_the_old_one_is_revoked(console: Console):
    with console.client() as browser:
        browser.cookies.set("dispatch_session", "planted-by-an-attacker", path=PREFIX)
        page = browser.get(f"{PREFIX}/login")
        response = browser.post(f"{PREFIX}/login", data={
            "email": PEOPLE[Role.EDITOR], "password": PASSWORD, "csrf": csrf(page)})
        first = response.cookies["dispatch_session"]
        assert first != "planted-by-an-attacker"
        cookie = next(c for c in response.headers.get_list("set-cookie")
                      if c.startswith("dispatch_session="))
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/admin" in cookie
        assert "Secure" not in cookie  # base_url is http here
        # Signing in again from the same browser: a new id, and the first one stops working.
        page = browser.get(f"{PREFIX}/login")
        second = browser.post(f"{PREFIX}/login", data={
            "email": PEOPLE[Role.EDITOR], "password": PASSWORD,
            "csrf": csrf(page)}).cookies["dispatch_session"]
        assert second != first
        assert browser.get(f"{PREFIX}/").status_code == 200
    with console.client() as thief:
        thief.cookies.set("dispatch_session", first, path=PREFIX)
        assert thief.get(f"{PREFIX}/").status_code == 303
    assert accounts.session_count(console.engine, PEOPLE[Role.EDITOR]) == 1


def test_sign_in_is_throttled_per_account_and_per_client(console: Console):
    limit = console.settings.console.login_failures
    with console.client(**{"X-Forwarded-For": "198.51.100.7"}) as guesser:
        for _ in range(limit):
            page = guesser.get(f"{PREFIX}/login")
            wrong = guesser.post(f"{PREFIX}/login", data={
                "email": PEOPLE[Role.ADMIN], "password": "wrong password!!", "csrf": csrf(page)})
            assert wrong.status_code == 401
        page = guesser.get(f"{PREFIX}/login")
        blocked = guesser.post(f"{PREFIX}/login", data={
            "email": PEOPLE[Role.ADMIN], "password": PASSWORD, "csrf": csrf(page)})
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
        assert "dispatch_session" not in blocked.cookies
    # The account stays locked from another client too...
    with console.client(**{"X-Forwarded-For": "203.0.113.9"}) as owner:
        page = owner.get(f"{PREFIX}/login")
        assert owner.post(f"{PREFIX}/login", data={
            "email": PEOPLE[Role.ADMIN], "password": PASSWORD,
            "csrf": csrf(page)}).status_code == 429
    # ...and the guessing client is locked out of every account.
    with console.client(**{"X-Forwarded-For": "198.51.100.7"}) as guesser:
        page = guesser.get(f"{PREFIX}/login")
        assert guesser.post(f"{PREFIX}/login", data={
            "email": PEOPLE[Role.EDITOR], "password": PASSWORD,
            "csrf": csrf(page)}).status_code == 429
    # Others are not: another account from another client signs in.
    console.login(Role.EDITOR, console.client(**{"X-Forwarded-For": "192.0.2.1"}))
    # When the window has passed, the account works again (the store's clock is passed in).
    later = datetime.now(UTC) + console.settings.console.lockout + timedelta(seconds=1)
    assert accounts.authenticate(console.engine, PEOPLE[Role.ADMIN], PASSWORD, "192.0.2.1",
                                 later, limit=limit,
                                 window=console.settings.console.lockout) is not None


def test_every_user_supplied_field_is_shown_escaped(console: Console):
    folder = console.settings.issues_dir / "escaping"
    shutil.copytree(console.settings.issues_dir / EXAMPLE_ISSUE, folder)
    toml = folder / "issue.toml"
    toml.write_text(re.sub(r'(?m)^subject = .*$', f'subject = "Hi {SCRIPT}"', toml.read_text()))
    brief = folder / "01-hiroshima-meeting.md"
    brief.write_text(re.sub(r"(?m)^title: .*$", f"title: 'Brief {SCRIPT}'", brief.read_text()))
    reader = add_reader(console, "mallory@example.com", f"Mallory {SCRIPT}")
    admin = console.login(Role.ADMIN)
    pages = [f"{PREFIX}/issues/escaping", f"{PREFIX}/issues/escaping/briefs/{brief.name}",
             f"{PREFIX}/subscribers?q={SCRIPT}", f"{PREFIX}/subscribers?q=mallory",
             f"{PREFIX}/subscribers/{reader.id}", f"{PREFIX}/login?next={SCRIPT}"]
    for path in pages:
        response = admin.get(path)
        assert SCRIPT not in response.text, path
        assert "alert(1)" not in response.text or "&lt;script&gt;alert(1)" in response.text
    assert "Mallory &lt;script&gt;" in admin.get(f"{PREFIX}/subscribers?q=mallory").text
    assert "Brief &lt;script&gt;" in admin.get(
        f"{PREFIX}/issues/escaping/briefs/{brief.name}").text
    # A notice in a link from elsewhere is not shown: only the console's own, signed ones.
    forged = admin.get(f"{PREFIX}/?done=Your+password+expired%3A+call+555-0100")
    assert "555-0100" not in forged.text
    # The audit log shows what was typed, escaped, too.
    token = csrf(admin.get(f"{PREFIX}/users"))
    admin.post(f"{PREFIX}/users/role", data={"csrf": token, "email": SCRIPT, "role": "admin"})
    assert SCRIPT not in admin.get(f"{PREFIX}/audit").text
    # The pages carry the strict policy: scripts only from the console itself.
    policy = admin.get(f"{PREFIX}/").headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split(
        "script-src")[1].split(";")[0] and "default-src 'none'" in policy


def test_the_audit_log_records_each_action_and_only_admins_read_it(console: Console):
    reader = add_reader(console)
    operator = console.login(Role.OPERATOR)
    token = csrf(operator.get(f"{PREFIX}/subscribers"))
    operator.post(f"{PREFIX}/subscribers/{reader.id}/topics",
                  data={"csrf": token, "topics": ["security"]})
    operator.post(f"{PREFIX}/subscribers/{reader.id}/unsubscribe", data={"csrf": token})
    operator.post(f"{PREFIX}/subscribers/add", data={"csrf": token, "email": "bad address"})
    operator.post(f"{PREFIX}/subscribers/{reader.id}/forget",
                  data={"csrf": token, "confirm": "yes"})
    operator.get(f"{PREFIX}/subscribers/export.csv")
    entries = [(e.actor, e.action, e.target, e.detail)
               for e in reversed(audit.entries(console.engine))]
    op = PEOPLE[Role.OPERATOR]
    assert entries == [
        (op, "login", "127.0.0.1", "signed in"),
        (op, "set_topics", audit.subscriber_target(reader.id), "topics saved"),
        (op, "unsubscribe", audit.subscriber_target(reader.id), "unsubscribed"),
        (op, "add_subscriber", "-", "refused (400)"),
        (op, "forget", audit.subscriber_target(reader.id), f"forgot subscriber {reader.id}"),
        (op, "export", "subscribers", "0 row(s)")]
    assert operator.get(f"{PREFIX}/audit").status_code == 403
    shown = console.login(Role.ADMIN).get(f"{PREFIX}/audit").text
    assert "set_topics" in shown and op in shown


def test_disabled_accounts_and_idle_or_old_sessions_are_signed_out(console: Console):
    editor = console.login(Role.EDITOR)
    assert editor.get(f"{PREFIX}/").status_code == 200
    session_id = editor.cookies["dispatch_session"]
    settings = console.settings.console
    now = datetime.now(UTC)
    found = accounts.find_session(console.engine, session_id, now, idle=settings.idle_timeout,
                                  lifetime=settings.session_lifetime)
    assert found is not None and found.user.email == PEOPLE[Role.EDITOR]
    assert accounts.find_session(console.engine, session_id,
                                 now + settings.idle_timeout + timedelta(seconds=1),
                                 idle=settings.idle_timeout,
                                 lifetime=settings.session_lifetime) is None
    assert editor.get(f"{PREFIX}/").status_code == 303  # the idle session was deleted
    editor = console.login(Role.EDITOR)
    accounts.set_disabled(console.engine, PEOPLE[Role.EDITOR])
    assert editor.get(f"{PREFIX}/").status_code == 303
    page = editor.get(f"{PREFIX}/login")
    assert editor.post(f"{PREFIX}/login", data={"email": PEOPLE[Role.EDITOR],
                                                "password": PASSWORD,
                                                "csrf": csrf(page)}).status_code == 401


def test_concurrent_edits_of_a_brief_are_detected_not_overwritten(console: Console):
    editor = console.login(Role.EDITOR)
    path = f"{PREFIX}/issues/{EXAMPLE_ISSUE}/briefs/02-chip-cooperation.md"
    page = editor.get(path)
    opened = re.search(r'name="opened" value="([^"]+)"', page.text)
    assert opened
    brief = console.settings.issues_dir / EXAMPLE_ISSUE / "02-chip-cooperation.md"
    brief.write_text(brief.read_text().replace("title:", "title: Changed meanwhile;", 1))
    before = brief.read_text()
    form = {"csrf": csrf(page), "opened": opened[1], "title": "Mine", "topics": "technology",
            "summary": "A summary.", "body": "Body text.", "action": "save"}
    response = editor.post(path, data=form)
    assert response.status_code == 409 and "changed by someone else" in response.text
    assert brief.read_text() == before
    # A brief that does not check is not saved either; the problem is located.
    fresh = editor.get(path)
    opened = re.search(r'name="opened" value="([^"]+)"', fresh.text)
    assert opened
    bad = editor.post(path, data={**form, "opened": opened[1], "topics": "no-such-topic"})
    assert bad.status_code == 400 and "no-such-topic" in bad.text
    assert brief.read_text() == before


def test_a_csv_import_shows_each_rejected_row_and_keeps_the_good_ones(console: Console):
    operator = console.login(Role.OPERATOR)
    token = csrf(operator.get(f"{PREFIX}/subscribers"))
    data = ("email,name,topics\nana@example.com,Ana,east-asia\nnot-an-address,Bo,east-asia\n"
            "cy@example.com,Cy,no-such-topic\n")
    response = operator.post(f"{PREFIX}/subscribers/import", data={"csrf": token},
                             files={"file": ("readers.csv", data.encode(), "text/csv")})
    assert response.status_code == 200
    assert "readers.csv:3" in response.text and "readers.csv:4" in response.text
    assert "1 added" in response.text.replace("\n", " ") or ">1<" in response.text
    assert subs.get(console.engine, "ana@example.com") is not None
    assert subs.get(console.engine, "cy@example.com") is None
    # Search by a part of the address or the name, any case; LIKE's wildcards are literal.
    assert "ana@example.com" in operator.get(f"{PREFIX}/subscribers?q=ANA").text
    assert "ana@example.com" in operator.get(f"{PREFIX}/subscribers?q=an&status=active"
                                             f"&topic=east-asia&segment=asia-watchers").text
    assert "ana@example.com" not in operator.get(f"{PREFIX}/subscribers?q=%25").text
    assert "ana@example.com" not in operator.get(f"{PREFIX}/subscribers?q=a_a").text
    refused = operator.get(f"{PREFIX}/subscribers?topic=securty&status=actve")
    assert refused.status_code == 400  # the filters read as `subscribers list` reads them
    assert "topic: unknown topic &#39;securty&#39;" in refused.text
    assert "did you mean &#39;active&#39;?" in refused.text
    assert "ana@example.com" not in refused.text
    export = operator.get(f"{PREFIX}/subscribers/export.csv")
    assert export.headers["content-type"].startswith("text/csv")
    assert "ana@example.com" in export.text


def test_test_send_dry_run_and_the_confirmed_schedule_move_cancel(console: Console):
    populate_audience(console.engine, console.settings, 30, datetime.now(UTC))
    operator = console.login(Role.OPERATOR)
    issue_page = f"{PREFIX}/issues/{EXAMPLE_ISSUE}"
    token = csrf(operator.get(issue_page))
    sent = operator.post(f"{issue_page}/test", data={"csrf": token})
    assert sent.status_code == 303 and "test" in sent.headers["location"]
    to_me = [r for r in console.mail.received if r.recipient == PEOPLE[Role.OPERATOR]]
    assert to_me and len(console.mail.received) == len(to_me)  # nobody else got anything
    dry = operator.post(f"{issue_page}/dry-run", data={"csrf": token})
    assert dry.status_code == 200 and "30 recipient(s)" in dry.text
    assert sends.get_send(console.engine, EXAMPLE_ISSUE) is None  # nothing in the store
    at = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%d 07:00")
    asked = operator.post(f"{issue_page}/schedule", data={"csrf": token, "at": at,
                                                          "tz": "Europe/Paris"})
    assert asked.status_code == 200 and "Europe/Paris" in asked.text and "UTC" in asked.text
    assert sends.get_send(console.engine, EXAMPLE_ISSUE) is None  # only the confirmation
    done = operator.post(f"{issue_page}/schedule", data={"csrf": token, "at": at,
                                                         "tz": "Europe/Paris",
                                                         "confirm": "yes"})
    assert done.status_code == 303
    first = sends.get_send(console.engine, EXAMPLE_ISSUE)
    assert first is not None and first.status == SendStatus.SCHEDULED
    page = operator.get(issue_page).text
    assert "Asia/Seoul" in page and "UTC" in page  # the editors' zone and UTC
    later = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%d 09:30")
    operator.post(f"{issue_page}/move", data={"csrf": token, "at": later, "tz": "UTC"})
    assert sends.get_send(console.engine, EXAMPLE_ISSUE) == first  # not confirmed yet
    operator.post(f"{issue_page}/move", data={"csrf": token, "at": later, "tz": "UTC",
                                              "confirm": "yes"})
    moved = sends.get_send(console.engine, EXAMPLE_ISSUE)
    assert moved is not None and moved.send_at is not None
    assert moved.send_at.strftime("%Y-%m-%d %H:%M") == later
    past = operator.post(f"{issue_page}/move", data={"csrf": token, "at": "2020-01-01 07:00",
                                                     "tz": "UTC", "confirm": "yes"})
    assert past.status_code == 400 and "in the past" in past.text
    asked = operator.post(f"{issue_page}/cancel", data={"csrf": token})
    assert asked.status_code == 200 and "confirm" in asked.text
    assert sends.get_send(console.engine, EXAMPLE_ISSUE).status == SendStatus.SCHEDULED
    operator.post(f"{issue_page}/cancel", data={"csrf": token, "confirm": "yes"})
    assert sends.get_send(console.engine, EXAMPLE_ISSUE).status == SendStatus.CANCELLED
    listed = operator.get(f"{PREFIX}/").text
    assert "cancelled by an editor" in listed


def test_an_issue_shows_its_problems_at_file_and_line_and_its_variants(console: Console):
    editor = console.login(Role.EDITOR)
    page = editor.get(f"{PREFIX}/issues/{EXAMPLE_ISSUE}").text
    assert "No problems" in page
    issue = load_issue(console.settings.issues_dir / EXAMPLE_ISSUE, console.settings)
    for brief in issue.briefs:  # each variant's briefs, labelled by its topics
        assert str(escape(brief.title)) in page
    assert page.count('sandbox=""') == 2 * page.count('class="variant"') > 0
    assert "East Asia" in page
    brief = console.settings.issues_dir / EXAMPLE_ISSUE / "03-missile-warnings.md"
    brief.write_text(brief.read_text().replace("topics:", "topic_list:", 1))
    broken = editor.get(f"{PREFIX}/issues/{EXAMPLE_ISSUE}").text
    assert re.search(r"03-missile-warnings\.md:\d+: topic_list: unknown key", broken)


@pytest.mark.parametrize("command", ["serve", "run"])
def test_the_commands_serve_the_console_on_its_own_port(project: Path, command: str):
    web_port, console_port = free_port(), free_port()
    with smtp_sink(RecordingHandler()) as (_, smtp_port):
        config = configure_web(project, smtp_port, web_port)
        config.write_text(config.read_text() + f"\n[console]\nenabled = true\n"
                                               f"port = {console_port}\n")
        engine = open_store(load_settings(config).store.url)
        accounts.add_user(engine, PEOPLE[Role.EDITOR], PASSWORD, "editor", datetime.now(UTC))
        engine.dispose()
        log_path = project / "console.log"
        with log_path.open("w") as log:
            process = subprocess.Popen([sys.executable, "-m", "dispatch", command],
                                       cwd=project, stdout=log, stderr=subprocess.STDOUT)
        own = f"http://127.0.0.1:{console_port}"

        def up() -> bool:
            try:
                return httpx.get(f"{own}{PREFIX}/login").status_code == 200
            except httpx.TransportError:
                return process.poll() is not None
        try:
            assert eventually(up, 30) and process.poll() is None, log_path.read_text()
            with httpx.Client(base_url=own, timeout=30) as browser:
                page = browser.get(f"{PREFIX}/login")
                assert browser.post(f"{PREFIX}/login", data={
                    "email": PEOPLE[Role.EDITOR], "password": PASSWORD,
                    "csrf": csrf(page)}).status_code == 303
                assert browser.get(f"{PREFIX}/").status_code == 200
            public = httpx.get(f"http://127.0.0.1:{web_port}{PREFIX}/login")
            assert public.status_code == 404
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=20)
        output = log_path.read_text()
        assert code == 0, output
        assert f"console on {own}/admin/" in output
        assert PASSWORD not in output


def test_after_sending_the_report_counts_what_came_back_and_the_history_shows_it(
        console: Console):
    from sqlalchemy import select as sql_select

    from dispatch.states import ReportKind
    from dispatch.store import reports
    from dispatch.store.schema import outbox

    people = [add_reader(console, f"r{i}@example.com", f"R{i}") for i in range(4)]
    operator = console.login(Role.OPERATOR)
    issue_page = f"{PREFIX}/issues/{EXAMPLE_ISSUE}"
    token = csrf(operator.get(issue_page))
    assert operator.post(f"{issue_page}/send", data={"csrf": token, "confirm": "yes"}
                         ).status_code == 303
    assert eventually(lambda: sends.get_send(console.engine, EXAMPLE_ISSUE).status
                      == SendStatus.SENT, timeout=30)
    with console.engine.connect() as conn:
        rows = dict(conn.execute(sql_select(outbox.c.subscriber_id, outbox.c.id)
                                 .where(outbox.c.issue == EXAMPLE_ISSUE)).all())
    now = datetime.now(UTC)
    for i, kind in enumerate((ReportKind.COMPLAINT, ReportKind.BOUNCED, ReportKind.SOFT)):
        who = people[i].id
        reports.record(console.engine, fingerprint=f"test-{i}", kind=kind, source="file",
                       rows=[(rows[who], who)], reason=f"{kind} report", now=now,
                       delivery=console.settings.delivery)
    reports.record(console.engine, fingerprint="test-web", kind=ReportKind.UNSUBSCRIBE,
                   source="web", via=ReportVia.ONE_CLICK, subscriber=people[3].id, now=now,
                   delivery=console.settings.delivery)
    page = operator.get(issue_page).text
    figures = {label: n for n, label in
               re.findall(r"<b>([0-9–,]+)</b>([a-z ()]+?)(?:<br>|</div>)", page)}
    # The hard bounce turned its delivered message into a bounced one.
    assert figures["delivered"] == "3" and figures["bounced messages"] == "1"
    assert figures["complained"] == "1"
    assert figures["bounced hard"] == "1" and figures["bounced soft"] == "1"
    assert figures["unsubscribed"] == "1" and figures["unmatched"] == "0"
    history = operator.get(f"{PREFIX}/subscribers/{people[0].id}").text
    assert "complaint" in history and "complaint report" in history and "sent" in history


# ---- In a real browser -----------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                   reason="Debian's chromium and chromium-driver are not "
                                          "installed (tests/install-services.sh installs them)")
PASTED = """Chip makers agree on a shared supply plan

Two of the region's largest semiconductor makers said on Monday that they would pool
orders for rare gases and share export forecasts, a step officials called overdue.

The plan covers technology and trade: it sets out how chips move between the two
countries when one of them faces a shortage.
"""


def browser(width: int) -> object:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", f"--window-size={width},1100"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def shots_dir(tmp_path: Path) -> Path:
    """Where screenshots go: DISPATCH_SCREENSHOTS if set (to look at them), else tmp."""
    folder = Path(os.environ.get("DISPATCH_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def shoot(driver: object, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path))  # type: ignore[attr-defined]
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000
    print(f"screenshot: {path}")
    return path


def navigate(driver: object, element: object) -> None:
    """Click something that loads a new page, and wait until the old one is gone (a page
    read right after a click may otherwise still be the old one)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")  # type: ignore[attr-defined]
    element.click()  # type: ignore[attr-defined]
    WebDriverWait(driver, 20).until(ready.staleness_of(old))


def until(driver: object, condition: Callable[[], object], timeout: float = 120) -> None:
    """Wait until `condition` holds, asking it again whenever the page changed under it (a
    reload by the console's script, a frame's new content): the condition finds its elements
    afresh on each call. The timeout only bounds a failure; a pass waits no longer than it
    takes."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    def holds(_: object) -> bool:
        try:
            return bool(condition())
        finally:
            driver.switch_to.default_content()  # type: ignore[attr-defined]
    WebDriverWait(driver, timeout, poll_frequency=0.1,
                  ignored_exceptions=(StaleElementReferenceException, NoSuchElementException)
                  ).until(holds)


def text_of(driver: object, css: str, frame: str | None = None) -> str:
    """The text of the element `css` finds now (inside the first iframe `frame` finds, if
    given; `until` switches back out)."""
    from selenium.webdriver.common.by import By
    if frame is not None:
        driver.switch_to.frame(driver.find_element(  # type: ignore[attr-defined]
            By.CSS_SELECTOR, frame))
    return str(driver.find_element(By.CSS_SELECTOR, css).text)  # type: ignore[attr-defined]


def sign_in(driver: object, console: Console, role: Role, start: str) -> None:
    from selenium.webdriver.common.by import By
    driver.get(console.url + start)  # type: ignore[attr-defined]
    assert "/admin/login" in driver.current_url  # type: ignore[attr-defined]
    driver.find_element(By.NAME, "email").send_keys(PEOPLE[role])  # type: ignore[attr-defined]
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)  # type: ignore[attr-defined]
    navigate(driver, driver.find_element(By.CSS_SELECTOR, "button[type=submit]"))  # type: ignore


@needs_browser
@pytest.mark.parametrize("width", [390, 1280], ids=["phone", "desktop"])
def test_an_editor_imports_edits_previews_and_schedules_in_chromium(console: Console,
                                                                    tmp_path: Path,
                                                                    width: int):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    slug = "2026-12-04-chips"
    folder = console.settings.issues_dir / slug
    shutil.copytree(console.settings.issues_dir / EXAMPLE_ISSUE, folder)
    toml = folder / "issue.toml"  # no briefs list: every brief in the folder is carried
    toml.write_text(re.sub(r"(?ms)^briefs = \[.*?\]\n", "", toml.read_text())
                    .replace("send_at", "# send_at"))
    folder_shots = shots_dir(tmp_path)
    label = "phone" if width < 500 else "desktop"
    driver = browser(width)
    try:
        sign_in(driver, console, Role.EDITOR, f"{PREFIX}/issues/{slug}")
        assert driver.find_element(By.TAG_NAME, "h1").text.startswith("Seoul and Tokyo")
        shoot(driver, folder_shots, f"editor-issue-{label}")
        first = driver.find_element(By.CSS_SELECTOR, ".variant")
        driver.execute_script("arguments[0].scrollIntoView()", first)
        frames = first.find_elements(By.TAG_NAME, "iframe")
        assert [f.get_attribute("sandbox") for f in frames] == ["", ""]
        # The rendered email, as a reader sees it.
        until(driver, lambda: "Seoul" in text_of(driver, "body", ".variant iframe"))
        shoot(driver, folder_shots, f"editor-variants-{label}")
        navigate(driver, driver.find_element(By.LINK_TEXT, "Paste plain text as a new brief"))
        driver.find_element(By.NAME, "text").send_keys(PASTED)
        navigate(driver, driver.find_element(By.ID, "import"))
        assert "/briefs/chip-makers-agree-on-a-shared-supply-plan.md" in driver.current_url
        title = driver.find_element(By.NAME, "title")
        assert title.get_attribute("value") == "Chip makers agree on a shared supply plan"
        title.clear()
        title.send_keys("Chip makers agree on a shared gas supply plan")
        summary = driver.find_element(By.NAME, "summary")
        summary.clear()
        summary.send_keys("Two chip makers pool orders for rare gases.")
        technology = driver.find_element(By.CSS_SELECTOR, "input[value=technology]")
        if not technology.is_selected():
            technology.click()
        # The live preview follows the typing, before anything is saved.
        until(driver, lambda: "shared gas supply plan" in text_of(driver, "body", "#card"))
        until(driver, lambda: "Live preview" in text_of(driver, "#card-state"))
        navigate(driver, driver.find_element(By.ID, "preview"))  # the same, without the script
        card = driver.find_element(By.ID, "card")
        assert card.get_attribute("sandbox") == ""
        until(driver, lambda: "shared gas supply plan" in text_of(driver, "body", "#card"))
        driver.execute_script("arguments[0].scrollIntoView()", card)
        shoot(driver, folder_shots, f"editor-brief-preview-{label}")
        navigate(driver, driver.find_element(By.ID, "save"))
        until(driver, lambda: "Saved" in text_of(driver, "#saved"))
        saved = (folder / "chip-makers-agree-on-a-shared-supply-plan.md").read_text()
        assert "title: Chip makers agree on a shared gas supply plan" in saved
        driver.get(f"{console.url}{PREFIX}/issues/{slug}")
        assert driver.execute_script(  # readable at this width: nothing wider than the screen
            "return document.querySelector('main').scrollWidth <= window.innerWidth + 1")
        at = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%d 07:00")
        driver.find_element(By.ID, "at").send_keys(at)
        Select(driver.find_element(By.ID, "tz")).select_by_visible_text("Asia/Seoul")
        navigate(driver, driver.find_element(By.CSS_SELECTOR, "#schedule button[type=submit]"))
        until(driver, lambda: "goes out at" in text_of(driver, "main"))
        shoot(driver, folder_shots, f"editor-schedule-confirm-{label}")
        navigate(driver, driver.find_element(By.ID, "confirm"))
        until(driver, lambda: "scheduled for" in text_of(driver, "[role=status]"))
        shoot(driver, folder_shots, f"editor-scheduled-{label}")
        # The console's script ran without an error on every page it was on.
        errors = [e for e in driver.get_log("browser") if e["source"] == "javascript"]
        assert errors == [], errors
    finally:
        driver.quit()
    send = sends.get_send(console.engine, slug)
    assert send is not None and send.status == SendStatus.SCHEDULED
    assert send.send_at is not None and send.send_at.astimezone(
        __import__("zoneinfo").ZoneInfo("Asia/Seoul")).strftime("%Y-%m-%d 07:00") == at
    actions = [e.action for e in audit.entries(console.engine, actor=PEOPLE[Role.EDITOR])]
    assert {"import_brief", "brief_save", "schedule"} <= set(actions)
    assert "brief_card" not in actions  # previews change nothing and are not actions


@needs_browser
def test_an_operator_sends_watches_pauses_and_resumes_in_chromium(console: Console,
                                                                  tmp_path: Path):
    from selenium.webdriver.common.by import By

    populate_audience(console.engine, console.settings, 400, datetime.now(UTC))
    folder_shots = shots_dir(tmp_path)
    driver = browser(1280)

    def figure(state: str, where: str = "") -> int:
        text = text_of(driver, f'{where} [data-state="{state}"]'.strip())
        return int(text.replace(",", "") or 0) if text not in ("", "–") else -1

    def in_flight() -> int:
        return sum(1 for state, _, _ in outbox_rows(console.engine).values()
                   if state == RowState.SENDING)

    try:
        sign_in(driver, console, Role.OPERATOR, f"{PREFIX}/issues/{EXAMPLE_ISSUE}")
        navigate(driver, driver.find_element(By.ID, "send"))
        until(driver, lambda: "400 subscriber(s)" in text_of(driver, "main"))
        navigate(driver, driver.find_element(By.ID, "confirm"))
        # The page's script fills in the figures as messages go out.
        until(driver, lambda: figure("sent") >= 40)
        shoot(driver, folder_shots, "operator-sending-desktop")
        navigate(driver, driver.find_element(By.ID, "pause"))
        until(driver, lambda: text_of(driver, "#status") == "paused")
        paused_at = len(console.mail.received)
        assert paused_at < 400
        shoot(driver, folder_shots, "operator-paused-desktop")
        # The worker sees the pause: the messages it had claimed finish, no more are claimed.
        until(driver, lambda: in_flight() == 0)
        assert len(console.mail.received) <= paused_at + 8  # messages in flight only
        # The issues list shows the paused send with its figures, filled in by the script
        # (which reloads the page when the status changes: each look finds the row anew).
        driver.get(f"{console.url}{PREFIX}/")
        row = "tr[data-progress-url]"
        until(driver, lambda: figure("queued", row) > 0)
        queued = figure("queued", row)
        assert 0 < queued < 400 and "paused by an editor" in text_of(driver, row)
        shoot(driver, folder_shots, "operator-issues-list-desktop")
        navigate(driver, driver.find_element(By.LINK_TEXT, EXAMPLE_ISSUE))
        navigate(driver, driver.find_element(By.ID, "resume"))
        until(driver, lambda: text_of(driver, "#status") == "sent" and figure("sent") == 400,
              timeout=300)  # 400 messages at 40/s on a machine shared with others
        shoot(driver, folder_shots, "operator-report-desktop")
    finally:
        driver.quit()
    assert len({r.recipient for r in console.mail.received}) == 400
    actions = [e.action for e in audit.entries(console.engine, actor=PEOPLE[Role.OPERATOR])]
    assert {"send", "pause", "resume"} <= set(actions)


def test_cookies_are_secure_behind_https_and_a_console_port_keeps_it_off_the_public_app(
        console: Console):
    from dispatch.web.console import create_console

    https = console.settings.model_copy(update={
        "newsletter": console.settings.newsletter.model_copy(
            update={"base_url": "https://news.example.org"}),
        "console": console.settings.console.model_copy(update={"port": free_port()})})
    port = https.console.port
    assert port is not None
    own = WebServer(create_console(console.engine, https), "127.0.0.1", port, ("127.0.0.1",))
    public = WebServer(create_app(console.engine, https), "127.0.0.1", free_port(),
                       ("127.0.0.1",))
    own.start()
    public.start()
    try:
        with httpx.Client(base_url=own.url, timeout=30) as browser:
            page = browser.get(f"{PREFIX}/login")
            login_cookie = page.headers["set-cookie"]
            assert "Secure" in login_cookie and "HttpOnly" in login_cookie
            # httpx keeps Secure cookies for https only: hand it back as a browser would.
            browser.cookies.set("dispatch_login", page.cookies["dispatch_login"], path=PREFIX)
            response = browser.post(f"{PREFIX}/login", data={
                "email": PEOPLE[Role.EDITOR], "password": PASSWORD, "csrf": csrf(page)})
            assert response.status_code == 303
            cookie = next(c for c in response.headers.get_list("set-cookie")
                          if c.startswith("dispatch_session="))
            assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
        with httpx.Client(base_url=public.url, timeout=30) as stranger:
            assert stranger.get(f"{PREFIX}/login").status_code == 404
            assert stranger.get("/healthz").status_code == 200
    finally:
        own.stop()
        public.stop()


def test_hostile_brief_input_and_ids_get_a_located_4xx_and_change_nothing(console: Console):
    editor = console.login(Role.EDITOR)
    folder = console.settings.issues_dir / EXAMPLE_ISSUE
    path = f"{PREFIX}/issues/{EXAMPLE_ISSUE}/briefs/02-chip-cooperation.md"
    page = editor.get(path)
    opened = re.search(r'name="opened" value="([^"]+)"', page.text)
    assert opened
    before = (folder / "02-chip-cooperation.md").read_text()
    deep = "a: " + "[" * 3000 + "]" * 3000
    form = {"csrf": csrf(page), "opened": opened[1], "title": "Deep", "topics": "technology",
            "summary": "A summary.", "body": "Body.", "extra": deep}
    for action in ("save", "preview"):
        answer = editor.post(path, data={**form, "action": action})
        assert answer.status_code == 400, (action, answer.status_code)
        assert "more front matter:1: nested more than 50 levels deep" in answer.text
    card = editor.post(path + "/card", data=form)
    assert card.status_code == 200
    assert card.json() == {"html": None, "problems": [
        "more front matter:1: nested more than 50 levels deep"]}
    assert (folder / "02-chip-cooperation.md").read_text() == before
    # Only plain lower-case names: no line break, no Windows device name.
    files = sorted(p.name for p in folder.iterdir())
    for name in ("evil.md%0A", "CON.md", "con.md", "lpt1.md", "Upper.md", "a_b.md", "-a.md"):
        target = f"{PREFIX}/issues/{EXAMPLE_ISSUE}/briefs/{name}"
        answer = editor.post(target, data={**form, "extra": "", "action": "save"})
        assert answer.status_code == 404, name
        assert "No such brief" in answer.text
    assert sorted(p.name for p in folder.iterdir()) == files
    operator = console.login(Role.OPERATOR)
    for beyond in ("99999999999999999999", str(2**63)):
        answer = operator.get(f"{PREFIX}/subscribers/{beyond}")
        assert answer.status_code == 404 and "No subscriber" in answer.text


# ---- A reader's own changes in their history -------------------------------------------------

def test_a_readers_own_topic_change_shows_in_their_history_with_who_made_it(console: Console):
    from dispatch.audience.tokens import Signer
    from dispatch.store.secrets import secret

    reader = add_reader(console, "mia@example.com", "Mia")
    token = Signer(secret(console.engine)).token("preferences", reader.id, reader.email)
    web = console.client()
    page = web.get(f"/p/{token}")
    saved = web.post(f"/p/{token}", data={"csrf": csrf(page), "action": "save",
                                           "topics": ["security", "technology"]})
    assert saved.status_code == 303, saved.text
    again = web.post(f"/p/{token}", data={"csrf": csrf(web.get(f"/p/{token}")),
                                          "action": "save",
                                          "topics": ["technology", "security"]})
    assert again.status_code == 303  # the same choice again: nothing changed, nothing logged

    operator = console.login(Role.OPERATOR)
    history = operator.get(f"{PREFIX}/subscribers/{reader.id}").text
    rows = re.findall(r"<tr><td>[^<]*</td><td>preferences changed</td><td>([^<]*)</td>"
                      r"<td>[^<]*</td><td>([^<]*)</td></tr>", history)
    assert rows == [("reader", "topics security, technology (were east-asia)")], history
    # An operator's own change shows too, under their account; viewing the page does not.
    page = operator.get(f"{PREFIX}/subscribers/{reader.id}")
    done = operator.post(f"{PREFIX}/subscribers/{reader.id}/topics",
                         data={"csrf": csrf(page), "topics": ["security"]})
    assert done.status_code == 303, done.text
    history = operator.get(f"{PREFIX}/subscribers/{reader.id}").text
    by_operator = re.findall(r"<tr><td>[^<]*</td><td>set_topics</td><td>([^<]*)</td>", history)
    assert by_operator == [PEOPLE[Role.OPERATOR]], history
