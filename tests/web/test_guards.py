"""The one same-origin check the public pages and the console share (web/guards.py), on
requests as Starlette builds them."""

from __future__ import annotations

import pytest
from starlette.exceptions import HTTPException
from starlette.requests import Request

from dispatch.web.guards import check_same_origin

BASE = "https://news.example.org"


def request(**headers: str) -> Request:
    raw = [(k.lower().replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw})


@pytest.mark.parametrize("headers", [
    {"origin": BASE},
    {"origin": "http://127.0.0.1:8080", "host": "127.0.0.1:8080"},  # the Host asked for
    {"referer": BASE + "/p/token"},
    {"sec_fetch_site": "same-origin", "origin": BASE},
    {},  # neither header: the form token decides
], ids=["origin", "host", "referer", "fetch-site", "no-header"])
def test_a_form_from_this_sites_own_page_passes(headers: dict[str, str]):
    check_same_origin(request(**headers), BASE, "refused")


@pytest.mark.parametrize("headers", [
    {"origin": "null"},
    {"origin": "null", "host": "news.example.org"},
    {"origin": "https://evil.example"},
    {"origin": "https://news.example.org.evil.example"},
    {"referer": "https://evil.example/news.example.org"},
    {"origin": "file://"},  # no host at all, even when the request has none either
    {"origin": "http://[::1"},  # unreadable
    {"sec_fetch_site": "cross-site", "origin": BASE},
    {"sec_fetch_site": "same-site"},
], ids=["null", "null-with-host", "other", "suffix", "referer", "file", "unreadable",
        "cross-site", "same-site"])
def test_any_other_origin_is_refused_with_the_callers_words(headers: dict[str, str]):
    with pytest.raises(HTTPException) as refused:
        check_same_origin(request(**headers), BASE, "This form must be sent from here.")
    assert (refused.value.status_code, refused.value.detail) == (
        403, "This form must be sent from here.")
