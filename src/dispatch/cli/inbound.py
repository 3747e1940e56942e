"""`dispatch inbound`: what comes back (bounces, complaints, auto-replies, mailto
unsubscribes), read from files or a bounce mailbox (IMAP), or received by the inbound SMTP
server."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from dispatch.cli.common import (
    ConfigOption,
    group,
    load_with_store,
    log_to_stderr,
    now,
    say,
    stop_on_signals,
    warn,
)
from dispatch.errors import DispatchError

# The store and the parsers are imported inside each command: start-up stays quick.

inbound_app = group("What comes back: bounces, complaints and mailto unsubscribes.")


@inbound_app.command("process")
def process_files(
    files: Annotated[list[Path], typer.Argument(help=".eml files (one message each) or mbox "
                                                     "files.", show_default=False)],
    config: ConfigOption = None,
) -> None:
    """Read bounces, complaints, auto-replies and mailto unsubscribes from files and act on
    them: a hard bounce makes the subscriber bounced, a complaint complained, a mailto
    request unsubscribed; soft bounces are counted. Prints what each message became.
    Processing a message again changes nothing. Exits 1 when a file could not be read.

    Example: dispatch inbound process bounces.mbox returned/*.eml
    """
    from dispatch.audience.tokens import Signer
    from dispatch.config import InboundSettings
    from dispatch.inbound.process import process, read_messages
    from dispatch.store.secrets import secret

    settings, engine = load_with_store(config)
    signer = Signer(secret(engine))
    max_size = (settings.inbound or InboundSettings()).max_size
    kinds: Counter[str] = Counter()
    unreadable = 0
    for path in files:
        try:
            for label, raw in read_messages(path, max_size):
                outcome = process(engine, raw, settings, signer, now(), source="file")
                kinds[outcome.kind] += 1
                say(f"{label}: {outcome.describe()}")
        except DispatchError as exc:
            unreadable += 1
            for problem in exc.problems:
                warn(str(problem))
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "none"
    say(f"{sum(kinds.values())} message(s): {summary}")
    if unreadable:
        raise typer.Exit(1)


@inbound_app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.",
                                             show_default="inbound.host or 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port to listen on.",
                                             show_default="inbound.port or 2525")] = None,
    config: ConfigOption = None,
) -> None:
    """Receive bounces, complaints and mailto unsubscribes by SMTP for delivery.verp_domain
    (point the domain's MX here) until SIGTERM or Ctrl-C. Only that domain's addresses are
    accepted; each message is kept in inbound.spool before the 250 and then processed as
    `dispatch inbound process` does. With an inbound table in config.toml `dispatch run`
    runs this server itself.

    Example: dispatch inbound serve --host 0.0.0.0 --port 25
    """
    from dispatch.inbound.server import InboundServer

    settings, engine = load_with_store(config)
    log_to_stderr()
    log = logging.getLogger("dispatch.inbound")
    server = InboundServer(engine, settings, host=host, port=port)
    with stop_on_signals() as stop:
        server.start()
        log.info("dispatch inbound serve: SMTP on %s for %s; Ctrl-C stops", server.address,
                 settings.delivery.verp_domain)
        while not stop.wait(1.0):
            pass
        server.stop()
    log.info("dispatch inbound serve: stopped")


@inbound_app.command("poll")
def poll_mailbox(config: ConfigOption = None) -> None:
    """Read the bounce mailbox in [inbound.imap] once and act on each new message as
    `dispatch inbound process` does; each one is flagged \\Seen (or moved to
    inbound.imap.move_to) only after it was processed, so a crash reads it again, and reading
    it again changes nothing. Prints what each message became. With [inbound.imap] in
    config.toml `dispatch run` polls every inbound.imap.interval itself.

    Example: dispatch inbound poll
    """
    from dispatch.audience.tokens import Signer
    from dispatch.inbound.imap import Polled, poll
    from dispatch.store.secrets import secret

    settings, engine = load_with_store(config)
    signer = Signer(secret(engine))
    kinds: Counter[str] = Counter()

    def show(polled: Polled) -> None:
        kinds[polled.outcome.kind] += 1
        say(f"message {polled.uid}: {polled.outcome.describe()}")

    poll(engine, settings, signer, now, show)
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "none"
    say(f"{sum(kinds.values())} message(s): {summary}")
