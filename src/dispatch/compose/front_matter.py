"""A brief's YAML front matter as a model on config's base (config/base.py): read with every
value's line known, validated with config.toml's `key.path: message` errors.

YAML is read in two steps: composing (nodes with their lines; nesting and aliases bounded,
so hostile input is refused before anything recursive runs), then building the values.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import yaml
from pydantic import ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import core_schema

from dispatch.config.base import Table
from dispatch.config.fields import Loc, fail
from dispatch.config.suggest import did_you_mean
from dispatch.text import header_problem

MAX_DEPTH = 12  # a brief needs 4 (reads → an entry → its url); YAML's composer recurses
MAX_ITEMS = 100  # topics or reads


@dataclass(frozen=True)
class Unreadable:
    """A scalar YAML recognised by its form but could not build (2026-02-30, 0x_)."""

    message: str


_TAG_KINDS = {"tag:yaml.org,2002:timestamp": "date", "tag:yaml.org,2002:int": "integer",
              "tag:yaml.org,2002:float": "number"}


class _Loader(yaml.SafeLoader):
    """SafeLoader, bounded: no aliases (nothing in a brief needs one, and they expand), no
    nesting past MAX_DEPTH, and a value it cannot build kept as Unreadable at its place."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        mark: Any = event.start_mark  # PyYAML's C and Python marks alike
        if isinstance(event, yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in "
                                              "a brief", mark)
        if self._depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} "
                                              "levels deep", mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except ValueError as exc:
            kind = _TAG_KINDS.get(node.tag, node.tag)
            return Unreadable(f"{node.value!r} is not a valid {kind} ({exc})")


class Document:
    """The front matter's values and the file line of each (1-based), with the problems
    reading found (duplicate keys)."""

    def __init__(self, front: str, first_line: int) -> None:
        loader = _Loader(front)
        try:
            node = loader.get_single_node()
            self.data: Any = loader.construct_document(node) if node is not None else {}
        finally:
            loader.dispose()
        self.lines: dict[Loc, int] = {}
        self.problems: list[tuple[Loc, str]] = []
        if node is not None:
            self._walk(node, (), first_line)
        self.lines[()] = first_line - 1  # a missing top-level key: the opening ---

    def _walk(self, node: yaml.Node, loc: Loc, first: int) -> None:
        self.lines[loc] = first + node.start_mark.line
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, (*loc, i), first)
        elif isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                if key in seen:
                    self.problems.append(((*loc, key), "this key is given twice"))
                seen.add(key)
                self._walk(value_node, (*loc, key), first)
                self.lines[(*loc, key)] = first + key_node.start_mark.line

    def line(self, loc: tuple[int | str, ...]) -> int:
        """The line of `loc`, or of its nearest ancestor present (a missing key's table)."""
        while loc not in self.lines:
            loc = loc[:-1]
        return self.lines[loc]


def kind(value: Any) -> str:
    """What YAML made of a value, as a message names it."""
    if isinstance(value, dt.datetime):
        return "a date-time (put it in quotes to mean text)"
    if isinstance(value, dt.date):
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


def as_text(value: Any) -> str | None:
    """A non-empty string value, with numbers accepted as text (YAML reads `2023` as an int);
    line breaks inside fold to spaces."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str) and value.strip():
        return " ".join(value.split()) if "\n" in value.strip() else value.strip()
    return None


@dataclass(frozen=True)
class Words:
    """Non-empty text of at most `limit` characters; `header`: one line of printable text,
    for values that may become a subject line or an inbox preview. `fold`: line breaks fold
    to spaces (YAML's multi-line text); without it a line break is refused as it stands."""

    limit: int
    header: bool = False
    fold: bool = True

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(self._check)

    def _check(self, value: Any) -> str:
        if self.header and not self.fold and isinstance(value, str) and (
                problem := header_problem(value)):
            raise fail(problem)  # before trimming, which takes U+0085 and the like away
        text = as_text(value) if self.fold or not isinstance(value, str) else (
            value.strip() or None)
        if text is None:
            raise fail(f"expected non-empty text, got {kind(value)}")
        if len(text) > self.limit:
            raise fail(f"expected at most {self.limit} characters, got {len(text)}")
        if self.header and (problem := header_problem(text)):
            raise fail(problem)
        return text


@dataclass(frozen=True)
class Link:
    """A URL matching `pattern` (`what` names it)."""

    pattern: str
    what: str

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(self._check)

    def _check(self, value: Any) -> str:
        text = as_text(value)
        if text is None or not re.match(self.pattern, text) or len(text) > 2000:
            raise fail(f"expected {self.what}, got {text!r}" if text else
                       f"expected {self.what}, got {kind(value)}")
        return text


class TopicKey:
    """A topic config.toml declares (validation context "topics")."""

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(_topic)


def _topic(value: Any, info: ValidationInfo) -> str:
    known: Mapping[str, Any] = (info.context or {}).get("topics", {})
    if not isinstance(value, str) or value not in known:
        hint = did_you_mean(value, known) if isinstance(value, str) else ""
        raise fail(f"unknown topic {value!r}{hint} (declared in config.toml: "
                   f"{', '.join(known) or 'none'})")
    return value


class _Part(Table):
    model_config = ConfigDict(strict=False)  # every leaf is one of the validators above


class ImageMatter(_Part):
    src: Annotated[str, Link(r"^https://\S+$", "an https:// URL (the photo's)")]
    alt: Annotated[str, Words(1000)]  # required: describes the photo to who cannot see it
    caption: Annotated[str, Words(1000)] | None = None
    credit: Annotated[str, Words(300)] | None = None


class ReadMatter(_Part):
    title: Annotated[str, Words(500)]
    publisher: Annotated[str, Words(300)] | None = None
    url: Annotated[str, Link(r"^https?://\S+$", "an absolute http(s) URL")] | None = None


def _listed(value: Any) -> Any:
    if isinstance(value, list):
        if len(value) > MAX_ITEMS:
            raise fail(f"expected at most {MAX_ITEMS} entries, got {len(value)}")
        return tuple(value)
    return value


class FrontMatter(_Part):
    """A brief's keys. Validated with context {"topics": config.toml's topics}; with
    "draft": True, a brief without topics passes (its problem is reported by the first pass)."""

    title: Annotated[str, Words(500, header=True)]
    summary: Annotated[str, Words(5000, header=True)]
    topics: tuple[Annotated[str, TopicKey()], ...] = Field(default=None, validate_default=True)
    date: dt.date | None = None
    author: Annotated[str, Words(300, header=True)] | None = None
    image: ImageMatter | None = None
    reads: tuple[ReadMatter, ...] = ()

    @field_validator("topics", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any, info: ValidationInfo) -> Any:
        known = (info.context or {}).get("topics", {})
        if value is None:
            if (info.context or {}).get("draft"):
                return ()
            raise fail(f"required key is missing (keys from config.toml: {', '.join(known)})")
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise fail("expected a list of topic keys")
        if not value and not (info.context or {}).get("draft"):
            raise fail(f"no topics yet: add at least one of {', '.join(known)}")
        return _listed(value)

    @field_validator("topics")
    @classmethod
    def _once(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(value))

    @field_validator("date", mode="plain")
    @classmethod
    def _date(cls, value: Any) -> dt.date:
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(value.strip())
        except (AttributeError, ValueError):
            raise fail(f"{value!r} is not a date (use YYYY-MM-DD)") from None

    @field_validator("reads", mode="before")
    @classmethod
    def _titles(cls, value: Any) -> Any:
        if not isinstance(value, list):
            raise fail("expected a list of {title, publisher, url}")
        return _listed([{"title": v} if isinstance(v, str) else v for v in value])
