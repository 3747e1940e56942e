"""The long-running processes: `dispatch run` (scheduler, delivery and, with a [web] table,
the web app, with an [inbound] table the inbound SMTP server) and `dispatch serve` (the web
app and its confirmations)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from dispatch.cli.common import (
    ConfigOption,
    load_with_store,
    log_to_stderr,
    stats_line,
    stop_on_signals,
)
from dispatch.errors import DispatchError

if TYPE_CHECKING:  # the stack is imported where a command uses it: start-up stays quick
    from sqlalchemy import Engine

    from dispatch.config import Settings
    from dispatch.deliver.recording import Stats
    from dispatch.web.server import WebServer


def _console_server(engine: Engine, settings: Settings, queued: Callable[[], None]
                    ) -> WebServer | None:
    """The console on its own listener, when [console] names a port (else it is /admin/ on
    the web app, or off)."""
    from dispatch.config import WebSettings
    from dispatch.web.console import create_console
    from dispatch.web.server import WebServer

    console, web_settings = settings.console, settings.web or WebSettings()
    if not console.enabled or console.port is None:
        return None
    return WebServer(create_console(engine, settings, queued=queued),
                     console.host or web_settings.host, console.port,
                     web_settings.trusted_proxies)


def run(config: ConfigOption = None) -> None:
    """The daemon: sends scheduled issues on time, builds recurring digests, and delivers,
    until SIGTERM or Ctrl-C (messages in flight finish first). Logs go to standard error.

    An issue whose time passed while no daemon ran goes out if it is less than
    schedule.grace late, and is marked missed otherwise. With a web table in config.toml it
    also serves the subscriber web app (see `dispatch serve`); with an inbound table it also
    receives bounces, complaints and mailto unsubscribes (see `dispatch inbound serve`).

    The [[schedules]] in config.toml are reloaded without a restart on SIGHUP (kill -HUP PID)
    and when the file is saved (seen within schedule.sync seconds); other settings need a
    restart. A file that is not valid is logged as an ERROR with its problems, and the
    schedules in use are kept.

    Example: dispatch run --config /etc/dispatch/config.toml
    """
    from dispatch import schedule as scheduling
    from dispatch.audience.tokens import Signer
    from dispatch.deliver.control import describe_when
    from dispatch.deliver.transport import smtp_transport
    from dispatch.inbound.imap import ImapPoller
    from dispatch.inbound.server import InboundServer
    from dispatch.store.secrets import secret
    from dispatch.store.sends import scheduled_sends
    from dispatch.web import app as web
    from dispatch.web.server import WebServer
    settings, engine = load_with_store(config)
    settings.smtp.check_credentials()
    log_to_stderr()
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    log = logging.getLogger("dispatch.run")
    last = [0.0, 0]

    def progress(stats: Stats) -> None:  # a log line every 10 s while messages move
        if stats.done != last[1] and time.monotonic() - last[0] >= 10:
            last[:] = [time.monotonic(), stats.done]
            log.info("delivery: %s", stats_line(stats))

    daemon = scheduling.Daemon(engine, settings, smtp_transport(settings.smtp),
                               progress=progress)
    server = None
    if settings.web is not None:
        server = WebServer(web.create_app(engine, settings, queued=daemon.wake),
                           settings.web.host, settings.web.port, settings.web.trusted_proxies)
    inbound = (InboundServer(engine, settings)
               if settings.inbound is not None and settings.inbound.smtp else None)
    imap = (ImapPoller(engine, settings, Signer(secret(engine)))
            if settings.inbound is not None and settings.inbound.imap is not None else None)
    console = _console_server(engine, settings, daemon.wake)
    hangup = threading.Event()
    previous = signal.signal(signal.SIGHUP, lambda _signum, _frame: hangup.set())
    with stop_on_signals() as stop:
        daemon.start()
        if server is not None:
            try:
                server.start()
            except DispatchError:
                daemon.stop()
                raise
            log.info("dispatch run: web app on %s (public address %s)", server.url,
                     settings.newsletter.base_url)
        if inbound is not None:
            try:
                inbound.start()
            except DispatchError:
                if server is not None:
                    server.stop()
                daemon.stop()
                raise
            log.info("dispatch run: inbound SMTP on %s for %s", inbound.address,
                     settings.delivery.verp_domain)
        if imap is not None:
            imap.start()
            log.info("dispatch run: reading the bounce mailbox %s every %d s", imap.where,
                     imap.interval)
        if console is not None:
            console.start()
            log.info("dispatch run: console on %s/admin/", console.url)
        waiting = scheduled_sends(engine)
        log.info("dispatch run: %d issue(s) scheduled%s; %d recurring schedule(s); delivering "
                 "through %s:%d", len(waiting),
                 f", next {waiting[0].issue} at {describe_when(waiting[0], settings)}"
                 if waiting else "", len(settings.schedules), settings.smtp.host,
                 settings.smtp.port)
        while not stop.wait(1.0):
            if hangup.is_set():  # reloaded here: a signal handler must not take locks
                hangup.clear()
                daemon.reload("SIGHUP")
        for listener in (imap, inbound, server, console):
            if listener is not None:
                listener.stop()
        daemon.stop()
    signal.signal(signal.SIGHUP, previous)
    log.info("dispatch run: stopped")


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
    from dispatch.config import WebSettings
    from dispatch.deliver.loop import Keep, run_delivery
    from dispatch.deliver.transport import smtp_transport
    from dispatch.web import app as web
    from dispatch.web.server import WebServer
    settings, engine = load_with_store(config)
    settings.smtp.check_credentials()  # it delivers sign-up confirmations
    web_settings = settings.web or WebSettings()
    log_to_stderr()
    log = logging.getLogger("dispatch.serve")
    wake = threading.Event()
    server = WebServer(web.create_app(engine, settings, queued=wake.set),
                       host or web_settings.host, port or web_settings.port,
                       web_settings.trusted_proxies)
    console = _console_server(engine, settings, wake.set)
    with stop_on_signals() as stop:
        server.start()
        if console is not None:
            console.start()
            log.info("dispatch serve: console on %s/admin/", console.url)
        sender = threading.Thread(target=run_delivery, name="dispatch-delivery",
                                  args=(engine, settings, smtp_transport(settings.smtp)),
                                  kwargs={"keep": Keep.WHEN_DUE, "stop": stop, "wake": wake})
        sender.start()
        log.info("dispatch serve: %s (public address %s); Ctrl-C stops", server.url,
                 settings.newsletter.base_url)
        while not stop.wait(1.0):
            pass
        server.stop()
        if console is not None:
            console.stop()
        wake.set()
        sender.join()
    log.info("dispatch serve: stopped")
