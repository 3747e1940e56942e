"""One variant → final email HTML (Jinja2 → MJML → premailer) and its plaintext alternative,
and the Markdown bodies of briefs in both forms.

Per-recipient fields are left as slot tokens (compose/slots.py) so that a variant is rendered
once and personalised by substituting bytes (compose/message.py).
"""

from __future__ import annotations

import logging
import re
import textwrap
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urljoin
from zoneinfo import ZoneInfo

import jinja2
from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import Markup
from mjml import mjml2html
from premailer import Premailer

from dispatch.compose.models import Issue
from dispatch.compose.rules import COLUMN_WIDTH, Finding, findings
from dispatch.compose.slots import TOKENS
from dispatch.compose.variants import Variant
from dispatch.config import Settings
from dispatch.config.topics import topic_labels
from dispatch.errors import Problem, RenderError, display_path

WIDTH = 72  # plaintext wrap column

DASH_START = re.compile(r"^\s*(—|–|--)\s*")
# Installed: dispatch/templates (the wheel's copy); from a checkout: the repository's templates/.
PACKAGED_TEMPLATES = [Path(__file__).resolve().parents[1] / "templates",
                      Path(__file__).resolve().parents[3] / "templates"]


@dataclass(frozen=True)
class Rendered:
    variant: Variant
    html: str
    text: str
    warnings: tuple[str, ...] = ()


# ---- Markdown bodies -------------------------------------------------------------------

@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    # html=False: raw HTML in a brief is shown as text, never passed into email.
    return MarkdownIt("commonmark", {"html": False, "typographer": False})


def _mark_attributions(tokens: list[Token]) -> list[Token]:
    """Give a block quote's closing "— Name" line its own paragraph with class attribution."""
    result: list[Token] = []
    for token in tokens:
        result.append(token)
        if token.type != "blockquote_close":
            continue
        # The quote's last paragraph: paragraph_open, inline, paragraph_close just before.
        if len(result) < 4 or result[-2].type != "paragraph_close":
            continue
        inline, opening = result[-3], result[-4]
        children = inline.children or []
        if DASH_START.match(inline.content):
            opening.attrSet("class", "attribution")
            continue
        breaks = [j for j, c in enumerate(children) if c.type == "softbreak"
                  and j + 1 < len(children) and children[j + 1].type == "text"
                  and DASH_START.match(children[j + 1].content)]
        if not breaks:
            continue
        cut = breaks[-1]
        quote = Token("inline", "", 0, children=children[:cut], content="")
        who = Token("inline", "", 0, children=children[cut + 1:], content="")
        close = Token("paragraph_close", "p", -1, block=True)
        attribution = Token("paragraph_open", "p", 1, block=True)
        attribution.attrSet("class", "attribution")
        result[-3:-2] = [quote, close, attribution, who]
    return result


def _body_tokens(markdown: str, base_url: str) -> list[Token]:
    """A brief's body parsed once for both renders: quotes attributed, links and images
    absolute against the newsletter's base URL."""
    tokens = _mark_attributions(_markdown().parse(markdown))
    for token in tokens:
        # The masthead is the h1 and each brief's title an h2: a brief's own headings nest
        # below them.
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(6, max(3, int(token.tag[1]) + 1))}"
        for child in token.children or []:
            if child.type == "link_open":
                child.attrSet("href", urljoin(base_url + "/", str(child.attrGet("href"))))
            elif child.type == "image":
                child.attrSet("src", urljoin(base_url + "/", str(child.attrGet("src"))))
                # An HTML width attribute is a number of pixels ("100%" is invalid); CSS lets
                # the image shrink on narrower screens.
                child.attrSet("width", str(COLUMN_WIDTH))
    return tokens


def markdown_html(markdown: str, base_url: str) -> str:
    """A brief's Markdown body as email-safe HTML."""
    md = _markdown()
    return md.renderer.render(_body_tokens(markdown, base_url), md.options, {})


def _wrap(text: str, indent: str = "", first: str | None = None) -> str:
    return textwrap.fill(" ".join(text.split()), width=WIDTH, initial_indent=first or "",
                         subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False)


def _inline_text(token: Token, links: list[str]) -> str:
    parts: list[str] = []
    hrefs: list[str] = []
    for child in token.children or []:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type == "softbreak":
            parts.append(" ")
        elif child.type == "hardbreak":
            parts.append("\n")
        elif child.type == "image":
            parts.append(f"[image: {child.content or 'no description'}]")
        elif child.type == "link_open":
            hrefs.append(str(child.attrGet("href")))
        elif child.type == "link_close" and hrefs:
            links.append(hrefs.pop())
            parts.append(f" [{len(links)}]")
    return "".join(parts)


def markdown_text(markdown: str, base_url: str, links: list[str]) -> str:
    """A brief's body as plaintext wrapped at 72 columns, links as numbered references that are
    appended to `links` (numbering continues across briefs)."""
    tokens = _body_tokens(markdown, base_url)
    blocks: list[str] = []
    lists: list[list[int]] = []  # stack of [ordered?, counter]
    quote = 0
    pending_item = False
    attribution = False
    for position, token in enumerate(tokens):
        if token.type in ("bullet_list_open", "ordered_list_open"):
            # An ordered list counts on from its first number ("4." starts at 4).
            start = int(token.attrGet("start") or 1) if token.type == "ordered_list_open" else 1
            lists.append([token.type == "ordered_list_open", start - 1])
        elif token.type in ("bullet_list_close", "ordered_list_close"):
            lists.pop()
        elif token.type == "list_item_open":
            lists[-1][1] += 1
            pending_item = True
        elif token.type == "blockquote_open":
            quote += 1
        elif token.type == "blockquote_close":
            quote -= 1
        elif token.type == "paragraph_open":
            attribution = token.attrGet("class") == "attribution"
        elif token.type == "hr":
            blocks.append("-" * 20)
        elif token.type in ("code_block", "fence"):
            blocks.append("\n".join("    " + line for line in token.content.rstrip().split("\n")))
        elif token.type == "inline":
            text = _inline_text(token, links)
            heading = tokens[position - 1].type == "heading_open"
            indent = "    " * quote + "  " * (len(lists) - 1 if lists else 0)
            if heading:
                blocks.append(text.upper())
            elif lists and pending_item:
                ordered, counter = lists[-1]
                marker = f"{counter}. " if ordered else "- "
                blocks.append(_wrap(text, indent + " " * len(marker), indent + marker))
                pending_item = False
            elif attribution:
                blocks.append(_wrap("— " + DASH_START.sub("", text), indent + "  ", indent))
            else:
                blocks.append("\n".join(_wrap(line, indent, indent) for line in text.split("\n")))
    # Consecutive list items read better without blank lines between them.
    item = re.compile(r"^\s*(- |\d+\. )")
    out = blocks[:1]
    for previous, block in zip(blocks, blocks[1:], strict=False):
        tight = item.match(block) and item.match(previous)
        out.append(("\n" if tight else "\n\n") + block)
    return "".join(out)


# ---- Templates -------------------------------------------------------------------------

def template_dirs(settings: Settings) -> list[Path]:
    """The project's templates/ first, so editors can override any packaged template."""
    dirs = [settings.templates_dir, *PACKAGED_TEMPLATES]
    unique: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


@lru_cache(maxsize=8)
def _environment(dirs: tuple[Path, ...]) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(list(dirs)),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "mjml", "html.j2",
                                                                "mjml.j2"),
                                            default_for_string=False, default=False),
        undefined=jinja2.StrictUndefined, trim_blocks=False, keep_trailing_newline=True)
    env.filters["wrap"] = lambda text, indent="": _wrap(str(text), indent)
    return env


def environment(settings: Settings) -> jinja2.Environment:
    return _environment(tuple(template_dirs(settings)))


# ---- Rendering -------------------------------------------------------------------------

def inline_css(html: str) -> str:
    """premailer, configured not to damage MJML output: no network, keep the <style> blocks
    (media queries live there), keep !important, leave width/height attributes alone."""
    inlined = Premailer(
        html, allow_network=False, keep_style_tags=True, strip_important=False,
        disable_validation=True, remove_classes=False, exclude_pseudoclasses=True,
        disable_basic_attributes=["width", "height", "align", "bgcolor", "valign"],
        cssutils_logging_level=logging.CRITICAL, method="html").transform()
    # premailer (lxml) drops MJML's lower-case doctype; the HTML5 doctype must lead.
    inlined = re.sub(r"^\s*<!DOCTYPE[^>]*>\s*", "", inlined, flags=re.IGNORECASE)
    return "<!doctype html>\n" + inlined


def _issue_date(settings: Settings, now: datetime, day: date | None) -> str:
    """The masthead's date: `day` when given, else the date at `now` in the editors' zone.
    An issue is rendered when it goes out, so `now` is its real date, whatever send_at the
    issue.toml planned; a local-time send passes the day its readers get it in their zones."""
    day = day or now.astimezone(ZoneInfo(settings.newsletter.timezone)).date()
    return f"{day:%A}, {day.day} {day:%B %Y}"


def _context(issue: Issue, variant: Variant, settings: Settings, now: datetime,
             test_banner: str | None, day: date | None = None
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The template contexts for the HTML and the plaintext renders."""
    base = settings.newsletter.base_url
    links: list[str] = []
    html_briefs, text_briefs = [], []
    for brief in variant.briefs:
        common = {"title": brief.title, "summary": brief.summary, "author": brief.author,
                  "image": brief.image, "labels": topic_labels(settings.topics, brief.topics)}
        html_briefs.append({**common, "reads": brief.reads,
                            "body_html": Markup(markdown_html(brief.body, base))})
        body_text = markdown_text(brief.body, base, links)
        reads = []
        for read in brief.reads:
            if read.url:
                links.append(read.url)
            reads.append({"title": read.title, "publisher": read.publisher,
                          "ref": len(links) if read.url else None})
        text_briefs.append({**common, "reads": reads, "body_text": body_text})
    shared = {
        "newsletter": settings.newsletter, "subject": issue.subject,
        "preheader": issue.preheader or variant.briefs[0].summary,
        "issue_date": _issue_date(settings, now, day),
        "slots": TOKENS, "test_banner": test_banner, "column_width": COLUMN_WIDTH,
    }
    return {**shared, "briefs": html_briefs}, {**shared, "briefs": text_briefs, "links": links}


def render_email(settings: Settings, name: str, html_context: dict[str, Any],
                 text_context: dict[str, Any], label: str) -> tuple[str, str]:
    """The one pipeline for every email: templates/email/NAME.mjml.j2 → MJML → premailer for
    the HTML, templates/email/NAME.txt.j2 for the plaintext. `label` names what is rendered
    in an MJML error."""
    env = environment(settings)
    try:
        mjml = env.get_template(f"email/{name}.mjml.j2").render(html_context)
        text = env.get_template(f"email/{name}.txt.j2").render(text_context)
    except jinja2.TemplateError as exc:
        where = getattr(exc, "filename", None) or f"templates/email/{name}"
        raise RenderError(Problem(str(where), f"template error: {exc}",
                                  getattr(exc, "lineno", None))) from None
    try:
        # mjml writes height="auto" on images: not a number, so invalid HTML (CSS has it).
        html = inline_css(mjml2html(mjml).replace(' height="auto"', ""))
    except ValueError as exc:
        raise RenderError(Problem(f"templates/email/{name}.mjml.j2",
                                  f"MJML error in {label}: {exc}")) from None
    return html, re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def render_variant(issue: Issue, variant: Variant, settings: Settings, now: datetime,
                   test_banner: str | None = None, day: date | None = None) -> Rendered:
    """Render one variant and run every check on it; a failed check raises RenderError.
    `day` is the masthead's date (see _issue_date)."""
    rendered, problems = render_checked(issue, variant, settings, now, test_banner, day)
    if problems:
        raise RenderError(problems)
    return rendered


def render_checked(issue: Issue, variant: Variant, settings: Settings, now: datetime,
                   test_banner: str | None = None, day: date | None = None
                   ) -> tuple[Rendered, list[Problem]]:
    """Render one variant and run every check on it: the render and the problems found, each
    at the brief's file and line when a brief holds the text that broke the rule. A template
    or MJML error still raises RenderError (there is nothing to show)."""
    html_ctx, text_ctx = _context(issue, variant, settings, now, test_banner, day)
    html, text = render_email(settings, "issue", html_ctx, text_ctx, f"variant {variant.id}")
    problems = [locate(finding, issue, variant) for finding in findings(html, text, settings)]
    size = len(html.encode())
    warnings = ((f"{size // 1024} KB of HTML: close to Gmail's clipping limit",)
                if size > 80 * 1024 else ())
    return Rendered(variant=variant, html=html, text=text, warnings=warnings), problems


def locate(finding: Finding, issue: Issue, variant: Variant) -> Problem:
    """The problem at the first line of a brief in the variant that holds the finding's
    evidence (Markdown escapes ignored, and only its first word when the plaintext wrapped
    it); at the variant otherwise."""
    if finding.evidence and finding.evidence.split():
        needle = finding.evidence.split()[0]
        for brief in variant.briefs:
            try:
                lines = brief.path.read_text(encoding="utf-8-sig").split("\n")
            except (OSError, UnicodeDecodeError):
                continue
            for number, line in enumerate(lines, 1):
                if needle in line.replace("\\", ""):
                    return Problem(display_path(brief.path),
                                   finding.at_brief or finding.message, number)
    return Problem(f"{issue.slug}/{variant.id}", finding.message)
