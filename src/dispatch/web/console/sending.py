"""Acting on an issue: a test send, a dry run, scheduling, moving, cancelling, sending now,
pausing and resuming; each confirmed first where it cannot be undone."""

from __future__ import annotations

import tempfile
from pathlib import Path
from zoneinfo import ZoneInfo

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from dispatch.deliver import control, sending
from dispatch.errors import DispatchError, Problem
from dispatch.schedule import planning
from dispatch.store import sends
from dispatch.store.accounts import Session
from dispatch.web.console.access import PREFIX, note
from dispatch.web.console.base import Section


class Sending(Section):
    """The actions on an issue's page."""

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


def _problems(exc: Exception) -> list[Problem]:
    if isinstance(exc, DispatchError):
        return exc.problems
    return [Problem("smtp", f"the relay could not be reached: {exc}")]
