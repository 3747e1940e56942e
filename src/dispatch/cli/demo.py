"""`dispatch demo`: the whole path on embedded defaults, nothing leaving the machine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from dispatch.cli.common import (
    ConfigOption,
    DeliveryProgress,
    load,
    print_table,
    say,
    stats_line,
    warn,
)
from dispatch.errors import DispatchError, Problem, display_path


def has_config() -> bool:
    return bool(os.environ.get("DISPATCH_CONFIG")) or Path("config.toml").is_file()


def example_config() -> Path:
    from dispatch.compose.scaffold import example_project
    path = example_project() / "config.toml"
    say(f"no config.toml here: using the example project shipped with dispatch ({path})")
    return path


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

    Nothing leaves this machine. Without a config.toml here (or --config), the example
    project shipped with dispatch is used, so the demo runs from any folder.

    Example: dispatch demo --subscribers 200
    """
    from dispatch.compose.issues import issue_folders, load_issue, resolve_issue_path
    from dispatch.devtools.demo import run_demo
    settings = load(config if config or has_config() else example_config())
    folders = issue_folders(settings)
    if issue is None and not folders:
        raise DispatchError(Problem(display_path(settings.issues_dir), "no issue to send"))
    loaded = load_issue(resolve_issue_path(issue, settings) if issue else folders[0], settings)
    say(f"demo: {subscribers:,} generated subscribers, issue {loaded.slug!r}, in-process SMTP "
        "server on 127.0.0.1")
    with DeliveryProgress(subscribers, "sending") as bar:
        result = run_demo(settings, loaded, folder, subscribers, progress=bar)
    print_table(("variant", "messages received"),
                ((vid, f"{n:,}") for vid, n in sorted(result.per_variant.items())))
    say(f"{result.recipients:,} recipient(s) planned, {result.received:,} message(s) received "
        f"by the SMTP server; {stats_line(result.stats)}")
    store = Path(result.store_url.removeprefix("sqlite:///"))
    say(f"sample messages: {display_path(result.mailbox)}; store: {display_path(store)}")
    for problem in result.problems:
        warn(problem)
    if result.problems or result.received != result.recipients:
        raise typer.Exit(1)


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def sink(
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port to listen on.",
                                             show_default="smtp.port or 8026")] = None,
    mailbox: Annotated[Path, typer.Option(help="Folder each message is written to, as a "
                                               "numbered .eml file.")] = Path("out/sink"),
    host: Annotated[str, typer.Option(help="Loopback address to listen on.")] = "127.0.0.1",
    config: ConfigOption = None,
) -> None:
    """Run a local SMTP server that accepts every message and keeps it in a folder, until
    Ctrl-C: the relay for trying `dispatch send` or `dispatch run` on this machine (the
    shipped config.toml points smtp at 127.0.0.1:8026). It listens on loopback only and
    never passes mail on.

    Example: dispatch sink --mailbox out/sink
    """
    from dispatch.cli.common import stop_on_signals
    from dispatch.devtools.sink import MailboxHandler, smtp_sink

    if host not in LOOPBACK:
        raise DispatchError(Problem("--host", f"{host} is not a loopback address: the sink "
                                              "only listens on this machine"))
    if port is None:
        port = load(config).smtp.port if has_config() or config else 8026
    mailbox.mkdir(parents=True, exist_ok=True)
    handler = MailboxHandler(mailbox, say=say, count=len(list(mailbox.glob("*.eml"))))
    try:
        running = smtp_sink(handler, host=host, port=port)
        running.__enter__()
    except OSError as exc:
        raise DispatchError(Problem(f"{host}:{port}", f"cannot listen: {exc.strerror or exc}")
                            ) from None
    with stop_on_signals() as stop:
        say(f"SMTP sink on {host}:{port}, writing messages to {display_path(mailbox)}; "
            "Ctrl-C stops")
        while not stop.wait(1.0):
            pass
    running.__exit__(None, None, None)
    say(f"{handler.count} message(s) received")
