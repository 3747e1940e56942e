"""What every console page shares: the rendered page with the console's headers, the
problems and confirmation pages, the redirect with a signed notice after an action, times in
the newsletter's zone, and an issue folder found by name. The pages themselves are in one
module per section (signin, issues, sending, briefs, subscribers, users); pages.py puts them
together. Sessions, roles, CSRF and the audit record are access.py's; nothing here decides
anything about a send, a brief or a subscriber.

Pages run in the thread pool (access.Guard.wrap): they may call the store directly.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import jinja2
from sqlalchemy import Engine
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from dispatch.compose.issues import issue_folders, load_issue
from dispatch.compose.models import Issue
from dispatch.compose.render import environment
from dispatch.config import Settings
from dispatch.errors import Problem
from dispatch.store.accounts import Session
from dispatch.web.console.access import PREFIX, Guard, note

STATIC = Path(__file__).resolve().parent / "static"

# Scripts only from the console itself (the live progress); frames only of the console's
# own sandboxed previews; otherwise the public pages' policy.
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
       "script-src 'self'; connect-src 'self'; frame-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
# A rendered email inside the console's iframe: no scripts, no forms, its own origin.
PREVIEW_CSP = ("sandbox; default-src 'none'; style-src 'unsafe-inline'; "
               "img-src https: http: data:; frame-ancestors 'self'")
HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
           "Cache-Control": "no-store"}


class Section:
    """A section of the console's pages; its public methods answer the routes whose handler
    names them (access.ROUTES)."""

    def __init__(self, engine: Engine, settings: Settings, guard: Guard,
                 queued: Callable[[], None], clock: Callable[[], datetime],
                 env: jinja2.Environment | None = None) -> None:
        self.engine, self.settings, self.guard = engine, settings, guard
        self.queued, self.clock = queued, clock
        # Optional context (a notice, problems) may be left out: absent reads as empty.
        self.env = env or environment(settings).overlay(undefined=jinja2.Undefined)
        self.zone = ZoneInfo(settings.newsletter.timezone)

    # ---- responses

    def page(self, template: str, session: Session | None, status: int = 200,
             **context: Any) -> HTMLResponse:
        html = self.env.get_template(f"console/{template}.html.j2").render(
            newsletter=self.settings.newsletter, session=session, prefix=PREFIX,
            csrf=session.csrf if session else context.pop("csrf", ""), zone=self.zone,
            **context)
        return HTMLResponse(html, status, headers={**HEADERS, "Content-Security-Policy": CSP})

    def problems(self, session: Session, problems: list[Problem], back: str,
                 status: int = 400, title: str = "Nothing was changed") -> HTMLResponse:
        return self.page("problems", session, status, title=title, problems=problems,
                         back=back)

    def confirm(self, session: Session, title: str, lines: list[str], action: str,
                fields: dict[str, str], button: str, back: str) -> HTMLResponse:
        """The confirmation step: the same form again with confirm=yes."""
        return self.page("confirm", session, title=title, lines=lines, action=action,
                         fields=fields, button=button, back=back)

    def done(self, request: Request, session: Session, where: str, detail: str) -> Response:
        """After an action, the page to see its result, with a notice of what was done."""
        note(request, detail)
        return RedirectResponse(f"{where}?{notice_query(session, detail)}", 303,
                                headers=HEADERS)

    def local(self, moment: datetime | None) -> str:
        if moment is None:
            return "-"
        return (f"{moment.astimezone(self.zone):%Y-%m-%d %H:%M} "
                f"{self.settings.newsletter.timezone} ({moment:%Y-%m-%d %H:%M} UTC)")

    # ---- an issue folder by name

    def folder(self, slug: str) -> Path:
        """An issue folder by its name, only among the project's issues."""
        for folder in issue_folders(self.settings):
            if folder.name == slug:
                return folder
        raise HTTPException(404, f"No issue folder named {slug!r}.")

    def load(self, slug: str) -> Issue:
        return load_issue(self.folder(slug), self.settings)

    def back(self, request: Request) -> str:
        return f"{PREFIX}/issues/{request.path_params['slug']}"


def notice_query(session: Session, text: str) -> str:
    """A notice for the next page, signed with the session's token: a link from elsewhere
    cannot put words on a console page."""
    text = text[:300]
    return f"done={quote(text, safe='')}&sig={_sign(session, text)}"


def read_notice(request: Request, session: Session) -> str | None:
    text, sig = request.query_params.get("done"), request.query_params.get("sig", "")
    if text is None or not hmac.compare_digest(sig.encode(), _sign(session, text).encode()):
        return None
    return text


def _sign(session: Session, text: str) -> str:
    return hmac.new(session.csrf.encode(), text.encode(), "sha256").hexdigest()[:32]
