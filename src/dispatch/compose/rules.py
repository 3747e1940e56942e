"""The email-correctness rules a rendered message must pass before it may be sent
(docs/architecture.md, "Email correctness"): size, doctype, lang, alt text, absolute links,
responsive CSS, valid CSS and no remote resource but images, image widths, Outlook blocks,
leftover template syntax, plaintext line lengths and the unsubscribe link in both parts."""

from __future__ import annotations

import html as html_lib
import re
from html import escape
from typing import NamedTuple

import tinycss2

from dispatch.compose.slots import fill_slots, fill_text_slots, sample_values
from dispatch.config import Settings

MAX_TEXT_LINE = 76
MAX_HTML_BYTES = 100 * 1024  # Gmail clips messages near 102 KB
# The email's content column in pixels: mj-body's 640 less the 24 px padding on each side.
# Images carry it as their width attribute, which Outlook for Windows sizes by.
COLUMN_WIDTH = 592
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


STYLE_BLOCK = re.compile(r"<style\b[^>]*>(.*?)</style>", re.DOTALL | re.IGNORECASE)
STYLE_ATTRIBUTE = re.compile(r"\sstyle=\"([^\"]*)\"", re.IGNORECASE)


def _css_errors(nodes: list[object], errors: list[str]) -> None:
    """Collect tinycss2's parse errors, descending into at-rules' blocks (@media)."""
    for node in nodes:
        if isinstance(node, tinycss2.ast.ParseError):
            errors.append(f"{node.message} (line {node.source_line})")
        elif isinstance(node, (tinycss2.ast.AtRule, tinycss2.ast.QualifiedRule)) and node.content:
            _css_errors(tinycss2.parse_blocks_contents(node.content), errors)
        elif isinstance(node, tinycss2.ast.Declaration):
            _css_errors([v for v in node.value if isinstance(v, tinycss2.ast.ParseError)],
                        errors)


def css_problems(html: str) -> list[str]:
    """CSS parse errors in the <style> blocks and style attributes, and anything in the CSS or
    the markup that would fetch a resource when the message is opened (web fonts, stylesheets):
    the only remote resources a message may hold are the editors' images."""
    problems: list[str] = []
    for number, block in enumerate(STYLE_BLOCK.findall(html), 1):
        errors: list[str] = []
        _css_errors(tinycss2.parse_stylesheet(block, skip_comments=True,
                                              skip_whitespace=True), errors)
        problems += [f"CSS error in <style> block {number}: {e}" for e in errors]
        if re.search(r"@import|url\(", block, re.IGNORECASE):
            problems.append(f"<style> block {number} fetches a remote resource (@import or url())")
    for style in set(STYLE_ATTRIBUTE.findall(html)):
        errors = []
        declarations = html_lib.unescape(style)
        _css_errors(tinycss2.parse_blocks_contents(declarations, skip_comments=True,
                                                   skip_whitespace=True), errors)
        problems += [f"CSS error in style=\"{declarations[:80]}\": {e}" for e in errors]
        if re.search(r"url\(", declarations, re.IGNORECASE):
            problems.append(f"style=\"{declarations[:80]}\" fetches a remote resource")
    for tag in re.findall(r"<link\b[^>]*>", html, re.IGNORECASE):
        problems.append(f"<link> fetches a remote resource: {tag[:120]}")
    return problems


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
    html_filled, text_filled = fill_slots(html, sample), fill_text_slots(text, sample)
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
        width = re.search(r"\swidth=\"([^\"]*)\"", img)
        if not width or not width[1].isdigit() or int(width[1]) > COLUMN_WIDTH:
            problems.append(Finding(f"image width attribute must be a number of pixels up to "
                                    f"the column's {COLUMN_WIDTH}: {img[:120]}"))
        if re.search(r"\sheight=\"(?!\d+\")", img):
            problems.append(Finding(f"image height attribute is not a number of pixels: "
                                    f"{img[:120]}"))
    ids = set(re.findall(r"\sid=\"([^\"]+)\"", html))
    for attr, url in re.findall(r"\b(href|src)=\"([^\"]*)\"", html_filled):
        if attr == "href" and url.startswith("#") and url[1:] in ids:
            continue  # a link within the message (the contents to its briefs)
        if not re.match(r"^(https?://[^\s/]+|mailto:)", url):
            problems.append(Finding(f"{attr} is not an absolute http(s) or mailto URL: "
                                        f"{url[:120]!r}", url))
    media = re.findall(r"@media[^{]*\{(.*?\})\s*\}", html, re.DOTALL)
    if not media or not any("!important" in block for block in media):
        problems.append(Finding("the responsive media queries lost their !important"))
    problems += [Finding(p) for p in css_problems(html)]
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
        # A URL longer than the limit cannot be broken: it stands alone on its line.
        if len(line) > MAX_TEXT_LINE and not re.fullmatch(r"https?://\S+", line):
            word = max(line.split(), key=len)
            problems.append(Finding(
                f"plaintext line {number} is {len(line)} characters (max {MAX_TEXT_LINE}; "
                "only a URL alone on its line may be longer)", word,
                f"{word[:40]!r} makes a plaintext line of {len(line)} characters (max "
                f"{MAX_TEXT_LINE}): break it up"))
    if sample["unsubscribe_url"] not in text_filled:
        problems.append(Finding("plaintext has no unsubscribe URL"))
    if sample["unsubscribe_url"] not in html_filled:
        problems.append(Finding("HTML has no unsubscribe link"))
    return problems
