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
BRIEF_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,150}\.md$")


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
    """A brief's file name from outside: a plain name in the issue folder, nothing more."""
    if not BRIEF_NAME.match(name):
        raise DispatchError(Problem(name, "a brief's name is letters, digits, '.', '_' or '-', "
                                          "ending in .md"))
    return name


def to_form(text: str) -> BriefForm:
    """The form for a brief's text; a file whose front matter cannot be read opens with all
    of it in the YAML field, so nothing is lost."""
    match = FRONT_MATTER.match(text)
    if not match:
        return BriefForm(body=text)
    front, body = match[1] or "", text[match.end():].lstrip("\n")
    try:
        data = yaml.safe_load(front) or {}
    except yaml.YAMLError:
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
        try:
            extra = yaml.safe_load(form.extra)
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
    return parse_brief(path, text, topics)


def import_pasted(text: str, topics: Mapping[str, Any], folder: Path, today: date
                  ) -> tuple[str, str]:
    """Pasted plain text as a brief for `folder`: its file name and Markdown (written by the
    caller, which refuses a name already taken)."""
    if not text.strip():
        raise ContentError(Problem("pasted text", "nothing was pasted"))
    brief, _, markdown = import_file(folder / "pasted.txt", text, topics, today)
    return output_name(brief), markdown
