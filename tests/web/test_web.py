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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func, select

from dispatch.audience.tokens import Signer
from dispatch.compose.issues import load_issue
from dispatch.config import Settings, load_settings
from dispatch.deliver import sending
from dispatch.deliver.sending import launch_issue, run_worker
from dispatch.deliver.transport import smtp_transport
from dispatch.devtools.sink import RecordingHandler, free_port, smtp_sink
from dispatch.store import subscribers as subs
from dispatch.store.db import open_store
from dispatch.store.outbox import plan_audience
from dispatch.store.schema import outbox, subscribers
from dispatch.store.secrets import secret
from dispatch.store.sends import CONFIRMATIONS
from dispatch.web.app import MAX_BODY, create_app
from dispatch.web.server import WebServer
from tests.helpers import EXAMPLE_ISSUE, configure_web, eventually

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
        run_worker(self.engine, self.settings, smtp_transport(self.settings.smtp), issue=slug)

    def link(self, address: str, path: str) -> str:
        """The link starting with base_url + path in the last message to `address`."""
        text = self.messages_to(address)[-1].get_body(("plain",)).get_content()
        found = re.search(re.escape(self.url + path) + r"\S+", text)
        assert found, text
        return found[0]


@pytest.fixture
def site(project: Path) -> Iterator[Site]:
    web_port = free_port()
    with smtp_sink(RecordingHandler()) as (handler, smtp_port):
        settings = load_settings(configure_web(project, smtp_port, web_port))
        engine = open_store(settings.store.url)
        wake, stop = threading.Event(), threading.Event()
        server = WebServer(create_app(engine, settings, queued=wake.set), "127.0.0.1",
                           web_port, ("127.0.0.1",))
        sender = threading.Thread(target=sending.deliver_when_due, args=(
            engine, settings, smtp_transport(settings.smtp), wake, stop, 0.5))
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
        httpx.post(url, data=change),  # no form token
        httpx.post(url, data={"csrf": token + "x", **change}),
    ]
    # A form token for someone else's page does not work here either.
    site.add("ben@example.com", ["technology"])
    site.send(copy_issue(site, "2026-12-04-next"))
    ben_page = httpx.get(site.link("ben@example.com", "/p/"))
    refused.append(httpx.post(url, data={"csrf": csrf(ben_page), **change}))
    assert [r.status_code for r in refused] == [403] * 5
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

    site.send()  # and the next issue reaches her
    assert len(site.messages_to("dana@example.com")) == 2


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
    site.send(copy_issue(site, "2026-12-02-again"))
    assert len(site.messages_to("ana@example.com")) == 2


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
