"""The console's pages put together: one section per module (signin, issues, sending, briefs,
subscribers, users; what they share is base.py's), and the page answering each route's
handler name in access.ROUTES."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import jinja2
from sqlalchemy import Engine
from starlette.responses import Response

from dispatch.compose.render import environment
from dispatch.config import Settings
from dispatch.web.console.access import ROUTES, Guard
from dispatch.web.console.base import Section
from dispatch.web.console.briefs import Briefs
from dispatch.web.console.issues import Issues
from dispatch.web.console.sending import Sending
from dispatch.web.console.signin import SignIn
from dispatch.web.console.subscribers import Subscribers
from dispatch.web.console.users import Users

SECTIONS: tuple[type[Section], ...] = (SignIn, Issues, Sending, Briefs, Subscribers, Users)


class Pages:
    """Every section, sharing one template environment; `handler` finds a route's page."""

    def __init__(self, engine: Engine, settings: Settings, guard: Guard,
                 queued: Callable[[], None], clock: Callable[[], datetime]) -> None:
        env = environment(settings).overlay(undefined=jinja2.Undefined)
        self.sections = [cls(engine, settings, guard, queued, clock, env) for cls in SECTIONS]
        self.shared = self.sections[0]  # for the error page, which belongs to no section
        for action in ROUTES:
            self.handler(action.handler)  # a route without its page fails at start, not later

    def handler(self, name: str) -> Callable[..., Response]:
        """The one section's method of this name (a name in two sections is a mistake)."""
        found = [getattr(s, name) for s in self.sections if name in type(s).__dict__]
        if len(found) != 1:
            raise LookupError(f"console handler {name!r} is in {len(found)} sections")
        page: Callable[..., Response] = found[0]
        return page
