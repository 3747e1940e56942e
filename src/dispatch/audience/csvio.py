"""Subscribers as CSV: reading an import file into checked rows (every rejected row with its
line and reason) and writing the export. No SQL: the store takes and gives the rows."""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Self, TextIO

from dispatch.audience.addresses import name_problem, normalize
from dispatch.clock import is_zone
from dispatch.config.topics import unknown_topics
from dispatch.errors import ContentError, Problem, display_path

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


@dataclass(frozen=True)
class Rejected:
    line: int
    email: str
    reason: str


def iter_csv(lines: Iterable[str], known_topics: Mapping[str, object],
             source: str = "import.csv") -> Iterator[Row | Rejected]:
    """Check each row as it is read (constant memory for any file size): a Row, or the row
    Rejected with its line and reason. Duplicate addresses are not merged here (read_csv
    does it in memory, the store's import as it goes). `lines`: a text stream opened with
    newline="" (or any iterable of lines)."""
    reader = csv.reader(lines)
    header = [h.strip().lower().lstrip("\ufeff") for h in next(reader, [])]
    if "email" not in header:
        raise ContentError(Problem(source, "the first row must be a header naming the columns "
                                           "email, name, topics, timezone", 1))
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise ContentError(Problem(source, f"unknown column(s) {', '.join(unknown)} (expected "
                                           "email, name, topics, timezone)", 1))
    # A missing column reads as empty cells; a repeated one as its last cell (DictReader's way).
    at = {name: header_index for header_index, name in enumerate(header)}
    width = len(header)
    columns = tuple(at.get(name, width) for name in COLUMNS)
    start_line = 2
    for record in reader:
        line, start_line = start_line, reader.line_num + 1
        if not record:  # a blank line is no row
            continue
        if len(record) > width:
            email = record[columns[0]]
            yield Rejected(line, email, "more fields than columns")
            continue
        cells = [*record, *[""] * (width + 1 - len(record))]
        email, name, topics, zone = (cells[i] for i in columns)
        yield _check(line, email, name, topics, zone, known_topics)


def _cell(value: str) -> str:
    value = value.strip()
    return from_spreadsheet_safe(value) if value.startswith("'") else value


def _check(line: int, email: str, name: str, topics_cell: str, zone: str,
           known_topics: Mapping[str, object]) -> Row | Rejected:
    email, name, topics_cell, zone = _cell(email), _cell(name), _cell(topics_cell), _cell(zone)
    if not email:
        return Rejected(line, email, "empty address")
    cells = email + name + topics_cell + zone  # one search for the four cells
    if "\r" in cells or "\n" in cells:
        return Rejected(line, email.splitlines()[0] if email else "",
                        "line break inside a field (header injection attempt)")
    try:
        key = normalize(email)
    except ValueError as exc:
        return Rejected(line, email, f"invalid address: {exc}")
    topics = ([t.strip() for t in topics_cell.replace("|", ";").split(";") if t.strip()]
              if topics_cell else [])
    bad = unknown_topics(topics, known_topics) if topics else None
    if bad:
        return Rejected(line, email, f"unknown topic(s) {', '.join(bad)}")
    if zone and not is_zone(zone):
        return Rejected(line, email, f"unknown time zone {zone!r}")
    problem = name_problem(name) if name else None
    if problem:
        return Rejected(line, email, problem)
    return Row(line=line, email=email, key=key, name=name or None, topics=topics,
               timezone=zone or None)


def merge_duplicate(first: Row, later: Row) -> str:
    """Fold a later row for the same address into the first: topics added, name and time
    zone kept from the first row that has one. The later row's rejection reason."""
    first.topics = list(dict.fromkeys(first.topics + later.topics))
    first.name = first.name or later.name
    first.timezone = first.timezone or later.timezone
    return f"duplicate of line {first.line} (topics merged)"


def read_csv(text: str, known_topics: Mapping[str, object], source: str = "import.csv"
             ) -> tuple[list[Row], list[tuple[int, str, str]], int]:
    """Validate every row of a text in memory: (good rows merged by address, rejected rows,
    rows read). The command line streams files through iter_csv instead."""
    rows: dict[str, Row] = {}
    rejected: list[tuple[int, str, str]] = []
    read = 0
    for item in iter_csv(io.StringIO(text.lstrip("\ufeff"), newline=""), known_topics, source):
        read += 1
        if isinstance(item, Rejected):
            rejected.append((item.line, item.email, item.reason))
        elif item.key in rows:
            rejected.append((item.line, item.email, merge_duplicate(rows[item.key], item)))
        else:
            rows[item.key] = item
    return list(rows.values()), rejected, read


class CsvFile:
    """A CSV file read line by line for iter_csv, in constant memory: UTF-8 (a BOM
    tolerated), any line ending; a located error when it cannot be read or is not UTF-8
    (with the line). `bytes_read` follows the progress through the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.source = display_path(path)
        self.bytes_read = 0
        self.size = 0

    def __enter__(self) -> Self:
        try:
            self._handle = self.path.open("rb")
        except FileNotFoundError:
            raise ContentError(Problem(self.source, "file not found")) from None
        except IsADirectoryError:
            raise ContentError(Problem(self.source, "is a folder, expected a file")) from None
        self.size = os.fstat(self._handle.fileno()).st_size
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()

    def __iter__(self) -> Iterator[str]:
        for number, raw in enumerate(self._handle, 1):
            self.bytes_read += len(raw)
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise ContentError(Problem(self.source, "not UTF-8 text", number)) from None
            # An old Mac line ending (a lone CR) ends a line too.
            yield from _LONE_CR.split(line) if "\r" in line else (line,)


_LONE_CR = re.compile(r"(?<=\r)(?!\n)(?=.)", re.S)


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
