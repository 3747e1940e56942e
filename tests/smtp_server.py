"""A real aiosmtpd server for the tests: dispatch's recording handler plus injected faults."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import AuthResult

from dispatch.devtools.sink import RecordingHandler


@dataclass
class FaultyHandler(RecordingHandler):
    """Replies as scripted: per recipient, a list of RCPT replies used one per attempt
    ("drop" closes the connection, "slow:SECONDS" waits then accepts); `mail_421_every`
    answers every Nth MAIL FROM with 421; `data_reply` replaces the final reply."""

    rcpt_script: dict[str, list[str]] = field(default_factory=dict)
    mail_421_every: int = 0
    data_reply: str | None = None
    attempts: Counter[str] = field(default_factory=Counter)
    mails: int = 0
    mutex: threading.Lock = field(default_factory=threading.Lock)

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        with self.mutex:
            self.mails += 1
            closing = self.mail_421_every and self.mails % self.mail_421_every == 0
        if closing:
            server.transport.close()  # what a server does after its 421
            return "421 4.3.2 Service shutting down, try again later"
        envelope.mail_from = address
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
        return await super().handle_DATA(server, session, envelope)

    def per_recipient(self) -> Counter[str]:
        with self.lock:
            return Counter(r.recipient for r in self.received)


def refuse_login(server: Any, session: Any, envelope: Any, mechanism: str,
                 auth_data: Any) -> AuthResult:
    return AuthResult(success=False, handled=False, message="535 5.7.8 Authentication failed")


def accept_login(server: Any, session: Any, envelope: Any, mechanism: str,
                 auth_data: Any) -> AuthResult:
    return AuthResult(success=True)
