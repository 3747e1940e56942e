"""The newsroom console at /admin/: editors and operators in the browser, on the library
functions the CLI calls. access.py holds the route × role table and enforces sessions, roles,
CSRF and the audit log; pages.py puts the pages together, one module per section (signin,
issues, sending, briefs, subscribers, users) on base.py; templates/console/ their HTML."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from dispatch.clock import utcnow
from dispatch.config import Settings
from dispatch.web.console.access import PREFIX, ROUTES, Guard
from dispatch.web.console.pages import Pages
from dispatch.web.guards import BodyLimit

MAX_BODY = 5 * 1024 * 1024  # a CSV of some tens of thousands of subscribers


def create_console(engine: Engine, settings: Settings, *,
                   queued: Callable[[], None] = lambda: None,
                   clock: Callable[[], datetime] = utcnow) -> ASGIApp:
    """The console alone, its paths starting with /admin (its own listener, or mounted)."""
    guard = Guard(engine, settings, clock)
    pages = Pages(engine, settings, guard, queued, clock)
    routes = [Route(PREFIX + action.path, guard.wrap(action, pages.handler(action.handler)),
                    methods=[action.method]) for action in ROUTES]

    async def error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, HTTPException):
            exc = HTTPException(500, "Something went wrong; nothing more is shown here.")
        response = pages.shared.page("problems", None, exc.status_code, title=f"{exc.status_code}",
                              problems=[], message=exc.detail, back=PREFIX + "/")
        response.headers.update(exc.headers or {})
        return response

    handler: Callable[[Request, Exception], Awaitable[Response]] = error
    app = Starlette(routes=routes, exception_handlers={HTTPException: handler,
                                                      Exception: handler})
    return BodyLimit(app, MAX_BODY)


class WithConsole:
    """The public app, with /admin/ answered by the console."""

    def __init__(self, public: ASGIApp, console: ASGIApp) -> None:
        self.public, self.console = public, console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        target = self.console if path == PREFIX or path.startswith(PREFIX + "/") else self.public
        await target(scope, receive, send)


def with_console(public: ASGIApp, engine: Engine, settings: Settings,
                 queued: Callable[[], None], clock: Callable[[], datetime]) -> ASGIApp:
    """The web app as served: with the console when it is enabled without its own port."""
    if not settings.console.enabled or settings.console.port is not None:
        return public
    return WithConsole(public, create_console(engine, settings, queued=queued, clock=clock))
