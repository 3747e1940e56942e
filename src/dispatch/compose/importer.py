"""Plain text pasted from a CMS → a Markdown brief, without losing a sentence.

The input has no markup, so structure is read from the shape of each line: a title first, an
optional deck and photo caption, labelled paragraphs ("The Lede: …"), short unpunctuated
headings, bullets, quotes with a dashed attribution and a reading list at the end.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import yaml

from dispatch.compose.briefs import read_text_file, slugify
from dispatch.config import Topic
from dispatch.errors import ContentError, DispatchError, Problem, display_path

BULLET = re.compile(r"^\s*[•◦▪‣∙·\-*–]\s+(?=\S)")
NUMBERED = re.compile(r"^\s*(?P<n>\d{1,3})[.)]\s+(?=\S)")  # "1." or "2)": an ordered list
TERMINAL = tuple(".!?,;…\"”’'")
DASHES = "–—―-"
QUOTE = re.compile(rf"^([“\"‘'])(.*[”\"’'])\s*[{DASHES}]{{1,2}}\s*(?P<who>[^\s{DASHES}].*)$")
BARE_QUOTE = re.compile(r"^[“\"](.+)[”\"]$")
ATTRIBUTION = re.compile(rf"^[{DASHES}]{{1,2}}\s*(?P<who>\S.*)$")
LABEL = re.compile(r"^(?P<label>[A-Z][\w’'&/-]*(?:\s+[\w’'&/-]+){0,4}):\s+(?P<rest>\S.*)$")
LEDE_LABELS = {"the lede", "lede", "the gist", "summary", "in brief", "the bottom line"}
READS_HEADING = re.compile(
    r"^(good reads|further reading|sources|reading list|read more|more reading|"
    r"recommended reading|what to read|links)\s*:?$", re.IGNORECASE)
CAPTION = re.compile(r"^(?P<caption>.*\S)\s*\((?P<credit>[^()]+)\)$")
URL = re.compile(r"<?(https?://[^\s<>]+[^\s<>.,;:)])>?")
SMALL_WORDS = {"a", "an", "and", "as", "at", "but", "by", "for", "from", "in", "is", "of",
               "on", "or", "the", "to", "vs", "with", "we", "are"}


@dataclass
class Block:
    kind: str  # "para", "heading", "bullets", "numbered", "quote"
    text: str = ""
    items: list[str] = field(default_factory=list)
    who: str | None = None  # a quote's attribution
    start: int = 1  # a numbered list's first number


@dataclass
class Imported:
    """What the importer read, before it is written out as Markdown."""

    title: str
    summary: str
    blocks: list[Block]
    reads: list[dict[str, str]]
    caption: str | None = None
    credit: str | None = None
    dropped: list[str] = field(default_factory=list)  # repeated title lines

    def count(self, kind: str) -> int:
        return sum(1 for b in self.blocks if b.kind == kind)


def _squash(text: str) -> str:
    return " ".join(text.replace("\u00a0", " ").split())


def _is_long_prose(lines: list[str]) -> bool:
    """A hard-wrapped paragraph: several lines of similar length, none a bullet."""
    return (len(lines) > 1 and max(map(len, lines)) <= 80
            and len({_squash(line).casefold() for line in lines}) == len(lines)
            and all(len(line) >= 40 for line in lines[:-1])
            and not any(_is_item(line) for line in lines))


def _is_item(line: str) -> bool:
    return bool(BULLET.match(line) or NUMBERED.match(line))


def _units(text: str) -> list[str]:
    """Logical lines: blank-line blocks split per line, re-joining hard-wrapped prose and the
    indented continuation lines of a bullet."""
    units: list[str] = []
    text = text.strip("\n")
    if not text.strip():
        return units
    # The title is always a unit of its own, even with the next line right below it, and so
    # is every repeat of it: a CMS pastes the headline again right above the photo caption,
    # and a short caption must not be joined to it as if the two were one wrapped paragraph.
    first, _, text = text.lstrip().partition("\n")
    units.append(_squash(first))
    title = _squash(first).casefold()
    for block in re.split(r"\n\s*\n", text):
        lines = [line.rstrip() for line in block.split("\n") if line.strip()]
        group: list[str] = []
        for line in [*lines, None]:
            if line is None or _squash(line).casefold() == title:
                _group_units(group, units)
                group = []
                if line is not None:
                    units.append(_squash(line))
            else:
                group.append(line)
    return units


def _group_units(lines: list[str], units: list[str]) -> None:
    """The units of a run of non-blank lines: one joined paragraph when hard-wrapped, else
    one per line, with a list item's indented continuation lines joined to it."""
    if not lines:
        return
    if _is_long_prose(lines):
        units.append(_squash(" ".join(lines)))
        return
    for line in lines:
        continues_item = (units and _is_item(units[-1]) and line[:1].isspace()
                          and not _is_item(line))
        if continues_item:
            units[-1] = units[-1] + " " + _squash(line)
        else:
            units.append(line if _is_item(line) else _squash(line))


def _is_heading(unit: str) -> bool:
    text = unit[:-1].rstrip() if unit.endswith(":") else unit
    words = text.split()
    return (0 < len(words) <= 10 and len(text) <= 70 and not text.endswith(TERMINAL)
            and not text.endswith(")") and (text[0].isupper() or text[0].isdigit()))


def _is_label(label: str) -> bool:
    """Title-cased short labels ("The Background", "What We Know"), not sentences with colons."""
    words = label.split()
    return all(w[0].isupper() or w.lower() in SMALL_WORDS for w in words)


def parse_read(line: str) -> dict[str, str]:
    """`Title (Publisher)`, `Title - Publisher`, or a line carrying a URL."""
    line = NUMBERED.sub("", BULLET.sub("", line)).strip()
    read: dict[str, str] = {}
    url = URL.search(line)
    if url:
        read["url"] = url[1]
        line = (line[:url.start()] + line[url.end():]).strip()
        line = line.strip(f" :|{DASHES}").strip()
    publisher = None
    match = CAPTION.match(line)
    if match:
        line, publisher = match["caption"], match["credit"].strip()
    else:
        parts = re.split(rf"\s+[|{DASHES}]\s+(?=[^|{DASHES}]*$)", line)
        if len(parts) == 2 and parts[0].strip() and parts[1].strip():
            line, publisher = parts[0], parts[1]
    read = {"title": line.strip() or read.get("url", ""), **read}
    if publisher:
        read = {"title": read["title"], "publisher": publisher.strip(),
                **({"url": read["url"]} if "url" in read else {})}
    return read


def parse_plaintext(text: str, source: str = "<text>") -> Imported:
    """Read the structure of a pasted plain-text brief."""
    text = text.replace("\ufeff", "").replace("\r\n", "\n").replace("\r", "\n")
    units = _units(text)
    if not units:
        raise ContentError(Problem(source, "empty file: nothing to import", 1))
    title = BULLET.sub("", units[0]).strip()
    if len(units) == 1:
        raise ContentError(Problem(source, "only a title line: a brief needs a body", 1))
    result = Imported(title=_squash(title), summary="", blocks=[], reads=[])
    lede: str | None = None
    deck: str | None = None
    state = "header"  # then "body", then "reads"

    def add_para(text: str) -> None:
        result.blocks.append(Block("para", _squash(text)))

    for unit in units[1:]:
        plain = _squash(unit)
        if plain.casefold() == result.title.casefold():
            result.dropped.append(plain)
            continue
        if READS_HEADING.match(plain):
            state = "reads"
            continue
        label = LABEL.match(plain)
        if state == "reads":
            if _is_heading(plain) and plain.endswith(":"):
                state = "body"
                result.blocks.append(Block("heading", plain[:-1].strip()))
            elif label and label["label"].lower() in LEDE_LABELS:
                state = "body"
                lede = label["rest"] if lede is None else lede
                if lede != label["rest"]:
                    add_para(plain)
            else:
                result.reads.append(parse_read(unit))
            continue
        previous = result.blocks[-1] if result.blocks else None
        if BULLET.match(unit):
            attribution = ATTRIBUTION.match(plain)
            if previous and previous.kind == "quote" and previous.who is None and attribution:
                previous.who = attribution["who"]
                continue
            item = _squash(BULLET.sub("", unit))
            if previous and previous.kind == "bullets":
                previous.items.append(item)
            else:
                result.blocks.append(Block("bullets", items=[item]))
            state = "body"
            continue
        numbered = NUMBERED.match(unit)
        if numbered:
            item = _squash(unit[numbered.end():])
            if previous and previous.kind == "numbered":
                previous.items.append(item)
            else:
                result.blocks.append(Block("numbered", items=[item], start=int(numbered["n"])))
            state = "body"
            continue
        attribution = ATTRIBUTION.match(plain)
        if attribution and previous and previous.kind == "quote" and previous.who is None:
            previous.who = attribution["who"]
            continue
        quote = QUOTE.match(plain)
        if quote:
            result.blocks.append(Block("quote", quote[1] + quote[2], who=quote["who"].strip()))
            state = "body"
            continue
        if BARE_QUOTE.match(plain):
            result.blocks.append(Block("quote", plain))
            state = "body"
            continue
        if label and _is_label(label["label"]):
            if label["label"].lower() in LEDE_LABELS and lede is None:
                lede = label["rest"]
            else:
                result.blocks.append(Block("heading", label["label"]))
                add_para(label["rest"])
            state = "body"
            continue
        if state == "header":
            caption = CAPTION.match(plain)
            if caption and result.caption is None and not caption["caption"].endswith("."):
                result.caption, result.credit = caption["caption"], caption["credit"].strip()
                if result.caption.casefold().startswith(result.title.casefold() + " "):
                    # The headline pasted on the caption's own line: readers see it above.
                    result.dropped.append(result.title)
                    result.caption = result.caption[len(result.title):].strip()
                continue
        if _is_heading(plain):
            result.blocks.append(Block("heading", plain.rstrip(":").rstrip()))
            state = "body"
            continue
        if state == "header" and deck is None:
            deck = plain
            continue
        add_para(plain)
        state = "body"

    if lede is not None:
        result.summary = _squash(lede)
        if deck is not None:
            result.blocks.insert(0, Block("para", deck))
    elif deck is not None:
        result.summary = deck
    else:
        first = next((b for b in result.blocks if b.kind == "para"), None)
        if first is None:
            raise ContentError(Problem(source, "no paragraph to use as the summary: add a "
                                               "standfirst or a 'The Lede:' paragraph"))
        result.blocks.remove(first)
        result.summary = first.text
    if not result.blocks:
        raise ContentError(Problem(source, "nothing but a title and a summary: a brief "
                                           "needs a body"))
    return result


def suggest_topics(text: str, topics: Mapping[str, Topic], limit: int = 3) -> list[str]:
    """Topics whose label or keywords occur at least twice in the text, most hits first."""
    lowered = text.lower()
    hits: dict[str, int] = {}
    for key, topic in topics.items():
        terms = {topic.label.lower(), *(k.lower() for k in topic.keywords)}
        count = sum(len(re.findall(rf"(?<!\w){re.escape(term)}(?!\w)", lowered))
                    for term in terms if term)
        if count >= 2:
            hits[key] = count
    return sorted(hits, key=lambda k: -hits[k])[:limit]


def escape_markdown(text: str) -> str:
    """Escape what Markdown would read as markup, so pasted text stays literal."""
    text = re.sub(r"([\\`*_\[\]<>&])", r"\\\1", text)
    # Line-start constructs: headings, quotes, list markers, setext underlines.
    text = re.sub(r"^(\s*)([#>+=-])", r"\1\\\2", text)
    return re.sub(r"^(\s*\d+)([.)])", r"\1\\\2", text)


def to_markdown(brief: Imported, topics: list[str], today: date) -> str:
    """The Markdown brief file: YAML front matter, then the body."""
    front: dict[str, object] = {"title": brief.title, "topics": topics, "date": today,
                                "summary": brief.summary}
    if brief.caption:
        front["image"] = {"src": "", "alt": brief.caption, "caption": brief.caption,
                          **({"credit": brief.credit} if brief.credit else {})}
    if brief.reads:
        front["reads"] = brief.reads
    yaml_text = yaml.safe_dump(front, allow_unicode=True, sort_keys=False, width=10_000,
                               default_flow_style=False)
    parts: list[str] = []
    for block in brief.blocks:
        if block.kind == "heading":
            parts.append(f"## {escape_markdown(block.text)}")
        elif block.kind == "para":
            parts.append(escape_markdown(block.text))
        elif block.kind == "bullets":
            parts.append("\n".join(f"- {escape_markdown(item)}" for item in block.items))
        elif block.kind == "numbered":
            parts.append("\n".join(f"{block.start + i}. {escape_markdown(item)}"
                                   for i, item in enumerate(block.items)))
        elif block.kind == "quote":
            quote = f"> {escape_markdown(block.text)}"
            parts.append(quote + (f"\n>\n> — {escape_markdown(block.who)}" if block.who else ""))
    return f"---\n{yaml_text}---\n\n" + "\n\n".join(parts) + "\n"


def import_file(path: Path, text: str, topics: Mapping[str, Topic], today: date,
                chosen: list[str] | None = None) -> tuple[Imported, list[str], str]:
    """Parse pasted text and produce the brief's Markdown; topics are `chosen` or suggested."""
    brief = parse_plaintext(text, str(path))
    picked = chosen if chosen is not None else suggest_topics(text, topics)
    return brief, picked, to_markdown(brief, picked, today)


def output_name(brief: Imported) -> str:
    return slugify(brief.title) + ".md"


@dataclass(frozen=True)
class ImportedFile:
    source: Path
    target: Path  # the Markdown brief written
    brief: Imported
    topics: list[str]  # given or suggested; empty when no keyword matched
    hints: list[Problem] = field(default_factory=list)  # located, for the editor to finish


def unlinked_reads(target: Path, markdown: str) -> list[Problem]:
    """A hint at each reading-list item written without a URL: it renders as plain text,
    so the editor may want to add the link the CMS lost."""
    hints = []
    in_reads, item_line, has_url = False, 0, False
    lines = markdown.split("\n")
    for number, line in enumerate(lines, 1):
        if line == "reads:":
            in_reads = True
        elif in_reads and (line.startswith("- ") or not line.startswith("  ")):
            if item_line and not has_url:
                hints.append(Problem(display_path(target), "reading-list item without a URL "
                                     "(it will show as plain text): add url: if it has one",
                                     item_line))
            item_line, has_url = (number, False) if line.startswith("- ") else (0, False)
            in_reads = line.startswith("- ")
        if in_reads and re.match(r"^(- |  )url: ", line):
            has_url = True
    return hints


def import_files(files: list[Path], topics: Mapping[str, Topic], out_dir: Path, today: date,
                 chosen: list[str] | None = None, *, force: bool = False
                 ) -> list[ImportedFile]:
    """Write each pasted file as a Markdown brief in `out_dir`. Every file is parsed, and
    every target checked, before anything is written, so one bad file (or a brief that exists
    already, unless `force`) writes nothing."""
    results = []
    for path in files:
        brief, picked, markdown = import_file(path, read_text_file(path), topics, today, chosen)
        target = out_dir / output_name(brief)
        if target.exists() and not force:
            raise DispatchError(Problem(display_path(target), "already exists (use --force "
                                                              "to overwrite)"))
        results.append((ImportedFile(path, target, brief, picked,
                                     unlinked_reads(target, markdown)), markdown))
    out_dir.mkdir(parents=True, exist_ok=True)
    for imported, markdown in results:
        imported.target.write_text(markdown, encoding="utf-8")
    return [imported for imported, _ in results]
