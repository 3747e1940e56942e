"""Signing in and out of the console, and the console's one script."""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from dispatch.store import accounts, audit
from dispatch.store.accounts import Session
from dispatch.web.console.access import (
    LOGIN_COOKIE,
    PREFIX,
    SESSION_COOKIE,
    new_token,
    safe_next,
)
from dispatch.web.console.base import HEADERS, STATIC, Section


class SignIn(Section):
    """The sign-in form, signing in (throttled) and out."""

    def login_form(self, request: Request, _: Session | None, form: FormData | None,
                   status: int = 200, error: str | None = None) -> Response:
        token = request.cookies.get(LOGIN_COOKIE) or new_token()
        response = self.page("login", None, status, csrf=token, error=error,
                             next=safe_next(request.query_params.get("next")),
                             email=str(form.get("email", "")) if form else "")
        self.guard.set_cookie(response, LOGIN_COOKIE, token, 3600)
        return response

    def login(self, request: Request, _: Session | None, form: FormData) -> Response:
        self.guard.check_origin(request)
        token = request.cookies.get(LOGIN_COOKIE, "")
        if not token or not self.guard.same(form.get("csrf"), token):
            raise HTTPException(403, "This sign-in form has expired. Reload the page and try "
                                     "again.")
        email, password = str(form.get("email", "")), str(form.get("password", ""))
        client = request.client.host if request.client else "unknown"
        console = self.settings.console
        try:
            user = accounts.authenticate(self.engine, email, password, client, self.clock(),
                                         limit=console.login_failures, window=console.lockout)
        except accounts.Throttled:
            audit.record(self.engine, email[:320] or "-", "login", client, self.clock(),
                         "throttled")
            response = self.login_form(request, None, form, 429,
                                       "Too many failed sign-ins. Try again in "
                                       f"{int(console.lockout.total_seconds() // 60)} minutes.")
            response.headers["Retry-After"] = str(int(console.lockout.total_seconds()))
            return response
        if user is None:
            audit.record(self.engine, email[:320] or "-", "login", client, self.clock(),
                         "failed")
            return self.login_form(request, None, form, 401, "Wrong email or password.")
        # A new id at every sign-in, the browser's old one revoked: no session fixation.
        session_id = accounts.start_session(self.engine, user, self.clock(),
                                            previous=request.cookies.get(SESSION_COOKIE))
        audit.record(self.engine, user.email, "login", client, self.clock(), "signed in")
        response = RedirectResponse(safe_next(form.get("next")), 303, headers=HEADERS)
        lifetime = int(console.session_lifetime.total_seconds())
        self.guard.set_cookie(response, SESSION_COOKIE, session_id, lifetime)
        self.guard.clear_cookie(response, LOGIN_COOKIE)
        return response

    def logout(self, request: Request, session: Session, form: FormData) -> Response:
        accounts.end_session(self.engine, request.cookies.get(SESSION_COOKIE, ""))
        response = RedirectResponse(f"{PREFIX}/login", 303, headers=HEADERS)
        self.guard.clear_cookie(response, SESSION_COOKIE)
        return response

    def script(self, request: Request, session: Session, form: None) -> Response:
        return Response((STATIC / "console.js").read_text(encoding="utf-8"),
                        media_type="text/javascript",
                        headers={**HEADERS, "Cache-Control": "private, max-age=60"})

