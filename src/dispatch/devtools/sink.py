"""An in-process SMTP server on localhost that records what it receives (aiosmtpd).

The demo delivers to it; the tests extend its handler with injected faults. Never a relay:
messages stay in memory.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


@dataclass(frozen=True)
class Received:
    sender: str
    recipient: str
    data: bytes


@dataclass
class RecordingHandler:
    """Accepts every message and keeps one Received per recipient."""

    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.received.append(Received(envelope.mail_from, rcpt, envelope.content))
        return "250 2.0.0 Ok: queued"


@dataclass
class MailboxHandler:
    """Accepts every message and writes it to a folder, one numbered .eml per message: the
    local stand-in for a relay that `dispatch sink` runs."""

    folder: Path
    say: Callable[[str], None] = lambda _: None
    count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.count += 1
            path = self.folder / f"{self.count:06d}.eml"
            path.write_bytes(envelope.content)
        self.say(f"{path.name}: from {envelope.mail_from} to {', '.join(envelope.rcpt_tos)} "
                 f"({len(envelope.content):,} bytes)")
        return "250 2.0.0 Ok: queued"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@contextmanager
def smtp_sink(handler: Any | None = None, host: str = "127.0.0.1", port: int | None = None,
              **server_options: Any) -> Iterator[tuple[Any, int]]:
    """Run an aiosmtpd server in a background thread: yields (handler, port)."""
    handler = handler if handler is not None else RecordingHandler()
    controller = Controller(handler, hostname=host, port=port or free_port(host),
                            **server_options)
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()
