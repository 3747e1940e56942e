"""What stands between the internet and the pages: the same-origin check of every form that
changes something (the public pages' and the console's), a body-size limit enforced on
declared and streamed bodies, and a per-client sign-up rate limit."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def check_same_origin(request: Request, base_url: str, refusal: str) -> None:
    """HTTPException(403, refusal) unless the request came from one of this site's own pages:
    the browser's Sec-Fetch-Site, else its Origin (or Referer) naming the configured base URL's
    host or the Host asked for. `Origin: null` (a sandboxed frame, a data: or file: page, a
    cross-site redirect) is never this site's page, so it is refused; a request with neither
    header (an old browser, a script without cookies) is left to the form token."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise HTTPException(403, refusal)
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is None:
        return
    own = {urlsplit(base_url).netloc, request.headers.get("host", "")} - {""}
    try:
        netloc = urlsplit(origin.strip()).netloc
    except ValueError:  # an unreadable origin is nobody's
        netloc = ""
    if netloc not in own:
        raise HTTPException(403, refusal)


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
