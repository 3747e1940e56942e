"""The audience: `dispatch subscribers …`, `dispatch segments` and `dispatch db upgrade`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from dispatch.cli.common import (
    ConfigOption,
    err,
    group,
    load,
    load_with_store,
    now,
    open_engine,
    out,
    print_table,
    say,
    warn,
)
from dispatch.errors import DispatchError, Problem, display_path
from dispatch.states import SUPPRESSING

# The store and the CSV reader are imported inside each command: start-up stays quick.

subscribers_app = group("Manage subscribers, their topics and status.")
db_app = group("The subscriber store's schema.")


def _topic_list(value: str | None) -> list[str] | None:
    """Topics from an option: separated by commas, or by ; and | as in the CSV format."""
    return None if value is None else [t for t in value.replace("|", ",").replace(";", ",")
                                       .split(",") if t.strip()]


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Create the store or apply pending schema migrations (also done on first use).

    Example: dispatch db upgrade
    """
    from dispatch.store.db import create, upgrade
    settings = load(config)
    revision = upgrade(create(settings.store.url))
    say(f"store at schema revision {revision}")


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

    Example: dispatch subscribers add ana@example.com --name Ana --topics security
    """
    from dispatch.store import subscribers as subs
    settings, engine = load_with_store(config)
    person = subs.add(engine, email, name=name, topics=_topic_list(topics) or [],
                      timezone=tz, known_topics=settings.topics, now=now(),
                      resubscribe=resubscribe)
    say(f"added {person.email} ({', '.join(person.topics) or 'no topics'})")


class _ImportProgress:
    """A bar over the file's bytes with the rows handled (the row count is not known before
    the end); nothing when standard error is not a terminal."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __enter__(self) -> _ImportProgress:
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        self._bar = Progress(TextColumn("importing {task.fields[rows]:,} rows"), BarColumn(),
                             TransferSpeedColumn(), TimeRemainingColumn(), console=err,
                             transient=True, disable=not err.is_terminal)
        self._bar.start()
        self._task = self._bar.add_task("import", total=self.size or None, rows=0)
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def __call__(self, rows: int, bytes_read: int) -> None:
        self._bar.update(self._task, completed=bytes_read, rows=rows)


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
    from dispatch.audience import csvio
    from dispatch.store import imports
    settings = load(config)
    engine = open_engine(settings)
    with csvio.CsvFile(file) as lines, _ImportProgress(lines.size) as bar:
        report = imports.import_rows(
            engine, csvio.iter_csv(lines, settings.topics, lines.source), now(),
            dry_run=dry_run, progress=lambda done: bar(done, lines.bytes_read))
    rejected = report.rejected
    read = report.read
    for line, email, reason in sorted(rejected):
        warn(f"{display_path(file)}:{line}: {email or '(empty)'}: {reason}")
    say(f"{read} row(s) read: {'would add' if dry_run else 'added'} {report.added}, "
        f"{'would update' if dry_run else 'updated'} {report.updated}, "
        f"rejected {len(rejected)}")


@subscribers_app.command("export")
def subscribers_export(
    file: Annotated[Path | None, typer.Argument(help="Output CSV (default: standard output).")
                    ] = None,
    config: ConfigOption = None,
) -> None:
    """Export every subscriber as CSV (the import format plus status).

    Example: dispatch subscribers export readers.csv
    """
    from dispatch.audience import csvio
    from dispatch.store import subscribers as subs
    _, engine = load_with_store(config)
    people = subs.iter_subscribers(engine)
    if file is None:
        csvio.write_csv(sys.stdout, people)
        return
    with file.open("w", encoding="utf-8", newline="") as handle:
        written = csvio.write_csv(handle, people)
    warn(f"{written} subscriber(s) written to {display_path(file)}")


@subscribers_app.command("list")
def subscribers_list(
    topic: Annotated[str | None, typer.Option(help="Only those following this topic.")] = None,
    status: Annotated[str | None, typer.Option(help="pending, active, unsubscribed, "
                                                    "bounced or complained.")] = None,
    segment: Annotated[str | None, typer.Option(help="A segment from config.toml.")] = None,
    search: Annotated[str | None, typer.Option(
        help="Only those whose address or name contains this (any case).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON array on standard output.")
                       ] = False,
    config: ConfigOption = None,
) -> None:
    """List subscribers (every status unless filtered).

    Example: dispatch subscribers list --topic security --status active --json
    """
    from dispatch.audience.filters import parse_filter
    from dispatch.store import subscribers as subs
    settings = load(config)
    wanted = parse_filter(settings, search=search, status=status, topic=topic, segment=segment,
                          prefix="--")
    people = subs.list_subscribers(open_engine(settings), search=wanted.search,
                                   status=wanted.status, topic=wanted.topic,
                                   segment=wanted.segment)
    if as_json:
        out.print_json(data=[p.as_json() for p in people])
        return
    if status in SUPPRESSING:  # who left, when and why
        print_table(("email", "name", "status", "since", "reason"),
                    ((p.email, p.name or "", p.status,
                      f"{p.unsubscribed_at:%Y-%m-%d %H:%M} UTC" if p.unsubscribed_at else "",
                      p.status_reason or "") for p in people))
    else:
        print_table(("email", "name", "topics", "timezone", "status", "created"),
                    ((p.email, p.name or "", ", ".join(p.topics), p.timezone or "", p.status,
                      f"{p.created_at:%Y-%m-%d}") for p in people))
    out.print(f"{len(people)} subscriber(s)")


@subscribers_app.command("set")
def subscribers_set(
    email: Annotated[str, typer.Argument(help="The subscriber's address (any case).")],
    topics: Annotated[str | None, typer.Option(help="Replace topics (comma-separated).")
                      ] = None,
    status: Annotated[str | None, typer.Option(help="New status; active lifts a suppression.")
                      ] = None,
    tz: Annotated[str | None, typer.Option("--tz", help="IANA time zone.")] = None,
    name: Annotated[str | None, typer.Option(help="New display name.")] = None,
    config: ConfigOption = None,
) -> None:
    """Change a subscriber's topics, status, time zone or name.

    Example: dispatch subscribers set ana@example.com --topics security --status active
    """
    from dispatch.store import subscribers as subs
    settings = load(config)
    if topics is None and status is None and tz is None and name is None:
        raise DispatchError(Problem("dispatch subscribers set",
                                    "give --topics, --status, --tz or --name"))
    person = subs.update_subscriber(open_engine(settings), email, now=now(),
                                    known_topics=settings.topics, topics=_topic_list(topics),
                                    status=status, timezone=tz, name=name)
    say(f"{person.email}: {person.status}; topics {', '.join(person.topics) or 'none'}")


@subscribers_app.command("forget")
def subscribers_forget(
    email: Annotated[str, typer.Argument(help="The subscriber's address (any case).")],
    config: ConfigOption = None,
) -> None:
    """Erase a subscriber's personal data, keeping only a hashed entry so the address is never
    mailed again.

    Example: dispatch subscribers forget ana@example.com
    """
    from dispatch.store import subscribers as subs
    _, engine = load_with_store(config)
    subs.forget(engine, email, now())
    say(f"forgot {email}: personal data erased, address suppressed (hashed)")


def segments(as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
             config: ConfigOption = None) -> None:
    """Each segment from config.toml with its topics and live count of active subscribers.

    Example: dispatch segments
    """
    from dispatch.store import segments as segs
    settings, engine = load_with_store(config)
    counts = segs.segment_counts(engine, settings.segments)
    if as_json:
        out.print_json(data=[{"segment": n, "topics": list(s.topics), "match": s.match,
                              "exclude": list(s.exclude), "active": counts[n]}
                             for n, s in settings.segments.items()])
        return
    print_table(("segment", "topics", "match", "exclude", "active subscribers"),
                ((name, ", ".join(seg.topics), seg.match, ", ".join(seg.exclude),
                  f"{counts[name]:,}") for name, seg in settings.segments.items()))
