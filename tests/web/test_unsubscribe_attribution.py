"""Each unsubscribe counts for the send whose message carried the link, by the way it came
(issue 23, bug 2): two issues sent, readers leaving from the second one's links by its page's
button, a one-click POST and the preferences page, over real HTTP."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from dispatch.deliver.report import send_reports
from dispatch.states import ReportVia
from dispatch.store import reports
from tests.helpers import EXAMPLE_ISSUE
from tests.web.test_web import ONE_CLICK, Site, copy_issue, csrf, running_site

LATER = "2026-12-04-next"


def hidden_fields(page: httpx.Response) -> dict[str, str]:
    """What the page's form posts, as a browser would send it."""
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))


def leave_from_the_second_issue(site: Site) -> None:
    for email in ("ana@example.com", "ben@example.com", "cy@example.com", "di@example.com",
                  "ed@example.com"):
        site.add(email, ["east-asia"])
    site.send()
    site.send(copy_issue(site, LATER))
    # Ana opens the /u/ link of the second issue's message and presses its button.
    url = site.link("ana@example.com", "/u/")
    page = httpx.get(url)
    answer = httpx.post(url, data=hidden_fields(page), headers={"Origin": site.url})
    assert answer.status_code == 200 and "You are unsubscribed" in answer.text
    # Ben's mailbox provider posts RFC 8058's one-click body for the second message.
    header = str(site.messages_to("ben@example.com")[-1]["List-Unsubscribe"])
    assert httpx.post(header.split(",")[0].strip(" <>"), data=ONE_CLICK).status_code == 200
    # Cy leaves on the preferences page the second message links to.
    url = site.link("cy@example.com", "/p/")
    assert httpx.post(url, data={"csrf": csrf(httpx.get(url)), "action": "unsubscribe"},
                      headers={"Origin": site.url}).status_code == 303
    # Di, after the second issue came, leaves from the first one's message: the first's.
    header = str(site.messages_to("di@example.com")[0]["List-Unsubscribe"])
    assert httpx.post(header.split(",")[0].strip(" <>"), data=ONE_CLICK).status_code == 200


def test_unsubscribes_count_for_the_send_their_link_came_in_by_their_way(project: Path):
    with running_site(project) as site:
        leave_from_the_second_issue(site)
        assert [site.get(f"{name}@example.com").status for name in
                ("ana", "ben", "cy", "di", "ed")] == ["unsubscribed"] * 4 + ["active"]
        found = reports.unsubscribes_by_issue_and_via(site.engine, [EXAMPLE_ISSUE, LATER])
        assert found[EXAMPLE_ISSUE] == {**dict.fromkeys(map(str, ReportVia), 0),
                                        "one-click": 1}
        assert found[LATER] == {**dict.fromkeys(map(str, ReportVia), 0), "page": 1,
                                "one-click": 1, "preferences": 1}
        # What `dispatch status` reads.
        by_issue = {e.issue: e.came_back for e in send_reports(site.engine)}
        assert (by_issue[LATER]["unsubscribed_page"], by_issue[LATER]["unsubscribed_one_click"],
                by_issue[LATER]["unsubscribed_preferences"]) == (1, 1, 1)
        assert {k: v for k, v in by_issue[EXAMPLE_ISSUE].items()
                if k.startswith("unsubscribed") and v} == {"unsubscribed_one_click": 1}
        # Pressing the button again, or a second one-click POST, counts nothing more.
        url = site.link("ana@example.com", "/u/")
        assert httpx.post(url, data=ONE_CLICK).status_code == 200
        assert reports.unsubscribes_by_issue_and_via(site.engine, [LATER])[LATER][
            "one-click"] == 1


def test_subscribers_list_says_how_and_from_which_issue_each_reader_left(project: Path):
    with running_site(project) as site:
        leave_from_the_second_issue(site)
    listed = subprocess.run([sys.executable, "-m", "dispatch", "subscribers", "list",
                             "--status", "unsubscribed"], cwd=project, capture_output=True,
                            text=True, timeout=180, env={**os.environ, "COLUMNS": "200"})
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[1]: line for line in listed.stdout.splitlines() if "@" in line}
    assert f"unsubscribed by page from {LATER}" in lines["ana@example.com"]
    assert f"unsubscribed by one-click from {LATER}" in lines["ben@example.com"]
    assert f"unsubscribed by preferences from {LATER}" in lines["cy@example.com"]
    assert f"unsubscribed by one-click from {EXAMPLE_ISSUE}" in lines["di@example.com"]
