"""The `dispatch` command: a thin shell over the library. Every command has help and an example."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from typer.core import TyperGroup

from dispatch import __version__
from dispatch.check import check as run_check
from dispatch.config import Settings, load_settings
from dispatch.content import read_text_file
from dispatch.errors import ConfigError, DispatchError, Problem, display_path
from dispatch.issue import load_issue, resolve_issue_path
from dispatch.plaintext import import_file, output_name
from dispatch.preview import preview as run_preview

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class _Group(TyperGroup):
    """Turns every DispatchError into located one-line messages and its exit code."""

    def invoke(self, ctx: typer.Context) -> object:
        try:
            return super().invoke(ctx)
        except DispatchError as exc:
            for problem in exc.problems:
                err.print(str(problem), markup=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(cls=_Group, no_args_is_help=True, pretty_exceptions_enable=False,
                  add_completion=False,
                  help="dispatch: compose newsletter issues from briefs and deliver them.")
brief_app = typer.Typer(cls=_Group, no_args_is_help=True, help="Work with briefs.")
app.add_typer(brief_app, name="brief")

ConfigOption = Annotated[Path | None, typer.Option(
    "--config", "-c", envvar="DISPATCH_CONFIG", show_default="./config.toml",
    help="Path to config.toml (or set DISPATCH_CONFIG).")]


def _settings(config: Path | None) -> Settings:
    return load_settings(config)


def _version(value: bool) -> None:
    if value:
        out.print(f"dispatch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version,
                                                is_eager=True, help="Show the version.")] = False
          ) -> None:
    """dispatch: compose newsletter issues from briefs and deliver them.

    Example: dispatch check
    """


@app.command()
def check(path: Annotated[Path | None, typer.Argument(
              help="A brief, an issue folder or a folder of briefs (default: every issue).")
          ] = None,
          config: ConfigOption = None) -> None:
    """Validate config.toml, issues, briefs and templates (every variant is rendered and
    checked); print each problem as path:line: message.

    Exit status: 0 clean, 1 problems found, 2 config.toml invalid.

    Example: dispatch check issues/2026-11-24
    """
    settings = _settings(config)
    report = run_check(settings, datetime.now(timezone.utc), path)
    for problem in report.problems:
        out.print(str(problem), markup=False, soft_wrap=True)
    summary = (f"{display_path(settings.path)}: ok; {len(report.issues)} issue(s), "
               f"{report.briefs} brief(s) ok")
    if report.problems:
        err.print(f"{summary}; {len(report.problems)} problem(s)")
        raise typer.Exit(1)
    out.print(summary)


@brief_app.command("import")
def brief_import(
    files: Annotated[list[Path], typer.Argument(help="Plain-text files pasted from a CMS.")],
    topics: Annotated[str | None, typer.Option(
        help="Comma-separated topic keys for every file (default: suggested from keywords).")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the Markdown briefs.")
                       ] = Path("."),
    force: Annotated[bool, typer.Option(help="Overwrite a brief that already exists.")] = False,
    config: ConfigOption = None,
) -> None:
    """Turn pasted plain text into Markdown briefs without losing a sentence.

    Example: dispatch brief import pasted.txt --topics east-asia,diplomacy --out issues/next
    """
    settings = _settings(config)
    chosen = None
    if topics is not None:
        chosen = [t.strip() for t in topics.split(",") if t.strip()]
        unknown = [t for t in chosen if t not in settings.topics]
        if unknown:
            raise ConfigError(Problem("--topics", f"unknown topic(s) {', '.join(unknown)} "
                                                  f"(declared: {', '.join(settings.topics)})"))
    # Parse everything first so one bad file writes nothing.
    results = []
    for path in files:
        brief, picked, markdown = import_file(path, read_text_file(path), settings.topics,
                                              date.today(), chosen)
        target = out_dir / output_name(brief)
        if target.exists() and not force:
            raise DispatchError(Problem(display_path(target), "already exists (use --force "
                                                              "to overwrite)"))
        results.append((path, brief, picked, markdown, target))
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, brief, picked, markdown, target in results:
        target.write_text(markdown, encoding="utf-8")
        out.print(f"{display_path(path)} → {display_path(target)}: {brief.count('heading')} "
                  f"section(s), {sum(len(b.items) for b in brief.blocks if b.kind == 'bullets')}"
                  f" bullet(s), {brief.count('quote')} quote(s), {len(brief.reads)} read(s)",
                  markup=False)
        if picked:
            how = "given" if chosen is not None else "suggested"
            out.print(f"  topics ({how}): {', '.join(picked)}", markup=False)
        else:
            err.print(f"  {display_path(target)}: no topic matched; wrote topics: [] for "
                      f"you to fill in (dispatch check will flag it)", markup=False)
        if brief.caption:
            err.print(f"  {display_path(target)}: photo caption kept; add image.src before "
                      "sending", markup=False)


@app.command()
def preview(
    issue: Annotated[str, typer.Argument(help="Issue folder or slug under issues/.")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Output folder.",
                                                 show_default="out/<slug>")] = None,
    screenshots: Annotated[bool, typer.Option(
        help="Also write phone (375 px) and desktop (800 px) PNGs with headless Chromium.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Render every variant of an issue to HTML, text and .eml files, with index.html and
    report.json. Touches neither SMTP nor the subscriber store.

    Example: dispatch preview 2026-11-27-thaw --screenshots
    """
    settings = _settings(config)
    loaded = load_issue(resolve_issue_path(issue, settings), settings)
    target = out_dir or Path("out") / loaded.slug
    report = run_preview(loaded, settings, target, datetime.now(timezone.utc),
                         screenshots=screenshots, progress=lambda line: out.print(line,
                                                                                  markup=False))
    out.print(f"{len(report['variants'])} variant(s) written to {display_path(target)} "
              f"(open {display_path(target / 'index.html')})", markup=False)


def main() -> None:
    app()
