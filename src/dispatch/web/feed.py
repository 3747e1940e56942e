"""The archive's Atom 1.0 feed (RFC 4287): one entry per issue that went out and is not
hidden, newest first, linking to its archive page, published when it went out."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from urllib.parse import quote
from xml.etree import ElementTree

from dispatch.config import Settings
from dispatch.store.sends import SendInfo

ATOM = "http://www.w3.org/2005/Atom"
FEED_PATH = "/a/feed.xml"
MAX_ENTRIES = 50  # readers poll the whole document; the archive page lists every issue
# Characters XML 1.0 cannot carry at all; subjects are held to text.header_problem already,
# which leaves the noncharacters and lone surrogates.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def archive_url(base: str, slug: str) -> str:
    """An issue's archive page; the slug percent-encoded (it is a folder name, not a URL)."""
    return f"{base}/a/{quote(slug, safe='')}"


def sent_at(send: SendInfo) -> datetime:
    """When an issue went out: its launch (the audience snapshot), for old rows its row."""
    return send.launched_at or send.created_at


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def atom_feed(settings: Settings, archived: list[SendInfo], now: datetime) -> bytes:
    """The feed document as UTF-8 bytes. `updated` is the newest entry's time (`now` for an
    empty archive, which has no better one)."""
    base = settings.newsletter.base_url

    def add(parent: ElementTree.Element, tag: str, text: str | None = None,
            **attributes: str) -> ElementTree.Element:
        element = ElementTree.SubElement(parent, tag, attributes)
        element.text = _NOT_XML.sub("", text) if text is not None else None
        return element

    feed = ElementTree.Element("feed", {"xmlns": ATOM, "xml:lang": settings.newsletter.lang})
    entries = archived[:MAX_ENTRIES]
    add(feed, "id", f"{base}/a")
    add(feed, "title", settings.newsletter.name)
    add(feed, "updated", _stamp(max((sent_at(s) for s in entries), default=now)))
    add(feed, "link", rel="self", type="application/atom+xml", href=base + FEED_PATH)
    add(feed, "link", rel="alternate", type="text/html", href=f"{base}/a")
    author = add(feed, "author")
    add(author, "name", settings.newsletter.name)
    add(feed, "generator", "dispatch")
    for send in entries:
        entry = add(feed, "entry")
        url = archive_url(base, send.issue)
        add(entry, "id", url)
        add(entry, "title", send.subject)
        add(entry, "link", rel="alternate", type="text/html", href=url)
        add(entry, "published", _stamp(sent_at(send)))
        add(entry, "updated", _stamp(sent_at(send)))
    return ElementTree.tostring(feed, encoding="utf-8", xml_declaration=True)
