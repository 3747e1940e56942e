from __future__ import annotations

import re
from datetime import UTC, date, datetime
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


# ---- Issue 18: shapes a newcomer's pasted briefs took -------------------------------------

GLUED = """\
Harbor Authority Sets New Rules for Night Ferries

Harbor Authority Sets New Rules for Night Ferries
A ferry docks at Pier 9 after sunset on Tuesday (Photo: Lena Ito)

Night ferries across the bay must carry a second pilot from January, the harbor authority said.

The rules follow two collisions last winter.
"""


def test_short_caption_after_a_repeated_title_is_not_glued_to_it():
    caption = "A ferry docks at Pier 9 after sunset on Tuesday"
    assert len(caption + " (Photo: Lena Ito)") <= 80
    brief = parse_plaintext(GLUED)
    assert brief.title == "Harbor Authority Sets New Rules for Night Ferries"
    assert brief.caption == caption
    assert brief.credit == "Photo: Lena Ito"
    assert brief.dropped == [brief.title]
    _, _, markdown = import_file(Path("g.txt"), GLUED, {}, TODAY)
    image = yaml.safe_load(markdown.split("---\n")[1])["image"]
    assert "Harbor Authority" not in image["alt"] + image["caption"]
    assert_nothing_lost(GLUED.replace(brief.title, "", 1), markdown)


def test_caption_on_the_title_line_is_split_from_it():
    text = GLUED.replace("Night Ferries\nA ferry", "Night Ferries A ferry")
    brief = parse_plaintext(text)
    assert brief.caption == "A ferry docks at Pier 9 after sunset on Tuesday"


NUMBERED = """\
Three Steps for Night Crossings

Operators have until spring to adapt, the authority said.

What Changes:

1. Every crossing after 9 p.m. needs two licensed pilots.
2) Operators must file a night plan each week.
3. Fines rise to $5,000 per missed plan,
   the authority said.

- A bullet list still reads as bullets.
- And stays apart from the numbered one.

1999. A year at the start of a line is not a list when it is long prose like this one.
"""


def test_numbered_lists_become_ordered_lists():
    brief = parse_plaintext(NUMBERED)
    (numbered,) = [b for b in brief.blocks if b.kind == "numbered"]
    assert numbered.items == ["Every crossing after 9 p.m. needs two licensed pilots.",
                              "Operators must file a night plan each week.",
                              "Fines rise to $5,000 per missed plan, the authority said."]
    _, _, markdown = import_file(Path("n.txt"), NUMBERED, {}, TODAY)
    # The item numbers are list markers now, not words of the text.
    assert_nothing_lost(re.sub(r"^\s*\d{1,3}[.)]\s+", "", NUMBERED, flags=re.MULTILINE),
                        markdown)
    html = MarkdownIt("commonmark").render(markdown.split("---\n", 2)[2])
    assert html.count("<ol>") == 1 and html.count("<li>") == 5
    assert "<ul>" in html


def test_a_numbered_list_keeps_its_first_number():
    text = "Title Line\n\nA deck paragraph here.\n\n4. Fourth point.\n5. Fifth point.\n"
    _, _, markdown = import_file(Path("n.txt"), text, {}, TODAY)
    assert "4. Fourth point.\n5. Fifth point." in markdown
    from dispatch.compose.render import markdown_text as plaintext
    body = markdown.split("---\n", 2)[2]
    assert "4. Fourth point.\n5. Fifth point." in plaintext(body, "https://x.example", [])


ANGLED = """\
Ferry Fares Change <effective Jan. 1>

Fares on the bay line rise by a tenth <effective Jan. 1>, the operator said.

What Changes:

- Day passes stay at <$4> until March.
- The <b> line and the A&amp;B line merge.

Riders asked for a <night pass>; none is planned.
"""


def test_text_in_angle_brackets_stays_text_and_passes_every_check(project, settings):
    from dispatch.compose.check import check
    from dispatch.compose.issues import load_issue
    from dispatch.compose.render import render_variant
    from dispatch.compose.variants import possible_variants

    brief, _, markdown = import_file(Path("a.txt"), ANGLED, settings.topics, TODAY, ["economy"])
    assert_nothing_lost(ANGLED, markdown)
    folder = project / "issues" / "fares"
    folder.mkdir()
    (folder / "issue.toml").write_text('subject = "Fares"\n')
    (folder / "fares.md").write_text(markdown)
    # The same text written by hand, unescaped, as an editor would in Markdown (CommonMark
    # reads "<night pass>" as a tag: the brief's check refuses that one, at its line).
    (folder / "hand.md").write_text("---\ntitle: Fares <by hand>\ntopics: [economy]\n"
                                    "summary: Rises <effective Jan. 1>.\n---\n\n"
                                    "Fares rise <effective Jan. 1> on every line.\n")
    report = check(settings, datetime(2026, 11, 1, tzinfo=UTC), folder)
    assert report.problems == []
    issue = load_issue(folder, settings)
    for variant in possible_variants(issue).values():
        rendered = render_variant(issue, variant, settings, datetime(2026, 11, 1, tzinfo=UTC))
        text = " ".join(rendered.text.split())
        for literal in ("<effective Jan. 1>", "<$4>", "<b> line", "A&amp;B", "<night pass>",
                        "Fares <by hand>"):
            assert literal in text, literal
        assert "&lt;effective Jan. 1&gt;" in rendered.html
        assert "&lt;night pass&gt;" in rendered.html and "<night pass>" not in rendered.html


def test_the_plaintext_rule_still_catches_leaked_markup():
    from dispatch.compose.rules import markup_left

    html = "<p>Rises &lt;effective Jan. 1&gt; at A&amp;amp;B, the &lt;b&gt; line</p>"
    for leaked in ("<p>", "</td>", '<a href="https://x.example">', "&nbsp;", "&#8212;",
                   "<br/>", "<mj-text>", "<effective>"):
        assert markup_left(f"text {leaked} text", html) == leaked
    for literal in ("Rises <effective\nJan. 1>", "at A&amp;B", "the <b> line", "a < b > c"):
        assert markup_left(literal, html) is None, literal


def test_reading_list_items_without_a_url_get_a_hint(tmp_path):
    from dispatch.compose.importer import import_files

    source = tmp_path / "r.txt"
    source.write_text("Ferry Plans Published\n\nThe plans were published on Monday.\n\n"
                      "Details\n\nThe first sailing is at six.\n\nGood Reads:\n"
                      "Why night crossings are harder (Bay Gazette)\n"
                      "Night plan explained - Harbor Notes https://example.org/plan\n"
                      "Pilots and their hours\n")
    (done,) = import_files([source], {}, tmp_path / "out", TODAY)
    written = done.target.read_text().split("\n")
    assert [(h.line, written[h.line - 1]) for h in done.hints] == [
        (7, "- title: Why night crossings are harder"),
        (12, "- title: Pilots and their hours")]
    assert all("without a URL" in h.message for h in done.hints)


def test_short_line_after_a_repeated_title_is_not_glued_to_it():
    text = ("Harbor Authority Sets New Rules for Night Ferries\n\n"
            "Harbor Authority Sets New Rules for Night Ferries\n"
            "A second pilot on every crossing after 9 p.m.\n\n"
            "The rules follow two collisions last winter.\n")
    brief = parse_plaintext(text)
    assert brief.summary == "A second pilot on every crossing after 9 p.m."
    assert brief.dropped == ["Harbor Authority Sets New Rules for Night Ferries"]
