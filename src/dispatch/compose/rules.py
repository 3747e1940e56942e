"""The email-correctness rules a rendered message must pass before it may be sent
(docs/architecture.md, "Email correctness"): size, doctype, lang, alt text, absolute links,
responsive CSS, Outlook blocks, leftover template syntax, plaintext line lengths and the
unsubscribe link in both parts."""

from __future__ import annotations

import re
from html import escape
from typing import NamedTuple

from dispatch.compose.slots import fill_slots, sample_values
from dispatch.config import Settings

MAX_TEXT_LINE = 78
MAX_HTML_BYTES = 100 * 1024  # Gmail clips messages near 102 KB
MARKUP = re.compile(r"<[a-zA-Z/][^<>]*>|&(?:[a-zA-Z]+|#\d+|#x[0-9a-fA-F]+);")


def markup_left(text: str, html: str) -> str | None:
    """The first tag or entity in the plaintext that the HTML does not show as text too.

    A brief may say "<effective Jan. 1>" or "A&amp;B" in so many words: the HTML part then
    carries it escaped (&lt;effective Jan. 1&gt;), and it is text, not markup that a template
    or the renderer let through."""
    shown = " ".join(html.split())
    for match in MARKUP.finditer(text):
        literal = " ".join(match[0].split())  # the plaintext may wrap inside it
        if escape(literal, quote=False) not in shown and escape(literal) not in shown:
            return match[0]
    return None


class Finding(NamedTuple):
    """A broken rule, with the text that broke it when a brief may hold that text, so the
    problem can be located at the brief's line."""

    message: str
    evidence: str | None = None
    at_brief: str | None = None  # the message when located at a brief, if it reads otherwise


def check_rendered(html: str, text: str, settings: Settings) -> list[str]:
    """The email-correctness rules that apply to a rendered variant (docs/architecture.md)."""
    return [finding.message for finding in findings(html, text, settings)]


def findings(html: str, text: str, settings: Settings) -> list[Finding]:
    """check_rendered's rules, each broken one with its evidence."""
    problems: list[Finding] = []
    sample = sample_values(settings)
    html_filled, text_filled = fill_slots(html, sample), fill_slots(text, sample)
    size = len(html_filled.encode("utf-8"))
    if size >= MAX_HTML_BYTES:
        problems.append(Finding(f"HTML is {size:,} bytes; Gmail clips near 102 KB "
                                "(limit 100 KB)"))
    if not re.match(r"^<!doctype html>", html, re.IGNORECASE):
        problems.append(Finding("HTML does not start with <!doctype html>"))
    lang = re.search(r"<html[^>]*\blang=\"([^\"]*)\"", html)
    if not lang or lang[1] in ("", "und"):
        problems.append(Finding("<html> has no lang attribute (set newsletter.lang)"))
    for img in re.findall(r"<img\b[^>]*>", html, re.IGNORECASE):
        alt = re.search(r"\balt=\"([^\"]*)\"", img)
        if not alt or not alt[1].strip():
            problems.append(Finding(f"image without alt text: {img[:120]}"))
    for attr, url in re.findall(r"\b(href|src)=\"([^\"]*)\"", html_filled):
        if not re.match(r"^(https?://[^\s/]+|mailto:)", url):
            problems.append(Finding(f"{attr} is not an absolute http(s) or mailto URL: "
                                        f"{url[:120]!r}", url))
    media = re.findall(r"@media[^{]*\{(.*?\})\s*\}", html, re.DOTALL)
    if not media or not any("!important" in block for block in media):
        problems.append(Finding("the responsive media queries lost their !important"))
    opened, closed = len(re.findall(r"<!--\[if", html)), len(re.findall(r"<!\[endif\]-->", html))
    if opened == 0 or opened != closed:
        problems.append(Finding(f"Outlook conditional blocks damaged ({opened} opened, "
                                f"{closed} closed)"))
    for where, body in (("HTML", html), ("text", text)):
        leftover = re.search(r"\{\{|\}\}|\{%|%\}|<mj-|</mj-", body)
        if leftover:
            problems.append(Finding(
                f"unrendered template syntax in the {where}: "
                f"{body[max(0, leftover.start() - 30):leftover.end() + 30]!r}", leftover[0]))
    if leaked := markup_left(text, html):
        problems.append(Finding(f"HTML tags or entities left in the plaintext: {leaked[:60]!r}",
                                leaked))
    for number, line in enumerate(text_filled.split("\n"), 1):
        if len(line) > MAX_TEXT_LINE and not re.search(r"https?://\S{40,}", line):
            word = max(line.split(), key=len)
            problems.append(Finding(
                f"plaintext line {number} is {len(line)} characters (max {MAX_TEXT_LINE} "
                "except URLs)", word,
                f"{word[:40]!r} makes a plaintext line of {len(line)} characters (max "
                f"{MAX_TEXT_LINE} except URLs): break it up"))
    if sample["unsubscribe_url"] not in text_filled:
        problems.append(Finding("plaintext has no unsubscribe URL"))
    if sample["unsubscribe_url"] not in html_filled:
        problems.append(Finding("HTML has no unsubscribe link"))
    return problems
