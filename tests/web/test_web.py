"""The subscriber web app over real HTTP: uvicorn on a loopback port, a real SQLite store, the
in-process SMTP server receiving the confirmation messages, httpx as the client."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import unquote
from xml.etree import ElementTree

import httpx
import pytest
from sqlalchemy import Engine, func, select

from dispatch.audience.tokens import Signer
from dispatch.compose.issues import load_issue
from dispatch.config import Settings, load_settings
from dispatch.config.defaults import Tuning
from dispatch.deliver.loop import Keep, run_delivery
from dispatch.deliver.sending import WorkerBusy, launch_issue, run_worker
from dispatch.deliver.transport import smtp_transport
from dispatch.devtools.sink import RecordingHandler, free_port, smtp_sink
from dispatch.errors import RenderError
from dispatch.store import reports as came_back
from dispatch.store import subscribers as subs
from dispatch.store.db import open_store
from dispatch.store.launch import plan_audience
from dispatch.store.schema import archive_hidden, outbox, reports, subscribers
from dispatch.store.secrets import secret
from dispatch.store.sends import CONFIRMATIONS, WELCOME, get_send, schedule_send
from dispatch.web.app import MAX_BODY, create_app
from dispatch.web.feed import ATOM
from dispatch.web.server import WebServer
from tests.helpers import EXAMPLE_ISSUE, ROOT, configure_web, eventually, run_cli

NOW = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@dataclass
class Site:
    url: str
    settings: Settings
    engine: Engine
    mail: RecordingHandler
    http: httpx.Client

    def messages_to(self, address: str) -> list[EmailMessage]:
        with self.mail.lock:
            return [message_from_bytes(r.data, policy=policy.SMTP)  # type: ignore[misc]
                    for r in self.mail.received if r.recipient == address]

    def add(self, email: str, topics: list[str], name: str | None = None) -> subs.Subscriber:
        return subs.add(self.engine, email, name=name, topics=topics, timezone=None,
                        known_topics=self.settings.topics, now=NOW)

    def get(self, email: str) -> subs.Subscriber:
        found = subs.get(self.engine, email)
        assert found is not None
        return found

    def send(self, slug: str = EXAMPLE_ISSUE) -> None:
        """Launch an issue and deliver it to the SMTP server, as `dispatch send` does."""
        issue = load_issue(self.settings.issues_dir / slug, self.settings)
        assert launch_issue(self.engine, issue, plan_audience(self.engine, issue, self.settings),
                            self.settings, NOW)
        try:
            run_worker(self.engine, self.settings, smtp_transport(self.settings.smtp),
                       issue=slug)
        except WorkerBusy:  # the site's own delivery loop saw the rows first: it sends them
            assert eventually(lambda: getattr(get_send(self.engine, slug), "status", None)
                              == "sent", 30)

    def link(self, address: str, path: str) -> str:
        """The link starting with base_url + path in the last message to `address`."""
        text = self.messages_to(address)[-1].get_body(("plain",)).get_content()
        found = re.search(re.escape(self.url + path) + r"\S+", text)
        assert found, text
        return found[0]


@contextmanager
def running_site(project: Path, extra: str = "") -> Iterator[Site]:
    """The web app on a loopback port over the project's store, with a delivery loop woken
    by each sign-up sending to an in-process SMTP server; `extra` lines go into [web]."""
    web_port = free_port()
    with smtp_sink(RecordingHandler()) as (handler, smtp_port):
        settings = load_settings(configure_web(project, smtp_port, web_port, extra))
        engine = open_store(settings.store.url)
        wake, stop = threading.Event(), threading.Event()
        server = WebServer(create_app(engine, settings, queued=wake.set), "127.0.0.1",
                           web_port, ("127.0.0.1",))
        sender = threading.Thread(target=run_delivery, args=(
            engine, settings, smtp_transport(settings.smtp)), kwargs={
            "keep": Keep.WHEN_DUE, "stop": stop, "wake": wake,
            "tuning": Tuning(look_every=0.5)})
        server.start()
        sender.start()
        url = f"http://127.0.0.1:{web_port}"
        try:
            with httpx.Client(base_url=url, timeout=10) as http:
                yield Site(url, settings, engine, handler, http)
        finally:
            stop.set()
            wake.set()
            sender.join()
            server.stop()
            engine.dispose()


@pytest.fixture
def site(project: Path) -> Iterator[Site]:
    with running_site(project) as running:
        yield running


def csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found[1]


def copy_issue(site: Site, slug: str) -> str:
    shutil.copytree(site.settings.issues_dir / EXAMPLE_ISSUE, site.settings.issues_dir / slug)
    return slug


def titles(site: Site, message: EmailMessage) -> set[str]:
    """Which of the example issue's brief titles a delivered message carries."""
    text = " ".join(message.get_body(("plain",)).get_content().split())
    issue = load_issue(site.settings.issues_dir / EXAMPLE_ISSUE, site.settings)
    return {brief.title for brief in issue.briefs if brief.title in text}


def count(engine: Engine, table=subscribers) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


# ---- One-click unsubscribe -------------------------------------------------------------

def test_one_click_post_unsubscribes_and_the_next_send_skips_the_address(site: Site):
    site.add("ana@example.com", ["east-asia"])
    site.add("ben@example.com", ["east-asia"])
    site.send()
    header = str(site.messages_to("ana@example.com")[0]["List-Unsubscribe"])
    url = header.split(",")[0].strip(" <>")
    assert url.startswith(f"{site.url}/u/")

    # What a mailbox provider sends (RFC 8058): no cookies, no form token, any origin.
    answer = httpx.post(url, data=ONE_CLICK, headers={"Origin": "https://mail.example"})
    assert answer.status_code == 200 and not answer.cookies
    assert site.get("ana@example.com").status == "unsubscribed"
    assert httpx.post(url, data=ONE_CLICK).status_code == 200  # repeated: still 200
    assert site.get("ana@example.com").status == "unsubscribed"
    # RFC 8058 prefers multipart/form-data; that works too.
    ben = str(site.messages_to("ben@example.com")[0]["List-Unsubscribe"]).split(",")[0]
    answer = httpx.post(ben.strip(" <>"), files={"List-Unsubscribe": (None, "One-Click")})
    assert answer.status_code == 200
    assert site.get("ben@example.com").status == "unsubscribed"
    # Counted for the issue they left from, once each (`dispatch status`).
    assert came_back.counts(site.engine)[EXAMPLE_ISSUE]["unsubscribed_one_click"] == 2

    site.add("cy@example.com", ["east-asia"])
    site.send(copy_issue(site, "2026-12-04-next"))
    assert len(site.messages_to("ana@example.com")) == 1  # only the first issue
    assert len(site.messages_to("ben@example.com")) == 1
    assert len(site.messages_to("cy@example.com")) == 1


def test_get_on_the_unsubscribe_link_shows_a_button_and_changes_nothing(site: Site):
    site.add("ana@example.com", ["east-asia"])
    site.send()
    url = site.link("ana@example.com", "/u/")
    for _ in range(3):  # a mail scanner following the link, several times
        page = httpx.get(url)
        assert page.status_code == 200
        assert re.search(r'<form method="post">', page.text)
        assert 'name="List-Unsubscribe" value="One-Click"' in page.text
    assert httpx.head(url).status_code in (200, 405)
    assert site.get("ana@example.com").status == "active"
    # The button posts exactly the one-click body.
    assert httpx.post(url, data=ONE_CLICK).status_code == 200
    assert site.get("ana@example.com").status == "unsubscribed"


def test_a_post_without_the_one_click_body_changes_nothing(site: Site):
    site.add("ana@example.com", ["east-asia"])
    site.send()
    url = site.link("ana@example.com", "/u/")
    for body in ({}, {"List-Unsubscribe": "yes"}):
        assert httpx.post(url, data=body).status_code == 400
    assert httpx.post(url, content=b'{"List-Unsubscribe": "One-Click"}',
                      headers={"Content-Type": "application/json"}).status_code == 400
    assert site.get("ana@example.com").status == "active"


# ---- Preferences -----------------------------------------------------------------------

def test_preferences_change_what_the_next_issue_contains(site: Site):
    site.add("ana@example.com", ["technology"], name="Ana")
    site.send()
    first = site.messages_to("ana@example.com")[0]
    assert titles(site, first) == {"Samsung picks Yokohama for a new chip research site"}

    url = site.link("ana@example.com", "/p/")
    page = httpx.get(url)
    assert page.status_code == 200 and "Hello Ana" in page.text
    assert re.search(r'value="technology" checked', page.text)
    answer = httpx.post(url, data={"csrf": csrf(page), "action": "save",
                                   "topics": ["security"], "timezone": "America/Chicago"})
    assert answer.status_code == 303
    shown = httpx.get(answer.headers["location"], params=None) if answer.headers[
        "location"].startswith("http") else site.http.get(answer.headers["location"])
    assert "Saved" in shown.text and re.search(r'value="security" checked', shown.text)
    assert not re.search(r'value="technology" checked', shown.text)
    ana = site.get("ana@example.com")
    assert ana.topics == ("security",) and ana.timezone == "America/Chicago"

    site.send(copy_issue(site, "2026-12-04-next"))
    second = site.messages_to("ana@example.com")[1]
    assert titles(site, second) == {
        "Three capitals agree to share North Korean missile warnings in real time",
        "Why the Taiwan Strait weighs on Seoul and Tokyo"}


def test_preferences_can_unsubscribe_from_everything_and_come_back(site: Site):
    site.add("ana@example.com", ["technology"])
    site.send()
    url = site.link("ana@example.com", "/p/")
    answer = httpx.post(url, data={"csrf": csrf(httpx.get(url)), "action": "unsubscribe"})
    assert answer.status_code == 303
    assert site.get("ana@example.com").status == "unsubscribed"
    assert came_back.counts(site.engine)[EXAMPLE_ISSUE]["unsubscribed_preferences"] == 1
    page = site.http.get(answer.headers["location"])
    assert "You are unsubscribed" in page.text
    answer = httpx.post(url, data={"csrf": csrf(page), "action": "resubscribe"})
    assert answer.status_code == 303
    assert site.get("ana@example.com").status == "active"


def test_preferences_refuse_unknown_topics_and_zones_and_change_nothing(site: Site):
    site.add("ana@example.com", ["technology"])
    site.send()
    url = site.link("ana@example.com", "/p/")
    token = csrf(httpx.get(url))
    for data in ({"topics": ["technology", "gardening"]}, {"topics": []},
                 {"topics": ["security"], "timezone": "Mars/Olympus_Mons"}):
        answer = httpx.post(url, data={"csrf": token, "action": "save", **data})
        assert answer.status_code == 400, data
        assert "nothing was changed" in answer.text or "at least one" in answer.text
    assert httpx.post(url, data={"csrf": token, "action": "delete-everything"}
                      ).status_code == 400
    ana = site.get("ana@example.com")
    assert ana.topics == ("technology",) and ana.timezone is None and ana.status == "active"


def test_the_zone_choice_offers_canonical_names_by_region_and_keeps_a_readers_alias(
        site: Site):
    site.add("ana@example.com", ["technology"])
    site.add("ben@example.com", ["technology"])
    site.send()
    url = site.link("ana@example.com", "/p/")
    page = httpx.get(url).text
    groups = re.findall(r'<optgroup label="([^"]+)">', page)
    assert groups[0] == "Common" and groups[1:] == sorted(groups[1:]) and len(groups) >= 9
    values = re.findall(r'<option value="([^"]*)"', page)
    for alias in ("W-SU", "Zulu", "Etc/GMT+5", "US/Eastern", "Asia/Calcutta", "Europe/Kiev"):
        assert alias not in values, alias
        answer = httpx.post(url, data={"csrf": csrf(httpx.get(url)), "action": "save",
                                       "topics": ["technology"], "timezone": alias})
        assert answer.status_code == 400 and "Unknown time zone" in answer.text, alias
    assert site.get("ana@example.com").timezone is None
    assert '<option value="" selected>Not set' in page and page.count(" selected>") == 1

    # A zone set by an operator or a CSV file as an alias stays hers when she saves.
    subs.update_subscriber(site.engine, "ben@example.com", now=NOW, timezone="US/Eastern",
                           known_topics=site.settings.topics)
    url = site.link("ben@example.com", "/p/")
    page = httpx.get(url).text
    assert '<option value="US/Eastern" selected>US/Eastern (as set before)</option>' in page
    assert page.count(" selected>") == 1
    answer = httpx.post(url, data={"csrf": csrf(httpx.get(url)), "action": "save",
                                   "topics": ["security"], "timezone": "US/Eastern"})
    assert answer.status_code == 303
    ben = site.get("ben@example.com")
    assert (ben.topics, ben.timezone) == (("security",), "US/Eastern")


def test_preference_forms_are_refused_from_other_sites(site: Site):
    site.add("ana@example.com", ["technology"])
    site.send()
    url = site.link("ana@example.com", "/p/")
    token = csrf(httpx.get(url))
    change = {"action": "save", "topics": ["security"]}
    refused = [
        httpx.post(url, data={"csrf": token, **change},
                   headers={"Origin": "https://evil.example"}),
        httpx.post(url, data={"csrf": token, **change},
                   headers={"Sec-Fetch-Site": "cross-site"}),
        httpx.post(url, data={"csrf": token, **change}, headers={"Origin": "null"}),
        httpx.post(url, data=change),  # no form token
        httpx.post(url, data={"csrf": token + "x", **change}),
    ]
    # A form token for someone else's page does not work here either.
    site.add("ben@example.com", ["technology"])
    site.send(copy_issue(site, "2026-12-04-next"))
    ben_page = httpx.get(site.link("ben@example.com", "/p/"))
    refused.append(httpx.post(url, data={"csrf": csrf(ben_page), **change}))
    assert [r.status_code for r in refused] == [403] * 6
    assert site.get("ana@example.com").topics == ("technology",)
    # The same request from this site's own page is accepted.
    answer = httpx.post(url, data={"csrf": token, **change},
                        headers={"Origin": site.url, "Sec-Fetch-Site": "same-origin"})
    assert answer.status_code == 303
    assert site.get("ana@example.com").topics == ("security",)


# ---- Sign-up with double opt-in --------------------------------------------------------

def sign_up(site: Site, email: str, topics: list[str], name: str = "",
            headers: dict[str, str] | None = None) -> httpx.Response:
    form = site.http.get("/")
    return site.http.post("/subscribe", data={"csrf": csrf(form), "email": email,
                                              "name": name, "topics": topics},
                          headers=headers)


def test_signup_sends_a_confirmation_whose_link_activates_the_subscription(site: Site):
    answer = sign_up(site, "dana@example.com", ["security", "economy"], name="Dana")
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    dana = site.get("dana@example.com")
    assert dana.status == "pending" and dana.topics == ("economy", "security")

    assert eventually(lambda: site.messages_to("dana@example.com"), 10)
    message = site.messages_to("dana@example.com")[0]
    assert message["Subject"] == "Confirm your subscription to The Pacific Brief"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert str(message["List-Unsubscribe"]).startswith(f"<{site.url}/u/")
    raw = next(r.data for r in site.mail.received if r.recipient == "dana@example.com")
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert "Hi Dana," in message.get_body(("plain",)).get_content()
    link = site.link("dana@example.com", "/c/")
    assert link in message.get_body(("html",)).get_content()

    page = httpx.get(link)  # opening the link shows one button; a scanner confirms nothing
    assert page.status_code == 200 and "Confirm my subscription" in page.text
    assert site.get("dana@example.com").status == "pending"
    done = httpx.post(link, data={"csrf": csrf(page)})
    assert done.status_code == 200 and "You are subscribed" in done.text
    dana = site.get("dana@example.com")
    assert dana.status == "active" and dana.confirmed_at is not None
    assert httpx.get(link).status_code == 200  # the link again: still fine, nothing new
    assert eventually(lambda: len(site.messages_to("dana@example.com")) == 2, 10)
    assert site.messages_to("dana@example.com")[1]["Subject"] == "Welcome to The Pacific Brief"

    site.send()  # and the next issue reaches her
    assert len(site.messages_to("dana@example.com")) == 3


def test_a_sign_up_for_an_unsubscribed_address_changes_nothing_until_its_owner_confirms(
        site: Site):
    ana = site.add("ana@example.com", ["technology"], name="Ana")
    site.add("ben@example.com", ["east-asia"])
    assert subs.unsubscribe(site.engine, ana.id, NOW)
    before = site.get("ana@example.com")
    answer = sign_up(site, "ana@example.com", ["security", "east-asia"], name="Ana Lee")
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    assert site.get("ana@example.com") == before  # still unsubscribed, same name and topics

    # The confirmation reaches the unsubscribed address; issues do not.
    assert eventually(lambda: site.messages_to("ana@example.com"), 10)
    link = site.link("ana@example.com", "/c/")
    site.send()
    assert len(site.messages_to("ana@example.com")) == 1
    assert len(site.messages_to("ben@example.com")) == 1

    page = httpx.get(link)  # the page says what the click will apply
    assert page.status_code == 200 and "Confirm my subscription" in page.text
    assert "Topics: Security, East Asia." in page.text
    assert site.get("ana@example.com") == before
    done = httpx.post(link, data={"csrf": csrf(page)})
    assert done.status_code == 200 and "You are subscribed" in done.text
    ana = site.get("ana@example.com")
    assert (ana.status, ana.name, ana.topics) == ("active", "Ana Lee", ("east-asia", "security"))
    # Added by an operator, she was never welcomed: now she is, once.
    assert eventually(lambda: len(site.messages_to("ana@example.com")) == 2, 10)
    site.send(copy_issue(site, "2026-12-02-again"))
    assert len(site.messages_to("ana@example.com")) == 3


def test_signing_up_again_or_with_an_active_address_reveals_nothing(site: Site):
    site.add("ana@example.com", ["technology"], name="Ana")
    first = sign_up(site, "new@example.com", ["security"])
    again = sign_up(site, "new@example.com", ["security"])
    active = sign_up(site, "ana@example.com", ["security"], name="Mallory")

    def shape(response: httpx.Response, address: str) -> tuple[int, str]:
        return response.status_code, response.text.replace(address, "ADDRESS")

    assert shape(first, "new@example.com") == shape(again, "new@example.com") \
        == shape(active, "ana@example.com")
    assert eventually(lambda: site.messages_to("new@example.com"), 10)
    assert not eventually(lambda: len(site.messages_to("new@example.com")) > 1, 1.5)
    assert site.messages_to("ana@example.com") == []  # no mail to the active reader
    ana = site.get("ana@example.com")  # and a stranger cannot change her topics or name
    assert ana.topics == ("technology",) and ana.name == "Ana" and ana.status == "active"


def test_the_same_address_signed_up_at_once_from_many_clients_is_one_pending_subscriber(
        site: Site):
    token = csrf(site.http.get("/"))

    def one(n: int) -> int:
        return httpx.post(f"{site.url}/subscribe", data={
            "csrf": token, "email": "twice@example.com", "topics": ["security"]},
            headers={"X-Forwarded-For": f"198.51.100.{n}"}).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(one, range(8))) == {200}
    assert site.get("twice@example.com").status == "pending" and count(site.engine) == 1
    assert eventually(lambda: site.messages_to("twice@example.com"), 10)
    assert not eventually(lambda: len(site.messages_to("twice@example.com")) > 1, 1.5)


def test_signups_are_rate_limited_per_client_address(site: Site):
    for n in range(4):  # signup_limit = 4 in this test's config.toml
        assert sign_up(site, f"r{n}@example.com", ["security"]).status_code == 200
    refused = sign_up(site, "r4@example.com", ["security"])
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    assert subs.get(site.engine, "r4@example.com") is None
    # Another client, seen through the trusted proxy, is not held back.
    other = sign_up(site, "r4@example.com", ["security"],
                    headers={"X-Forwarded-For": "198.51.100.7"})
    assert other.status_code == 200
    assert site.get("r4@example.com").status == "pending"
    # Each accepted sign-up got its confirmation (the delivery loop outlives its first run).
    assert eventually(lambda: all(site.messages_to(f"r{n}@example.com") for n in range(5)), 10)


def test_signup_refuses_bad_input_and_changes_nothing(site: Site):
    token = csrf(site.http.get("/"))
    cases = [
        {"email": "not-an-address", "topics": ["security"]},
        {"email": "x@example.com", "topics": ["security", "gardening"]},
        {"email": "x@example.com", "topics": []},
        {"email": "x@example.com\r\nBcc: y@example.com", "topics": ["security"]},
        {"email": "x@example.com", "name": "n" * 201, "topics": ["security"]},
    ]
    for data in cases:
        answer = site.http.post("/subscribe", data={"csrf": token, **data})
        assert answer.status_code == 400, data
        assert 'class="error"' in answer.text
    assert site.http.post("/subscribe", data={"email": "x@example.com",
                                              "topics": ["security"]}).status_code == 403
    assert site.http.post("/subscribe", data={"csrf": token, "email": "x@example.com",
                                              "topics": ["security"]},
                          headers={"Origin": "https://evil.example"}).status_code == 403
    assert count(site.engine) == 0 and count(site.engine, outbox) == 0


def test_a_script_in_the_name_is_stored_as_typed_and_shown_escaped(site: Site):
    name = '<script>alert("x")</script> Eve'
    assert sign_up(site, "eve@example.com", ["security"], name=name).status_code == 200
    assert site.get("eve@example.com").name == name
    assert eventually(lambda: site.messages_to("eve@example.com"), 10)
    html = site.messages_to("eve@example.com")[0].get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html
    link = site.link("eve@example.com", "/c/")
    done = httpx.post(link, data={"csrf": csrf(httpx.get(link))})
    preferences = re.search(r'href="(/p/[^"]+)"', done.text)
    assert preferences, done.text
    page = site.http.get(preferences[1])
    assert page.status_code == 200
    assert "<script>" not in page.text and "Hello &lt;script&gt;alert(&#34;x&#34;)" in page.text


def test_the_signup_form_says_what_the_address_is_for_and_links_the_privacy_policy(
        project: Path):
    shipped = (project / "config.toml").read_text()
    with running_site(project) as site:
        form = site.http.get("/").text
    consent = re.search(r'<p class="note consent">(.*?)</p>\s*<button type="submit">', form,
                        re.S)
    assert consent, form  # just above the button, inside the form
    assert "By subscribing you agree to receive The Pacific Brief by email" in consent[1]
    assert "privacy-policy" not in form  # no policy configured, no dead link

    extra = ('privacy_url = "https://example.org/privacy?lang=en&v=2"\n'
             'consent = "We <3 privacy & \\"plain\\" words. You can leave at any time."\n')
    (project / "config.toml").write_text(shipped)
    with running_site(project, extra) as own:
        form = own.http.get("/").text
    consent = re.search(r'<p class="note consent">(.*?)</p>\s*<button type="submit">', form,
                        re.S)
    assert consent, form
    assert consent[1] == ("We &lt;3 privacy &amp; &#34;plain&#34; words. You can leave at any "
                          "time. <a href=\"https://example.org/privacy?lang=en&amp;v=2\" "
                          'rel="privacy-policy">Privacy policy</a>')
    assert "By subscribing you agree" not in form


# ---- The welcome message -----------------------------------------------------------------

def confirm_link(site: Site, email: str, topics: list[str], name: str = "") -> str:
    """Sign `email` up and return the confirmation link it receives."""
    assert sign_up(site, email, topics, name=name).status_code == 200
    assert eventually(lambda: site.messages_to(email), 10)
    return site.link(email, "/c/")


def welcome_rows(site: Site) -> list[tuple[int, str]]:
    with site.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(  # type: ignore[misc]
            select(outbox.c.subscriber_id, outbox.c.state).where(outbox.c.issue == WELCOME))]


def test_a_confirmed_subscriber_is_welcomed_once_through_the_outbox(site: Site):
    link = confirm_link(site, "dana@example.com", ["security"], name="Dana")
    page = httpx.get(link)
    token = csrf(page)
    # Two presses of the button at once, then two more later: one activation, one welcome.
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: httpx.post(link, data={"csrf": token}), range(2)))
    assert [a.status_code for a in answers] == [200, 200]
    assert all("You are subscribed" in a.text for a in answers)
    for _ in range(2):
        assert httpx.post(link, data={"csrf": token}).status_code == 200
    assert eventually(lambda: len(site.messages_to("dana@example.com")) == 2, 10)
    assert not eventually(lambda: len(site.messages_to("dana@example.com")) > 2, 1.5)

    welcome = site.messages_to("dana@example.com")[1]
    assert welcome["Subject"] == "Welcome to The Pacific Brief"
    assert [p.get_content_type() for p in welcome.iter_parts()] == ["text/plain", "text/html"]
    assert welcome["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = welcome.get_body(("plain",)).get_content()
    html = welcome.get_body(("html",)).get_content()
    assert "Hi Dana," in text and "Hi Dana," in html
    assert f"{site.url}/a" in text.split() and "__DSP_" not in text + html
    # Her own preferences link, in both parts, opens her page.
    preferences = site.link("dana@example.com", "/p/")
    assert preferences in html
    assert "Hello Dana" in httpx.get(preferences).text
    dana = site.get("dana@example.com")
    assert welcome_rows(site) == [(dana.id, "sent")]  # recorded exactly once, as sent

    # An internal send: not an issue in the archive or the feed, nor viewable.
    assert "Welcome to" not in site.http.get("/a").text
    assert "Welcome to" not in site.http.get("/a/feed.xml").text
    assert site.http.get(f"/a/{WELCOME}").status_code == 404
    assert site.http.get(f"/a/{WELCOME}/welcome").status_code == 404

    # Its one-click unsubscribe works, and is not counted against an issue called ~welcome.
    url = str(welcome["List-Unsubscribe"]).split(",")[0].strip(" <>")
    assert httpx.post(url, data=ONE_CLICK).status_code == 200
    assert site.get("dana@example.com").status == "unsubscribed"
    with site.engine.connect() as conn:
        assert conn.execute(select(reports.c.issue, reports.c.via)).all() == [
            (None, "one-click")]


def test_a_returning_reader_is_not_welcomed_twice(site: Site):
    link = confirm_link(site, "ana@example.com", ["security"])
    assert httpx.post(link, data={"csrf": csrf(httpx.get(link))}).status_code == 200
    assert eventually(lambda: len(site.messages_to("ana@example.com")) == 2, 10)
    ana = site.get("ana@example.com")
    assert subs.unsubscribe(site.engine, ana.id, NOW)
    # She signs up again later and confirms: a confirmation, but no second welcome.
    with site.engine.begin() as conn:  # her first confirmation is older than RESEND_AFTER
        conn.execute(outbox.update().where(outbox.c.issue == CONFIRMATIONS)
                     .values(updated_at=NOW - timedelta(days=1)))
    assert sign_up(site, "ana@example.com", ["technology"]).status_code == 200
    assert eventually(lambda: len(site.messages_to("ana@example.com")) == 3, 10)
    link = site.link("ana@example.com", "/c/")
    assert httpx.post(link, data={"csrf": csrf(httpx.get(link))}).status_code == 200
    assert site.get("ana@example.com").status == "active"
    assert not eventually(lambda: len(site.messages_to("ana@example.com")) > 3, 1.5)
    assert welcome_rows(site) == [(ana.id, "sent")]


def test_with_welcome_off_a_confirmation_sends_nothing_more(project: Path):
    with running_site(project, "welcome = false") as site:
        link = confirm_link(site, "dana@example.com", ["security"])
        assert httpx.post(link, data={"csrf": csrf(httpx.get(link))}).status_code == 200
        assert site.get("dana@example.com").status == "active"
        assert not eventually(lambda: len(site.messages_to("dana@example.com")) > 1, 2)
        assert welcome_rows(site) == []


def test_a_projects_own_welcome_template_is_sent_and_a_broken_one_refused(project: Path):
    folder = project / "templates" / "email"
    folder.mkdir(parents=True)
    packaged = ROOT / "templates" / "email"
    (folder / "welcome.mjml.j2").write_text((packaged / "welcome.mjml.j2").read_text()
                                            .replace("Welcome to", "Glad you are here at"))
    (folder / "welcome.txt.j2").write_text(
        "Glad you are here, {{ slots.name }}.\n\nUnsubscribe: {{ slots.unsubscribe_url }}\n")
    with running_site(project) as site:
        link = confirm_link(site, "dana@example.com", ["security"], name="Dana")
        assert httpx.post(link, data={"csrf": csrf(httpx.get(link))}).status_code == 200
        assert eventually(lambda: len(site.messages_to("dana@example.com")) == 2, 10)
        welcome = site.messages_to("dana@example.com")[1]
        assert welcome.get_body(("plain",)).get_content().startswith("Glad you are here, Dana.")
        assert "Glad you are here at" in welcome.get_body(("html",)).get_content()

        # Without the unsubscribe link the template is refused, located, before anything
        # is stored or served.
        (folder / "welcome.txt.j2").write_text("Glad you are here, {{ slots.name }}.\n")
        with pytest.raises(RenderError) as refused:
            create_app(site.engine, site.settings)
        assert refused.value.problems[0].path == "templates/email/welcome"
        assert "unsubscribe" in refused.value.problems[0].message


# ---- Tokens and bad requests -----------------------------------------------------------

def test_forged_altered_foreign_and_expired_tokens_get_a_plain_page_and_change_nothing(
        site: Site):
    site.add("ana@example.com", ["technology"])
    sign_up(site, "pat@example.com", ["security"])
    assert eventually(lambda: site.messages_to("pat@example.com"), 10)
    site.send()
    unsubscribe = site.link("ana@example.com", "/u/")
    token = unsubscribe.rsplit("/", 1)[1]
    altered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    signer = Signer(secret(site.engine))
    pat = site.get("pat@example.com")
    expired = signer.token("confirm", pat.id, pat.email,
                           issued=datetime.now(UTC) - timedelta(days=3))
    other_address = signer.token("unsubscribe", site.get("ana@example.com").id, "x@example.com")
    cases = {
        f"/u/{'A' * 40}": 404, f"/u/{altered}": 404, "/u/": 404,
        f"/p/{token}": 404,  # an unsubscribe token is not a preferences token
        f"/c/{token}": 404, f"/c/{expired}": 400, "/u/..%2f..%2fetc": 404,
    }
    for path, status in cases.items():
        for method in ("GET", "POST"):
            answer = site.http.request(method, path, data=ONE_CLICK if method == "POST"
                                       else None)
            assert answer.status_code == status, (method, path, answer.text)
            assert answer.headers["content-type"].startswith("text/html")
            assert "Traceback" not in answer.text and "File \"" not in answer.text
    assert "expired" in site.http.get(f"/c/{expired}").text
    # Signed, but for an address that is not this subscriber's: nothing happens to her.
    assert site.http.post(f"/u/{other_address}", data=ONE_CLICK).status_code == 200
    assert site.get("ana@example.com").status == "active"
    assert site.get("pat@example.com").status == "pending"


def test_oversize_bodies_and_wrong_methods_get_4xx_and_change_nothing(site: Site):
    site.add("ana@example.com", ["technology"])
    site.send()
    unsubscribe = site.link("ana@example.com", "/u/")
    big = {"List-Unsubscribe": "One-Click", "pad": "x" * (MAX_BODY + 1)}
    assert httpx.post(unsubscribe, data=big).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts what streams in
        yield b"List-Unsubscribe=One-Click&pad="
        for _ in range(40):
            yield b"x" * 1024

    answer = httpx.post(unsubscribe, content=chunks(),
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 413
    for method, path in (("PUT", unsubscribe), ("DELETE", unsubscribe), ("PATCH", "/p/x"),
                         ("POST", "/a"), ("POST", "/"), ("DELETE", "/subscribe")):
        answer = site.http.request(method, path)
        assert answer.status_code == 405, (method, path)
        assert "GET" in answer.headers["allow"]
    assert site.get("ana@example.com").status == "active"
    # File uploads are not forms this site takes.
    page = httpx.get(site.link("ana@example.com", "/p/"))
    answer = httpx.post(site.link("ana@example.com", "/p/"),
                        data={"csrf": csrf(page), "action": "save"},
                        files={"topics": ("t.txt", b"security")})
    assert answer.status_code == 400
    assert site.get("ana@example.com").topics == ("technology",)


def test_a_failure_inside_gets_a_plain_500_page_without_a_stack_trace(site: Site):
    site.add("ana@example.com", ["technology"])
    site.send()
    url = site.link("ana@example.com", "/p/")
    with site.engine.begin() as conn:  # the store breaks under the app
        conn.exec_driver_sql("DROP TABLE subscriber_topics")
    answer = httpx.get(url)
    assert answer.status_code == 500 and answer.headers["content-type"].startswith("text/html")
    assert "Something went wrong" in answer.text
    assert "Traceback" not in answer.text and "subscriber_topics" not in answer.text


# ---- Archive ---------------------------------------------------------------------------

def test_the_archive_lists_sent_issues_and_shows_each_variant_without_personal_data(
        site: Site):
    people = [site.add(f"reader{n}@example.com", [topic], name=f"Reader Number{n}")
              for n, topic in enumerate(["technology", "security", "diplomacy"])]
    sign_up(site, "pending@example.com", ["security"])
    assert eventually(lambda: site.messages_to("pending@example.com"), 10)
    site.send()
    listing = site.http.get("/a")
    assert listing.status_code == 200
    assert "Seoul and Tokyo, closer than they have been in years" in listing.text
    assert "~confirmations" not in listing.text and "Confirm your" not in listing.text

    fullest = site.http.get(f"/a/{EXAMPLE_ISSUE}")
    assert fullest.status_code == 302
    pages = [site.http.get(fullest.headers["location"])]
    for person in people:  # each reader's own "view in your browser" link
        view = site.link(person.email, f"/a/{EXAMPLE_ISSUE}/")
        pages.append(httpx.get(view))
    for page in pages:
        assert page.status_code == 200 and page.text.startswith("<!doctype html>")
        assert "__DSP_" not in page.text and "The Pacific Brief</h1>" in page.text
        # Anyone's copy: no greeting, no "you are receiving this", no subscriber links.
        assert "Hi " not in page.text and "You are receiving" not in page.text
        assert "Unsubscribe" not in page.text and "personal-->" not in page.text
        for person in people:
            assert person.email not in page.text and str(person.name) not in page.text
        assert not re.search(r"/(u|p|c)/[A-Za-z0-9_-]+\.", page.text)  # no one's token
    assert site.http.get(f"/a/{EXAMPLE_ISSUE}/b9-9").status_code == 404
    assert site.http.get(f"/a/{CONFIRMATIONS}/confirm").status_code == 404
    assert site.http.get(f"/a/{CONFIRMATIONS}").status_code == 404


def test_a_scheduled_issue_is_not_in_the_archive_before_it_goes_out(site: Site):
    from dispatch import schedule as scheduling
    scheduling.schedule_issue(site.engine, site.settings, EXAMPLE_ISSUE,
                              at="2030-01-01 07:00", tz=None, local=False,
                              now=datetime.now(UTC))
    assert EXAMPLE_ISSUE not in site.http.get("/a").text
    assert site.http.get(f"/a/{EXAMPLE_ISSUE}").status_code == 404


def launch_at(site: Site, slug: str, when: datetime) -> None:
    """Launch an issue at `when` (no delivery needed for the archive)."""
    issue = load_issue(site.settings.issues_dir / slug, site.settings)
    assert launch_issue(site.engine, issue, plan_audience(site.engine, issue, site.settings),
                        site.settings, when)


def launched(site: Site, slug: str) -> datetime:
    found = get_send(site.engine, slug)
    assert found is not None and found.launched_at is not None
    return found.launched_at


def atom(text: bytes) -> ElementTree.Element:
    """The feed parsed and held to RFC 4287's rules for a feed and its entries: exactly one
    id (an absolute IRI), title and updated (RFC 3339) each, an author, links with href."""
    root = ElementTree.fromstring(text)
    assert root.tag == f"{{{ATOM}}}feed"

    def one(parent: ElementTree.Element, tag: str) -> str:
        found = parent.findall(f"{{{ATOM}}}{tag}")
        assert len(found) == 1, (parent.tag, tag, len(found))
        return found[0].text or ""

    for element in (root, *root.findall(f"{{{ATOM}}}entry")):
        assert re.fullmatch(r"https?://\S+", one(element, "id"))
        assert one(element, "title").strip()
        for stamp in ("updated", "published"):
            if element.find(f"{{{ATOM}}}{stamp}") is not None:
                assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", one(element, stamp))
        for link in element.findall(f"{{{ATOM}}}link"):
            assert re.fullmatch(r"https?://\S+", link.get("href", ""))
    assert root.find(f"{{{ATOM}}}author/{{{ATOM}}}name") is not None
    return root


def entries(root: ElementTree.Element) -> list[dict[str, str]]:
    return [{"id": e.findtext(f"{{{ATOM}}}id", ""), "title": e.findtext(f"{{{ATOM}}}title", ""),
             "published": e.findtext(f"{{{ATOM}}}published", ""),
             "href": next(link.get("href", "") for link in e.findall(f"{{{ATOM}}}link")
                          if link.get("rel") == "alternate")}
            for e in root.findall(f"{{{ATOM}}}entry")]


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_archive_feed_is_atom_with_one_entry_per_issue_sent_newest_first(site: Site):
    site.add("ana@example.com", ["technology"])
    empty = site.http.get("/a/feed.xml")
    assert empty.status_code == 200 and entries(atom(empty.content)) == []
    # The same issue under three names on three days: one title, three dates.
    for n, slug in enumerate([EXAMPLE_ISSUE, copy_issue(site, "2026-12-04-thaw"),
                              copy_issue(site, "2026 winter édition")]):
        launch_at(site, slug, NOW + timedelta(days=7 * n, hours=n))
    # Scheduled days before it went out: its entry carries the day it went out.
    later = load_issue(site.settings.issues_dir / copy_issue(site, "2026-12-20-later"),
                       site.settings)
    assert schedule_send(site.engine, later, NOW + timedelta(days=1), NOW - timedelta(days=3),
                         zone="Asia/Seoul")
    launch_at(site, later.slug, NOW + timedelta(days=1, minutes=5))
    answer = site.http.get("/a/feed.xml")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert answer.content.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    root = atom(answer.content)
    base = site.url
    assert root.findtext(f"{{{ATOM}}}id") == f"{base}/a"
    assert root.findtext(f"{{{ATOM}}}title") == "The Pacific Brief"
    links = {link.get("rel"): link.attrib for link in root.findall(f"{{{ATOM}}}link")}
    assert links["self"] == {"rel": "self", "type": "application/atom+xml",
                             "href": f"{base}/a/feed.xml"}
    assert links["alternate"]["href"] == f"{base}/a"
    newest = launched(site, "2026 winter édition")
    assert root.findtext(f"{{{ATOM}}}updated") == stamp(newest)
    got = entries(root)
    assert [e["href"] for e in got] == [
        f"{base}/a/2026%20winter%20%C3%A9dition", f"{base}/a/2026-12-04-thaw",
        f"{base}/a/2026-12-20-later", f"{base}/a/{EXAMPLE_ISSUE}"]
    for entry in got:
        slug = unquote(entry["href"].rsplit("/", 1)[1])
        assert entry["id"] == entry["href"]
        assert entry["title"] == "Seoul and Tokyo, closer than they have been in years"
        assert entry["published"] == stamp(launched(site, slug))  # when it actually went out
        assert launched(site, slug) > NOW - timedelta(minutes=1)
        page = httpx.get(entry["href"], follow_redirects=True)  # every link leads to the issue
        assert page.status_code == 200 and page.text.startswith("<!doctype html>"), slug

    listing = site.http.get("/a").text
    assert ('<link rel="alternate" type="application/atom+xml" title="The Pacific Brief" '
            'href="/a/feed.xml">') in listing
    # Entries with the same title are told apart by when they went out.
    assert "Sent <time datetime=\"2026-01-19T18:00:00+09:00\">Monday, 19 January 2026, " \
           "18:00 KST</time>" in listing
    assert "Monday, 12 January 2026, 17:00 KST" in listing
    assert "Monday, 5 January 2026, 16:00 KST" in listing
    assert 'href="/a/2026%20winter%20%C3%A9dition"' in listing


def test_an_issue_hidden_from_the_archive_is_gone_until_shown_again(site: Site):
    site.add("ana@example.com", ["technology"])
    site.send()
    launch_at(site, copy_issue(site, "2026-12-04-thaw"), NOW + timedelta(days=7))
    view = site.link("ana@example.com", f"/a/{EXAMPLE_ISSUE}/")  # her "view in browser" link
    variant = view.rsplit("/", 1)[1]
    assert httpx.get(view).status_code == 200

    hidden = run_cli(site.settings.root, "archive", "hide", EXAMPLE_ISSUE)
    assert hidden.returncode == 0, hidden.stderr
    assert hidden.stdout.startswith(f"hid {EXAMPLE_ISSUE}: it is out of the archive")
    for path in (f"/a/{EXAMPLE_ISSUE}", f"/a/{EXAMPLE_ISSUE}/{variant}"):
        gone = site.http.get(path)
        assert gone.status_code == 410, path
        assert "taken down from the archive" in gone.text and EXAMPLE_ISSUE not in gone.text
    assert httpx.get(view).status_code == 410
    assert site.http.get("/a/2026-12-04-thaw").status_code == 302  # the other stays
    assert f'href="/a/{EXAMPLE_ISSUE}"' not in site.http.get("/a").text
    assert [e["href"].rsplit("/", 1)[1] for e in entries(atom(
        site.http.get("/a/feed.xml").content))] == ["2026-12-04-thaw"]
    again = run_cli(site.settings.root, "archive", "hide", f"issues/{EXAMPLE_ISSUE}")
    assert again.returncode == 0 and "was already hidden" in again.stdout

    shown = run_cli(site.settings.root, "archive", "show", EXAMPLE_ISSUE)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == f"{EXAMPLE_ISSUE} is back in the archive and its feed"
    assert httpx.get(view).status_code == 200
    assert f'href="/a/{EXAMPLE_ISSUE}"' in site.http.get("/a").text
    assert len(entries(atom(site.http.get("/a/feed.xml").content))) == 2
    assert "was not hidden" in run_cli(site.settings.root, "archive", "show",
                                       EXAMPLE_ISSUE).stdout


def test_a_draft_hidden_before_it_goes_out_stays_out(site: Site):
    site.add("ana@example.com", ["technology"])
    slug = copy_issue(site, "2026-12-04-thaw")
    hidden = run_cli(site.settings.root, "archive", "hide", slug)
    assert hidden.returncode == 0, hidden.stderr
    assert hidden.stdout.strip() == f"hid {slug}: it will stay out of the archive when it " \
                                    "goes out"
    site.send(slug)
    assert site.http.get(f"/a/{slug}").status_code == 410
    assert entries(atom(site.http.get("/a/feed.xml").content)) == []


BAD_ISSUE_NAMES = [
    ("2026-01-01-nothing", "2026-01-01-nothing: no such issue: it was never sent or scheduled "
                           "and there is no folder issues/2026-01-01-nothing"),
    ("../../etc", "etc: no such issue"),
    ("~confirmations", "not an issue name: is not an issue (names starting with ~ are "
                       "dispatch's own messages)"),
    ("~welcome", "not an issue name"),
    ("thaw\r\nX: y", "not an issue name: contains the control character U+000D"),
    ("", "not an issue name: give the issue folder name or its path"),
    ("  ", "not an issue name"),
    ("x" * 300, "not an issue name"),
]


def test_archive_commands_name_what_is_wrong_with_an_issue_and_change_nothing(site: Site):
    site.add("ana@example.com", ["technology"])
    site.send()
    for n, (name, message) in enumerate(BAD_ISSUE_NAMES):
        for command in ("hide", "show") if n < 3 else ("hide",):
            result = run_cli(site.settings.root, "archive", command, name)
            assert result.returncode == 1, (command, name, result.stdout, result.stderr)
            assert message in result.stderr, result.stderr
            assert "Traceback" not in result.stderr
    assert count(site.engine, archive_hidden) == 0
    assert site.http.get(f"/a/{EXAMPLE_ISSUE}").status_code == 302


def test_hostile_archive_urls_get_a_plain_404(site: Site):
    site.add("ana@example.com", ["technology"])
    site.send()
    for path in ("/a/..%2F..%2Fetc%2Fpasswd", "/a/%00", "/a/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
                 f"/a/{EXAMPLE_ISSUE}/..%2F..%2Fconfig.toml", "/a/feed.xml/x", "/a/%7Ewelcome",
                 f"/a/{EXAMPLE_ISSUE}%27%20OR%20%271%27=%271", "/a/" + "x" * 5000):
        answer = site.http.get(path)
        assert answer.status_code == 404, (path, answer.status_code)
        assert "<script>" not in answer.text and "Traceback" not in answer.text
    assert site.http.post("/a/feed.xml").status_code == 405


def test_pages_are_plain_html_for_phones_without_scripts(site: Site):
    page = site.http.get("/")
    assert page.status_code == 200
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page.text
    assert "<script" not in page.text
    policy_header = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy_header and "script-src" not in policy_header
    assert page.headers["referrer-policy"] == "same-origin"
    assert site.http.get("/nowhere").status_code == 404


# ---- The commands -----------------------------------------------------------------------

@pytest.mark.parametrize("command", ["serve", "run"])
def test_the_command_serves_signup_to_confirmation_and_stops_on_sigterm(project: Path,
                                                                         command: str):
    """`dispatch serve` delivers the confirmation from its own worker; `dispatch run` (with
    a web table in config.toml) from the daemon's, woken by the sign-up."""
    web_port = free_port()
    with smtp_sink(RecordingHandler()) as (handler, smtp_port):
        config = configure_web(project, smtp_port, web_port)
        log_path = project / "web.log"
        with log_path.open("w") as log:
            process = subprocess.Popen([sys.executable, "-m", "dispatch", command], cwd=project,
                                       stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{web_port}"

        def up() -> bool:
            try:
                return httpx.get(f"{url}/healthz").status_code == 200
            except httpx.TransportError:
                return process.poll() is not None
        try:
            assert eventually(up, 30) and process.poll() is None, log_path.read_text()
            engine = open_store(load_settings(config).store.url)
            site = Site(url, load_settings(config), engine, handler, httpx.Client(base_url=url))
            assert sign_up(site, "dana@example.com", ["security"]).status_code == 200
            assert eventually(lambda: site.messages_to("dana@example.com"), 15), \
                log_path.read_text()
            link = site.link("dana@example.com", "/c/")
            assert httpx.post(link, data={"csrf": csrf(httpx.get(link))}).status_code == 200
            assert site.get("dana@example.com").status == "active"
            engine.dispose()
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=20)
        output = log_path.read_text()
        assert code == 0, output
        assert link.rsplit("/", 1)[1] not in output  # tokens stay out of the logs
        assert f"http://127.0.0.1:{web_port}" in output


# ---- A real browser --------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                    reason="Debian's chromium and chromium-driver are not installed "
                           "(tests/install-services.sh installs them)")
def test_a_reader_changes_a_topic_by_clicking_in_headless_chromium(site: Site, tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.wait import WebDriverWait

    site.add("ana@example.com", ["technology"], name="Ana")
    site.send()
    url = site.link("ana@example.com", "/p/")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=390,1100"):  # a phone's width
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        browser.get(url)
        assert browser.find_element(By.TAG_NAME, "h1").text == "Hello Ana"
        # Readable on a phone: nothing wider than the screen.
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth")
        security = browser.find_element(By.CSS_SELECTOR, "input[value=security]")
        assert not security.is_selected()
        browser.find_element(By.XPATH, "//label[contains(., 'Security')]").click()
        assert security.is_selected()
        browser.find_element(By.CSS_SELECTOR, "button[value=save]").click()
        WebDriverWait(browser, 10).until(ready.presence_of_element_located(
            (By.CSS_SELECTOR, "[role=status]")))
        assert "Saved" in browser.find_element(By.CSS_SELECTOR, "[role=status]").text
        assert browser.find_element(By.CSS_SELECTOR, "input[value=security]").is_selected()
        shot = tmp_path / "preferences.png"
        assert browser.save_screenshot(str(shot))
    finally:
        browser.quit()
    assert site.get("ana@example.com").topics == ("security", "technology")
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 390 and height >= 600
    print(f"\nscreenshot: {shot}")


def phone_browser():  # type: ignore[no-untyped-def]
    """Headless Chromium at a phone's width (390 CSS pixels)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=390,1400"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def full_page_shot(browser, path: Path) -> None:  # type: ignore[no-untyped-def]
    """The whole page, however long, as a PNG at `path`."""
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(390, max(height + 140, 700))
    assert browser.save_screenshot(str(path))
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    print(f"\nscreenshot: {path}")


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                    reason="Debian's chromium and chromium-driver are not installed "
                           "(tests/install-services.sh installs them)")
def test_signup_preferences_and_unsubscribe_pages_at_a_phones_width(project: Path,
                                                                     tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.wait import WebDriverWait

    extra = ('privacy_url = "https://example.org/privacy"\n'
             'consent = "We use your address only to send you The Pacific Brief."\n')
    with running_site(project, extra) as site:
        ana = site.add("ana@example.com", ["technology"], name="Ana")
        site.send()
        browser = phone_browser()
        try:
            fits = "return document.documentElement.scrollWidth <= window.innerWidth"
            browser.get(site.url + "/")
            assert browser.execute_script(fits)
            consent = browser.find_element(By.CSS_SELECTOR, ".consent")
            assert consent.text == ("We use your address only to send you The Pacific Brief. "
                                    "Privacy policy")
            button = browser.find_element(By.CSS_SELECTOR, "form button[type=submit]")
            assert button.location["y"] > consent.location["y"] + consent.size["height"]
            full_page_shot(browser, tmp_path / "signup.png")

            browser.get(site.link("ana@example.com", "/p/"))
            assert browser.execute_script(fits)
            choice = Select(browser.find_element(By.ID, "timezone"))
            groups = [g.get_attribute("label") for g in
                      browser.find_elements(By.CSS_SELECTOR, "#timezone optgroup")]
            assert groups[0] == "Common" and "Europe" in groups and "Americas" in groups
            assert choice.first_selected_option.get_attribute("value") == ""  # not set
            assert choice.first_selected_option.text == ("Not set: the newsletter's, Seoul, "
                                                         "Korea (South) (UTC+9)")
            values = [o.get_attribute("value") for o in choice.options]
            assert not {"W-SU", "Zulu", "Etc/GMT+5", "US/Eastern", "Asia/Calcutta"} & set(values)
            # The newsletter's zone heads the common ones, labelled for people.
            assert choice.options[1].get_attribute("value") == "Asia/Seoul"
            assert choice.options[1].text == "Seoul, Korea (South) (UTC+9)"
            choice.select_by_value("Asia/Kolkata")
            browser.find_element(By.CSS_SELECTOR, "button[value=save]").click()
            WebDriverWait(browser, 10).until(ready.presence_of_element_located(
                (By.CSS_SELECTOR, "[role=status]")))
            assert "Saved" in browser.find_element(By.CSS_SELECTOR, "[role=status]").text
            choice = Select(browser.find_element(By.ID, "timezone"))
            assert choice.first_selected_option.get_attribute("value") == "Asia/Kolkata"
            assert len(choice.all_selected_options) == 1
            full_page_shot(browser, tmp_path / "preferences.png")

            browser.get(site.link("ana@example.com", "/u/"))
            assert browser.execute_script(fits)
            button = browser.find_element(By.CSS_SELECTOR, "form button[type=submit]")
            link = browser.find_element(By.LINK_TEXT, "Change topics instead")
            gap = link.location["y"] - (button.location["y"] + button.size["height"])
            assert gap >= 16, gap  # not stuck to the red button
            full_page_shot(browser, tmp_path / "unsubscribe.png")

            browser.get(site.url + "/a")
            assert browser.execute_script(fits)
            assert browser.find_element(By.CSS_SELECTOR, "ol.archive time").text.startswith(
                "Monday, 5 January 2026")
            full_page_shot(browser, tmp_path / "archive.png")
        finally:
            browser.quit()
        assert site.get("ana@example.com").timezone == "Asia/Kolkata"
        assert site.get("ana@example.com").id == ana.id


def test_signups_from_many_clients_are_bounded_in_all_and_per_domain(project: Path):
    bounds = ("signup_pending_max = 6\nsignup_pending_per_domain = 3\n"
              "confirmations_per_hour = 100\nconfirmations_per_domain_hour = 100\n")
    with running_site(project, bounds) as site:
        def from_client(n: int, email: str) -> httpx.Response:
            return sign_up(site, email, ["security"], headers={"X-Forwarded-For": f"10.0.0.{n}"})
        answers = [from_client(n, f"r{n}@one.example") for n in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert "Many addresses at your email provider" in answers[3].text
        assert answers[3].headers["retry-after"] == "3600"
        assert subs.get(site.engine, "r3@one.example") is None  # nothing was recorded
        answers = [from_client(10 + n, f"r{n}@other{n}.example") for n in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert "more sign-ups than usual" in answers[3].text
        assert count(site.engine) == 6
