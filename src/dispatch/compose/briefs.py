"""Briefs: Markdown files with YAML front matter → `Brief` values.

Every problem in a brief is reported with its file and line; a brief with problems never
becomes a value.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml
from markdown_it import MarkdownIt

from dispatch.compose.models import Brief, Image, Read
from dispatch.errors import ContentError, Problem, display_path
from dispatch.text import header_problem

FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)?---[ \t]*(?:\n|\Z)", re.DOTALL)
BRIEF_KEYS = {"title", "topics", "date", "summary", "image", "reads", "author"}
IMAGE_KEYS = {"src", "alt", "caption", "credit"}
READ_KEYS = {"title", "publisher", "url"}


def slugify(text: str, limit: int = 60) -> str:
    """A file-name-safe, lower-case ASCII slug."""
    spaced = re.sub(r"[^\w]+", "-", unicodedata.normalize("NFKD", text))
    ascii_text = spaced.encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")
    return slug[:limit].rstrip("-") or "brief"


def _key_lines(front: str, first_line: int) -> dict[str, int]:
    """Line numbers of the top-level keys (and `reads[i]`, `image`) of the front matter."""
    lines: dict[str, int] = {}
    node = yaml.compose(front, Loader=yaml.SafeLoader)
    if not isinstance(node, yaml.MappingNode):
        return lines
    for key_node, value_node in node.value:
        key = str(key_node.value)
        lines[key] = first_line + key_node.start_mark.line
        if isinstance(value_node, yaml.SequenceNode):
            for i, item in enumerate(value_node.value):
                lines[f"{key}[{i}]"] = first_line + item.start_mark.line
    return lines


_TAG_KINDS = {"tag:yaml.org,2002:timestamp": "date", "tag:yaml.org,2002:int": "integer",
              "tag:yaml.org,2002:float": "number"}


class _BadValue(yaml.constructor.ConstructorError):
    """A scalar YAML recognised by its form but could not build (2026-02-30, 0x_)."""


class _Loader(yaml.SafeLoader):
    """SafeLoader, except that a value it cannot build is a YAML error at the value's place:
    PyYAML's own constructors raise a bare ValueError that says neither where nor which key."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except ValueError as exc:
            kind = _TAG_KINDS.get(node.tag, node.tag)
            raise _BadValue(None, None, f"{node.value!r} is not a valid {kind} ({exc})",
                            node.start_mark) from None


def _kind(value: Any) -> str:
    """What YAML made of a value, as a message names it."""
    if isinstance(value, datetime):
        return "a date-time (put it in quotes to mean text)"
    if isinstance(value, date):
        return "a date (put it in quotes to mean text)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (put it in quotes to mean text)"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table of keys"
    if value is None:
        return "nothing"
    return "blank text" if isinstance(value, str) else type(value).__name__


class _Collector:
    def __init__(self, path: Path) -> None:
        self.shown = display_path(path)
        self.problems: list[Problem] = []

    def add(self, line: int | None, message: str) -> None:
        self.problems.append(Problem(self.shown, message, line))


def _text(value: Any) -> str | None:
    """A non-empty string value, with numbers accepted as text (YAML reads `2023` as an int)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str) and value.strip():
        return " ".join(value.split()) if "\n" in value.strip() else value.strip()
    return None


def _parse_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            return None
    return None


def parse_brief(path: Path, text: str, topics: Mapping[str, Any]) -> Brief:
    """Parse one brief's text; raise ContentError with every problem found."""
    brief, problems = parse_draft(path, text, topics)
    if problems or brief is None:
        raise ContentError(problems)
    return brief


def parse_draft(path: Path, text: str, topics: Mapping[str, Any]
                ) -> tuple[Brief | None, list[Problem]]:
    """Parse one brief's text as far as it goes: every problem found, and the brief when it
    has a title and a summary, leaving out what is wrong (an image without its URL, a read's
    bad link, unknown topics), so a draft can still be previewed."""
    try:
        return _parse(path, text, topics)
    except ContentError as exc:
        return None, exc.problems


def _parse(path: Path, text: str, topics: Mapping[str, Any]
           ) -> tuple[Brief | None, list[Problem]]:
    out = _Collector(path)
    if not text.strip():
        raise ContentError(Problem(out.shown, "empty file: a brief needs YAML front matter "
                                              "(--- title: … ---) and a body", 1))
    match = FRONT_MATTER.match(text)
    if not match:
        raise ContentError(Problem(out.shown, "missing front matter: a brief starts with a "
                                              "line '---', YAML keys, then '---'", 1))
    front = match[1] or ""
    body = text[match.end():]
    body_line = text[:match.end()].count("\n") + 1
    key_lines: dict[str, int] = {}
    try:
        key_lines = _key_lines(front, 2)  # composing builds no values: nothing to refuse yet
        data = yaml.load(front, Loader=_Loader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        detail = getattr(exc, "problem", None) or str(exc)
        at = 2 + mark.line if mark else 1
        if isinstance(exc, _BadValue):
            # Name the top-level key the bad value sits under: the last one starting above it.
            keys = [k for k, n in key_lines.items() if "[" not in k and n <= at]
            key = max(keys, key=key_lines.__getitem__, default=None)
            raise ContentError(Problem(out.shown, f"{key}: {detail}" if key else detail,
                                       at)) from None
        raise ContentError(Problem(out.shown, f"invalid YAML in front matter: {detail}",
                                   at)) from None
    if not isinstance(data, dict):
        raise ContentError(Problem(out.shown, "front matter must be YAML keys and values", 2))

    def line(key: str) -> int:
        return key_lines.get(key, 1)

    for key in sorted(set(map(str, data)) - BRIEF_KEYS):
        out.add(line(key), f"unknown key {key!r} (expected: {', '.join(sorted(BRIEF_KEYS))})")

    def text_value(key: str) -> str | None:
        """A key's text, or None with the problem added: not text, or text unfit for a
        header (a title or summary may become a subject line or an inbox preview)."""
        value = _text(data[key])
        if value is None:
            out.add(line(key), f"{key} must be non-empty text, got {_kind(data[key])}")
        elif problem := header_problem(value):
            out.add(line(key), f"{key} {problem}")
            return None
        return value

    title = text_value("title") if "title" in data else None
    if "title" not in data:
        out.add(line("title"), "missing title")

    summary = text_value("summary") if "summary" in data else None
    if "summary" not in data:
        out.add(line("summary"), "missing summary (the lede: one paragraph)")

    raw_topics = data.get("topics")
    brief_topics: list[str] = []
    if raw_topics is None:
        out.add(line("topics"), "missing topics (keys from config.toml: "
                                f"{', '.join(topics)})")
    elif isinstance(raw_topics, str):
        raw_topics = [raw_topics]
    if isinstance(raw_topics, list):
        if not raw_topics:
            out.add(line("topics"), "no topics yet: add at least one of "
                                    f"{', '.join(topics)}")
        for i, topic in enumerate(raw_topics):
            if not isinstance(topic, str) or topic not in topics:
                out.add(line(f"topics[{i}]") if f"topics[{i}]" in key_lines else line("topics"),
                        f"unknown topic {topic!r} (declared in config.toml: "
                        f"{', '.join(topics) or 'none'})")
            elif topic not in brief_topics:
                brief_topics.append(topic)
    elif raw_topics is not None:
        out.add(line("topics"), "topics must be a list of topic keys")

    brief_date = None
    if "date" in data:
        brief_date = _parse_date(data["date"])
        if brief_date is None:
            out.add(line("date"), f"date {data['date']!r} is not a date (use YYYY-MM-DD)")

    author = text_value("author") if "author" in data else None

    image = None
    if "image" in data:
        raw = data["image"]
        if not isinstance(raw, dict):
            out.add(line("image"), "image must have keys src, alt, caption, credit")
        else:
            for key in sorted(set(map(str, raw)) - IMAGE_KEYS):
                out.add(line("image"), f"image: unknown key {key!r}")
            src, alt = _text(raw.get("src")), _text(raw.get("alt"))
            if src is None:
                out.add(line("image"), "image.src is missing: add the photo's URL")
            elif not re.match(r"^https://", src):
                out.add(line("image"), f"image.src must be an https:// URL, got {src!r}")
            if alt is None:
                out.add(line("image"), "image.alt is missing: describe the photo for "
                                       "readers who cannot see it")
            if src is not None and src.startswith("https://") and alt is not None:
                image = Image(src=src, alt=alt, caption=_text(raw.get("caption")),
                              credit=_text(raw.get("credit")))

    reads: list[Read] = []
    raw_reads = data.get("reads", [])
    if not isinstance(raw_reads, list):
        out.add(line("reads"), "reads must be a list of {title, publisher, url}")
        raw_reads = []
    for i, raw in enumerate(raw_reads):
        where = key_lines.get(f"reads[{i}]", line("reads"))
        if isinstance(raw, str):
            raw = {"title": raw}
        if not isinstance(raw, dict):
            out.add(where, f"reads[{i}] must be a title or {{title, publisher, url}}")
            continue
        for key in sorted(set(map(str, raw)) - READ_KEYS):
            out.add(where, f"reads[{i}]: unknown key {key!r}")
        read_title = _text(raw.get("title"))
        url = _text(raw.get("url"))
        if read_title is None:
            out.add(where, f"reads[{i}] has no title")
            continue
        if url is not None and not re.match(r"^https?://\S+$", url):
            out.add(where, f"reads[{i}].url must be an absolute http(s) URL, got {url!r}")
            url = None
        reads.append(Read(title=read_title, publisher=_text(raw.get("publisher")), url=url))

    if not body.strip():
        out.add(body_line, "the brief has no body below the front matter")
    for line_no, snippet in raw_html(body):
        out.add(body_line + line_no, f"raw HTML is not allowed in a brief ({snippet!r}); it "
                                     "would be shown as text: use Markdown instead")

    if title is None or summary is None:
        return None, out.problems
    return (Brief(path=path, slug=slugify(path.stem), title=title, topics=tuple(brief_topics),
                 summary=summary, body=body.strip("\n"), body_line=body_line, date=brief_date,
                 author=author, image=image, reads=tuple(reads)), out.problems)


def raw_html(markdown: str) -> list[tuple[int, str]]:
    """(line offset, snippet) of every raw HTML block or inline tag in a Markdown body."""
    found: list[tuple[int, str]] = []
    block_line = 0
    for token in MarkdownIt("commonmark").parse(markdown):
        if token.map:
            block_line = token.map[0]
        if token.type == "html_block":
            found.append((block_line, token.content.strip()[:40]))
        for child in token.children or []:
            if child.type == "html_inline":
                found.append((block_line, child.content[:40]))
    first_per_line = {line: snippet for line, snippet in reversed(found)}
    return sorted(first_per_line.items())


def read_text_file(path: Path) -> str:
    """Read a UTF-8 text file (BOM tolerated) with a located error on failure."""
    try:
        return path.read_bytes().decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
    except FileNotFoundError:
        raise ContentError(Problem(display_path(path), "file not found")) from None
    except IsADirectoryError:
        raise ContentError(Problem(display_path(path), "is a folder, expected a file")) from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise ContentError(Problem(display_path(path), "not UTF-8 text", line)) from None


def load_brief(path: Path, topics: Mapping[str, Any]) -> Brief:
    return parse_brief(path, read_text_file(path), topics)


def load_draft(path: Path, topics: Mapping[str, Any]) -> tuple[Brief | None, list[Problem]]:
    """load_brief for a draft: see parse_draft."""
    try:
        text = read_text_file(path)
    except ContentError as exc:
        return None, exc.problems
    return parse_draft(path, text, topics)
