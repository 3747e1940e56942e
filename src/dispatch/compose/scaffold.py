"""The files an editor would otherwise write by hand: a new project (`dispatch init`), a new
issue folder (`dispatch issue new`) and a new brief (`dispatch brief new`).

Nothing is ever overwritten: an existing file is a located error and nothing is written.
The example project (config.toml and issues/) ships inside the package, so `dispatch init` and
`dispatch demo` work from any folder once dispatch is installed.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import yaml

from dispatch.compose.briefs import FRONT_MATTER, load_brief, slugify
from dispatch.config import Settings
from dispatch.config.topics import check_topics
from dispatch.errors import ContentError, DispatchError, Problem, display_path
from dispatch.text import header_problem

_HERE = Path(__file__).resolve()
# Installed: dispatch/example (the wheel's copy, see pyproject.toml); from a checkout: the
# repository's own config.toml and issues/.
EXAMPLE_ROOTS = (_HERE.parents[1] / "example", _HERE.parents[3])
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,79}$")

_INIT_HEADER = """\
# Made by `dispatch init` from dispatch's example project. Change [newsletter] to your own
# (name, from, base_url, the postal address readers see) and [topics] to your desks, then run
# `dispatch check`. Templates: dispatch ships its own; a file under templates/ here with the
# same path (templates/email/issue.mjml.j2, say) overrides the shipped one.

"""

_TEMPLATES_README = """\
Templates that override dispatch's own.

dispatch renders with the templates shipped inside the package. To change one, copy it here
under the same path and edit the copy; every template you leave out keeps the shipped one, so
new releases reach you. The shipped templates are in:

    {shipped}

    email/issue.mjml.j2    the issue's HTML (MJML)
    email/issue.txt.j2     the issue's plaintext
    email/confirm.*.j2     the sign-up confirmation message
    web/*.html.j2          the subscriber web pages
    preview/index.html.j2  dispatch preview's index page
"""


def example_project() -> Path:
    """The folder holding the shipped example config.toml and issues/."""
    for root in EXAMPLE_ROOTS:
        if (root / "config.toml").is_file() and (root / "issues").is_dir():
            return root
    raise DispatchError(Problem("dispatch", "the example project is missing from this "
                                            "installation; reinstall dispatch"))


def shipped_templates() -> Path:
    for root in (_HERE.parents[1] / "templates", _HERE.parents[3] / "templates"):
        if root.is_dir():
            return root
    return _HERE.parents[1] / "templates"


@dataclass(frozen=True)
class NewProject:
    folder: Path
    issues: tuple[str, ...]  # slugs of the example issues copied in


def init_project(folder: Path) -> NewProject:
    """A working project in `folder` (made if needed): a commented config.toml, the example
    issue with its briefs, an empty inbox/ for digests and templates/ for overrides."""
    source = example_project()
    config = folder / "config.toml"
    clashes = [p for p in (config, folder / "issues", folder / "inbox") if p.exists()]
    if clashes:
        raise ContentError([Problem(display_path(p), "already exists; dispatch init never "
                                                     "overwrites (choose an empty folder)")
                            for p in clashes])
    if folder.exists() and not folder.is_dir():
        raise ContentError(Problem(display_path(folder), "is a file, not a folder"))
    folder.mkdir(parents=True, exist_ok=True)
    config.write_text(_INIT_HEADER + (source / "config.toml").read_text(encoding="utf-8"),
                      encoding="utf-8")
    shutil.copytree(source / "issues", folder / "issues",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (folder / "inbox").mkdir()
    templates = folder / "templates"
    templates.mkdir(exist_ok=True)
    readme = templates / "README.txt"
    if not readme.exists():
        readme.write_text(_TEMPLATES_README.format(shipped=shipped_templates()),
                          encoding="utf-8")
    slugs = tuple(sorted(p.parent.name for p in (folder / "issues").glob("*/issue.toml")))
    return NewProject(folder=folder, issues=slugs)


def _toml_string(value: str) -> str:
    # A JSON string is a valid TOML basic string: the same escapes, \u plus four hex digits
    # for control characters.
    return json.dumps(value, ensure_ascii=False)


def check_slug(slug: str, where: str = "SLUG") -> str:
    if not SLUG.match(slug):
        raise ContentError(Problem(where, f"{slug!r} is not a usable issue name: lower-case "
                                          "letters, digits and hyphens, starting with a letter "
                                          "or digit (e.g. 2026-12-04-weekly)"))
    return slug


def _draft_title(path: Path) -> str | None:
    """A brief's title even while it has other problems (reported once it is copied)."""
    try:
        match = FRONT_MATTER.match(path.read_text(encoding="utf-8-sig"))
        data = yaml.safe_load(match[1] or "") if match else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    title = data.get("title") if isinstance(data, dict) else None
    return title.strip() if isinstance(title, str) and not header_problem(title) else None


def new_issue(settings: Settings, slug: str, subject: str | None, briefs: list[Path]
              ) -> tuple[Path, list[Problem]]:
    """issues/SLUG/issue.toml, with the given briefs copied in; the subject defaults to the
    first brief's title. Returns the folder and the briefs' own problems (a draft may still
    wait for its photo URL: `dispatch check` keeps flagging them until they are fixed)."""
    check_slug(slug)
    folder = settings.issues_dir / slug
    if folder.exists():
        raise ContentError(Problem(display_path(folder), "already exists; choose another "
                                                         "name (nothing was written)"))
    refused: list[Problem] = []
    pending: list[Problem] = []
    titles: list[str] = []
    names: set[str] = set()
    for path in briefs:
        if not path.is_file():
            refused.append(Problem(display_path(path), "no such file"))
        elif path.suffix != ".md":
            refused.append(Problem(display_path(path), "not a brief (expected a .md file; "
                                                       "`dispatch brief import` turns plain "
                                                       "text into one)"))
        elif path.name in names:
            refused.append(Problem(display_path(path), "a brief with this file name is "
                                                       "already given"))
        else:
            names.add(path.name)
            if title := _draft_title(path):
                titles.append(title)
    if subject is None:
        if not titles:
            refused.append(Problem("--subject", "required when no readable brief is given "
                                                "(the email's subject line)"))
        else:
            subject = titles[0]
    if subject is not None and (not subject.strip() or header_problem(subject)):
        refused.append(Problem("--subject", header_problem(subject) or "must not be empty"))
    if refused:
        raise ContentError(refused)
    assert subject is not None
    folder.mkdir(parents=True)
    for path in briefs:
        shutil.copy2(path, folder / path.name)
        try:
            load_brief(folder / path.name, settings.topics)
        except DispatchError as exc:
            pending.extend(exc.problems)
    zone = settings.newsletter.timezone
    (folder / "issue.toml").write_text(
        f"# The issue {slug}: `dispatch check issues/{slug}` validates it,\n"
        f"# `dispatch preview {slug}` renders it.\n"
        f"subject = {_toml_string(subject.strip())}\n"
        "# preheader = \"The inbox preview line.\"\n"
        f"# send_at = \"2026-12-01T07:00 {zone}\"   # or later: dispatch schedule {slug} --at …\n"
        "# segments = [\"a-segment\"]                # default: every subscriber\n"
        "# briefs = [\"01-first.md\"]                # default: every *.md here, sorted by name\n"
        "personalize = true                        # each reader gets only their topics' briefs\n",
        encoding="utf-8")
    return folder, pending


def new_brief(settings: Settings, title: str, topics: list[str], out_dir: Path, today: date
              ) -> Path:
    """A brief with its front matter filled in, its summary and body left for the editor
    (so `dispatch check` flags it until they are written)."""
    problems = []
    if not title.strip():
        problems.append(Problem("TITLE", "must not be empty"))
    elif problem := header_problem(title):
        problems.append(Problem("TITLE", problem))
    try:
        chosen = check_topics(topics, settings.topics, where="--topics")
        if not chosen:
            problems.append(Problem("--topics", "give at least one of "
                                                f"{', '.join(settings.topics)}"))
    except DispatchError as exc:
        problems.extend(exc.problems)
        chosen = []
    target = out_dir / f"{slugify(title)}.md"
    if target.exists():
        problems.append(Problem(display_path(target), "already exists; nothing was written"))
    if problems:
        raise ContentError(problems)
    front = yaml.safe_dump({"title": title.strip()}, allow_unicode=True, width=10_000,
                           sort_keys=False).rstrip("\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    target.write_text(
        "---\n"
        f"{front}\n"
        f"topics: [{', '.join(chosen)}]\n"
        f"date: {today.isoformat()}\n"
        "summary: \"\"   # write the lede: one paragraph, also the inbox preview\n"
        "# author: Desk staff\n"
        "# image: {src: \"https://…\", alt: \"what the photo shows\", caption: \"…\", "
        "credit: \"…\"}\n"
        "# reads:\n"
        "#   - {title: \"…\", publisher: \"…\", url: \"https://…\"}\n"
        "---\n"
        "\n",
        encoding="utf-8")
    return target
