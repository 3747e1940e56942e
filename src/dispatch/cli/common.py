"""What every command module shares: the consoles, the group that turns errors into exit
codes, the --config option, opening the store, delivery progress, clean stops on signals, and
the formatting helpers more than one command prints with."""

from __future__ import annotations

import inspect
import logging
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Self

import typer
from rich.console import Console
from typer.core import TyperGroup

from dispatch.errors import DispatchError

# `dispatch --help` and `--version` import only this module's top and the command modules'
# tops: the stack under them (SQLAlchemy, pydantic settings, the renderer, the worker) is
# imported inside the functions that use it, so start-up stays a few tens of milliseconds.
if TYPE_CHECKING:
    from rich.progress import Progress
    from sqlalchemy import Engine

    from dispatch.config import Settings
    from dispatch.deliver.recording import Stats

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

# The Context click hands a group's hooks: recent typer releases vendor click as the private
# typer._click, older ones use click's own; the hooks take either without naming a private
# module.
ClickContext = Any


# The value each option takes, as help and usage name it; the rest are named by their type.
METAVARS = {"--at": "WHEN", "--tz": "ZONE", "--topics": "A,B", "--topic": "TOPIC",
            "--out": "DIR", "--dir": "DIR", "--config": "PATH", "--test-to": "ADDRESS",
            "--sample": "N", "--subscribers": "N", "--status": "STATUS", "--segment": "SEGMENT",
            "--name": "NAME", "--issue": "ISSUE", "--host": "HOST", "--port": "PORT",
            "--subject": "TEXT", "--role": "ROLE"}
_TYPE_METAVARS = {"path": "PATH", "integer": "N", "integer range": "N", "float": "SECONDS",
                  "float range": "SECONDS", "datetime": "WHEN"}


def readable_metavars(command: Any) -> None:
    """Name every value in a command's help and usage the way the README does (ISSUE, WHEN,
    PATH) instead of by its Python type (<str>, <bool>); flags take no value and show none,
    nor a default that only repeats the flag."""
    for param in command.params:
        if param.param_type_name == "argument":
            # The argument's own help line names it once, without "<str>" after it.
            param.display_type_rich = _no_type
        if param.metavar is not None:
            continue
        if param.param_type_name == "option":
            if param.is_flag:
                param.show_default = False
                continue
            long = max(param.opts, key=len)
            # Typer's own options may carry no click type (0.29): name them by their flag.
            type_name = getattr(getattr(param, "type", None), "name", "")
            param.metavar = METAVARS.get(long) or _TYPE_METAVARS.get(
                type_name, long.lstrip("-").upper())
        elif param.param_type_name == "argument":
            param.metavar = param.name.upper()  # usage adds {…}, […] and "..." itself


def _no_type(ctx: ClickContext) -> None:
    return None


def keep_examples(help_text: str | None) -> str | None:
    """Examples stay on their own lines, as typed: click's "\b" marks a paragraph that is
    not re-wrapped, so an example is never broken across lines at 80 columns."""
    if not help_text:
        return help_text
    paragraphs = inspect.cleandoc(help_text).split("\n\n")
    return "\n\n".join(_example(p) if p.startswith("Example:") else p for p in paragraphs)


def _example(paragraph: str) -> str:
    command = " ".join(paragraph.removeprefix("Example:").split())
    # Help is indented by 2; a long example gets a line of its own, indented 2 more.
    if len("Example: " + command) <= 76:
        return f"\b\nExample: {command}"
    return f"\b\nExample:\n  {command}"


class DispatchGroup(TyperGroup):
    """Turns every DispatchError into located one-line messages and its exit code; help that
    reads as sentences: readable value names and each command's first sentence in full."""

    def get_command(self, ctx: ClickContext, cmd_name: str) -> Any:
        command: Any = super().get_command(ctx, cmd_name)
        if command is not None and not getattr(command, "_readable", False):
            readable_metavars(command)
            command.help = keep_examples(command.help)
            command._readable = True
        return command

    def format_commands(self, ctx: ClickContext, formatter: Any) -> None:
        rows = [(name, command.get_short_help_str(limit=10_000))
                for name in self.list_commands(ctx)
                if (command := self.get_command(ctx, name)) is not None and not command.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: ClickContext) -> object:
        try:
            return super().invoke(ctx)
        except DispatchError as exc:
            for problem in exc.problems:
                err.print(str(problem), markup=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None


def group(help_text: str, cls: type[DispatchGroup] = DispatchGroup) -> typer.Typer:
    """A command group: help when called bare, errors as located lines."""
    return typer.Typer(cls=cls, no_args_is_help=True, help=help_text, rich_markup_mode=None)


ConfigOption = Annotated[Path | None, typer.Option(
    "--config", "-c", envvar="DISPATCH_CONFIG", show_default="./config.toml",
    help="Path to config.toml (or set DISPATCH_CONFIG).")]


def load(config: Path | None) -> Settings:
    from dispatch.config import load_settings
    return load_settings(config)


def open_engine(settings: Settings) -> Engine:
    from dispatch.store.db import open_store
    return open_store(settings.store.url)


def load_with_store(config: Path | None) -> tuple[Settings, Engine]:
    settings = load(config)
    return settings, open_engine(settings)


def now() -> datetime:
    return datetime.now(UTC)


def log_to_stderr() -> None:
    """The long-running commands log to standard error."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    # aiosmtpd logs every SMTP command at INFO (and its own readiness probe as a lost
    # connection): dispatch logs what each message became instead.
    logging.getLogger("mail.log").setLevel(logging.WARNING)


def say(text: str) -> None:
    """One line on standard output, printed as given (no Rich markup)."""
    out.print(text, markup=False)


def warn(text: str) -> None:
    """One line on standard error, printed as given."""
    err.print(text, markup=False)


def print_table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """A table when it fits the terminal whole; otherwise one entry per row, its first two
    cells as a heading and the rest as `column value` pairs wrapped under it, so no header
    or value is ever cut short (`sendi…`)."""
    from rich.table import Table
    rows = [list(row) for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    if sum(widths) + 3 * len(columns) + 1 <= out.width:
        table = Table(*columns)
        for row in rows:
            table.add_row(*row)
        out.print(table)
        return
    for row in rows:
        say("  ".join(row[:2]))
        pairs = [f"{c} {v}" for c, v in zip(columns[2:], row[2:], strict=True)]
        say(textwrap.fill(", ".join(pairs), width=max(out.width, 40), initial_indent="  ",
                          subsequent_indent="  "))


def stats_line(stats: Stats) -> str:
    """A delivery run in one line: sent and rate, then whatever else happened."""
    from dispatch.deliver.outcomes import Kind
    o = stats.outcomes
    parts = [f"{o[Kind.SENT]:,} sent ({stats.rate:,.0f}/s)"]
    parts += [f"{o[k]:,} {label}" for k, label in ((Kind.RETRY, "to retry"),
                                                  (Kind.UNKNOWN, "unknown, to retry once"),
                                                  (Kind.FAILED, "failed"),
                                                  (Kind.BOUNCED, "bounced"),
                                                  (Kind.SKIPPED, "skipped")) if o[k]]
    if stats.note:
        parts.append(stats.note)
    return ", ".join(parts)


def when_scheduled(engine: Engine, settings: Settings, issue: str) -> str:
    """The time of an issue's send as just written (scheduled or moved)."""
    from dispatch.deliver.control import describe_when
    from dispatch.store.sends import get_send
    send = get_send(engine, issue)
    assert send is not None  # sends are never deleted
    return describe_when(send, settings)


def daemon_hint(engine: Engine) -> None:
    """Scheduling works only with a daemon running: say so when none is."""
    from dispatch.store import progress
    if not progress.live_workers(engine, now()):
        warn("note: no `dispatch run` daemon is running against this store; start one to "
             "send scheduled issues on time")


class DeliveryProgress:
    """A live bar with rate and ETA on a terminal; a plain log line every few seconds
    otherwise (cron, systemd, CI)."""

    def __init__(self, total: int, label: str, every: float = 5.0) -> None:
        self.total = total
        self.label = label
        self.every = every
        self._last = 0.0
        self._bar: Progress | None = None
        self._unlogged: Stats | None = None  # the latest figures not yet logged

    def __enter__(self) -> Self:
        if err.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )
            self._bar = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[detail]}"), TimeRemainingColumn(),
                                 console=err)
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, detail="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar:
            self._bar.stop()
        elif self._unlogged is not None:
            # A log must end on the last figures, not on the first line it got.
            self._log(self._unlogged)

    def __call__(self, stats: Stats) -> None:
        if self._bar:
            total = max(stats.total, self.total, stats.done)
            self._bar.update(self._task, completed=stats.done, total=total or None,
                             detail=stats_line(stats))
        elif time.monotonic() - self._last >= self.every:
            self._log(stats)
        else:
            self._unlogged = stats

    def _log(self, stats: Stats) -> None:
        # The worker counts what is left as it goes (launches and other workers change it);
        # a send's own count is known before it starts.
        total = max(stats.total, self.total, stats.done)
        self._last, self._unlogged = time.monotonic(), None
        of = f"/{total:,}" if total else ""
        warn(f"{self.label}: {stats.done:,}{of} done; {stats_line(stats)}")


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM or Ctrl-C stops cleanly: in-flight messages finish, the rest are released.
    A second Ctrl-C interrupts at once."""
    stop = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        warn("stopping: finishing the messages in flight (Ctrl-C again to force)")
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
