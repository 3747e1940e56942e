"""Starting out: `dispatch init`, `dispatch issue new` and `dispatch brief new` write the files
an editor would otherwise write by hand. Heavy imports stay inside the commands, so `--help`
starts fast."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dispatch.cli.common import ConfigOption, group, load, say, warn
from dispatch.errors import display_path

issue_app = group("Create issues.")


def init(folder: Annotated[Path, typer.Argument(
             metavar="DIR", help="Folder for the new project (made if missing).")
         ] = Path("."),
         ) -> None:
    """Create a working project: a commented config.toml, the example issue with its briefs,
    an empty inbox/ for digests and templates/ for your overrides.

    Nothing is overwritten: a folder that already holds a project is refused.

    Example: dispatch init news
    """
    from dispatch.compose.scaffold import init_project

    made = init_project(folder)
    shown = display_path(made.folder)
    say(f"created a project in {shown}/: config.toml, issues/{', issues/'.join(made.issues)}, "
        "inbox/, templates/")
    say("next:")
    if made.folder.resolve() != Path.cwd().resolve():
        say(f"  cd {shown}")
    say("  dispatch check")
    if made.issues:
        say(f"  dispatch preview {made.issues[0]}")
    if made.folder.resolve() == Path.cwd().resolve():
        say("  dispatch demo")


@issue_app.command("new")
def issue_new(
    slug: Annotated[str, typer.Argument(
        metavar="SLUG", help="The issue's name, e.g. 2026-12-04-weekly (lower-case letters, "
                             "digits, hyphens).")],
    briefs: Annotated[list[Path] | None, typer.Argument(
        metavar="BRIEF", help="Brief files to copy into the issue (each is checked).")
    ] = None,
    subject: Annotated[str | None, typer.Option(
        metavar="TEXT", help="The email's subject line (default: the first brief's title).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Create issues/SLUG/ with a commented issue.toml, copying the given briefs into it.

    Example: dispatch issue new 2026-12-04-week --subject "The week in Asia"
    """
    from dispatch.compose.scaffold import new_issue

    settings = load(config)
    folder, pending = new_issue(settings, slug, subject, list(briefs or []))
    say(f"created {display_path(folder / 'issue.toml')}"
        + (f" with {len(briefs)} brief(s)" if briefs else ""))
    for problem in pending:
        warn(f"  to fix before sending: {problem}")
    if not briefs:
        say(f"next: dispatch brief new \"A title\" --topics {next(iter(settings.topics))} "
            f"--out {display_path(folder)}")
    say(f"then: dispatch check {display_path(folder)}")


def brief_new(
    title: Annotated[str, typer.Argument(metavar="TITLE", help="The brief's headline.")],
    topics: Annotated[str, typer.Option(
        metavar="A,B", help="Comma-separated topic keys from config.toml.")],
    out_dir: Annotated[Path, typer.Option(
        "--out", metavar="DIR", help="Folder for the brief (an issue folder or inbox/).")
    ] = Path("."),
    config: ConfigOption = None,
) -> None:
    """Write a new brief, TITLE-AS-SLUG.md, with its front matter filled in; you write the
    summary and the body.

    Example: dispatch brief new "Ferry service resumes" --topics economy --out inbox
    """
    from datetime import date

    from dispatch.compose.scaffold import new_brief

    settings = load(config)
    target = new_brief(settings, title, topics.split(","), out_dir, date.today())
    say(f"created {display_path(target)}")
    warn(f"  write its summary and body, then: dispatch check {display_path(target)}")
