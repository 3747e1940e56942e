"""The relays' webhook endpoints, /hooks/<provider> for each provider of
dispatch.inbound.providers (ses, postmark, mailgun, sendgrid): a thin HTTP shell over
dispatch.inbound.webhooks, which verifies each request and records what it reports. Only
providers with a table under [inbound.webhooks] answer; the others are 404.

Answers are plain text: 200 with what was recorded (an unmatched event is still a 200, or
the relay would retry it forever), 400 for a body that is not the provider's format, 401/403
for a request that does not prove where it comes from, 413 for a body over
inbound.webhooks.max_size, 503 when a provider's secret is missing from the environment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from dispatch.audience.tokens import Signer
from dispatch.config import Settings
from dispatch.inbound.providers import PROVIDERS
from dispatch.inbound.webhooks import (
    Fetcher,
    Incoming,
    Malformed,
    Misconfigured,
    Unauthenticated,
    Unverified,
    Webhooks,
    fetch_https,
)
from dispatch.web.guards import BodyLimit

PREFIX = "/hooks/"
log = logging.getLogger("dispatch.inbound")


def _text(status: int, text: str, **headers: str) -> PlainTextResponse:
    return PlainTextResponse(text.rstrip() + "\n", status,
                             headers={"Cache-Control": "no-store", **headers})


class Endpoints:
    def __init__(self, hooks: Webhooks) -> None:
        self.hooks = hooks

    async def answer(self, request: Request) -> Response:
        provider = request.url.path.removeprefix(PREFIX)
        wanted = PROVIDERS[provider].content_type
        if wanted and not request.headers.get("content-type", "").startswith(wanted):
            return _text(400, f"The {provider} webhook posts {wanted}.")
        incoming = Incoming(await request.body(), dict(request.headers.items()))
        try:
            outcome = await run_in_threadpool(self.hooks.handle, provider, incoming)
        except Unauthenticated as exc:
            return _text(401, str(exc), **{"WWW-Authenticate": 'Basic realm="dispatch"'})
        except Unverified as exc:
            log.warning("webhook %s refused (403): %s", provider, exc)
            return _text(403, f"Refused: {exc}")
        except Malformed as exc:
            return _text(400, f"Not a {provider} webhook: {exc}")
        except Misconfigured as exc:
            log.error("webhook %s: %s", provider, exc)
            return _text(503, "This webhook is not configured correctly; try again later.")
        log.info("webhook %s: %s", provider, outcome.describe())
        return _text(200, outcome.describe())


async def _error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        return _text(exc.status_code, str(exc.detail))
    log.exception("webhook: unexpected error")
    return _text(500, "Something went wrong here; try again later.")


def with_webhooks(app: ASGIApp, engine: Engine, settings: Settings, signer: Signer,
                  clock: Callable[[], datetime], fetch: Fetcher = fetch_https) -> ASGIApp:
    """The app, with /hooks/... routed to the webhooks (under their own body limit) when
    [inbound.webhooks] is configured."""
    config = settings.inbound.webhooks if settings.inbound else None
    if config is None:
        return app
    endpoints = Endpoints(Webhooks(engine, settings, config, signer, clock, fetch))
    routes = [Route(f"{PREFIX}{name}", endpoints.answer, methods=["POST"])
              for name in endpoints.hooks.providers]
    hooks = BodyLimit(Starlette(routes=routes, exception_handlers={HTTPException: _error,
                                                                   Exception: _error}),
                      config.max_size)

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and str(scope.get("path", "")).startswith(PREFIX):
            await hooks(scope, receive, send)
        else:
            await app(scope, receive, send)

    return route
