"""The `dispatch` command: a thin shell over the library. Every command has help and an example."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import Engine
from typer.core import TyperGroup

from dispatch import __version__
from dispatch.compose.check import check as run_check
from dispatch.config import Settings, WebSettings, load_settings
from dispatch.compose.briefs import read_text_file
from dispatch.errors import ConfigError, DispatchError, Problem, display_path
from dispatch import schedule as scheduling
from dispatch.deliver import sending
from dispatch.web import app as web
from dispatch.deliver.worker import Stats
from dispatch.devtools.demo import run_demo
from dispatch.compose.issues import issue_folders, load_issue, resolve_issue_path
from dispatch.compose.importer import import_file, output_name
from dispatch.compose.preview import preview as run_preview
from dispatch.compose.variants import plan_variants
from dispatch.store import outbox
from dispatch.store import subscribers as subs
from dispatch.store.db import create, open_store, upgrade
from dispatch.states import RowState, SendStatus, SubscriberStatus
from dispatch.store import segments as segs
from dispatch.store import sends as sendstore
from dispatch.store.sends import CONFIRMATIONS
from dispatch.audience import csvio
from dispatch.web.server import WebServer
from dispatch.store.subscribers import Subscriber
from dispatch.deliver.transport import TransportError, smtp_transport

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


class _ScheduleGroup(_Group):
    """`dispatch schedule ISSUE …` is short for `dispatch schedule add ISSUE …`."""

    def resolve_command(self, ctx: typer.Context, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["add", *args]
        return super().resolve_command(ctx, args)


schedule_app = typer.Typer(
    cls=_ScheduleGroup, no_args_is_help=True,
    help="Schedule issues: dispatch schedule ISSUE --at TIME (short for `schedule add`), "
         "then list, move or cancel. `dispatch run` sends them on time.")
app.add_typer(schedule_app, name="schedule")

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
        mixes = segs.active_topic_mixes(_store(settings))
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
    rows, rejected, read = csvio.read_csv(text, settings.topics, display_path(file))
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
    people = subs.iter_subscribers(engine)
    if file is None:
        csvio.write_csv(sys.stdout, people)
        return
    with file.open("w", encoding="utf-8", newline="") as handle:
        written = csvio.write_csv(handle, people)
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
    if status and status not in set(SubscriberStatus):
        raise DispatchError(Problem("--status", f"expected one of "
                                                f"{', '.join(SubscriberStatus)}"))
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
    counts = segs.segment_counts(_store(settings), settings.segments)
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


# ---- Delivery ---------------------------------------------------------------------------

class _DeliveryProgress:
    """A live bar with rate and ETA on a terminal; a plain log line every few seconds
    otherwise (cron, systemd, CI)."""

    def __init__(self, total: int, label: str, every: float = 5.0) -> None:
        self.total = total
        self.label = label
        self.every = every
        self._last = 0.0
        self._bar: Progress | None = None

    def __enter__(self) -> _DeliveryProgress:
        if err.is_terminal:
            self._bar = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[detail]}"), TimeRemainingColumn(),
                                 console=err)
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, detail="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar:
            self._bar.stop()

    def __call__(self, stats: Stats) -> None:
        detail = _stats_line(stats)
        if self._bar:
            self._bar.update(self._task, completed=stats.done, detail=detail)
        elif time.monotonic() - self._last >= self.every:
            self._last = time.monotonic()
            err.print(f"{self.label}: {stats.done:,}/{self.total:,} done; {detail}",
                      markup=False)


def _when(send: sendstore.SendInfo, settings: Settings) -> str:
    """A send time in the editors' zone and in UTC."""
    if send.send_at is None:
        return "-"
    if send.local_time:
        return (f"{send.local_time.replace('T', ' ')[:16]} in each subscriber's zone "
                f"(first {send.send_at:%Y-%m-%d %H:%M} UTC)")
    zone = ZoneInfo(settings.newsletter.timezone)
    return (f"{send.send_at.astimezone(zone):%Y-%m-%d %H:%M} {settings.newsletter.timezone} "
            f"({send.send_at:%Y-%m-%d %H:%M} UTC)")


def _stats_line(stats: Stats) -> str:
    o = stats.outcomes
    parts = [f"{o['sent']:,} sent ({stats.rate:,.0f}/s)"]
    parts += [f"{o[k]:,} {label}" for k, label in (("retry", "to retry"), ("failed", "failed"),
                                                  ("bounced", "bounced"),
                                                  ("skipped", "skipped")) if o[k]]
    if stats.note:
        parts.append(stats.note)
    return ", ".join(parts)


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM or Ctrl-C stops cleanly: in-flight messages finish, the rest are released.
    A second Ctrl-C interrupts at once."""
    stop = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        err.print("stopping: finishing the messages in flight (Ctrl-C again to force)",
                  markup=False)
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _finish(stats: Stats, engine: Engine, issue: str | None) -> None:
    out.print(f"this run: {_stats_line(stats)}", markup=False)
    if stats.paused:
        sendstore.pause_running(engine, issue, stats.paused)
        raise DispatchError(Problem("delivery", f"paused after repeated sender-side failures: "
                                    f"{stats.paused}. Fix the relay settings, then run the "
                                    "same command again to resume."))


@app.command()
def send(
    issue: Annotated[str, typer.Argument(help="Issue folder or slug under issues/.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Skip the confirmation prompt.")
                   ] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Write each recipient's message as .eml instead of sending; "
                          "change nothing in the store.")] = False,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Dry-run output folder.", show_default="out/<slug>/dry-run")] = None,
    sample: Annotated[int | None, typer.Option(
        min=0, help="Dry run: write only N .eml files and count the rest.")] = None,
    test_to: Annotated[str | None, typer.Option(
        help="Send every variant once to this address, marked as a test; the outbox is not "
             "touched.")] = None,
    launch_only: Annotated[bool, typer.Option(
        help="Snapshot the audience into the outbox and leave delivery to `dispatch worker`."
    )] = False,
    config: ConfigOption = None,
) -> None:
    """Send an issue: snapshot its audience into the outbox, then deliver over SMTP.

    Running it again resumes an interrupted or paused send; nobody is added twice. Ctrl-C or
    SIGTERM stops cleanly and a later run finishes the job.

    Example: dispatch send 2026-11-27-thaw --dry-run --sample 20
    """
    settings = _settings(config)
    loaded = load_issue(resolve_issue_path(issue, settings), settings)
    engine = _store(settings)
    if dry_run:
        target = out_dir or Path("out") / loaded.slug / "dry-run"
        with _DeliveryProgress(0, "dry run") as bar:
            report = sending.dry_run(engine, loaded, settings, target, _now(), sample, bar)
        data = report.data
        for variant in data["variants"]:
            out.print(f"{variant['id']}: {variant['recipients']:,} recipient(s), "
                      f"{', '.join(variant['topics'])}", markup=False)
        for reason, n in data["skipped"].items():
            out.print(f"skipped {n:,}: {reason}", markup=False)
        out.print(f"dry run: {data['messages_built']:,} message(s) built, "
                  f"{data['files_written']:,} written to {display_path(target)} "
                  f"(report.json); nothing sent, store unchanged", markup=False)
        return
    if test_to:
        try:
            replies = sending.send_test_copies(engine, loaded, settings, test_to, _now())
        except TransportError as exc:
            detail = f"{exc}: {exc.reply}" if exc.reply else str(exc)
            raise DispatchError(Problem("smtp", f"test send failed: {detail}")) from None
        for vid, reply in replies:
            out.print(f"{vid} → {test_to}: {reply}", markup=False)
        if any(reply.code >= 400 for _, reply in replies):
            raise typer.Exit(1)
        return
    existing = sendstore.get_send(engine, loaded.slug)
    if existing is not None and existing.status == "scheduled":
        raise DispatchError(Problem(loaded.slug, f"scheduled for {_when(existing, settings)}; "
                                                 f"run dispatch schedule cancel {loaded.slug} "
                                                 "first to send it now"))
    if existing is None or existing.launched_at is None:
        audience = outbox.plan_audience(engine, loaded, settings)
        table = Table("variant", "recipients", "topics")
        for vid, n, topics in sending.variant_table(audience):
            table.add_row(vid, f"{n:,}", ", ".join(topics))
        out.print(table)
        for line in sending.skipped_lines(audience.skipped):
            out.print(f"skipped {line}", markup=False)
        if not audience.rows:
            raise DispatchError(Problem(loaded.slug, "nobody to send to: no active subscriber "
                                                     "matches this issue"))
        if not yes:
            typer.confirm(f"Send {loaded.subject!r} to {len(audience.rows):,} recipient(s) "
                          f"in {len(audience.variants)} variant(s)?", abort=True)
        if not sending.launch_issue(engine, loaded, audience, settings, _now()):
            out.print("another process launched this issue a moment ago; delivering",
                      markup=False)
    elif existing.status == "sent":
        when = f"{existing.finished_at:%Y-%m-%d %H:%M} UTC" if existing.finished_at else "?"
        out.print(f"{loaded.slug} was sent already (finished {when}); see dispatch status "
                  f"{loaded.slug}", markup=False)
        return
    elif existing.status == "cancelled":
        raise DispatchError(Problem(loaded.slug, "this send was cancelled"))
    else:
        if existing.status == "paused":
            out.print(f"resuming a paused send (paused: {existing.reason})", markup=False)
            sendstore.set_status(engine, loaded.slug, SendStatus.SENDING,
                                 from_=[SendStatus.PAUSED])
    left = sum(n for state, n in outbox.state_counts(engine, loaded.slug)
               .get(loaded.slug, {}).items() if state in ("queued", "retrying", "sending"))
    if launch_only:
        out.print(f"{left:,} message(s) queued; run `dispatch worker` to deliver them",
                  markup=False)
        return
    try:
        with _stop_on_signals() as stop, _DeliveryProgress(left, "sending") as bar:
            stats = sending.run_worker(engine, settings, smtp_transport(settings.smtp),
                                       issue=loaded.slug, stop=stop, progress=bar)
    except sending.WorkerBusy as busy:
        # A `dispatch worker` already holds this SQLite store: it will deliver the rows.
        out.print(f"{left:,} message(s) queued; {busy.problems[0].message.split(' is ')[0]} "
                  "is delivering from this store and will send them", markup=False)
        return
    _finish(stats, engine, loaded.slug)
    _print_status(engine, loaded.slug)
    send_row = sendstore.get_send(engine, loaded.slug)
    if stop.is_set() and send_row is not None and send_row.status == "sending":
        err.print(f"stopped before the end; run `dispatch send {loaded.slug}` again to finish",
                  markup=False)
        raise typer.Exit(1)


@app.command()
def worker(
    until_done: Annotated[bool, typer.Option(
        help="Exit when the running sends have nothing left (default: keep polling).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Deliver queued messages of every running send. Several workers may share one
    PostgreSQL store; with SQLite, one at a time.

    Example: dispatch worker --until-done
    """
    settings = _settings(config)
    engine = _store(settings)
    with _stop_on_signals() as stop, _DeliveryProgress(0, "worker", every=10.0) as bar:
        stats = sending.run_worker(engine, settings, smtp_transport(settings.smtp), stop=stop,
                                   until_done=until_done, progress=bar)
    _finish(stats, engine, None)


def _print_status(engine: Engine, issue: str | None, as_json: bool = False) -> None:
    sends = [s for s in sendstore.list_sends(engine) if issue is None or s.issue == issue]
    counts = outbox.state_counts(engine, issue)
    report: list[dict[str, Any]] = [
              {"issue": s.issue, "status": s.status, "recipients": s.recipients,
               "reason": s.reason,
               "send_at": s.send_at.isoformat() if s.send_at else None,
               "states": {state: counts[s.issue][state] if s.issue in counts else 0
                          for state in RowState},
               "last_errors": [{**e, "updated_at": e["updated_at"].isoformat()}
                               for e in outbox.last_errors(engine, s.issue)]}
              for s in sends]
    if as_json:
        out.print_json(data=report)
        return
    table = Table("issue", "status", *RowState)
    for entry in report:
        table.add_row(entry["issue"], entry["status"],
                      *(f"{entry['states'][state]:,}" for state in RowState))
    out.print(table)
    for entry in report:
        if entry["reason"]:
            out.print(f"{entry['issue']}: {entry['status']}: {entry['reason']}", markup=False)
        for e in entry["last_errors"]:
            out.print(f"{entry['issue']}: {e['email'] or '(erased)'}: {e['state']} after "
                      f"{e['attempts']} attempt(s): {e['reply']}", markup=False)


@app.command()
def status(
    issue: Annotated[str | None, typer.Argument(help="Issue slug (default: every send).")
                     ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    config: ConfigOption = None,
) -> None:
    """Per send: queued, sending, sent, retrying, failed, bounced and skipped counts, and the
    last errors.

    Example: dispatch status 2026-11-27-thaw
    """
    settings = _settings(config)
    engine = _store(settings)
    if issue and sendstore.get_send(engine, Path(issue).name) is None:
        raise DispatchError(Problem(issue, "no send for this issue yet (dispatch send …)"))
    _print_status(engine, Path(issue).name if issue else None, as_json)


@app.command()
def demo(
    subscribers: Annotated[int, typer.Option(min=1, max=100_000,
                                             help="How many subscribers to generate.")] = 500,
    folder: Annotated[Path, typer.Option("--dir", help="Where the demo store and sample "
                                                       "messages go (emptied first).")
                      ] = Path("out/demo"),
    issue: Annotated[str | None, typer.Option(help="Issue to send (default: the first).")
                     ] = None,
    config: ConfigOption = None,
) -> None:
    """Run the whole path on embedded defaults: a fresh SQLite store with generated
    subscribers, an in-process SMTP server on localhost, a real send, and what arrived.

    Nothing leaves this machine.

    Example: dispatch demo --subscribers 2000
    """
    settings = _settings(config)
    folders = issue_folders(settings)
    if issue is None and not folders:
        raise DispatchError(Problem(display_path(settings.issues_dir), "no issue to send"))
    loaded = load_issue(resolve_issue_path(issue, settings) if issue else folders[0], settings)
    out.print(f"demo: {subscribers:,} generated subscribers, issue {loaded.slug!r}, "
              f"in-process SMTP server on 127.0.0.1", markup=False)
    with _DeliveryProgress(subscribers, "sending") as bar:
        result = run_demo(settings, loaded, folder, subscribers, progress=bar)
    table = Table("variant", "messages received")
    for vid, n in sorted(result.per_variant.items()):
        table.add_row(vid, f"{n:,}")
    out.print(table)
    out.print(f"{result.recipients:,} recipient(s) planned, {result.received:,} message(s) "
              f"received by the SMTP server; {_stats_line(result.stats)}", markup=False)
    out.print(f"sample messages: {display_path(result.mailbox)}; store: "
              f"{display_path(Path(result.store_url.removeprefix('sqlite:///')))}",
              markup=False)
    for problem in result.problems:
        err.print(problem, markup=False)
    if result.problems or result.received != result.recipients:
        raise typer.Exit(1)


# ---- Scheduling -------------------------------------------------------------------------

AtOption = Annotated[str | None, typer.Option(
    "--at", help='When: "2026-12-01 07:00" (in --tz, else newsletter.timezone) or any ISO 8601 '
                 'time with seconds and offset, e.g. 2026-12-01T07:00:00+09:00.')]
TzOption = Annotated[str | None, typer.Option(
    "--tz", help="IANA zone of a bare --at time, e.g. Asia/Seoul.")]


def _daemon_hint(engine: Engine) -> None:
    if not outbox.live_workers(engine, _now()):
        err.print("note: no `dispatch run` daemon is running against this store; start one to "
                  "send scheduled issues on time", markup=False)


@schedule_app.command("add")
def schedule_add(
    issue: Annotated[str, typer.Argument(help="Issue folder or slug under issues/.")],
    at: AtOption = None,
    tz: TzOption = None,
    local_time: Annotated[bool, typer.Option(
        "--local-time", help="Deliver at the --at wall-clock time in each subscriber's own "
                             "zone (schedule.default_timezone for those without one).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Schedule an issue (at --at, else its send_at). The issue is checked first (every variant
    rendered); an issue with problems or a time in the past is refused.

    Example: dispatch schedule 2026-11-27-thaw --at "2026-12-01 07:00" --tz Asia/Seoul
    """
    settings = _settings(config)
    engine = _store(settings)
    loaded, when = scheduling.schedule_issue(engine, settings, issue, at=at, tz=tz,
                                             local=local_time, now=_now())
    send = sendstore.get_send(engine, loaded.slug)
    assert send is not None
    out.print(f"scheduled {loaded.slug} for {_when(send, settings)}", markup=False)
    for zone, moment in when.releases:
        out.print(f"  {zone}: {moment:%Y-%m-%d %H:%M} UTC", markup=False)
    _daemon_hint(engine)


@schedule_app.command("list")
def schedule_list(
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    config: ConfigOption = None,
) -> None:
    """What goes out when (in the editors' zone and UTC), what went out, drafts, and the
    recurring digests' next times.

    Example: dispatch schedule list
    """
    settings = _settings(config)
    engine = _store(settings)
    sends = [s for s in sendstore.list_sends(engine) if s.issue != CONFIRMATIONS]
    sends.sort(key=lambda s: (s.status != "scheduled", s.send_at or s.created_at))
    counts = outbox.state_counts(engine)
    known = {s.issue for s in sends}
    drafts = [f.name for f in issue_folders(settings) if f.name not in known]
    now = _now()
    digests = [(r, scheduling.next_digest(r, now)) for r in settings.schedules]
    if as_json:
        out.print_json(data={
            "sends": [{"issue": s.issue, "status": s.status, "subject": s.subject,
                       "send_at": s.send_at.isoformat() if s.send_at else None,
                       "local_time": s.local_time, "recipients": s.recipients,
                       "sent": counts.get(s.issue, Counter()).get("sent", 0), "reason": s.reason}
                      for s in sends],
            "drafts": drafts,
            "recurring": [{"name": r.name, "cron": r.cron, "timezone": r.timezone,
                           "folder": r.folder, "next": n.isoformat() if n else None}
                          for r, n in digests]})
        return
    table = Table("issue", "status", f"when ({settings.newsletter.timezone})", "UTC", "sent")
    zone = ZoneInfo(settings.newsletter.timezone)
    for s in sends:
        local = ("each reader's " + s.local_time.replace("T", " ")[:16] if s.local_time
                 else f"{s.send_at.astimezone(zone):%Y-%m-%d %H:%M}" if s.send_at else "-")
        utc = f"{s.send_at:%Y-%m-%d %H:%M}" if s.send_at else "-"
        sent = f"{counts.get(s.issue, Counter()).get('sent', 0):,}/{s.recipients:,}" \
            if s.launched_at else "-"
        table.add_row(s.issue, s.status, local, utc, sent)
    for name in drafts:
        table.add_row(name, "draft", "-", "-", "-")
    out.print(table)
    for s in sends:
        if s.reason and s.status in ("paused", "failed", "missed"):
            out.print(f"{s.issue}: {s.status}: {s.reason}", markup=False)
    for r, moment in digests:
        when = (f"{moment.astimezone(ZoneInfo(r.timezone)):%Y-%m-%d %H:%M} {r.timezone} "
                f"({moment:%Y-%m-%d %H:%M} UTC)") if moment else "never"
        out.print(f"recurring {r.name} ({r.cron}, briefs from {r.folder}/): next {when}",
                  markup=False)
    if any(s.status == "scheduled" for s in sends):
        _daemon_hint(engine)


@schedule_app.command("move")
def schedule_move(
    issue: Annotated[str, typer.Argument(help="A scheduled issue's slug.")],
    at: Annotated[str, typer.Option("--at", help="The new time (same forms as for "
                                                 "`dispatch schedule`).")],
    tz: TzOption = None,
    config: ConfigOption = None,
) -> None:
    """Move a scheduled issue to a new time (a local-time issue stays local-time).

    Example: dispatch schedule move 2026-11-27-thaw --at "2026-12-02 07:00"
    """
    settings = _settings(config)
    engine = _store(settings)
    slug = Path(issue).name
    scheduling.move_issue(engine, settings, slug, at=at, tz=tz, now=_now())
    send = sendstore.get_send(engine, slug)
    assert send is not None
    out.print(f"moved {slug} to {_when(send, settings)}", markup=False)


@schedule_app.command("cancel")
def schedule_cancel(
    issue: Annotated[str, typer.Argument(help="A scheduled, sending or paused issue's slug.")],
    config: ConfigOption = None,
) -> None:
    """Cancel a scheduled issue, or stop a send in progress for good (messages already sent
    stay sent; the rest are dropped). Schedule it again to send it later.

    Example: dispatch schedule cancel 2026-11-27-thaw
    """
    engine = _store(_settings(config))
    slug = Path(issue).name
    dropped = scheduling.cancel_issue(engine, slug, _now())
    out.print(f"cancelled {slug}" + (f"; {dropped:,} unsent message(s) dropped" if dropped
                                     else ""), markup=False)


@app.command()
def pause(issue: Annotated[str, typer.Argument(help="A send in progress.")],
          config: ConfigOption = None) -> None:
    """Pause a send in progress: workers stop taking its messages (those in flight finish).

    Example: dispatch pause 2026-11-27-thaw
    """
    engine = _store(_settings(config))
    scheduling.pause_issue(engine, Path(issue).name)
    out.print(f"paused {Path(issue).name}; dispatch resume {Path(issue).name} continues it",
              markup=False)


@app.command()
def resume(issue: Annotated[str, typer.Argument(help="A paused send.")],
           config: ConfigOption = None) -> None:
    """Resume a paused send (paused by an editor or by repeated relay failures); a running
    `dispatch run` or `dispatch worker` picks it up within seconds.

    Example: dispatch resume 2026-11-27-thaw
    """
    engine = _store(_settings(config))
    scheduling.resume_issue(engine, Path(issue).name)
    out.print(f"resumed {Path(issue).name}", markup=False)
    _daemon_hint(engine)


@app.command()
def run(config: ConfigOption = None) -> None:
    """The daemon: sends scheduled issues on time, builds recurring digests, and delivers,
    until SIGTERM or Ctrl-C (messages in flight finish first). Logs go to standard error.

    An issue whose time passed while no daemon ran goes out if it is less than
    schedule.grace late, and is marked missed otherwise. With a web table in config.toml it
    also serves the subscriber web app (see `dispatch serve`).

    Example: dispatch run --config /etc/dispatch/config.toml
    """
    settings = _settings(config)
    engine = _store(settings)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    log = logging.getLogger("dispatch.run")
    last = [0.0, 0]

    def progress(stats: Stats) -> None:  # a log line every 10 s while messages move
        if stats.done != last[1] and time.monotonic() - last[0] >= 10:
            last[:] = [time.monotonic(), stats.done]
            log.info("delivery: %s", _stats_line(stats))

    daemon = scheduling.Daemon(engine, settings, smtp_transport(settings.smtp),
                               progress=progress)
    server = None
    if settings.web is not None:
        server = WebServer(web.create_app(engine, settings, queued=daemon.wake),
                               settings.web.host, settings.web.port,
                               settings.web.trusted_proxies)
    with _stop_on_signals() as stop:
        daemon.start()
        if server is not None:
            try:
                server.start()
            except DispatchError:
                daemon.stop()
                raise
            log.info("dispatch run: web app on %s (public address %s)", server.url,
                     settings.newsletter.base_url)
        waiting = sendstore.scheduled_sends(engine)
        log.info("dispatch run: %d issue(s) scheduled%s; %d recurring schedule(s); delivering "
                 "through %s:%d", len(waiting),
                 f", next {waiting[0].issue} at {_when(waiting[0], settings)}" if waiting
                 else "", len(settings.schedules), settings.smtp.host, settings.smtp.port)
        while not stop.wait(1.0):
            pass
        if server is not None:
            server.stop()
        daemon.stop()
    log.info("dispatch run: stopped")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.",
                                             show_default="web.host or 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port to listen on.",
                                             show_default="web.port or 8025")] = None,
    config: ConfigOption = None,
) -> None:
    """Serve the subscriber web app until Ctrl-C: one-click unsubscribe, topic preferences,
    sign-up with double opt-in, and the public archive. Put it at newsletter.base_url.

    Sign-up confirmations are delivered from here, or by `dispatch run` or `dispatch worker`
    when one of them is delivering from the same store. With a web table in config.toml,
    `dispatch run` serves this app itself.

    Example: dispatch serve --host 0.0.0.0 --port 8025
    """
    settings = _settings(config)
    engine = _store(settings)
    web_settings = settings.web or WebSettings()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    wake = threading.Event()
    server = WebServer(web.create_app(engine, settings, queued=wake.set),
                           host or web_settings.host, port or web_settings.port,
                           web_settings.trusted_proxies)
    with _stop_on_signals() as stop:
        server.start()
        sender = threading.Thread(target=sending.deliver_when_due, name="dispatch-delivery",
                                  args=(engine, settings, smtp_transport(settings.smtp), wake,
                                        stop))
        sender.start()
        logging.getLogger("dispatch.serve").info(
            "dispatch serve: %s (public address %s); Ctrl-C stops", server.url,
            settings.newsletter.base_url)
        while not stop.wait(1.0):
            pass
        server.stop()
        wake.set()
        sender.join()
    logging.getLogger("dispatch.serve").info("dispatch serve: stopped")


def main() -> None:
    app()
