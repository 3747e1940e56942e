"""Who may do what in the console, and how it is enforced: the one table of routes and the
role each needs (the route × role test reads it), sessions in cookies, CSRF tokens, and the
audit record of every action. Pages (pages.py) never check any of this themselves.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from dispatch.config import Settings
from dispatch.states import Role
from dispatch.store import accounts, audit
from dispatch.store.accounts import Session
from dispatch.web.guards import check_same_origin

PREFIX = "/admin"
SESSION_COOKIE = "dispatch_session"
LOGIN_COOKIE = "dispatch_login"  # the login form's CSRF token, before any session exists


@dataclass(frozen=True)
class Action:
    """One console route: its method, path under /admin, the least role that may use it
    (None: no session needed), the Pages method answering it, and what it is for."""

    method: str
    path: str
    role: Role | None
    handler: str
    what: str
    audited: bool = True  # False only for POSTs that change nothing (a preview)


E, OP, A = Role.EDITOR, Role.OPERATOR, Role.ADMIN

# Every console route. Roles include the ones before them (editor < operator < admin).
ROUTES: tuple[Action, ...] = (
    Action("GET", "/login", None, "login_form", "the sign-in form"),
    Action("POST", "/login", None, "login", "sign in"),
    Action("POST", "/logout", E, "logout", "sign out"),
    Action("GET", "/static/console.js", E, "script", "the live-progress script"),
    Action("GET", "/", E, "issues", "issues: drafts, scheduled, sending, sent, stopped"),
    Action("GET", "/issues/{slug}", E, "issue", "one issue: problems, variants, actions"),
    Action("GET", "/issues/{slug}/progress", E, "progress", "live progress (JSON)"),
    Action("GET", "/issues/{slug}/html/{variant}", E, "variant_html", "a variant's HTML"),
    Action("POST", "/issues/{slug}/test", E, "test_send", "test send to oneself"),
    Action("POST", "/issues/{slug}/dry-run", E, "dry_run", "dry run"),
    Action("POST", "/issues/{slug}/schedule", E, "schedule", "schedule (confirmed)"),
    Action("POST", "/issues/{slug}/move", E, "move", "move a scheduled issue (confirmed)"),
    Action("POST", "/issues/{slug}/cancel", OP, "cancel", "cancel a send (confirmed)"),
    Action("POST", "/issues/{slug}/send", OP, "send", "send now (confirmed)"),
    Action("POST", "/issues/{slug}/pause", OP, "pause", "pause a send"),
    Action("POST", "/issues/{slug}/resume", OP, "resume", "resume a send"),
    Action("GET", "/issues/{slug}/briefs/{name}", E, "brief_form", "edit a brief"),
    Action("POST", "/issues/{slug}/briefs/{name}", E, "brief_save", "preview or save a brief"),
    Action("POST", "/issues/{slug}/briefs/{name}/card", E, "brief_card",
           "live preview of a brief's card (JSON; changes nothing)", audited=False),
    Action("GET", "/issues/{slug}/import", E, "import_form", "paste plain text"),
    Action("POST", "/issues/{slug}/import", E, "import_brief", "import pasted text"),
    Action("GET", "/subscribers", OP, "subscribers", "search and filter subscribers"),
    Action("GET", "/subscribers/export.csv", OP, "export", "export subscribers as CSV"),
    Action("POST", "/subscribers/add", OP, "add_subscriber", "add a subscriber"),
    Action("POST", "/subscribers/import", OP, "import_csv", "import a CSV"),
    Action("GET", "/subscribers/{id:int}", OP, "subscriber", "one subscriber and history"),
    Action("POST", "/subscribers/{id:int}/topics", OP, "set_topics", "edit topics"),
    Action("POST", "/subscribers/{id:int}/unsubscribe", OP, "unsubscribe", "unsubscribe"),
    Action("POST", "/subscribers/{id:int}/forget", OP, "forget", "forget (confirmed)"),
    Action("GET", "/segments", E, "segments", "segments with counts, digests' next times"),
    Action("GET", "/users", A, "users", "accounts"),
    Action("POST", "/users/role", A, "user_role", "change an account's role"),
    Action("POST", "/users/disable", A, "user_disable", "disable or enable an account"),
    Action("GET", "/audit", A, "audit", "the audit log"),
)


def role_table() -> str:
    """ROUTES as the route × role table the docs and the closing note show."""
    lines = ["| method | path | what | editor | operator | admin |", "|---|---|---|---|---|---|"]
    for a in ROUTES:
        cells = ["yes" if a.role is None or r.allows(a.role) else "403" for r in Role]
        lines.append(f"| {a.method} | {PREFIX}{a.path} | {a.what} | {' | '.join(cells)} |")
    return "\n".join(lines)


Handler = Callable[..., Response]


class Guard:
    """Wraps each page: the session (or a redirect to the sign-in form), the role (or 403),
    the CSRF token and origin of every POST (or 403), then the page in the thread pool
    (store calls block), then an audit record of every POST that got that far."""

    def __init__(self, engine: Engine, settings: Settings, clock: Callable[[], datetime]
                 ) -> None:
        self.engine, self.settings, self.clock = engine, settings, clock
        self.console = settings.console
        self.secure = settings.newsletter.base_url.startswith("https://")

    # ---- cookies

    def set_cookie(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(name, value, max_age=max_age, path=PREFIX, httponly=True,
                            samesite="lax", secure=self.secure)

    def clear_cookie(self, response: Response, name: str) -> None:
        response.delete_cookie(name, path=PREFIX, httponly=True, samesite="lax",
                               secure=self.secure)

    def session(self, request: Request) -> Session | None:
        return accounts.find_session(self.engine, request.cookies.get(SESSION_COOKIE, ""),
                                     self.clock(), idle=self.console.idle_timeout,
                                     lifetime=self.console.session_lifetime)

    # ---- checks

    def check_origin(self, request: Request) -> None:
        """A POST must come from a console page, not another site's."""
        check_same_origin(request, self.settings.newsletter.base_url,
                          "This form must be sent from the console's own page.")

    @staticmethod
    def same(token: object, expected: str) -> bool:
        return isinstance(token, str) and bool(token) and hmac.compare_digest(
            token.encode(), expected.encode())

    def wrap(self, action: Action, page: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            form = await read_form(request) if request.method == "POST" else None
            if action.role is None:  # the sign-in pages check their own token
                return await run_in_threadpool(page, request, None, form)
            session = await run_in_threadpool(self.session, request)
            if session is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query
                                             else "")
                return RedirectResponse(f"{PREFIX}/login?next={quote(target, safe='')}", 303)
            if not session.user.role.allows(action.role):
                raise HTTPException(403, f"{action.what.capitalize()} needs the "
                                         f"{action.role} role; you are {session.user.role}.")
            if form is None:
                return await run_in_threadpool(page, request, session, None)
            self.check_origin(request)
            if not self.same(form.get("csrf"), session.csrf):
                raise HTTPException(403, "This form has expired or did not come from the "
                                         "console. Reload the page and try again.")
            response = await run_in_threadpool(page, request, session, form)
            if action.audited:
                await run_in_threadpool(self.record, session, action, request, response)
            return response
        return endpoint

    def record(self, session: Session, action: Action, request: Request,
               response: Response) -> None:
        detail = getattr(request.state, "audit", None)
        if response.status_code >= 400:
            detail = f"refused ({response.status_code}){': ' + detail if detail else ''}"
        params = request.path_params
        if action.path.startswith("/subscribers/{id") and action.method != "GET":
            # An operator's change to one subscriber, under the target their history reads.
            target = audit.subscriber_target(params["id"])
        else:
            target = ", ".join(f"{k}={v}" for k, v in params.items()) or "-"
        audit.record(self.engine, session.user.email, action.handler, target, self.clock(),
                     detail)


async def read_form(request: Request) -> FormData:
    return await request.form(max_files=1, max_fields=200, max_part_size=4 * 1024 * 1024)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def note(request: Request, detail: str) -> None:
    """What the audit record of this request says beyond who, what and when."""
    request.state.audit = detail


def safe_next(value: Any) -> str:
    """Where to go after signing in: only a console path, never another site."""
    text = str(value or "")
    if text.startswith(PREFIX + "/") and not text.startswith("//") and "\\" not in text:
        return text
    return PREFIX + "/"
