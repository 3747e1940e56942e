"""Composing: `dispatch check`, `dispatch brief import` and `dispatch preview`."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from dispatch.cli.common import (
    ConfigOption,
    err,
    group,
    load,
    now,
    open_engine,
    out,
    say,
    warn,
)
from dispatch.errors import ConfigError, Problem, display_path

brief_app = group("Work with briefs.")


def check(path: Annotated[Path | None, typer.Argument(
              help="A brief, an issue folder or a folder of briefs (default: every issue).")
          ] = None,
          config: ConfigOption = None) -> None:
    """Validate config.toml, issues, briefs and templates (every variant is rendered and
    checked); print each problem as path:line: message. Warnings (unencrypted SMTP or links
    to a host that is not local, no DKIM) are printed too but do not fail the check.

    Exit status: 0 clean, 1 problems found, 2 config.toml invalid.

    Example: dispatch check issues/2026-11-27-thaw
    """
    from dispatch.compose.check import check as run_check
    settings = load(config)
    report = run_check(settings, now(), path)
    for problem in report.problems:
        say(str(problem))
    for warning in report.warnings:
        err.print(str(warning), markup=False)
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

    Example: dispatch brief import pasted.txt --topics east-asia --out issues/next
    """
    from dispatch.compose.importer import import_files
    settings = load(config)
    chosen = None
    if topics is not None:
        chosen = [t.strip() for t in topics.split(",") if t.strip()]
        unknown = [t for t in chosen if t not in settings.topics]
        if unknown:
            # An option naming topics config.toml lacks is a configuration mistake: exit 2.
            raise ConfigError(Problem("--topics", f"unknown topic(s) {', '.join(unknown)} "
                                                  f"(declared: {', '.join(settings.topics)})"))
    for done in import_files(files, settings.topics, out_dir, date.today(), chosen, force=force):
        brief, target = done.brief, display_path(done.target)
        bullets = sum(len(b.items) for b in brief.blocks if b.kind in ("bullets", "numbered"))
        say(f"{display_path(done.source)} → {target}: {brief.count('heading')} section(s), "
            f"{bullets} bullet(s), {brief.count('quote')} quote(s), {len(brief.reads)} read(s)")
        if done.topics:
            how = "given" if chosen is not None else "suggested"
            say(f"  topics ({how}): {', '.join(done.topics)}")
        else:
            warn(f"  {target}: no topic matched; wrote topics: [] for you to fill in "
                 "(dispatch check will flag it)")
        if brief.caption:
            warn(f"  {target}: photo caption kept; add image.src before sending")
        if len(done.hints) > 2:  # one line for a long list, its lines named
            first = done.hints[0]
            lines = ", ".join(str(h.line) for h in done.hints)
            warn(f"  {first.path}:{first.line}: {len(done.hints)} reading-list items without "
                 f"a URL (lines {lines}; they will show as plain text): add url: where one "
                 "exists")
        else:
            for hint in done.hints:
                warn(f"  {hint}")


def preview(
    issue: Annotated[str, typer.Argument(help="Issue folder or slug under issues/.")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Output folder.",
                                                 show_default="out/<slug>")] = None,
    screenshots: Annotated[bool, typer.Option(
        help="Also write phone (375 px) and desktop (800 px) PNGs with headless Chromium.")
    ] = False,
    audience: Annotated[bool, typer.Option(
        help="Only the variants the current active subscribers need (reads the store).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Render every variant of an issue to HTML, text and .eml files, with index.html and
    report.json. Never touches SMTP; reads the store only with --audience.

    Without --audience, every variant some topic mix can produce is rendered. A draft with
    problems is rendered as far as it goes and its problems listed (exit status 1).

    Example: dispatch preview 2026-11-27-thaw --out out/look
    """
    from dispatch.compose.issues import load_draft_issue, resolve_issue_path
    from dispatch.compose.preview import preview as run_preview
    from dispatch.compose.variants import plan_variants
    from dispatch.store.segments import active_topic_mixes
    settings = load(config)
    loaded, problems = load_draft_issue(resolve_issue_path(issue, settings), settings)
    target = out_dir or Path("out") / loaded.slug
    variants = None
    if audience:
        mixes = active_topic_mixes(open_engine(settings))
        variants = plan_variants(loaded, mixes)
        say(f"{sum(mixes.values()):,} active subscriber(s) in {len(mixes)} topic mix(es) "
            f"need {len(variants)} variant(s)")
    report = run_preview(loaded, settings, target, now(), variants=variants,
                         screenshots=screenshots, progress=say, problems=problems)
    written = sum(1 for v in report["variants"] if v["written"])
    say(f"{written} variant(s) written to {display_path(target)} "
        f"(open {display_path(target / 'index.html')})")
    if report["problems"]:
        for problem in report["problems"]:
            warn(problem["text"])
        err.print(f"{len(report['problems'])} problem(s) to fix before sending (listed in "
                  f"{display_path(target / 'index.html')} and report.json)", markup=False)
        raise typer.Exit(1)
