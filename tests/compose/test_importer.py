from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
import yaml
from markdown_it import MarkdownIt

from dispatch.compose.briefs import parse_brief
from dispatch.compose.importer import (
    import_file,
    parse_plaintext,
    parse_read,
    suggest_topics,
)
from tests.helpers import FIXTURES, needs_seeds, seed_files

TODAY = date(2026, 11, 21)


def words(text: str) -> str:
    """Lower-case word tokens, so structure and punctuation do not matter, only content."""
    return " ".join(re.findall(r"\w+", text.lower()))


def sentences(text: str) -> list[str]:
    """Every sentence of the input, split on sentence-ending punctuation and line breaks."""
    pieces = re.split(r"(?<=[.!?”\"])\s+|\n+", text)
    return [words(p) for p in pieces if words(p)]


def markdown_text(markdown: str) -> str:
    """What a reader sees of the brief: front matter values and the rendered body text."""
    match = re.match(r"---\n(.*?)\n---\n(.*)", markdown, re.DOTALL)
    assert match, "output must start with front matter"
    front = yaml.safe_load(match[1])

    def values(node: object) -> list[str]:
        if isinstance(node, dict):
            return [v for value in node.values() for v in values(value)]
        if isinstance(node, list):
            return [v for item in node for v in values(item)]
        return [str(node)]

    tokens = MarkdownIt("commonmark").parse(match[2])
    body = [child.content for token in tokens if token.type == "inline"
            for child in token.children or [] if child.type == "text"]
    return words(" ".join(values(front) + body))


# Labels that the plain-text format defines as field markers: their content moves into a
# front-matter field (summary, reads), so the label word itself is structure, not a sentence.
FIELD_LABELS = re.compile(r"^(The Lede:|Good Reads:|Further reading:|Sources:)\s*", re.MULTILINE)


def assert_nothing_lost(text: str, markdown: str) -> None:
    text = FIELD_LABELS.sub("", text)
    output = markdown_text(markdown)
    missing = [s for s in sentences(text) if s not in output]
    assert not missing, f"sentences lost in import: {missing}"


@needs_seeds
@pytest.mark.parametrize("seed", seed_files(), ids=lambda p: p.name)
def test_seed_import_loses_no_sentence_and_is_a_valid_brief(seed, settings, tmp_path):
    text = seed.read_text(encoding="utf-8")
    brief, topics, markdown = import_file(seed, text, settings.topics, TODAY)
    assert_nothing_lost(text, markdown)
    assert topics, "seed texts are about East Asia: topics must be suggested"
    path = tmp_path / "b.md"
    if brief.caption:  # the importer leaves the photo URL to the editor
        markdown = markdown.replace("src: ''", "src: https://img.example.org/p.jpg")
    parsed = parse_brief(path, markdown, settings.topics)
    assert parsed.title == brief.title and parsed.summary == brief.summary


@needs_seeds
def test_seed_000_fields():
    seed = next(p for p in seed_files() if p.name.startswith("000"))
    brief = parse_plaintext(seed.read_text(encoding="utf-8"))
    assert brief.title.startswith("Japan and South Korea Mend Relations")
    assert brief.dropped == [brief.title]
    assert brief.summary.startswith("The leaders of Japan and South Korea further mended")
    assert brief.caption.startswith("Yoon Suk Yeol and Fumio Kishida")
    assert brief.credit == "Kang Min Seok, Office of the President, Republic of Korea"
    headings = [b.text for b in brief.blocks if b.kind == "heading"]
    assert headings == ["What We Know", "The Background", "Likely Outcomes"]
    bullets = [b.items for b in brief.blocks if b.kind == "bullets"]
    assert [len(items) for items in bullets] == [3, 2]
    quotes = [b for b in brief.blocks if b.kind == "quote"]
    assert [q.who for q in quotes] == [
        "Park Cheol-hee, adviser to South Korean president Yoon Suk Yeol",
        "Daniel Sneider, East Asia lecturer at Stanford University"]
    assert quotes[0].text.startswith("“I think") and quotes[0].text.endswith("fashion.”")
    assert len(brief.reads) == 7
    assert brief.reads[0] == {"title": "Kishida, Biden and Yoon to showcase unity on North "
                                       "Korea — and China — at G7", "publisher": "Japan Times"}
    assert brief.reads[-1]["title"].startswith("Omurice: A comfort food")
    assert brief.reads[-1]["publisher"] == "NBC"


@needs_seeds
def test_seed_004_fields():
    seed = next(p for p in seed_files() if p.name.startswith("004"))
    brief = parse_plaintext(seed.read_text(encoding="utf-8"))
    assert brief.title == "The Forces Behind South Korea's and Japan's Thaw"
    assert brief.dropped == [brief.title]
    # No "The Lede:" paragraph, so the deck is the summary.
    assert brief.summary.startswith("The U.S. and Cuba are slowly mending")
    assert brief.blocks[0].text.startswith("The bitter past")
    headings = [b.text for b in brief.blocks if b.kind == "heading"]
    assert headings == ["Tensions with China and Russia", "North Korea's nuclear arsenal",
                        "Global supply chains are vulnerable", "Fears about Taiwan are on the rise"]
    assert not brief.reads and brief.caption is None


def test_other_hands_fixture(settings):
    path = FIXTURES / "pasted" / "chip-alliance.txt"
    text = path.read_text(encoding="utf-8")
    brief, topics, markdown = import_file(path, text, settings.topics, TODAY)
    assert_nothing_lost(text, markdown)
    assert brief.title == "Chip Makers Bet on a Seoul–Tokyo Corridor"
    assert brief.summary.startswith("Korean memory makers")
    # With a lede, the deck opens the body.
    assert brief.blocks[0].kind == "para" and brief.blocks[0].text.startswith("Research sites")
    assert [b.text for b in brief.blocks if b.kind == "heading"] == [
        "Key points", "Context", "What to watch"]
    assert brief.credit == "Staff photographer, Example Wire"
    (quote,) = [b for b in brief.blocks if b.kind == "quote"]
    assert quote.who == "An industry analyst in Seoul"
    assert brief.reads == [
        {"title": "Chip 4 Alliance explained", "publisher": "Example Wire"},
        {"title": "The long road back to the white list", "url": "https://example.org/white-list"},
        {"title": "Memory markets in 2023", "publisher": "Example Quarterly"}]
    assert "technology" in topics


VARIANTS = """Ports Reopen After the Storm

Shipping lines say the backlog will clear within a week.

Where things stand
· Two terminals are running at full speed.
- The third needs new cranes, which are on order
  from a supplier in Busan.
– Insurance claims are still being counted.

Officials said the damage was "smaller than feared" at first.

‘We were lucky with the timing,’ — A harbour pilot

“Nobody expected the second surge.”
— Port authority spokesperson

Sources:
Harbour report, week 47 | Port Authority
https://example.org/storm-recap
- Storm season in numbers – Example Weather
"""


def test_other_bullets_quotes_and_reading_lists():
    brief = parse_plaintext(VARIANTS)
    (bullets,) = [b for b in brief.blocks if b.kind == "bullets"]
    assert bullets.items[1] == ("The third needs new cranes, which are on order from a "
                                "supplier in Busan.")
    assert len(bullets.items) == 3
    quotes = [b for b in brief.blocks if b.kind == "quote"]
    assert [q.who for q in quotes] == ["A harbour pilot", "Port authority spokesperson"]
    assert brief.reads == [
        {"title": "Harbour report, week 47", "publisher": "Port Authority"},
        {"title": "https://example.org/storm-recap", "url": "https://example.org/storm-recap"},
        {"title": "Storm season in numbers", "publisher": "Example Weather"}]
    _, _, markdown = import_file(Path("v.txt"), VARIANTS, {}, TODAY)
    assert_nothing_lost(VARIANTS, markdown)


def test_hard_wrapped_paragraphs_are_joined():
    text = ("Title Here\n\nThis deck paragraph was wrapped by an editor at about seventy\n"
            "columns, and it goes on over a second line.\n\nA body paragraph with *stars* "
            "and [brackets] and 1999. numbers that look like markup.\n")
    brief, _, markdown = import_file(Path("w.txt"), text, {}, TODAY)
    assert brief.summary == ("This deck paragraph was wrapped by an editor at about seventy "
                             "columns, and it goes on over a second line.")
    assert_nothing_lost(text, markdown)
    assert "*stars*" in markdown_text(markdown) or "stars" in markdown_text(markdown)
    html = MarkdownIt("commonmark").render(markdown.split("---\n", 2)[2])
    assert "<em>" not in html and "<a " not in html and "<ol" not in html


def test_parse_read_forms():
    assert parse_read("• A title (Pub)") == {"title": "A title", "publisher": "Pub"}
    assert parse_read("A title - Pub https://x.example/a") == {
        "title": "A title", "publisher": "Pub", "url": "https://x.example/a"}
    assert parse_read("Just a title") == {"title": "Just a title"}


def test_suggest_topics(settings):
    text = "Missile drills near Taiwan as Japan and China trade warnings. Nuclear talks stall."
    assert set(suggest_topics(text, settings.topics)[:2]) == {"security", "east-asia"}
    assert suggest_topics("A recipe for soup.", settings.topics) == []


@pytest.mark.parametrize("text, message", [
    ("", "empty file"),
    ("\n  \n", "empty file"),
    ("Only a title\n", "only a title"),
])
def test_unusable_input(text, message):
    from dispatch.errors import ContentError
    with pytest.raises(ContentError, match=message):
        parse_plaintext(text, "x.txt")
