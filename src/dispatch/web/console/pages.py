"""The console's pages: each reads the request, calls the library function the matching CLI
command calls, and renders a template. Sessions, roles, CSRF and the audit record are
access.py's; nothing here decides anything about a send, a brief or a subscriber.

Pages run in the thread pool (access.Guard.wrap): they may call the store directly.
"""

from __future__ import annotations

import hmac
import io
import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import jinja2
from sqlalchemy import Engine
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from dispatch.audience import csvio
from dispatch.clock import zone_names
from dispatch.compose import editing
from dispatch.compose.check import check
from dispatch.compose.issues import ISSUE_FILE, issue_folders, load_issue
from dispatch.compose.models import Issue
from dispatch.compose.preview import sample_copy
from dispatch.compose.render import environment
from dispatch.compose.variants import possible_variants, variant_for
from dispatch.config import Settings
from dispatch.config.topics import topic_labels
from dispatch.deliver import control, sending
from dispatch.errors import DispatchError, Problem
from dispatch.schedule import planning
from dispatch.schedule.overview import schedule_overview
from dispatch.states import RESCHEDULABLE, SubscriberStatus
from dispatch.store import accounts, audit, history, imports, outbox, sends
from dispatch.store import segments as segs
from dispatch.store import subscribers as subs
from dispatch.store.accounts import Session
from dispatch.web.console.access import (
    LOGIN_COOKIE,
    PREFIX,
    SESSION_COOKIE,
    Guard,
    new_token,
    note,
    safe_next,
)

STATIC = Path(__file__).resolve().parent / "static"
ZONES = zone_names()
LIST_LIMIT = 200  # subscribers shown per search; the export has them all
RATE_WINDOW = timedelta(seconds=10)

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


def feedback_counts(report: dict[str, Any]) -> dict[str, int | None]:
    """What came back about an issue (store.reports.counts via the status report): hard and
    soft bounces, complaints, unsubscribes by any way, unmatched reports. None for a figure
    the status report does not carry (the page says "not tracked")."""
    found = report.get("reports") or {}
    unsubscribed = [v for k, v in found.items() if k.startswith("unsubscribed")]
    return {"bounced_hard": found.get("bounced"), "bounced_soft": found.get("soft_bounced"),
            "complained": found.get("complained"),
            "unsubscribed": sum(unsubscribed) if unsubscribed else None,
            "unmatched": found.get("unmatched")}


class Pages:
    def __init__(self, engine: Engine, settings: Settings, guard: Guard,
                 queued: Callable[[], None], clock: Callable[[], datetime]) -> None:
        self.engine, self.settings, self.guard = engine, settings, guard
        self.queued, self.clock = queued, clock
        # Optional context (a notice, problems) may be left out: absent reads as empty.
        self.env = environment(settings).overlay(undefined=jinja2.Undefined)
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

    # ---- signing in and out

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

    # ---- issues

    def issues(self, request: Request, session: Session, form: None) -> Response:
        overview = schedule_overview(self.engine, self.settings, self.clock())
        rows = [{"send": s, "when": control.describe_when(s, self.settings) if s.send_at
                 else f"sent at once, {self.local(s.launched_at)}" if s.launched_at else "-",
                 "sent": overview.sent[s.issue],
                 "finished": self.local(s.finished_at) if s.finished_at else ""}
                for s in overview.sends]
        return self.page("issues", session, rows=rows, drafts=overview.drafts,
                         done=read_notice(request, session))

    def folder(self, slug: str) -> Path:
        """An issue folder by its name, only among the project's issues."""
        for folder in issue_folders(self.settings):
            if folder.name == slug:
                return folder
        raise HTTPException(404, f"No issue folder named {slug!r}.")

    def load(self, slug: str) -> Issue:
        return load_issue(self.folder(slug), self.settings)

    def issue(self, request: Request, session: Session, form: None) -> Response:
        slug = request.path_params["slug"]
        folder = self.folder(slug)
        now = self.clock()
        report = check(self.settings, now, folder)
        send = sends.get_send(self.engine, slug)
        variants: list[dict[str, Any]] = []
        issue = report.issues[0] if report.issues else None
        if issue is not None:
            audience = outbox.plan_audience(self.engine, issue, self.settings)
            chosen = audience.variants or possible_variants(issue)
            for vid, variant in chosen.items():
                try:
                    _, text = sample_copy(issue, variant, self.settings, now)
                except DispatchError:
                    text = None  # the check above lists why
                variants.append({"id": vid,
                                 "topics": topic_labels(self.settings.topics, variant.topics),
                                 "titles": [b.title for b in variant.briefs],
                                 "recipients": audience.per_variant.get(vid, 0), "text": text})
        status = None
        if send is not None and send.launched_at is not None:
            status = control.status_report(self.engine, slug)[0]
        briefs = sorted(p.name for p in folder.glob("*.md"))
        return self.page(
            "issue", session, slug=slug, issue=issue, send=send, problems=report.problems,
            variants=variants, briefs=briefs, report=status,
            when=control.describe_when(send, self.settings) if send else None,
            feedback=feedback_counts(status) if status else None,
            timeline=outbox.delivery_timeline(self.engine, slug) if status else [],
            zones=ZONES, default_zone=self.settings.newsletter.timezone,
            can_schedule=send is None or send.status in RESCHEDULABLE,
            done=read_notice(request, session))

    def progress(self, request: Request, session: Session, form: None) -> Response:
        slug = request.path_params["slug"]
        send = sends.get_send(self.engine, slug)
        if send is None:
            raise HTTPException(404, "No send for this issue yet.")
        report = control.status_report(self.engine, slug)[0] if send.launched_at else {
            "status": send.status, "reason": send.reason, "states": {}}
        rate = outbox.sent_since(self.engine, slug, self.clock() - RATE_WINDOW) / \
            RATE_WINDOW.total_seconds()
        return JSONResponse({"status": report["status"], "reason": report["reason"],
                             "states": report["states"], "recipients": send.recipients,
                             "rate": round(rate, 1)}, headers=HEADERS)

    def variant_html(self, request: Request, session: Session, form: None) -> Response:
        issue = self.load(request.path_params["slug"])
        wanted = request.path_params["variant"]
        variant = possible_variants(issue).get(wanted)
        if variant is None:
            raise HTTPException(404, "No such variant of this issue.")
        html, _ = sample_copy(issue, variant, self.settings, self.clock())
        return HTMLResponse(html, headers={**HEADERS, "Content-Security-Policy": PREVIEW_CSP,
                                           "X-Frame-Options": "SAMEORIGIN"})

    def back(self, request: Request) -> str:
        return f"{PREFIX}/issues/{request.path_params['slug']}"

    def test_send(self, request: Request, session: Session, form: FormData) -> Response:
        try:
            replies = sending.send_test_copies(self.engine, self.load(
                request.path_params["slug"]), self.settings, session.user.email, self.clock())
        except (DispatchError, OSError) as exc:
            return self.problems(session, _problems(exc), self.back(request))
        return self.done(request, session, self.back(request), f"{len(replies)} test cop"
                         f"{'y' if len(replies) == 1 else 'ies'} sent to {session.user.email}")

    def dry_run(self, request: Request, session: Session, form: FormData) -> Response:
        try:
            issue = self.load(request.path_params["slug"])
            with tempfile.TemporaryDirectory() as out:
                data = sending.dry_run(self.engine, issue, self.settings, Path(out),
                                       self.clock(), sample=0).data
        except DispatchError as exc:
            return self.problems(session, exc.problems, self.back(request))
        note(request, f"{data['messages_built']} messages built")
        return self.page("dry_run", session, data=data, back=self.back(request))

    def schedule(self, request: Request, session: Session, form: FormData) -> Response:
        slug = request.path_params["slug"]
        at, tz = str(form.get("at", "")).strip(), str(form.get("tz", "")).strip() or None
        local = form.get("local") == "yes"
        try:
            if form.get("confirm") != "yes":
                issue = planning.validate(self.settings, self.folder(slug), self.clock())
                when = planning.plan_time(self.engine, self.settings, issue, at or None, tz,
                                          local, self.clock())
                return self.confirm(session, f"Schedule {slug}?", [
                    f"“{issue.subject}” goes out at {self._when(when)}."],
                    f"{PREFIX}/issues/{slug}/schedule",
                    {"at": at, "tz": tz or "", "local": "yes" if local else ""},
                    "Schedule it", self.back(request))
            planning.schedule_issue(self.engine, self.settings, slug, at=at or None, tz=tz,
                                    local=local, now=self.clock())
        except DispatchError as exc:
            return self.problems(session, exc.problems, self.back(request))
        send = sends.get_send(self.engine, slug)
        assert send is not None
        return self.done(request, session, self.back(request),
                         f"scheduled for {control.describe_when(send, self.settings)}")

    def _when(self, when: planning.When) -> str:
        if when.local_time is not None:
            return (f"{when.local_time:%Y-%m-%d %H:%M} in each subscriber's zone (first "
                    f"{when.send_at:%Y-%m-%d %H:%M} UTC)")
        return f"{when.send_at.astimezone(ZoneInfo(when.zone)):%Y-%m-%d %H:%M} {when.zone} " \
               f"({when.send_at:%Y-%m-%d %H:%M} UTC)"

    def move(self, request: Request, session: Session, form: FormData) -> Response:
        slug = request.path_params["slug"]
        at, tz = str(form.get("at", "")).strip(), str(form.get("tz", "")).strip() or None
        if form.get("confirm") != "yes":
            return self.confirm(session, f"Move {slug}?", [f"To {at} {tz or ''}."],
                                f"{PREFIX}/issues/{slug}/move", {"at": at, "tz": tz or ""},
                                "Move it", self.back(request))
        try:
            planning.move_issue(self.engine, self.settings, slug, at=at, tz=tz,
                                now=self.clock())
        except DispatchError as exc:
            return self.problems(session, exc.problems, self.back(request))
        send = sends.get_send(self.engine, slug)
        assert send is not None
        return self.done(request, session, self.back(request),
                         f"moved to {control.describe_when(send, self.settings)}")

    def cancel(self, request: Request, session: Session, form: FormData) -> Response:
        slug = request.path_params["slug"]
        if form.get("confirm") != "yes":
            return self.confirm(session, f"Cancel {slug}?", [
                "A scheduled issue will not go out; a running send stops and its unsent "
                "messages are dropped."], f"{PREFIX}/issues/{slug}/cancel", {},
                "Cancel the send", self.back(request))
        try:
            dropped = planning.cancel_issue(self.engine, slug, self.clock())
        except DispatchError as exc:
            return self.problems(session, exc.problems, self.back(request))
        return self.done(request, session, self.back(request),
                         f"cancelled; {dropped} unsent message(s) dropped")

    def send(self, request: Request, session: Session, form: FormData) -> Response:
        slug = request.path_params["slug"]
        try:
            issue = planning.validate(self.settings, self.folder(slug), self.clock())
            plan = control.prepare_send(self.engine, issue, self.settings)
            if plan.action is not control.SendAction.LAUNCH:
                self.queued()
                return self.done(request, session, self.back(request), f"send: {plan.action}")
            audience = plan.require_audience()
            if form.get("confirm") != "yes":
                lines = [f"“{issue.subject}” goes to {audience.recipients:,} subscriber(s) "
                         "now:"]
                lines += [f"{label}: {n:,} recipient(s) ({vid})"
                          for label, n, vid in sending.variant_table(issue, audience,
                                                                     self.settings)]
                lines += [f"not sent: {line}" for line in sending.skipped_lines(
                    audience.skipped)]
                return self.confirm(session, f"Send {slug} now?", lines,
                                    f"{PREFIX}/issues/{slug}/send", {}, "Send it now",
                                    self.back(request))
            control.launch_planned(self.engine, plan, self.settings, self.clock())
        except DispatchError as exc:
            return self.problems(session, exc.problems, self.back(request))
        self.queued()
        return self.done(request, session, self.back(request),
                         f"sending to {audience.recipients:,} subscriber(s)")

    def pause(self, request: Request, session: Session, form: FormData) -> Response:
        slug = request.path_params["slug"]
        try:
            planning.pause_issue(self.engine, slug)
        except DispatchError as exc:
            return self.problems(session, exc.problems, self.back(request))
        return self.done(request, session, self.back(request), "paused")

    def resume(self, request: Request, session: Session, form: FormData) -> Response:
        slug = request.path_params["slug"]
        try:
            planning.resume_issue(self.engine, slug)
        except DispatchError as exc:
            return self.problems(session, exc.problems, self.back(request))
        self.queued()
        return self.done(request, session, self.back(request), "resumed")

    # ---- briefs

    def brief_path(self, request: Request) -> Path:
        folder = self.folder(request.path_params["slug"])
        try:
            path = folder / editing.check_name(request.path_params["name"])
        except DispatchError:
            raise HTTPException(404, "No such brief.") from None
        if not path.resolve().is_relative_to(folder.resolve()):  # a symlink out of the issue
            raise HTTPException(404, "No such brief in this issue.")
        return path

    def brief_form(self, request: Request, session: Session, form: None) -> Response:
        path = self.brief_path(request)
        if not path.is_file():
            raise HTTPException(404, "No such brief in this issue.")
        text = path.read_text(encoding="utf-8-sig")
        return self.brief_page(session, request, editing.to_form(text), editing.text_hash(text),
                               done=read_notice(request, session))

    def brief_page(self, session: Session, request: Request, brief: editing.BriefForm,
                   opened: str, status: int = 200, **context: Any) -> HTMLResponse:
        return self.page("brief", session, status, slug=request.path_params["slug"],
                         name=request.path_params["name"], brief=brief, opened=opened,
                         topics=self.settings.topics.values(), **context)

    def brief_from(self, request: Request, form: FormData
                   ) -> tuple[Path, editing.BriefForm, str]:
        brief = editing.BriefForm(
            **{key: str(form.get(key, "")) for key in (*editing.FORM_KEYS, "extra", "body")},
            topics=[str(t) for t in form.getlist("topics")])
        return self.brief_path(request), brief, str(form.get("opened", ""))

    def render_card(self, request: Request, path: Path, brief: editing.BriefForm) -> str:
        """The brief's card alone (an issue of this one brief, as readers get it); a
        DispatchError with located problems when the brief does not check."""
        parsed = editing.checked_brief(path, editing.to_text(brief), self.settings.topics)
        issue = self.load(request.path_params["slug"])
        single = Issue(path=issue.path, slug=issue.slug, subject=issue.subject,
                       briefs=(parsed,), preheader=issue.preheader, personalize=False)
        card, _ = sample_copy(single, variant_for(single, (parsed,)), self.settings,
                              self.clock())
        return card

    def brief_card(self, request: Request, session: Session, form: FormData) -> Response:
        """The live preview the editor's script asks for as the editor types."""
        path, brief, _ = self.brief_from(request, form)
        try:
            return JSONResponse({"html": self.render_card(request, path, brief),
                                 "problems": []}, headers=HEADERS)
        except DispatchError as exc:
            return JSONResponse({"html": None, "problems": [str(p) for p in exc.problems]},
                                headers=HEADERS)

    def brief_save(self, request: Request, session: Session, form: FormData) -> Response:
        path, brief, opened = self.brief_from(request, form)
        if form.get("action") == "preview":
            try:
                card = self.render_card(request, path, brief)
            except DispatchError as exc:
                return self.brief_page(session, request, brief, opened, 400,
                                       problems=exc.problems)
            note(request, "preview")
            return self.brief_page(session, request, brief, opened, card=card)
        try:
            text = editing.to_text(brief)
            editing.checked_brief(path, text, self.settings.topics)
        except DispatchError as exc:
            return self.brief_page(session, request, brief, opened, 400, problems=exc.problems)
        current = path.read_text(encoding="utf-8-sig") if path.exists() else ""
        if editing.text_hash(current) != opened:
            return self.brief_page(session, request, brief, opened, 409, conflict=True)
        path.write_text(text, encoding="utf-8")
        problems = check(self.settings, self.clock(), path.parent).problems
        note(request, f"saved {path.name}")
        return self.brief_page(session, request, brief, editing.text_hash(text),
                               saved=True, problems=problems)

    def import_form(self, request: Request, session: Session, form: None) -> Response:
        self.folder(request.path_params["slug"])
        return self.page("import", session, slug=request.path_params["slug"], text="")

    def import_brief(self, request: Request, session: Session, form: FormData) -> Response:
        slug = request.path_params["slug"]
        folder = self.folder(slug)
        text = str(form.get("text", ""))
        try:
            name, markdown = editing.import_pasted(text, self.settings.topics, folder,
                                                   self.clock().date())
            if (folder / name).exists():
                raise DispatchError(Problem(name, "a brief with this name exists in the "
                                                  "issue; edit it instead"))
        except DispatchError as exc:
            return self.page("import", session, 400, slug=slug, text=text,
                             problems=exc.problems)
        (folder / name).write_text(markdown, encoding="utf-8")
        listed = "briefs" in (folder / ISSUE_FILE).read_text(encoding="utf-8-sig")
        detail = f"imported {name}" + (
            "; add it to the briefs list in issue.toml to include it" if listed else "")
        note(request, detail)
        return RedirectResponse(f"{PREFIX}/issues/{slug}/briefs/{name}?"
                                f"{notice_query(session, detail)}", 303, headers=HEADERS)

    # ---- subscribers

    def subscribers(self, request: Request, session: Session, form: None) -> Response:
        q = request.query_params
        search, status = q.get("q", ""), q.get("status", "")
        topic, segment = q.get("topic", ""), q.get("segment", "")
        problems = []
        if status and status not in set(SubscriberStatus):
            problems.append(Problem("status", "unknown status"))
        if topic and topic not in self.settings.topics:
            problems.append(Problem("topic", "unknown topic"))
        if segment and segment not in self.settings.segments:
            problems.append(Problem("segment", "unknown segment"))
        people = [] if problems else subs.list_subscribers(
            self.engine, search=search, status=status or None, topic=topic or None,
            segment=self.settings.segments[segment] if segment else None,
            limit=LIST_LIMIT + 1)
        return self.page("subscribers", session, 400 if problems else 200,
                         people=people[:LIST_LIMIT], more=len(people) > LIST_LIMIT,
                         problems=problems, q=search, chosen_status=status, topic=topic,
                         segment=segment, statuses=list(SubscriberStatus),
                         topics=self.settings.topics.values(), segments=self.settings.segments,
                         done=read_notice(request, session), total=subs.count(self.engine))

    def export(self, request: Request, session: Session, form: None) -> Response:
        buffer = io.StringIO()
        written = csvio.write_csv(buffer, subs.iter_subscribers(self.engine))
        audit.record(self.engine, session.user.email, "export", "subscribers", self.clock(),
                     f"{written} row(s)")
        return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8", headers={
            **HEADERS, "Content-Disposition": 'attachment; filename="subscribers.csv"'})

    def add_subscriber(self, request: Request, session: Session, form: FormData) -> Response:
        email = str(form.get("email", ""))
        try:
            person = subs.add(self.engine, email, name=str(form.get("name", "")) or None,
                              topics=[str(t) for t in form.getlist("topics")],
                              timezone=str(form.get("tz", "")) or None,
                              known_topics=self.settings.topics, now=self.clock())
        except DispatchError as exc:
            return self.problems(session, exc.problems, f"{PREFIX}/subscribers")
        return self.done(request, session, f"{PREFIX}/subscribers/{person.id}",
                         f"added {person.email}")

    def import_csv(self, request: Request, session: Session, form: FormData) -> Response:
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            return self.problems(session, [Problem("file", "choose a CSV file to import")],
                                 f"{PREFIX}/subscribers")
        name = upload.filename.replace("\n", " ")[:100]
        try:
            text = upload.file.read().decode("utf-8")
        except UnicodeDecodeError:
            return self.problems(session, [Problem(name, "not UTF-8 text (save the CSV as "
                                                         "UTF-8)")], f"{PREFIX}/subscribers")
        try:
            rows, rejected, read = csvio.read_csv(text, self.settings.topics, name)
            report = imports.import_rows(self.engine, rows, self.clock(),
                                         dry_run=form.get("dry_run") == "yes")
        except DispatchError as exc:
            return self.problems(session, exc.problems, f"{PREFIX}/subscribers")
        errors = sorted(rejected + report.rejected)
        note(request, f"{name}: {read} read, {report.added} added, {report.updated} updated, "
                      f"{len(errors)} rejected")
        return self.page("imported", session, name=name, read=read, report=report,
                         errors=errors)

    def person(self, request: Request) -> subs.Subscriber:
        found = subs.by_id(self.engine, request.path_params["id"])
        if found is None:
            raise HTTPException(404, "No such subscriber (forgotten?).")
        return found

    def subscriber(self, request: Request, session: Session, form: None) -> Response:
        person = self.person(request)
        return self.page("subscriber", session, person=person,
                         history=history.history(self.engine, person.id),
                         topics=self.settings.topics.values(),
                         done=read_notice(request, session))

    def set_topics(self, request: Request, session: Session, form: FormData) -> Response:
        person = self.person(request)
        try:
            subs.update_subscriber(self.engine, person.email, now=self.clock(),
                                   known_topics=self.settings.topics,
                                   topics=[str(t) for t in form.getlist("topics")])
        except DispatchError as exc:
            return self.problems(session, exc.problems, f"{PREFIX}/subscribers/{person.id}")
        return self.done(request, session, f"{PREFIX}/subscribers/{person.id}", "topics saved")

    def unsubscribe(self, request: Request, session: Session, form: FormData) -> Response:
        person = self.person(request)
        subs.unsubscribe(self.engine, person.id, self.clock())
        return self.done(request, session, f"{PREFIX}/subscribers/{person.id}", "unsubscribed")

    def forget(self, request: Request, session: Session, form: FormData) -> Response:
        person = self.person(request)
        if form.get("confirm") != "yes":
            return self.confirm(session, f"Forget {person.email}?", [
                "Their name, address, topics and history are erased; only a hash of the "
                "address is kept so it is never mailed again. This cannot be undone."],
                f"{PREFIX}/subscribers/{person.id}/forget", {}, "Forget them",
                f"{PREFIX}/subscribers/{person.id}")
        subs.forget(self.engine, person.email, self.clock())
        return self.done(request, session, f"{PREFIX}/subscribers",
                         f"forgot subscriber {person.id}")

    # ---- segments, digests, accounts, audit

    def segments(self, request: Request, session: Session, form: None) -> Response:
        now = self.clock()
        counts = segs.segment_counts(self.engine, self.settings.segments)
        overview = schedule_overview(self.engine, self.settings, now)
        return self.page("segments", session, segments=self.settings.segments, counts=counts,
                         recurring=[(r, self.local(n)) for r, n in overview.recurring],
                         active=subs.count(self.engine, SubscriberStatus.ACTIVE))

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


def _problems(exc: Exception) -> list[Problem]:
    if isinstance(exc, DispatchError):
        return exc.problems
    return [Problem("smtp", f"the relay could not be reached: {exc}")]

