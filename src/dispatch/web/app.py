"""The subscriber web app: one-click unsubscribe (RFC 8058), topic preferences, double opt-in
sign-up, and the public archive. A thin Starlette shell over the store and signup modules;
pages are Jinja2 templates under templates/web/, plain HTML forms, no JavaScript.

Links carry signed tokens (tokens.py): whoever holds the link is the subscriber, so the
pages behind them need no login or cookies. Forms that change state also carry a signed
form token and must come from this site (Origin / Sec-Fetch-Site), except RFC 8058's
one-click POST, which mailbox providers send from their own servers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial
from http import HTTPStatus
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from dispatch.audience import signup
from dispatch.audience.bounds import MAIL_WINDOW, domain_of, signup_refusal
from dispatch.audience.tokens import BadToken, Signer
from dispatch.clock import utcnow, zone_names
from dispatch.compose.render import environment
from dispatch.compose.slots import SLOTS, fill_slots, public_copy
from dispatch.compose.variants import fullest_first
from dispatch.config import Settings, WebSettings
from dispatch.config.topics import unknown_topics
from dispatch.deliver.signup_mail import prepare_confirmations
from dispatch.errors import DispatchError
from dispatch.inbound.process import web_unsubscribe
from dispatch.inbound.webhooks import Fetcher, fetch_https
from dispatch.states import RECEIVING, ReportVia, SubscriberStatus
from dispatch.store import audit, confirmations, sends, signups
from dispatch.store import subscribers as subs
from dispatch.store.secrets import secret
from dispatch.store.signup_counts import signup_counts
from dispatch.web.console import with_console
from dispatch.web.feed import FEED_PATH, archive_url, atom_feed, sent_at
from dispatch.web.guards import BodyLimit, SignupLimiter, check_same_origin
from dispatch.web.webhooks import with_webhooks
from dispatch.web.zones import zone_groups, zone_label

MAX_BODY = 16 * 1024  # the largest form here (every topic and a zone) is under 2 KB
ONE_CLICK = ("List-Unsubscribe", "One-Click")
PAGE_BUTTON = ("from", "page")  # the /u/ page's button, told apart from a one-click POST
ZONES = frozenset(zone_names())  # the zones offered; a subscriber's own stays valid too

# No scripts, no frames, forms only to this site; inline styles only (the pages and the
# archived emails carry their CSS inline). The archive may show the issues' remote images.
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:{images}; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {"X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "same-origin",  # token URLs must not leak to linked sites
           "Cache-Control": "no-store"}


class Web:
    """The pages. Store calls run in Starlette's thread pool, off the event loop."""

    def __init__(self, engine: Engine, settings: Settings, web: WebSettings, signer: Signer,
                 queued: Callable[[], None], clock: Callable[[], datetime]) -> None:
        self.engine, self.settings, self.signer = engine, settings, signer
        self.queued, self.clock = queued, clock
        self.env = environment(settings)
        self.limiter = SignupLimiter(web.signup_limit)
        self.base = settings.newsletter.base_url
        self.web = web

    # ---- responses

    def page(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(f"web/{template}.html.j2").render(
            newsletter=self.settings.newsletter, **context)
        return HTMLResponse(html, status, headers={
            **HEADERS, "Content-Security-Policy": CSP.format(images="")})

    def message(self, status: int, title: str, *lines: str, link: tuple[str, str] | None = None
                ) -> HTMLResponse:
        return self.page("message", status, title=title, lines=lines, link=link)

    async def error(self, request: Request, exc: Exception) -> Response:
        """Every error as a plain page: the status, a sentence, never a stack trace (uvicorn
        logs those)."""
        if not isinstance(exc, HTTPException):
            return self.message(500, "Something went wrong", "Please try again in a minute.")
        phrase = HTTPStatus(exc.status_code).phrase
        response = self.message(exc.status_code, phrase,
                                *([exc.detail] if exc.detail != phrase else []))
        response.headers.update(exc.headers or {})
        return response

    # ---- tokens and forms

    async def subscriber(self, purpose: str, token: str) -> subs.Subscriber | None:
        """The subscriber a valid token names; None when they are gone or the token was made
        for another address. HTTPException for a bad or expired token."""
        return (await self.claimed(purpose, token))[0]

    async def claimed(self, purpose: str, token: str
                      ) -> tuple[subs.Subscriber | None, int | None]:
        """`subscriber`, and the outbox row the link's message was (None: not named)."""
        try:
            claim = self.signer.read(purpose, token, self.clock())
        except BadToken as bad:
            if bad.expired:
                raise HTTPException(400, "This link has expired.") from None
            raise HTTPException(404, "This link is not valid. Please use the link exactly "
                                     "as it is in the email.") from None
        found = await run_in_threadpool(subs.by_id, self.engine, claim.subscriber_id)
        if found is None or not claim.matches(found.email):
            return None, None
        return found, claim.row_id

    async def unsubscribe(self, found: subs.Subscriber, row: int | None, via: ReportVia
                          ) -> None:
        """Record it for the send whose message the link came in, by the way it came."""
        await run_in_threadpool(web_unsubscribe, self.engine, self.settings, self.signer,
                                found.id, row, via, self.clock())

    def form_token(self, scope: int) -> str:
        return self.signer.token("form", scope, issued=self.clock())

    async def form(self, request: Request) -> FormData:
        return await request.form(max_files=0, max_fields=len(self.settings.topics) + 10)

    def check_form(self, request: Request, form: FormData, scope: int) -> None:
        check_same_origin(request, self.base,
                          "This form must be sent from this site's own page.")
        try:
            claim = self.signer.read("form", str(form.get("csrf", "")), self.clock())
        except BadToken:
            raise HTTPException(403, "This form has expired or did not come from this site. "
                                     "Reload the page and try again.") from None
        if claim.subscriber_id != scope:
            raise HTTPException(403, "This form belongs to another page.")

    # ---- sign-up and confirmation

    async def signup_page(self, request: Request) -> Response:
        if request.method != "POST":
            return self.signup_form()
        form = await self.form(request)
        self.check_form(request, form, 0)
        email, name = str(form.get("email", "")), str(form.get("name", ""))
        chosen = [str(t) for t in form.getlist("topics")]
        wanted, errors = signup.read_signup(self.settings, email, name, chosen)
        if wanted is None:  # a typo costs nothing and is not counted
            return self.signup_form(400, errors=errors, email=email, name=name, chosen=chosen)
        client = request.client.host if request.client else "unknown"
        if not self.limiter.allow(client):
            response = self.message(429, "Too many sign-ups",
                                    "Too many sign-up requests came from your network. "
                                    "Please try again in an hour.")
            response.headers["Retry-After"] = "3600"
            return response
        now = self.clock()
        counts = await run_in_threadpool(
            partial(signup_counts, self.engine, domain_of(wanted.key),
                    pending_since=now - self.web.confirm_expiry, mailed_since=now - MAIL_WINDOW))
        refusal = signup_refusal(counts, self.web)
        if refusal is not None:
            response = self.message(429, "Too many sign-ups", refusal)
            response.headers["Retry-After"] = "3600"
            return response
        if await run_in_threadpool(confirmations.request_confirmation, self.engine, wanted,
                                   now):
            self.queued()
        # The same answer for a new, pending, active or suppressed address.
        return self.message(200, "Check your inbox",
                            f"If {wanted.email} can receive {self.settings.newsletter.name}, "
                            "a message with a confirmation link is on its way to it.",
                            "Open the link to start your subscription. Nothing arrives "
                            "until you do.")

    def signup_form(self, status: int = 200, **values: Any) -> HTMLResponse:
        return self.page("signup", status, topics=self.settings.topics.values(),
                         privacy_url=self.web.privacy_url, consent=self.web.consent,
                         csrf=self.form_token(0), errors=values.pop("errors", {}),
                         email=values.get("email", ""), name=values.get("name", ""),
                         chosen=values.get("chosen", []))

    async def confirm_page(self, request: Request) -> Response:
        token = request.path_params["token"]
        found = await self.subscriber("confirm", token)
        if found is None:
            raise HTTPException(404, "This subscription no longer exists. You can sign up "
                                     "again.")
        if found.status == SubscriberStatus.ACTIVE:
            return self.subscribed(found)
        # What the sign-up asked, applied only by the button below (store.subscribers.confirm);
        # an unsubscribed address has a confirmation only while such a request waits.
        wanted = await run_in_threadpool(signups.signup_request, self.engine, found.id)
        if found.status != SubscriberStatus.PENDING and not (
                found.status == SubscriberStatus.UNSUBSCRIBED and wanted is not None):
            raise HTTPException(400, "This link is no longer valid. You can sign up again.")
        if request.method != "POST":
            # A button, not an action on GET: mail scanners open links, and a subscription
            # needs a person's yes.
            topics = wanted.topics if wanted is not None else found.topics
            names = [self.settings.topics[t].label if t in self.settings.topics else t
                     for t in topics]
            return self.page("action", title="Confirm your subscription",
                             lines=[f"One click to start receiving "
                                    f"{self.settings.newsletter.name} at {found.email}.",
                                    f"Topics: {', '.join(names)}."],
                             fields={"csrf": self.form_token(found.id)},
                             button="Confirm my subscription")
        form = await self.form(request)
        self.check_form(request, form, found.id)
        status, welcomed = await run_in_threadpool(partial(
            confirmations.confirm, self.engine, found.id, self.clock(), welcome=self.web.welcome))
        if welcomed:
            self.queued()
        if status != SubscriberStatus.ACTIVE:
            raise HTTPException(400, "This link is no longer valid. You can sign up again.")
        return self.subscribed(found)

    def subscribed(self, found: subs.Subscriber) -> HTMLResponse:
        return self.message(200, "You are subscribed",
                            f"{found.email} will receive {self.settings.newsletter.name}.",
                            link=(self.preferences_url(found), "Choose your topics"))

    def preferences_url(self, found: subs.Subscriber, row: int | None = None) -> str:
        return f"/p/{self.signer.token('preferences', found.id, found.email, row=row)}"

    # ---- unsubscribe

    async def unsubscribe_page(self, request: Request) -> Response:
        token = request.path_params["token"]
        found, row = await self.claimed("unsubscribe", token)
        if request.method != "POST":
            if found is None or found.status not in RECEIVING:
                return self.unsubscribed(found)
            # Never unsubscribes by itself: mail scanners follow links. The button posts
            # what a one-click POST does, and says it is the page's.
            return self.page("action", title="Unsubscribe",
                             lines=[f"Stop sending {self.settings.newsletter.name} to "
                                    f"{found.email}?"],
                             fields=dict([ONE_CLICK, PAGE_BUTTON]), button="Unsubscribe",
                             link=(self.preferences_url(found, row), "Change topics instead"))
        # RFC 8058: the POST itself is the request; no cookies, no form token, any origin.
        form = await self.form(request)
        if form.get(ONE_CLICK[0]) != ONE_CLICK[1]:
            raise HTTPException(400, "The body must be List-Unsubscribe=One-Click.")
        if found is not None:
            page = form.get(PAGE_BUTTON[0]) == PAGE_BUTTON[1]
            await self.unsubscribe(found, row, ReportVia.PAGE if page else ReportVia.ONE_CLICK)
        return self.unsubscribed(found)

    def unsubscribed(self, found: subs.Subscriber | None) -> HTMLResponse:
        if found is None:
            return self.message(200, "Unsubscribed", "This address receives nothing from us.")
        return self.message(200, "You are unsubscribed",
                            f"{found.email} will receive nothing more from "
                            f"{self.settings.newsletter.name}.",
                            link=(self.preferences_url(found), "Changed your mind?"))

    # ---- preferences

    async def preferences_page(self, request: Request) -> Response:
        token = request.path_params["token"]
        found, row = await self.claimed("preferences", token)
        if found is None:
            raise HTTPException(404, "This subscription no longer exists.")
        if request.method != "POST":
            return self.preferences_form(found, saved=request.query_params.get("saved"))
        form = await self.form(request)
        self.check_form(request, form, found.id)
        action = form.get("action")
        if action == "unsubscribe":
            await self.unsubscribe(found, row, ReportVia.PREFERENCES)
        elif action == "resubscribe":
            await run_in_threadpool(subs.resubscribe, self.engine, found.id, self.clock())
        elif action == "save":
            chosen = [str(t) for t in form.getlist("topics")]
            zone = str(form.get("timezone", "")) or None
            error = None
            if unknown_topics(chosen, self.settings.topics):
                error = "Unknown topic: nothing was changed."
            elif not chosen:
                error = "Choose at least one topic, or unsubscribe below."
            elif zone is not None and zone not in ZONES and zone != found.timezone:
                error = "Unknown time zone: nothing was changed."
            if error:
                return self.preferences_form(found, 400, error=error)
            try:
                await run_in_threadpool(partial(
                    subs.set_preferences, self.engine, found.id, topics=chosen, timezone=zone,
                    known_topics=self.settings.topics, now=self.clock(), actor=audit.READER))
            except DispatchError as exc:
                return self.preferences_form(found, 400, error=exc.problems[0].message)
        else:
            raise HTTPException(400, "Unknown action.")
        return RedirectResponse(f"/p/{token}?saved={action}", 303, headers=HEADERS)

    def preferences_form(self, found: subs.Subscriber, status: int = 200,
                         saved: str | None = None, error: str | None = None) -> HTMLResponse:
        default, now = self.settings.schedule.default_timezone, self.clock()
        groups = zone_groups([default, self.settings.newsletter.timezone], found.timezone, now)
        return self.page("preferences", status, subscriber=found,
                         topics=self.settings.topics.values(), zone_groups=groups,
                         default_zone=zone_label(default, now),
                         csrf=self.form_token(found.id), saved=saved, error=error)

    async def manage_page(self, request: Request) -> Response:
        return self.message(200, "Manage your subscription",
                            "Every email we send ends with two links: one to choose your "
                            "topics and time zone, one to unsubscribe. They are personal, so "
                            "there is no password to remember.",
                            link=("/", "Subscribe"))

    # ---- archive

    async def archive_page(self, request: Request) -> Response:
        archived = await run_in_threadpool(sends.archived_sends, self.engine)
        zone = ZoneInfo(self.settings.newsletter.timezone)
        issues = [{"url": archive_url("", s.issue), "subject": s.subject,
                   "sent": sent_at(s).astimezone(zone)} for s in archived]
        return self.page("archive", issues=issues, feed=FEED_PATH)

    async def archive_feed(self, request: Request) -> Response:
        archived = await run_in_threadpool(sends.archived_sends, self.engine)
        return Response(atom_feed(self.settings, archived, self.clock()),
                        media_type="application/atom+xml; charset=utf-8", headers={
                            **HEADERS, "Cache-Control": "public, max-age=300"})

    async def not_archived(self, slug: str) -> HTTPException:
        """404 for an issue the archive never had, 410 for one taken down."""
        if await run_in_threadpool(sends.hidden_from_archive, self.engine, slug):
            return HTTPException(410, "This issue was taken down from the archive.")
        return HTTPException(404, "No such issue in the archive.")

    async def archive_issue(self, request: Request) -> Response:
        slug = request.path_params["issue"]
        variants = await run_in_threadpool(sends.archived_variants, self.engine, slug)
        if not variants:
            raise await self.not_archived(slug)
        fullest = min(variants, key=fullest_first)  # the edition with the most briefs
        return RedirectResponse(f"{archive_url('', slug)}/{quote(fullest, safe='')}", 302,
                                headers=HEADERS)

    async def archive_variant(self, request: Request) -> Response:
        slug, variant = request.path_params["issue"], request.path_params["variant"]
        html = await run_in_threadpool(sends.viewable_html, self.engine, slug, variant)
        if html is None:
            raise await self.not_archived(slug)
        # Everyone's copy without anyone's data: no name, no personal links.
        values = {slot: "" for slot in SLOTS}
        values.update(name="there", unsubscribe_url=f"{self.base}/p",
                      preferences_url=f"{self.base}/p",
                      view_url=f"{self.base}/a/{slug}/{variant}")
        return HTMLResponse(fill_slots(public_copy(html), values), headers={
            **HEADERS, "Cache-Control": "public, max-age=300",
            "Content-Security-Policy": CSP.format(images=" https: http:")})

    async def health(self, request: Request) -> Response:
        return Response("ok\n", media_type="text/plain")


def create_app(engine: Engine, settings: Settings, *, queued: Callable[[], None] = lambda: None,
               clock: Callable[[], datetime] = utcnow, fetch: Fetcher = fetch_https) -> ASGIApp:
    """The ASGI app, with the confirmation and welcome messages rendered into the store.
    `queued` is called when a sign-up queued a confirmation or a confirmation a welcome, so a
    delivery worker in the same process can send it at once; `fetch` gets SNS's signing
    certificates (the relays' webhooks)."""
    web_settings = settings.web or WebSettings()
    signer = Signer(secret(engine), expiry={"confirm": web_settings.confirm_expiry})
    prepare_confirmations(engine, settings, web_settings.confirm_expiry, clock(),
                          welcome=web_settings.welcome)
    web = Web(engine, settings, web_settings, signer, queued, clock)
    both = ["GET", "POST"]
    routes = [
        Route("/", web.signup_page, methods=["GET"]),
        Route("/subscribe", web.signup_page, methods=both),
        Route("/c/{token}", web.confirm_page, methods=both),
        Route("/u/{token}", web.unsubscribe_page, methods=both),
        Route("/p", web.manage_page, methods=["GET"]),
        Route("/p/{token}", web.preferences_page, methods=both),
        Route("/a", web.archive_page, methods=["GET"]),
        Route(FEED_PATH, web.archive_feed, methods=["GET"]),
        Route("/a/{issue}", web.archive_issue, methods=["GET"]),
        Route("/a/{issue}/{variant}", web.archive_variant, methods=["GET"]),
        Route("/healthz", web.health, methods=["GET"]),
    ]
    handler: Callable[[Request, Exception], Awaitable[Response]] = web.error
    app = Starlette(routes=routes, exception_handlers={HTTPException: handler,
                                                      Exception: handler})
    app_with_console = with_console(BodyLimit(app, MAX_BODY), engine, settings, queued, clock)
    return with_webhooks(app_with_console, engine, settings, signer, clock, fetch)
