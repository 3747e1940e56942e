"""What stands between the internet and the pages: a body-size limit enforced on declared and
streamed bodies, and a per-client sign-up rate limit."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """Refuses request bodies over `limit` bytes, declared or streamed: the endpoint reading
    the body gets HTTPException(413), answered like any other error."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            if not declared.isdigit():
                raise HTTPException(400, "Unreadable Content-Length.")
            if int(declared) > self.limit:
                raise HTTPException(413, f"Requests here are at most {self.limit:,} bytes.")
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"Requests here are at most {self.limit:,} bytes.")
            return message

        await self.app(scope, limited, send)


class SignupLimiter:
    """A token bucket per client address: `per_hour` sign-ups, refilled evenly. In memory:
    a restart forgives everyone, which is the safe direction."""

    def __init__(self, per_hour: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_hour)
        self.refill = per_hour / 3600.0
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        now = self.clock()
        with self._lock:
            if len(self._buckets) > 10_000:  # forget the full buckets of quiet clients
                self._buckets = {k: v for k, v in self._buckets.items()
                                 if v[0] + (now - v[1]) * self.refill < self.capacity}
            tokens, last = self._buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.refill)
            if tokens < 1:
                self._buckets[client] = (tokens, now)
                return False
            self._buckets[client] = (tokens - 1, now)
            return True
