"""Sending: `dispatch send`, `dispatch worker`, `dispatch status`, `dispatch pause` and
`dispatch resume`. What happens to a send is decided in deliver/control.py; this module
shows it, asks, and picks exit codes."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dispatch.cli.common import (
    ConfigOption,
    DeliveryProgress,
    daemon_hint,
    load,
    load_with_store,
    now,
    open_engine,
    out,
    print_table,
    say,
    stats_line,
    stop_on_signals,
    warn,
)
from dispatch.errors import DispatchError, Problem, display_path
from dispatch.states import RowState, SendStatus

if TYPE_CHECKING:  # the stack is imported where a command uses it: start-up stays quick
    from sqlalchemy import Engine

    from dispatch.compose.models import Issue
    from dispatch.config import Settings
    from dispatch.deliver.control import SendPlan
    from dispatch.deliver.recording import Stats
    from dispatch.deliver.report import SendReport


def _print_status(engine: Engine, issue: str | None, as_json: bool = False
                  ) -> list[SendReport]:
    from dispatch.deliver.report import send_reports
    report = send_reports(engine, issue)
    if as_json:
        out.print_json(data=[entry.to_json() for entry in report])
        return report
    # The skipped column counts everyone who got nothing, as a dry run does; why is below.
    print_table(("issue", "status", *RowState),
                ((e.issue, e.status, *(f"{e.states[state]:,}" for state in RowState))
                 for e in report))
    for entry in report:
        for why, n in entry.skipped.items():
            say(f"{entry.issue}: skipped {n:,}: {why}")
        came_back = ", ".join(f"{n:,} {key.replace('_', ' ')}"
                              for key, n in entry.came_back.items() if n)
        if came_back:
            say(f"{entry.issue}: came back: {came_back}")
        if entry.reason:
            say(f"{entry.issue}: {entry.status}: {entry.reason}")
        for e in entry.last_errors:
            say(f"{entry.issue}: {e.email or '(erased)'}: {e.state} after "
                f"{e.attempts} attempt(s): {e.reply}")
    if issue is None:
        from dispatch.store import reports
        nowhere = reports.counts(engine).get(None, {})
        if any(nowhere.values()):
            say("reports naming no send: " + ", ".join(
                f"{n:,} {key.replace('_', ' ')}" for key, n in nowhere.items() if n))
    return report


@contextmanager
def _bulk_delivery() -> Iterator[None]:
    """A process that delivers in bulk switches threads more often (config/defaults.py's
    SWITCH_INTERVAL says why); set here, by the command, not for every process that
    happens to deliver."""
    from dispatch.config.defaults import SWITCH_INTERVAL
    previous = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def _finish(stats: Stats) -> None:
    say(f"this run: {stats_line(stats)}")
    if stats.paused:  # deliver.loop.run_delivery has paused the send
        raise DispatchError(Problem("delivery", f"paused: the relay refuses us: {stats.paused}. "
                                    "Fix the relay settings (or wait for the relay), then run "
                                    "the same command again to resume."))


def _dry_run(engine: Engine, issue: Issue, settings: Settings, out_dir: Path | None,
             sample: int | None) -> None:
    from dispatch.deliver import sending
    target = out_dir or Path("out") / issue.slug / "dry-run"
    with DeliveryProgress(0, "dry run") as bar:
        data = sending.dry_run(engine, issue, settings, target, now(), sample, bar).data
    for variant in data["variants"]:
        say(f"{variant['label']}: {variant['recipients']:,} recipient(s) "
            f"({variant['id']})")
    for reason, n in data["skipped"].items():
        say(f"skipped {n:,}: {reason}")
    say(f"dry run: {data['messages_built']:,} message(s) built, {data['files_written']:,} "
        f"written to {display_path(target)} (report.json); nothing sent, store unchanged")


def _test_send(engine: Engine, issue: Issue, settings: Settings, address: str) -> None:
    from dispatch.deliver import sending
    from dispatch.deliver.transport import TransportError
    try:
        replies = sending.send_test_copies(engine, issue, settings, address, now())
    except TransportError as exc:
        detail = f"{exc}: {exc.reply}" if exc.reply else str(exc)
        raise DispatchError(Problem("smtp", f"test send failed: {detail}")) from None
    for vid, reply in replies:
        say(f"{vid} → {address}: {reply}")
    if any(reply.code >= 400 for _, reply in replies):
        raise typer.Exit(1)


def _launch(engine: Engine, plan: SendPlan, settings: Settings, yes: bool) -> None:
    """Show who gets which variant, ask, launch."""
    from dispatch.deliver import control, sending
    assert plan.audience is not None  # a LAUNCH plan carries its audience
    audience = plan.audience
    print_table(("variant", "recipients", "id"),
                ((label, f"{n:,}", vid)
                 for label, n, vid in sending.variant_table(plan.issue, audience, settings)))
    for line in sending.skipped_lines(audience.skipped):
        say(f"skipped {line}")
    plan.require_audience()
    if not yes:
        typer.confirm(f"Send {plan.issue.subject!r} to {audience.recipients:,} recipient(s) "
                      f"in {len(audience.variants)} variant(s)?", abort=True)
    if not control.launch_planned(engine, plan, settings, now()):
        say("another process launched this issue a moment ago; delivering")


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
    from dispatch.compose.issues import load_issue, resolve_issue_path
    from dispatch.deliver import control, sending
    from dispatch.deliver.control import SendAction
    from dispatch.deliver.loop import run_delivery
    from dispatch.deliver.transport import smtp_transport
    settings = load(config)
    loaded = load_issue(resolve_issue_path(issue, settings), settings)
    engine = open_engine(settings)
    if dry_run:
        _dry_run(engine, loaded, settings, out_dir, sample)
        return
    settings.smtp.check_credentials()  # before anything is launched or a relay contacted
    if test_to:
        _test_send(engine, loaded, settings, test_to)
        return
    plan = control.prepare_send(engine, loaded, settings)
    if plan.action is SendAction.SENT:
        assert plan.send is not None
        finished = plan.send.finished_at
        when = f"{finished:%Y-%m-%d %H:%M} UTC" if finished else "?"
        say(f"{loaded.slug} was sent already (finished {when}); see dispatch status "
            f"{loaded.slug}")
        return
    if plan.action is SendAction.LAUNCH:
        _launch(engine, plan, settings, yes)
    elif plan.action is SendAction.RESUMED:
        assert plan.send is not None
        say(f"resuming a paused send (paused: {plan.send.reason})")
    left = control.unfinished(engine, loaded.slug)
    if launch_only:
        say(f"{left:,} message(s) queued; run `dispatch worker` to deliver them")
        return
    try:
        with (stop_on_signals() as stop, DeliveryProgress(left, "sending") as bar,
              _bulk_delivery()):
            stats = run_delivery(engine, settings, smtp_transport(settings.smtp),
                                 issue=loaded.slug, stop=stop, progress=bar)
    except sending.WorkerBusy as busy:
        # A `dispatch worker` already holds this SQLite store: it will deliver the rows.
        holder = busy.problems[0].message.split(" is ")[0]
        say(f"{left:,} message(s) queued; {holder} is delivering from this store and will "
            "send them")
        return
    _finish(stats)
    report = _print_status(engine, loaded.slug)
    if stop.is_set() and any(e.status == SendStatus.SENDING for e in report):
        warn(f"stopped before the end; run `dispatch send {loaded.slug}` again to finish")
        raise typer.Exit(1)


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
    from dispatch.deliver.loop import run_delivery
    from dispatch.deliver.transport import smtp_transport
    settings, engine = load_with_store(config)
    settings.smtp.check_credentials()
    with (stop_on_signals() as stop, DeliveryProgress(0, "worker", every=10.0) as bar,
          _bulk_delivery()):
        stats = run_delivery(engine, settings, smtp_transport(settings.smtp), stop=stop,
                             until_done=until_done, progress=bar)
    _finish(stats)


def status(
    issue: Annotated[str | None, typer.Argument(help="Issue slug (default: every send).")
                     ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    config: ConfigOption = None,
) -> None:
    """Per send: queued, sending, sent, retrying, failed, bounced and skipped counts; what
    came back (hard and soft bounces, complaints, unsubscribes by one-click, mailto or the
    preferences page, auto-replies, unmatched reports); and the last errors.

    Example: dispatch status 2026-11-27-thaw
    """
    _, engine = load_with_store(config)
    _print_status(engine, issue, as_json)


def pause(issue: Annotated[str, typer.Argument(help="A send in progress.")],
          config: ConfigOption = None) -> None:
    """Pause a send in progress: workers stop taking its messages (those in flight finish).

    Example: dispatch pause 2026-11-27-thaw
    """
    from dispatch import schedule as scheduling
    slug = Path(issue).name
    scheduling.pause_issue(open_engine(load(config)), slug)
    say(f"paused {slug}; dispatch resume {slug} continues it")


def resume(issue: Annotated[str, typer.Argument(help="A paused send.")],
           config: ConfigOption = None) -> None:
    """Resume a paused send (paused by an editor or by repeated relay failures); a running
    `dispatch run` or `dispatch worker` picks it up within seconds.

    Example: dispatch resume 2026-11-27-thaw
    """
    from dispatch import schedule as scheduling
    slug = Path(issue).name
    engine = open_engine(load(config))
    scheduling.resume_issue(engine, slug)
    say(f"resumed {slug}")
    daemon_hint(engine)
