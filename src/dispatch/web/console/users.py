"""The admin's pages: the console's accounts (roles, disabling) and the audit log."""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from dispatch.errors import DispatchError, Problem
from dispatch.store import accounts, audit
from dispatch.store.accounts import Session
from dispatch.web.console.access import PREFIX
from dispatch.web.console.base import Section, read_notice


class Users(Section):
    """Accounts and the audit log."""

    def users(self, request: Request, session: Session, form: None) -> Response:
        return self.page("users", session, users=accounts.list_users(self.engine),
                         roles=[r.value for r in accounts.Role],
                         done=read_notice(request, session))

    def user_role(self, request: Request, session: Session, form: FormData) -> Response:
        try:
            user = accounts.set_role(self.engine, str(form.get("email", "")),
                                     str(form.get("role", "")))
        except DispatchError as exc:
            return self.problems(session, exc.problems, f"{PREFIX}/users")
        return self.done(request, session, f"{PREFIX}/users", f"{user.email} is now {user.role}")

    def user_disable(self, request: Request, session: Session, form: FormData) -> Response:
        enable = form.get("enable") == "yes"
        email = str(form.get("email", ""))
        if not enable and email.lower() == session.user.email:
            return self.problems(session, [Problem(email, "you cannot disable yourself")],
                                 f"{PREFIX}/users")
        try:
            user = accounts.set_disabled(self.engine, email, not enable)
        except DispatchError as exc:
            return self.problems(session, exc.problems, f"{PREFIX}/users")
        return self.done(request, session, f"{PREFIX}/users",
                         f"{user.email} {'enabled' if enable else 'disabled'}")

    def audit(self, request: Request, session: Session, form: None) -> Response:
        return self.page("audit", session, entries=audit.entries(self.engine, limit=500))

