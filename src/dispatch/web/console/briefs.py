"""The brief editor: a brief as a form, its live card preview, saving it (checked, and refused
when the file changed since it was opened), and pasted text imported as a new brief."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from dispatch.compose import editing
from dispatch.compose.check import check
from dispatch.compose.issues import ISSUE_FILE
from dispatch.compose.models import Issue
from dispatch.compose.preview import sample_copy
from dispatch.compose.variants import variant_for
from dispatch.errors import DispatchError, Problem
from dispatch.store.accounts import Session
from dispatch.web.console.access import PREFIX, note
from dispatch.web.console.base import HEADERS, Section, notice_query, read_notice


class Briefs(Section):
    """The brief editor's pages."""

    def brief_path(self, request: Request) -> Path:
        folder = self.folder(request.path_params["slug"])
        try:
            path = folder / editing.check_name(request.path_params["name"])
        except DispatchError as exc:
            raise HTTPException(404, f"No such brief: {exc}") from None
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

