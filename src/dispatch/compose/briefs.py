"""Briefs: Markdown files with YAML front matter → `Brief` values.

Every problem in a brief is reported with its file, line and key (the front matter is a model
on config's base, compose/front_matter.py); a brief with problems never becomes a value.
"""

from __future__ import annotations

import copy
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from markdown_it import MarkdownIt
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from dispatch.compose.front_matter import Document, FrontMatter, Unreadable
from dispatch.compose.models import Brief, Image, Read
from dispatch.config.load import key_path, message, problems_of
from dispatch.errors import ContentError, Problem, display_path

FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)?---[ \t]*(?:\n|\Z)", re.DOTALL)


def slugify(text: str, limit: int = 60) -> str:
    """A file-name-safe, lower-case ASCII slug."""
    spaced = re.sub(r"[^\w]+", "-", unicodedata.normalize("NFKD", text))
    ascii_text = spaced.encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")
    return slug[:limit].rstrip("-") or "brief"


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
    shown = display_path(path)
    if not text.strip():
        raise ContentError(Problem(shown, "empty file: a brief needs YAML front matter "
                                          "(--- title: … ---) and a body", 1))
    match = FRONT_MATTER.match(text)
    if not match:
        raise ContentError(Problem(shown, "missing front matter: a brief starts with a "
                                          "line '---', YAML keys, then '---'", 1))
    body = text[match.end():]
    body_line = text[:match.end()].count("\n") + 1
    try:
        doc = Document(match[1] or "", 2)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        detail = getattr(exc, "problem", None) or str(exc)
        raise ContentError(Problem(shown, f"invalid YAML in front matter: {detail}",
                                   2 + mark.line if mark else 1)) from None
    if not isinstance(doc.data, dict):
        raise ContentError(Problem(shown, "front matter must be YAML keys and values", 2))
    problems = [Problem(shown, f"{key_path(loc)}: {message}", doc.line(loc))
                for loc, message in doc.problems]
    matter, found = _validated(doc, topics, shown)
    problems += found
    if not body.strip():
        problems.append(Problem(shown, "the brief has no body below the front matter",
                                body_line))
    for line_no, snippet in raw_html(body):
        problems.append(Problem(shown, f"raw HTML is not allowed in a brief ({snippet!r}); it "
                                       "would be shown as text: use Markdown instead",
                                body_line + line_no))
    if matter is None:
        return None, problems
    return (Brief(path=path, slug=slugify(path.stem), title=matter.title, topics=matter.topics,
                  summary=matter.summary, body=body.strip("\n"), body_line=body_line,
                  date=matter.date, author=matter.author,
                  image=Image(**matter.image.model_dump()) if matter.image else None,
                  reads=tuple(Read(**read.model_dump()) for read in matter.reads)), problems)


_HINTS: dict[tuple[int | str, ...], str] = {
    ("summary",): "the lede: one paragraph", ("image", "src"): "add the photo's URL",
    ("image", "alt"): "describe the photo for readers who cannot see it"}


def _say(error: ErrorDetails) -> str:
    value = error["input"]
    if isinstance(value, Unreadable):
        return value.message
    hint = _HINTS.get(error["loc"]) if error["type"] == "missing" else None
    return f"{message(error)}: {hint}" if hint else message(error)


def _validated(doc: Document, topics: Mapping[str, Any], shown: str
               ) -> tuple[FrontMatter | None, list[Problem]]:
    """The front matter's model and every problem in it. A draft leaves out what is wrong
    (an image without its URL, a read's bad link, unknown topics) and validates the rest;
    without a usable title and summary there is no brief."""
    try:
        return FrontMatter.model_validate(doc.data, context={"topics": topics}), []
    except ValidationError as exc:
        problems = problems_of(exc, shown, doc.line, _say)
        errors = exc.errors()
    data: Any = copy.deepcopy(doc.data)
    for _ in range(_PASSES):
        data = _pruned(data, [error["loc"] for error in errors])
        if data is None:
            break
        try:
            return FrontMatter.model_validate(data, context={"topics": topics, "draft": True}
                                              ), problems
        except ValidationError as exc:
            errors = exc.errors()
    return None, problems


_PASSES = 4  # a bad value, then the entry it leaves incomplete (image without src), and so on
_NEEDED = ("title", "summary")


def _pruned(data: dict[Any, Any], locs: list[tuple[int | str, ...]]) -> dict[Any, Any] | None:
    """`data` without the values at `locs`; a missing key takes its table with it. None
    when what goes is a title or a summary."""
    if any(loc and loc[0] in _NEEDED for loc in locs):
        return None
    for loc in sorted(locs, key=lambda loc: [(isinstance(p, str), p) for p in loc],
                      reverse=True):
        _drop(data, loc)
    return data


def _drop(data: Any, loc: tuple[int | str, ...]) -> None:
    parents = [data]
    for part in loc[:-1]:
        here = parents[-1]
        if isinstance(here, list) and isinstance(part, int) and part < len(here):
            parents.append(here[part])
        elif isinstance(here, dict) and (key := _key(here, part)) is not None:
            parents.append(here[key])
        else:
            return  # already gone with an ancestor
    container, part = parents[-1], loc[-1]
    if isinstance(container, list) and isinstance(part, int) and part < len(container):
        del container[part]
    elif isinstance(container, dict) and (key := _key(container, part)) is not None:
        del container[key]
    elif len(loc) > 1:
        _drop(data, loc[:-1])  # a required key is missing: its table goes


def _key(table: dict[Any, Any], part: int | str) -> Any:
    return next((key for key in table if str(key) == str(part)), None)


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
