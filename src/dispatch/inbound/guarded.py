"""The inbound SMTP server's limits on whoever connects (it faces the internet: the inbound
domain's MX points at it): at most inbound.max_connections at once, and
inbound.max_connections_per_client from one address, each refused beyond with 421 at the
greeting; a connection silent for inbound.idle_timeout seconds is closed; and a message must
be sent whole within inbound.message_deadline seconds of its DATA, so a sender trickling a
byte at a time cannot hold a connection for ever.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from typing import Any

from aiosmtpd.smtp import SMTP

log = logging.getLogger("dispatch.inbound")

TOO_MANY = b"421 4.7.0 Too many connections; try again later\r\n"
TOO_SLOW = b"421 4.4.2 The message took too long to send; closing\r\n"


class Gate:
    """Connections open now, in all and per client address."""

    def __init__(self, most: int, per_client: int) -> None:
        self.most, self.per_client = most, per_client
        self.by_client: Counter[str] = Counter()
        self._lock = threading.Lock()

    def admit(self, client: str) -> bool:
        with self._lock:
            if (sum(self.by_client.values()) >= self.most
                    or self.by_client[client] >= self.per_client):
                return False
            self.by_client[client] += 1
            return True

    def leave(self, client: str) -> None:
        with self._lock:
            self.by_client[client] -= 1
            if self.by_client[client] <= 0:
                del self.by_client[client]

    @property
    def open(self) -> int:
        with self._lock:
            return sum(self.by_client.values())


class GuardedSMTP(SMTP):
    """aiosmtpd's SMTP with the gate at connect, the idle timeout counted from the last
    bytes received (inside DATA too, so a large message on a slow link is not cut), and the
    deadline over each message's DATA."""

    def __init__(self, handler: Any, *, gate: Gate, idle_timeout: float,
                 message_deadline: float, **kwargs: Any) -> None:
        super().__init__(handler, timeout=idle_timeout, **kwargs)
        self.gate, self.message_deadline = gate, message_deadline
        self.client: str | None = None  # set once admitted

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.client is None:
            peer = transport.get_extra_info("peername")
            client = str(peer[0]) if peer else "unknown"
            if not self.gate.admit(client):
                log.warning("inbound: refused a connection from %s (421: too many)", client)
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(TOO_MANY)
                transport.close()
                return
            self.client = client
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self.client is None:
            return  # refused at the gate: nothing was started
        self.gate.leave(self.client)
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        if self.client is None:
            return
        self._reset_timeout()
        super().data_received(data)

    async def smtp_DATA(self, arg: str) -> None:
        deadline = self.loop.call_later(self.message_deadline, self._too_slow)
        try:
            await super().smtp_DATA(arg)
        finally:
            deadline.cancel()

    def _too_slow(self) -> None:
        transport = self.transport
        if transport is not None:
            log.warning("inbound: %s took over %g s to send a message; closed", self.client,
                        self.message_deadline)
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(TOO_SLOW)
            transport.close()
