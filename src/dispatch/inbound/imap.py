"""A bounce mailbox read over IMAP ([inbound.imap]; imap-tools), for deployments that cannot
receive SMTP: `dispatch inbound poll` reads it once, `dispatch run` every inbound.imap.interval.

Each message is processed as any other way in does (dispatch.inbound.process) and only then
flagged \\Seen, or moved to inbound.imap.move_to: a crash in between leaves it to be read
again, and processing it again changes nothing.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from dispatch.audience.tokens import Signer
from dispatch.clock import utcnow
from dispatch.config import ImapSettings, Settings
from dispatch.errors import DispatchError, Problem
from dispatch.inbound.process import Outcome, process

if TYPE_CHECKING:
    from imap_tools.mailbox import BaseMailBox

log = logging.getLogger("dispatch.inbound")


@dataclass(frozen=True)
class Polled:
    uid: str
    outcome: Outcome


def _mailbox(config: ImapSettings) -> BaseMailBox:
    from imap_tools import MailBox, MailBoxStartTls, MailBoxUnencrypted

    if config.security == "tls":
        return MailBox(config.host, config.port, timeout=config.timeout,
                       ssl_context=ssl.create_default_context())
    if config.security == "starttls":
        return MailBoxStartTls(config.host, config.port, timeout=config.timeout,
                               ssl_context=ssl.create_default_context())
    return MailBoxUnencrypted(config.host, config.port, timeout=config.timeout)


@contextmanager
def _session(config: ImapSettings) -> Iterator[BaseMailBox]:
    """A logged-in mailbox with the folder selected; DispatchError naming what failed."""
    from imap_tools.errors import MailboxLoginError

    where = f"inbound.imap ({config.host}:{config.port})"
    password = config.password()
    try:
        box = _mailbox(config)
        box.login(config.username, password, initial_folder=None)
    except MailboxLoginError:
        raise DispatchError(Problem(where, f"the server refused the login of "
                                           f"{config.username!r}")) from None
    except (OSError, ssl.SSLError) as exc:
        raise DispatchError(Problem(where, f"cannot connect: {exc}")) from None
    try:
        try:
            box.folder.set(config.folder)
        except Exception as exc:
            raise DispatchError(Problem("inbound.imap.folder", f"cannot open "
                                        f"{config.folder!r}: {exc}")) from None
        if config.move_to and not box.folder.exists(config.move_to):
            box.folder.create(config.move_to)
        yield box
    finally:
        try:
            box.logout()
        except Exception:
            pass  # the connection is gone already; nothing is left half-done on the server


def poll(engine: Engine, settings: Settings, signer: Signer, now: Callable[[], datetime],
         each: Callable[[Polled], None] = lambda polled: None) -> list[Polled]:
    """Read the mailbox once: every message not yet done (unseen, or all of the folder when
    processed ones are moved away) processed, then flagged or moved. DispatchError when the
    server cannot be reached or the login is refused; a message whose processing fails (the
    store is down) is left as it was, to be read again next time."""
    config = settings.inbound.imap if settings.inbound else None
    if config is None:
        raise DispatchError(Problem("inbound.imap", "add an [inbound.imap] table to "
                                                    "config.toml: the bounce mailbox to read"))
    from imap_tools import AND

    done: list[Polled] = []
    with _session(config) as box:
        uids = box.uids(AND(all=True) if config.move_to else AND(seen=False))
        for uid in uids:
            # BODY.PEEK: reading must not mark it seen; only a processed message is.
            status, data = box.client.uid("fetch", uid, "(BODY.PEEK[])")
            raw = next((item[1] for item in data or [] if isinstance(item, tuple)), None)
            if status != "OK" or not isinstance(raw, bytes):
                log.warning("inbound imap: message %s could not be fetched; skipped", uid)
                continue
            outcome = process(engine, raw, settings, signer, now(), source="imap")
            if config.move_to:
                box.move(uid, config.move_to)
            else:
                box.flag(uid, "\\Seen", True)
            polled = Polled(uid, outcome)
            done.append(polled)
            each(polled)
    return done


class ImapPoller:
    """`dispatch run`'s thread reading the mailbox every inbound.imap.interval; a failed poll
    is logged and tried again at the next one."""

    def __init__(self, engine: Engine, settings: Settings, signer: Signer,
                 clock: Callable[[], datetime] = utcnow) -> None:
        assert settings.inbound is not None and settings.inbound.imap is not None
        self.engine, self.settings, self.signer, self.clock = engine, settings, signer, clock
        imap = settings.inbound.imap
        self.interval = imap.interval.total_seconds()
        self.where = f"{imap.folder} on {imap.host}:{imap.port}"
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="dispatch-imap", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                poll(self.engine, self.settings, self.signer, self.clock,
                     lambda polled: log.info("inbound imap: %s", polled.outcome.describe()))
            except DispatchError as exc:
                log.error("inbound imap: %s; trying again in %d s",
                          "; ".join(str(p) for p in exc.problems), self.interval)
            except Exception:
                log.exception("inbound imap: the poll failed; trying again in %d s",
                              self.interval)
            self.stopping.wait(self.interval)
