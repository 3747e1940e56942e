"""A real aiosmtpd server for the tests: dispatch's recording handler plus injected faults,
scripted per connection (greetings), per MAIL FROM, per recipient at RCPT and per recipient
at DATA."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult

from dispatch.devtools.sink import RecordingHandler, free_port


@dataclass
class FaultyHandler(RecordingHandler):
    """Replies as scripted.

    - `greetings`: one entry per new connection, in order; a reply such as "421 4.3.2 busy"
      is sent instead of the 220 and the connection closed; "ok" (or the list running out)
      greets normally.
    - `rcpt_script`: per recipient, RCPT replies used one per attempt ("drop" closes the
      connection, "slow:SECONDS" waits then accepts).
    - `mail_421_every`: every Nth MAIL FROM is answered 421 and the connection closed.
    - `data_script`: per recipient, one action per DATA: "drop" closes the connection in the
      middle of the message (nothing kept); "slow:SECONDS" keeps the message and answers 250
      only after SECONDS; "lost" keeps the message and closes without answering; any other
      text is the reply to the final dot (nothing kept).
    - `data_reply` replaces every final reply (nothing kept).
    - `on_kept(n)` is called, from the server, each time a copy is kept (n copies so far):
      a test acts at an exact point of the send, not after a guessed time.

    `received` holds every copy kept; `mail_options` the options of each MAIL FROM."""

    greetings: list[str] = field(default_factory=list)
    rcpt_script: dict[str, list[str]] = field(default_factory=dict)
    mail_421_every: int = 0
    data_script: dict[str, list[str]] = field(default_factory=dict)
    data_reply: str | None = None
    attempts: Counter[str] = field(default_factory=Counter)
    data_attempts: Counter[str] = field(default_factory=Counter)
    mails: int = 0
    connections: int = 0
    mail_options: list[list[str]] = field(default_factory=list)
    mutex: threading.Lock = field(default_factory=threading.Lock)
    on_kept: Callable[[int], None] | None = None

    def greeting(self) -> str:
        with self.mutex:
            self.connections += 1
            index = self.connections - 1
            return self.greetings[index] if index < len(self.greetings) else "ok"

    def data_action(self, recipient: str) -> str:
        with self.mutex:
            attempt = self.data_attempts[recipient]
            self.data_attempts[recipient] += 1
            script = self.data_script.get(recipient, [])
            return script[attempt] if attempt < len(script) else "ok"

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        with self.mutex:
            self.mails += 1
            self.mail_options.append(list(options))
            closing = self.mail_421_every and self.mails % self.mail_421_every == 0
        if closing:
            server.transport.close()  # what a server does after its 421
            return "421 4.3.2 Service shutting down, try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        with self.mutex:
            attempt = self.attempts[address]
            self.attempts[address] += 1
            script = self.rcpt_script.get(address, [])
            action = script[attempt] if attempt < len(script) else "250 2.1.5 Ok"
        if action == "drop":
            server.transport.close()
            return "250 2.1.5 Ok"  # never reaches the client
        if action.startswith("slow:"):
            await asyncio.sleep(float(action[5:]))
            action = "250 2.1.5 Ok"
        if action.startswith("2"):
            envelope.rcpt_tos.append(address)
        return action

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply:
            return self.data_reply
        action = getattr(envelope, "fault", "ok")
        if action in ("ok", "lost") or action.startswith("slow:"):
            reply = await super().handle_DATA(server, session, envelope)  # kept
            if self.on_kept is not None:
                self.on_kept(len(self.received))
            if action == "lost":
                server.transport.close()
                await asyncio.sleep(5)  # cancelled by the close: no reply ever goes out
            if action.startswith("slow:"):
                await asyncio.sleep(float(action[5:]))
            return reply
        return action

    def per_recipient(self) -> Counter[str]:
        with self.lock:
            return Counter(r.recipient for r in self.received)


class _FaultySMTP(SMTP):
    """aiosmtpd's server with the handler's greeting and mid-DATA faults."""

    async def _handle_client(self) -> None:
        greeting = self.event_handler.greeting()
        if greeting != "ok":
            await self.push(greeting)
            assert self.transport is not None
            self.transport.close()
            return
        await super()._handle_client()

    async def smtp_DATA(self, arg: str) -> None:
        assert self.envelope is not None
        if self.envelope.rcpt_tos:
            action = self.event_handler.data_action(self.envelope.rcpt_tos[0])
            self.envelope.fault = action  # type: ignore[attr-defined]
            if action == "drop":
                await self.push("354 End data with <CR><LF>.<CR><LF>")
                await self._reader.readuntil(b"\r\n")  # a line of the message, then gone
                assert self.transport is not None
                self.transport.close()
                return
        await super().smtp_DATA(arg)


class _FaultyController(Controller):
    def factory(self) -> SMTP:
        return _FaultySMTP(self.handler, **self.SMTP_kwargs)


@contextmanager
def faulty_sink(handler: FaultyHandler, **server_options: Any) -> Iterator[tuple[Any, int]]:
    """Like dispatch.devtools.sink.smtp_sink, with the greeting and mid-DATA faults."""
    controller = _FaultyController(handler, hostname="127.0.0.1", port=free_port(),
                                   **server_options)
    controller.start()
    with handler.mutex:
        handler.connections = 0  # start() made one connection to see the server up
    try:
        yield handler, controller.port
    finally:
        controller.stop()


def refuse_login(server: Any, session: Any, envelope: Any, mechanism: str,
                 auth_data: Any) -> AuthResult:
    return AuthResult(success=False, handled=False, message="535 5.7.8 Authentication failed")


def accept_login(server: Any, session: Any, envelope: Any, mechanism: str,
                 auth_data: Any) -> AuthResult:
    return AuthResult(success=True)


class Pipelining:
    """Mixin for a handler: the EHLO reply offers PIPELINING (RFC 2920), as Postfix does, and
    `ahead` counts the final dots whose next MAIL FROM had already arrived with them."""

    ahead: int = 0

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        # The dot has been read; what the client wrote with it waits in the reader.
        if b"MAIL FROM:" in bytes(getattr(server._reader, "_buffer", b"")):
            self.ahead += 1
        return await super().handle_DATA(server, session, envelope)  # type: ignore[misc]


@dataclass
class PipeliningRecorder(Pipelining, RecordingHandler):
    """dispatch's recording handler behind a server that offers PIPELINING."""


@dataclass
class PipeliningFaults(Pipelining, FaultyHandler):
    """FaultyHandler's scripted faults behind a server that offers PIPELINING."""
