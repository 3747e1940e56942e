"""The `dispatch` command: a thin shell over the library. Every command has help and an example."""

from __future__ import annotations

import sys
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import Engine
from typer.core import TyperGroup

from dispatch import __version__
from dispatch.check import check as run_check
from dispatch.config import Settings, load_settings
from dispatch.content import read_text_file
from dispatch.errors import ConfigError, DispatchError, Problem, display_path
from dispatch.issue import load_issue, resolve_issue_path
from dispatch.plaintext import import_file, output_name
from dispatch.preview import preview as run_preview
from dispatch.segments import plan_variants
from dispatch.store import subscribers as subs
from dispatch.store.db import create, open_store, upgrade
from dispatch.store.schema import STATUSES
from dispatch.store.subscribers import Subscriber

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
subscribers_app = typer.Typer(cls=_Group, no_args_is_help=True,
                              help="Manage subscribers, their topics and status.")
app.add_typer(subscribers_app, name="subscribers")
db_app = typer.Typer(cls=_Group, no_args_is_help=True, help="The subscriber store's schema.")
app.add_typer(db_app, name="db")

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
    audience: Annotated[bool, typer.Option(
        help="Only the variants the current active subscribers need (reads the store).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Render every variant of an issue to HTML, text and .eml files, with index.html and
    report.json. Never touches SMTP; reads the store only with --audience.

    Without --audience, every variant some topic mix can produce is rendered.

    Example: dispatch preview 2026-11-27-thaw --screenshots
    """
    settings = _settings(config)
    loaded = load_issue(resolve_issue_path(issue, settings), settings)
    target = out_dir or Path("out") / loaded.slug
    variants = None
    if audience:
        mixes = subs.active_topic_mixes(_store(settings))
        variants = plan_variants(loaded, mixes)
        out.print(f"{sum(mixes.values()):,} active subscriber(s) in {len(mixes)} topic mix(es) "
                  f"need {len(variants)} variant(s)", markup=False)
    report = run_preview(loaded, settings, target, datetime.now(timezone.utc),
                         variants=variants, screenshots=screenshots, progress=lambda line: out.print(line,
                                                                                  markup=False))
    out.print(f"{len(report['variants'])} variant(s) written to {display_path(target)} "
              f"(open {display_path(target / 'index.html')})", markup=False)


def _store(settings: Settings) -> Engine:
    return open_store(settings.store.url)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _topic_list(value: str | None) -> list[str] | None:
    return None if value is None else [t for t in value.replace("|", ",").replace(";", ",")
                                       .split(",") if t.strip()]


def _print_subscribers(people: list[Subscriber], as_json: bool) -> None:
    if as_json:
        out.print_json(data=[p.as_json() for p in people])
        return
    table = Table("email", "name", "topics", "timezone", "status", "created")
    for p in people:
        table.add_row(p.email, p.name or "", ", ".join(p.topics), p.timezone or "", p.status,
                      f"{p.created_at:%Y-%m-%d}")
    out.print(table)
    out.print(f"{len(people)} subscriber(s)")


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Create the store or apply pending schema migrations (also done on first use).

    Example: dispatch db upgrade
    """
    settings = _settings(config)
    revision = upgrade(create(settings.store.url))
    out.print(f"store at schema revision {revision}", markup=False)


@subscribers_app.command("add")
def subscribers_add(
    email: Annotated[str, typer.Argument(help="The subscriber's address.")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    topics: Annotated[str | None, typer.Option(help="Comma-separated topic keys.")] = None,
    tz: Annotated[str | None, typer.Option("--tz", help="IANA time zone, e.g. Asia/Seoul.")
                  ] = None,
    resubscribe: Annotated[bool, typer.Option(
        help="The person asked to re-subscribe: lift a suppression.")] = False,
    config: ConfigOption = None,
) -> None:
    """Add one active subscriber.

    Example: dispatch subscribers add ana@example.com --name "Ana" --topics east-asia,security
    """
    settings = _settings(config)
    person = subs.add(_store(settings), email, name=name, topics=_topic_list(topics) or [],
                      timezone=tz, known_topics=settings.topics, now=_now(),
                      resubscribe=resubscribe)
    out.print(f"added {person.email} ({', '.join(person.topics) or 'no topics'})", markup=False)


@subscribers_app.command("import")
def subscribers_import(
    file: Annotated[Path, typer.Argument(help="CSV with a header: email,name,topics,timezone.")],
    dry_run: Annotated[bool, typer.Option(help="Validate and report; change nothing.")] = False,
    config: ConfigOption = None,
) -> None:
    """Import subscribers from CSV in one transaction; every rejected row is listed with its
    line and reason, and the good rows still land. Topics are separated by ; or |.

    Example: dispatch subscribers import readers.csv --dry-run
    """
    settings = _settings(config)
    text = read_text_file(file)
    rows, rejected, read = subs.read_csv(text, settings.topics, display_path(file))
    engine = _store(settings)
    with Progress(TextColumn("importing"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=err, transient=True,
                  disable=not err.is_terminal) as bar:
        task = bar.add_task("import", total=len(rows))
        report = subs.import_rows(engine, rows, _now(), dry_run=dry_run,
                                  progress=lambda done: bar.update(task, completed=done))
    for line, email, reason in sorted(rejected + report.rejected):
        err.print(f"{display_path(file)}:{line}: {email or '(empty)'}: {reason}", markup=False)
    verb = "would add" if dry_run else "added"
    out.print(f"{read} row(s) read: {verb} {report.added}, "
              f"{'would update' if dry_run else 'updated'} {report.updated}, "
              f"rejected {len(rejected) + len(report.rejected)}", markup=False)


@subscribers_app.command("export")
def subscribers_export(
    file: Annotated[Path | None, typer.Argument(help="Output CSV (default: standard output).")
                    ] = None,
    config: ConfigOption = None,
) -> None:
    """Export every subscriber as CSV (the import format plus status).

    Example: dispatch subscribers export readers.csv
    """
    settings = _settings(config)
    engine = _store(settings)
    if file is None:
        subs.export_csv(engine, sys.stdout)
        return
    with file.open("w", encoding="utf-8", newline="") as handle:
        written = subs.export_csv(engine, handle)
    err.print(f"{written} subscriber(s) written to {display_path(file)}", markup=False)


@subscribers_app.command("list")
def subscribers_list(
    topic: Annotated[str | None, typer.Option(help="Only those following this topic.")] = None,
    status: Annotated[str | None, typer.Option(help="pending, active, unsubscribed, "
                                                    "bounced or complained.")] = None,
    segment: Annotated[str | None, typer.Option(help="A segment from config.toml.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON array on standard output.")
                       ] = False,
    config: ConfigOption = None,
) -> None:
    """List subscribers (every status unless filtered).

    Example: dispatch subscribers list --topic security --status active --json
    """
    settings = _settings(config)
    if topic and topic not in settings.topics:
        raise DispatchError(Problem("--topic", f"unknown topic {topic!r}"))
    if segment and segment not in settings.segments:
        raise DispatchError(Problem("--segment", f"unknown segment {segment!r} (declared: "
                                                 f"{', '.join(settings.segments) or 'none'})"))
    if status and status not in STATUSES:
        raise DispatchError(Problem("--status", f"expected one of {', '.join(STATUSES)}"))
    people = subs.list_subscribers(_store(settings), topic=topic, status=status,
                                   segment=settings.segments[segment] if segment else None)
    _print_subscribers(people, as_json)


@subscribers_app.command("set")
def subscribers_set(
    email: Annotated[str, typer.Argument(help="The subscriber's address (any case).")],
    topics: Annotated[str | None, typer.Option(help="Replace topics (comma-separated).")
                      ] = None,
    status: Annotated[str | None, typer.Option(help="New status; active lifts a suppression.")
                      ] = None,
    tz: Annotated[str | None, typer.Option("--tz", help="IANA time zone.")] = None,
    config: ConfigOption = None,
) -> None:
    """Change a subscriber's topics, status or time zone.

    Example: dispatch subscribers set ana@example.com --topics security --status active
    """
    settings = _settings(config)
    if topics is None and status is None and tz is None:
        raise DispatchError(Problem("dispatch subscribers set", "give --topics, --status or --tz"))
    person = subs.update_subscriber(_store(settings), email, now=_now(),
                                    known_topics=settings.topics, topics=_topic_list(topics),
                                    status=status, timezone=tz)
    out.print(f"{person.email}: {person.status}; topics {', '.join(person.topics) or 'none'}",
              markup=False)


@subscribers_app.command("forget")
def subscribers_forget(
    email: Annotated[str, typer.Argument(help="The subscriber's address (any case).")],
    config: ConfigOption = None,
) -> None:
    """Erase a subscriber's personal data, keeping only a hashed entry so the address is never
    mailed again.

    Example: dispatch subscribers forget ana@example.com
    """
    settings = _settings(config)
    subs.forget(_store(settings), email, _now())
    out.print(f"forgot {email}: personal data erased, address suppressed (hashed)", markup=False)


@app.command()
def segments(as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
             config: ConfigOption = None) -> None:
    """Each segment from config.toml with its topics and live count of active subscribers.

    Example: dispatch segments
    """
    settings = _settings(config)
    counts = subs.segment_counts(_store(settings), settings.segments)
    if as_json:
        out.print_json(data=[{"segment": n, "topics": list(s.topics), "match": s.match,
                              "exclude": list(s.exclude), "active": counts[n]}
                             for n, s in settings.segments.items()])
        return
    table = Table("segment", "topics", "match", "exclude", "active subscribers")
    for name, seg in settings.segments.items():
        table.add_row(name, ", ".join(seg.topics), seg.match, ", ".join(seg.exclude),
                      f"{counts[name]:,}")
    out.print(table)


def main() -> None:
    app()
