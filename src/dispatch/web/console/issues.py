"""The issues: the list of drafts and sends, one issue with its problems, variants and report,
its live progress, and a variant's HTML."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from dispatch.clock import zone_names
from dispatch.compose.check import check
from dispatch.compose.preview import sample_copy
from dispatch.compose.variants import possible_variants
from dispatch.config.topics import topic_labels
from dispatch.deliver import control
from dispatch.deliver.report import SendReport, send_reports
from dispatch.errors import DispatchError
from dispatch.schedule.overview import schedule_overview
from dispatch.states import RESCHEDULABLE
from dispatch.store import launch, progress, sends
from dispatch.store.accounts import Session
from dispatch.web.console.base import HEADERS, PREVIEW_CSP, Section, read_notice

ZONES = zone_names()
RATE_WINDOW = timedelta(seconds=10)


def feedback_counts(report: SendReport) -> dict[str, int]:
    """What came back about an issue, as the console's report shows it: hard and soft
    bounces, complaints, unsubscribes by any way, unmatched reports."""
    found = report.came_back
    return {"bounced_hard": found["bounced"], "bounced_soft": found["soft_bounced"],
            "complained": found["complained"], "unsubscribed": report.unsubscribed,
            "unmatched": found["unmatched"]}


class Issues(Section):
    """The issues' pages."""

    def issues(self, request: Request, session: Session, form: None) -> Response:
        overview = schedule_overview(self.engine, self.settings, self.clock())
        rows = [{"send": s, "when": control.describe_when(s, self.settings) if s.send_at
                 else f"sent at once, {self.local(s.launched_at)}" if s.launched_at else "-",
                 "sent": overview.sent[s.issue],
                 "finished": self.local(s.finished_at) if s.finished_at else ""}
                for s in overview.sends]
        return self.page("issues", session, rows=rows, drafts=overview.drafts,
                         done=read_notice(request, session))

    def issue(self, request: Request, session: Session, form: None) -> Response:
        slug = request.path_params["slug"]
        folder = self.folder(slug)
        now = self.clock()
        report = check(self.settings, now, folder)
        send = sends.get_send(self.engine, slug)
        variants: list[dict[str, Any]] = []
        issue = report.issues[0] if report.issues else None
        if issue is not None:
            audience = launch.plan_audience(self.engine, issue, self.settings)
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
            [status] = send_reports(self.engine, slug)
        briefs = sorted(p.name for p in folder.glob("*.md"))
        return self.page(
            "issue", session, slug=slug, issue=issue, send=send, problems=report.problems,
            variants=variants, briefs=briefs, report=status,
            when=control.describe_when(send, self.settings) if send else None,
            feedback=feedback_counts(status) if status else None,
            timeline=status.timeline if status else (),
            zones=ZONES, default_zone=self.settings.newsletter.timezone,
            can_schedule=send is None or send.status in RESCHEDULABLE,
            done=read_notice(request, session))

    def progress(self, request: Request, session: Session, form: None) -> Response:
        slug = request.path_params["slug"]
        send = sends.get_send(self.engine, slug)
        if send is None:
            raise HTTPException(404, "No send for this issue yet.")
        states = ({str(k): n for k, n in send_reports(self.engine, slug)[0].states.items()}
                  if send.launched_at else {})
        rate = progress.sent_since(self.engine, slug, self.clock() - RATE_WINDOW) / \
            RATE_WINDOW.total_seconds()
        return JSONResponse({"status": send.status, "reason": send.reason, "states": states,
                             "recipients": send.recipients, "rate": round(rate, 1)},
                            headers=HEADERS)

    def variant_html(self, request: Request, session: Session, form: None) -> Response:
        issue = self.load(request.path_params["slug"])
        wanted = request.path_params["variant"]
        variant = possible_variants(issue).get(wanted)
        if variant is None:
            raise HTTPException(404, "No such variant of this issue.")
        html, _ = sample_copy(issue, variant, self.settings, self.clock())
        return HTMLResponse(html, headers={**HEADERS, "Content-Security-Policy": PREVIEW_CSP,
                                           "X-Frame-Options": "SAMEORIGIN"})

