"""`dispatch inbound serve`: an SMTP server (aiosmtpd) for the inbound domain
(delivery.verp_domain), where bounces, feedback-loop complaints and mailto unsubscribes
arrive when the domain's MX points here.

It accepts recipients on that domain only (550 5.7.1 for any other: never a relay), refuses
messages over inbound.max_size, caps connections and their time (dispatch.inbound.guarded),
and writes each accepted message to the spool (written,
fsynced, renamed into spool/new/, the folder fsynced) before answering 250, so a crash after
the 250 loses nothing. A thread then processes the spool: each message is classified and
recorded (dispatch.inbound.process), then deleted; processing is idempotent, so a crash in
between only processes it again. What is left in the spool is processed at start-up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import secrets
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import Engine

from dispatch.audience.tokens import Signer
from dispatch.clock import utcnow
from dispatch.config import InboundSettings, Settings
from dispatch.errors import DispatchError, Problem
from dispatch.inbound.guarded import Gate, GuardedSMTP
from dispatch.inbound.process import Outcome, process
from dispatch.store.secrets import secret

log = logging.getLogger("dispatch.inbound")
RESCAN = 60.0  # seconds between looks at the spool for messages whose processing failed


class Spool:
    """Accepted messages on disk: tmp/ while written, new/ once durable. A file is one JSON
    line (the envelope) and then the message's bytes."""

    def __init__(self, folder: Path) -> None:
        self.new = folder / "new"
        self.tmp = folder / "tmp"
        for path in (self.new, self.tmp):
            path.mkdir(parents=True, exist_ok=True)

    def put(self, sender: str, recipients: list[str], data: bytes) -> Path:
        """Write one message durably; its path in new/."""
        name = f"{utcnow():%Y%m%dT%H%M%S}-{secrets.token_hex(8)}.msg"
        envelope = json.dumps({"from": sender, "to": recipients}).encode() + b"\n"
        temporary = self.tmp / name
        with temporary.open("wb") as handle:
            handle.write(envelope + data)
            handle.flush()
            os.fsync(handle.fileno())
        final = self.new / name
        os.rename(temporary, final)
        directory = os.open(self.new, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return final

    def waiting(self) -> list[Path]:
        return sorted(self.new.glob("*.msg"))

    @staticmethod
    def read(path: Path) -> tuple[list[str], bytes]:
        envelope, _, data = path.read_bytes().partition(b"\n")
        return list(json.loads(envelope).get("to", [])), data


class InboundHandler:
    """aiosmtpd's handler: who may be written to, and keeping what is accepted."""

    def __init__(self, domain: str, spool: Spool, accepted: Callable[[Path], None]) -> None:
        self.domain = domain.lower()
        self.spool = spool
        self.accepted = accepted

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address.rpartition("@")[2].lower().rstrip(".") != self.domain:
            return f"550 5.7.1 Relaying denied: this server takes mail for {self.domain} only"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = envelope.original_content or envelope.content
        try:
            path = await asyncio.get_running_loop().run_in_executor(
                None, self.spool.put, envelope.mail_from or "", list(envelope.rcpt_tos), data)
        except OSError as exc:
            log.error("inbound: cannot keep a message in the spool: %s", exc)
            return "451 4.3.0 Cannot store the message now; try again later"
        self.accepted(path)
        return f"250 2.0.0 OK: kept as {path.name}"


class GuardedController(Controller):
    """aiosmtpd's Controller, serving each connection with GuardedSMTP (dispatch.inbound
    .guarded: the connection caps, idle timeout and message deadline)."""

    def factory(self) -> GuardedSMTP:
        return GuardedSMTP(self.handler, **self.SMTP_kwargs)


class InboundServer:
    """The SMTP listener and the thread that processes what it keeps."""

    def __init__(self, engine: Engine, settings: Settings, *, host: str | None = None,
                 port: int | None = None, clock: Callable[[], datetime] = utcnow,
                 processed: Callable[[Outcome], None] | None = None) -> None:
        domain = settings.delivery.verp_domain
        if not domain:
            raise DispatchError(Problem("delivery.verp_domain", "set it to the domain bounces "
                                        "and mailto unsubscribes are addressed to (its MX "
                                        "points at this server)"))
        inbound = settings.inbound or InboundSettings(
            spool=settings.root / InboundSettings.model_fields["spool"].default)
        self.engine, self.settings, self.clock = engine, settings, clock
        self.processed = processed or (lambda outcome: None)
        self.spool = Spool(inbound.spool)
        self.host, self.port = host or inbound.host, port or inbound.port
        self.queue: queue.Queue[Path | None] = queue.Queue()
        self.gate = Gate(inbound.max_connections, inbound.max_connections_per_client)
        self.controller = GuardedController(
            InboundHandler(domain, self.spool, self.queue.put), hostname=self.host,
            port=self.port, data_size_limit=inbound.max_size, server_hostname=domain,
            ident="dispatch inbound", enable_SMTPUTF8=True, gate=self.gate,
            idle_timeout=inbound.idle_timeout, message_deadline=inbound.message_deadline)
        self.thread = threading.Thread(target=self._work, name="dispatch-inbound", daemon=True)
        self.signer: Signer | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        """Process what the spool holds, then listen."""
        self.signer = Signer(secret(self.engine))
        for path in self.spool.waiting():
            self.queue.put(path)
        self.thread.start()
        try:
            self.controller.start()
        except Exception as exc:
            self.queue.put(None)
            raise DispatchError(Problem("inbound", f"cannot listen on {self.address}: "
                                                   f"{exc}")) from None

    def stop(self) -> None:
        try:
            self.controller.stop()
        except AssertionError:
            pass  # it never started
        self.queue.put(None)
        self.thread.join(timeout=30)

    def _work(self) -> None:
        while True:
            try:
                path = self.queue.get(timeout=RESCAN)
            except queue.Empty:
                for waiting in self.spool.waiting():
                    self.queue.put(waiting)
                continue
            if path is None:
                return
            self._process(path)

    def _process(self, path: Path) -> None:
        assert self.signer is not None
        try:
            recipients, data = Spool.read(path)
        except FileNotFoundError:
            return  # queued twice (a rescan) and done already
        except (OSError, ValueError) as exc:
            log.error("inbound: %s cannot be read: %s (left in the spool)", path.name, exc)
            return
        try:
            outcome = process(self.engine, data, self.settings, self.signer, self.clock(),
                              recipients=tuple(recipients), source="smtp")
        except Exception:
            # The store is down, say: the message stays in the spool and is tried again.
            log.exception("inbound: %s could not be processed; it stays in the spool",
                          path.name)
            return
        log.info("inbound: %s", outcome.describe())
        path.unlink(missing_ok=True)
        self.processed(outcome)
