from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from dispatch.compose.briefs import load_brief, parse_brief, slugify
from dispatch.errors import ContentError

TOPICS = {"east-asia": None, "security": None}

GOOD = """---
title: A title
topics: [east-asia]
date: 2026-11-20
summary: One paragraph.
image:
  src: https://img.example.org/a.jpg
  alt: Two leaders shake hands
  caption: At the summit
  credit: Staff
reads:
  - title: Only a title
  - title: With all
    publisher: Wire
    url: https://example.org/x
---

## Section

Body text.
"""


def parse(text: str) -> object:
    return parse_brief(Path("b.md"), text, TOPICS)


def problems(text: str) -> list[str]:
    with pytest.raises(ContentError) as info:
        parse(text)
    return [str(p) for p in info.value.problems]


def test_good_brief_parses_every_field():
    brief = parse(GOOD)
    assert brief.title == "A title"
    assert brief.topics == ("east-asia",)
    assert brief.date == date(2026, 11, 20)
    assert brief.image.alt == "Two leaders shake hands" and brief.image.credit == "Staff"
    assert [r.title for r in brief.reads] == ["Only a title", "With all"]
    assert brief.reads[1].url == "https://example.org/x" and brief.reads[0].publisher is None
    assert brief.body.startswith("## Section")
    assert brief.body_line == 17


@pytest.mark.parametrize("old, new, expected", [
    ("title: A title\n", "", "b.md:1: title: required key is missing"),
    ("topics: [east-asia]", "topics: [east-asia, moon]", "b.md:3: topics[1]: unknown topic 'moon'"),
    ("topics: [east-asia]", "topics: []", "b.md:3: topics: no topics yet"),
    ("date: 2026-11-20", "date: next tuesday", "b.md:4: date: 'next tuesday' is not a date"),
    ("  - title: Only a title\n", "  - publisher: Nobody\n",
     "b.md:12: reads[0].title: required key is missing"),
    ("summary: One paragraph.", "summary: [a: b", "b.md:6: invalid YAML in front matter"),
    ("  src: https://img.example.org/a.jpg\n", "", "b.md:6: image.src: required key is missing"),
    ("  alt: Two leaders shake hands\n", "", "b.md:6: image.alt: required key is missing"),
    ("date: 2026-11-20", "date: 2026-11-20\nsubtitle: x",
     "b.md:5: subtitle: unknown key (did you mean 'title'?)"),
    ("    url: https://example.org/x", "    url: example.org/x",
     "b.md:15: reads[1].url: expected an absolute http(s) URL"),
])
def test_malformed_briefs_are_located(old, new, expected):
    assert old in GOOD
    found = problems(GOOD.replace(old, new))
    assert any(expected in p for p in found), found


def test_empty_file_and_missing_front_matter():
    assert problems("") == [("b.md:1: empty file: a brief needs YAML front matter "
                             "(--- title: … ---) and a body")]
    assert "missing front matter" in problems("# Just markdown\n")[0]


def test_all_problems_reported_together():
    text = GOOD.replace("title: A title\n", "").replace("[east-asia]", "[moon]")
    assert len(problems(text)) == 2


def test_load_brief_reads_bom_and_crlf(tmp_path):
    path = tmp_path / "x.md"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.replace("\n", "\r\n").encode())
    assert load_brief(path, TOPICS).title == "A title"


def test_slugify():
    assert slugify("Seoul–Tokyo: a “Corridor”!") == "seoul-tokyo-a-corridor"
    assert slugify("¿¿") == "brief"


def test_check_flags_bad_brief_without_traceback(project):
    brief = project / "issues" / "2026-11-27-thaw" / "03-missile-warnings.md"
    brief.write_text(brief.read_text().replace("[security, east-asia]", "[security, space]"))
    result = subprocess.run([sys.executable, "-m", "dispatch", "check"], cwd=project,
                            check=False, capture_output=True, text=True)
    assert result.returncode == 1
    assert ("issues/2026-11-27-thaw/03-missile-warnings.md:3: topics[1]: unknown topic 'space'"
            in result.stdout)
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("old, new, expected", [
    # PyYAML builds these values itself and raised a bare ValueError (a traceback in check).
    ("date: 2026-11-20", "date: 2026-02-30",
     "b.md:4: date: '2026-02-30' is not a valid date (day is out of range for month)"),
    ("date: 2026-11-20", "date: 2026-02-30T10:00:00", "b.md:4: date: '2026-02-30T10:00:00' is "
                                                      "not a valid date"),
    ("date: 2026-11-20", "date: 2026-11-20 10:00:00+25:00", "b.md:4: date: '2026-11-20 "
                                                            "10:00:00+25:00' is not a valid"),
    ("    publisher: Wire", "    publisher: 0x_",
     "b.md:14: reads[1].publisher: '0x_' is not a valid integer"),
    # Values YAML reads as something other than text.
    ("title: A title", "title: 2026-11-20",
     "b.md:2: title: expected non-empty text, got a date (put it in quotes"),
    ("title: A title", "title: 2026-11-20 10:00:00",
     "b.md:2: title: expected non-empty text, got a date-time"),
    ("summary: One paragraph.", "summary: [one, two]",
     "b.md:5: summary: expected non-empty text, got a list"),
    ("summary: One paragraph.", "summary: {a: b}",
     "b.md:5: summary: expected non-empty text, got a table of keys"),
    ("title: A title", "title: yes", "b.md:2: title: expected non-empty text, got true"),
    # Control characters, which would reach a header or an inbox preview.
    ("title: A title", r'title: "A\a title"', "b.md:2: title: contains the control character "
                                              "U+0007 at position 2"),
    ("title: A title", r'title: "\e[31mA title"', "title: contains the control character U+001B"),
    ("summary: One paragraph.", r'summary: "One\x85paragraph."',
     "summary: contains the control character U+0085"),
    ("summary: One paragraph.", r'summary: "One\u2028paragraph."',
     "summary: contains the control character U+2028"),
])
def test_odd_front_matter_values_are_located(old, new, expected):
    assert old in GOOD
    found = problems(GOOD.replace(old, new))
    assert any(expected in p for p in found), found


def test_a_number_is_a_title_and_line_breaks_in_text_are_folded():
    assert parse(GOOD.replace("title: A title", "title: 2023")).title == "2023"
    # A CR LF inside a quoted title folds to a space like any line break: nothing to inject.
    brief = parse(GOOD.replace("title: A title", r'title: "A\r\nBcc: x"'))
    assert brief.title == "A Bcc: x"


def test_mistyped_topics_get_a_suggestion():
    found = problems(GOOD.replace("[east-asia]", "[east-asai]"))
    assert found == ["b.md:3: topics[0]: unknown topic 'east-asai' (did you mean 'east-asia'?) "
                     "(declared in config.toml: east-asia, security)"]


def test_a_key_given_twice_is_located():
    found = problems(GOOD.replace("date: 2026-11-20", "date: 2026-11-20\ntitle: Again"))
    assert found == ["b.md:5: title: this key is given twice"]


@pytest.mark.parametrize("front, expected", [
    # Nested past what the composer's recursion survives: refused before it recurses.
    ("title: " + "[" * 3000 + "]" * 3000, "b.md:2: invalid YAML in front matter: nested more "
                                          "than 12 levels deep"),
    ("title: x\nx:" + "".join(f"\n{'  ' * i}- " for i in range(3000)) + "y",
     "invalid YAML in front matter: nested more than 12 levels deep"),
    # Aliases expand (a billion laughs); a brief needs none.
    ("a: &a [x, x]\nb: [*a, *a]", "b.md:3: invalid YAML in front matter: aliases (*name) are "
                                    "not allowed in a brief"),
    ("- a list", "b.md:2: front matter must be YAML keys and values"),
    ("just text", "b.md:2: front matter must be YAML keys and values"),
])
def test_hostile_front_matter_is_refused_with_a_located_error(front, expected):
    found = problems(f"---\n{front}\n---\nBody.\n")
    assert len(found) == 1 and expected in found[0], found


def test_huge_values_are_refused_by_their_length():
    found = problems(GOOD.replace("title: A title", "title: " + "A" * 1_000_000)
                     .replace("[east-asia]", "[" + ", ".join(["east-asia"] * 500) + "]"))
    assert found == ["b.md:2: title: expected at most 500 characters, got 1000000",
                     "b.md:3: topics: expected at most 100 entries, got 500"]


def test_a_draft_keeps_what_is_usable():
    from dispatch.compose.briefs import parse_draft
    text = (GOOD.replace("[east-asia]", "[east-asia, moon]").replace("    url: https://example"
            ".org/x", "    url: nowhere").replace("  src: https://img.example.org/a.jpg\n", ""))
    brief, found = parse_draft(Path("b.md"), text, TOPICS)
    assert brief is not None and len(found) == 3
    assert brief.topics == ("east-asia",) and brief.image is None
    assert brief.reads[1].title == "With all" and brief.reads[1].url is None
