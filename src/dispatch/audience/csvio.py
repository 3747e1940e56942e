"""Subscribers as CSV: reading an import file into checked rows (every rejected row with its
line and reason) and writing the export. No SQL: the store takes and gives the rows."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, TextIO

from dispatch.audience.addresses import name_problem, normalize
from dispatch.clock import is_zone
from dispatch.config.topics import unknown_topics
from dispatch.errors import ContentError, Problem

COLUMNS = ("email", "name", "topics", "timezone")
# A cell starting with one of these is a formula to a spreadsheet (=HYPERLINK(…) from a
# sign-up form would run when the export is opened), so the export writes it after a "'",
# which spreadsheets show as text. Quotes already leading such a cell get one more, so that
# the import, which drops one "'" before these, gives back exactly what was exported.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _is_quoted_formula(cell: str) -> bool:
    return cell.lstrip("'").startswith(FORMULA_START)


def spreadsheet_safe(cell: str) -> str:
    """A cell as the export writes it: "'" before anything a spreadsheet would evaluate."""
    return "'" + cell if _is_quoted_formula(cell) else cell


def from_spreadsheet_safe(cell: str) -> str:
    """The inverse of spreadsheet_safe, applied to every imported cell: "'-Ana" is "-Ana"."""
    return cell[1:] if cell.startswith("'") and _is_quoted_formula(cell) else cell


@dataclass
class Row:
    line: int
    email: str
    key: str
    name: str | None
    topics: list[str]
    timezone: str | None


def read_csv(text: str, known_topics: Mapping[str, object], source: str = "import.csv"
             ) -> tuple[list[Row], list[tuple[int, str, str]], int]:
    """Validate every row: (good rows merged by address, rejected rows, rows read)."""
    text = text.lstrip("\ufeff")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if "email" not in header:
        raise ContentError(Problem(source, "the first row must be a header naming the columns "
                                           "email, name, topics, timezone", 1))
    unknown = [h for h in header if h not in ("email", "name", "topics", "timezone")]
    if unknown:
        raise ContentError(Problem(source, f"unknown column(s) {', '.join(unknown)} (expected "
                                           "email, name, topics, timezone)", 1))
    reader.fieldnames = header
    rows: dict[str, Row] = {}
    rejected: list[tuple[int, str, str]] = []
    read = 0
    start_line = 2
    for record in reader:
        line, start_line = start_line, reader.line_num + 1
        read += 1
        if None in record:
            rejected.append((line, str(record.get("email") or ""), "more fields than columns"))
            continue
        values = {k: from_spreadsheet_safe((v or "").strip()) for k, v in record.items()}
        email = values.get("email", "")
        if not email:
            rejected.append((line, email, "empty address"))
            continue
        if any(c in v for v in values.values() for c in "\r\n"):
            rejected.append((line, email.splitlines()[0] if email else "",
                             "line break inside a field (header injection attempt)"))
            continue
        try:
            key = normalize(email)
        except ValueError as exc:
            rejected.append((line, email, f"invalid address: {exc}"))
            continue
        topics = [t.strip() for t in values.get("topics", "").replace("|", ";").split(";")
                  if t.strip()]
        bad = unknown_topics(topics, known_topics)
        if bad:
            rejected.append((line, email, f"unknown topic(s) {', '.join(bad)}"))
            continue
        zone = values.get("timezone") or None
        if zone and not is_zone(zone):
            rejected.append((line, email, f"unknown time zone {zone!r}"))
            continue
        name = values.get("name") or None
        problem = name_problem(name) if name else None
        if problem:
            rejected.append((line, email, problem))
            continue
        if key in rows:
            first = rows[key]
            first.topics = list(dict.fromkeys(first.topics + topics))
            first.name = first.name or name
            first.timezone = first.timezone or zone
            rejected.append((line, email, f"duplicate of line {first.line} (topics merged)"))
            continue
        rows[key] = Row(line=line, email=email, key=key, name=name, topics=topics,
                        timezone=zone)
    return list(rows.values()), rejected, read


class Person(Protocol):
    """What an export row needs of a subscriber (store/subscribers.Subscriber has it)."""

    @property
    def email(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def topics(self) -> tuple[str, ...]: ...
    @property
    def timezone(self) -> str | None: ...
    @property
    def status(self) -> str: ...


def write_csv(out: TextIO, people: Iterable[Person]) -> int:
    """Write people in the import format plus their status; how many were written."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*COLUMNS, "status"])
    written = 0
    for p in people:
        writer.writerow([spreadsheet_safe(cell) for cell in (
            p.email, p.name or "", ";".join(p.topics), p.timezone or "", p.status)])
        written += 1
    return written
