"""The audience: searching and filtering subscribers, export, adding one, importing a CSV,
one subscriber with their history and the actions on them, and the segments."""

from __future__ import annotations

import io

from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from dispatch.audience import csvio
from dispatch.audience.filters import parse_filter
from dispatch.errors import DispatchError, Problem
from dispatch.schedule.overview import schedule_overview
from dispatch.states import SubscriberStatus
from dispatch.store import audit, history, imports
from dispatch.store import segments as segs
from dispatch.store import subscribers as subs
from dispatch.store.accounts import Session
from dispatch.web.console.access import PREFIX, note
from dispatch.web.console.base import HEADERS, Section, read_notice

LIST_LIMIT = 200  # subscribers shown per search; the export has them all
ID_MAX = 2**63 - 1


class Subscribers(Section):
    """The subscribers' and segments' pages."""

    def subscribers(self, request: Request, session: Session, form: None) -> Response:
        q = request.query_params
        search, status = q.get("q", ""), q.get("status", "")
        topic, segment = q.get("topic", ""), q.get("segment", "")
        problems: list[Problem] = []
        people: list[subs.Subscriber] = []
        try:
            wanted = parse_filter(self.settings, search=search, status=status, topic=topic,
                                  segment=segment)
        except DispatchError as exc:
            problems = exc.problems
        else:
            people = subs.list_subscribers(self.engine, search=wanted.search,
                                           status=wanted.status, topic=wanted.topic,
                                           segment=wanted.segment, limit=LIST_LIMIT + 1)
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
        wanted = request.path_params["id"]
        if not 0 < wanted <= ID_MAX:  # beyond the store's 64-bit ids: nobody, not an error
            raise HTTPException(404, f"No subscriber {str(wanted)[:30]}.")
        found = subs.by_id(self.engine, wanted)
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

    def segments(self, request: Request, session: Session, form: None) -> Response:
        now = self.clock()
        counts = segs.segment_counts(self.engine, self.settings.segments)
        overview = schedule_overview(self.engine, self.settings, now)
        return self.page("segments", session, segments=self.settings.segments, counts=counts,
                         recurring=[(r, self.local(n)) for r, n in overview.recurring],
                         active=subs.count(self.engine, SubscriberStatus.ACTIVE))

