"""The console's brief editor: a brief's text as form fields (the simple front matter keys,
the rest as YAML, the Markdown body) and back, the hash that detects a file changed since it
was opened, and pasted plain text written as a brief (the same importer as `dispatch brief
import`). Saving is checked by briefs.parse_brief before anything is written."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from dispatch.compose.briefs import FRONT_MATTER, parse_brief
from dispatch.compose.importer import import_file, output_name
from dispatch.compose.models import Brief
from dispatch.errors import ContentError, DispatchError, Problem

FORM_KEYS = ("title", "date", "summary", "author")  # one text field each; topics: checkboxes
BRIEF_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*\.md")  # whole name: fullmatch, never $
NAME_MAX = 150
# Names Windows gives to devices in every folder: a file so named cannot be checked out there.
RESERVED = frozenset({"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)),
                      *(f"lpt{i}" for i in range(10))})
# A YAML document nested deeper than this is no brief; deeper, the parser may run out of
# stack (RecursionError) before it can say where.
NESTING_MAX = 50


@dataclass
class BriefForm:
    title: str = ""
    topics: list[str] = field(default_factory=list)
    date: str = ""
    summary: str = ""
    author: str = ""
    extra: str = ""  # the other front matter keys (image, reads) as YAML
    body: str = ""


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_name(name: str) -> str:
    """A brief's file name from outside: a plain name in the issue folder, nothing more
    (lower-case letters, digits and single hyphens, then .md; no device name of Windows)."""
    if len(name) > NAME_MAX or not BRIEF_NAME.fullmatch(name):
        raise DispatchError(Problem(name[:NAME_MAX].encode("unicode_escape").decode(),
                                    "a brief's name is lower-case letters, digits and "
                                    "hyphens, ending in .md"))
    if name.removesuffix(".md") in RESERVED:
        raise DispatchError(Problem(name, "a name Windows keeps for a device; choose another"))
    return name


def check_nesting(label: str, text: str) -> None:
    """ContentError, located at the line, when brackets or indentation in `text` nest deeper
    than NESTING_MAX: checked before any YAML parser sees it."""
    depth = 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip(" -")
        if (len(line) - len(stripped)) // 2 > NESTING_MAX:
            raise ContentError(Problem(label, f"nested more than {NESTING_MAX} levels deep",
                                       number))
        for char in line:
            depth += (char in "[{") - (char in "]}")
            if depth > NESTING_MAX:
                raise ContentError(Problem(label, f"nested more than {NESTING_MAX} levels "
                                                  "deep", number))


def to_form(text: str) -> BriefForm:
    """The form for a brief's text; a file whose front matter cannot be read opens with all
    of it in the YAML field, so nothing is lost."""
    match = FRONT_MATTER.match(text)
    if not match:
        return BriefForm(body=text)
    front, body = match[1] or "", text[match.end():].lstrip("\n")
    try:
        check_nesting("front matter", front)
        data = yaml.safe_load(front) or {}
    except (yaml.YAMLError, ContentError, RecursionError):
        data = None
    if not isinstance(data, dict):
        return BriefForm(extra=front, body=body)
    form = BriefForm(body=body)
    for key in FORM_KEYS:
        value = data.pop(key, None)
        setattr(form, key, "" if value is None else str(value))
    topics = data.pop("topics", [])
    form.topics = [str(t) for t in topics] if isinstance(topics, list) else [str(topics)]
    form.extra = yaml.safe_dump(data, allow_unicode=True, sort_keys=False) if data else ""
    return form


def to_text(form: BriefForm) -> str:
    """The brief's text for a filled-in form; ContentError when the YAML field is not YAML
    keys (the line is the field's own)."""
    data: dict[str, Any] = {}
    if form.title.strip():
        data["title"] = form.title.strip()
    data["topics"] = list(form.topics)
    for key in ("date", "summary", "author"):
        value: Any = getattr(form, key).strip()
        if key == "date" and value:
            try:  # a real YAML date, as written by hand; anything else is left to the check
                value = date.fromisoformat(value)
            except ValueError:
                pass
        if value:
            data[key] = value
    if form.extra.strip():
        check_nesting("more front matter", form.extra)
        try:
            extra = yaml.safe_load(form.extra)
        except RecursionError:
            raise ContentError(Problem("more front matter", "nested too deeply to read")
                               ) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise ContentError(Problem("more front matter", f"not YAML: "
                                       f"{getattr(exc, 'problem', None) or exc}",
                                       mark.line + 1 if mark else None)) from None
        if not isinstance(extra, dict):
            raise ContentError(Problem("more front matter", "expected YAML keys and values"))
        clash = sorted(set(map(str, extra)) & {"topics", *FORM_KEYS})
        if clash:
            raise ContentError(Problem("more front matter", f"{', '.join(clash)}: use the "
                                                            "field above instead"))
        data.update(extra)
    front = yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=100)
    body = form.body.replace("\r\n", "\n").strip("\n")
    return f"---\n{front}---\n\n{body}\n"


def checked_brief(path: Path, text: str, topics: Mapping[str, Any]) -> Brief:
    """The brief a save would write, parsed: ContentError with located problems if not."""
    match = FRONT_MATTER.match(text)
    if match:
        check_nesting(path.name, match[1] or "")
    try:
        return parse_brief(path, text, topics)
    except RecursionError:  # a nesting check_nesting did not see (YAML has other ways)
        raise ContentError(Problem(path.name, "the front matter is nested too deeply to "
                                              "read")) from None


def import_pasted(text: str, topics: Mapping[str, Any], folder: Path, today: date
                  ) -> tuple[str, str]:
    """Pasted plain text as a brief for `folder`: its file name and Markdown (written by the
    caller, which refuses a name already taken)."""
    if not text.strip():
        raise ContentError(Problem("pasted text", "nothing was pasted"))
    brief, _, markdown = import_file(folder / "pasted.txt", text, topics, today)
    name = output_name(brief)
    if name.removesuffix(".md") in RESERVED:
        name = f"brief-{name}"
    return check_name(name), markdown
