"""Double opt-in: a sign-up queues a confirmation message through the normal delivery path
(the outbox, its retries, rate limits and DKIM), and the link in it activates the
subscription. The web app is a thin shell over these functions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import jinja2
from mjml import mjml2html
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from dispatch.config import Settings
from dispatch.errors import Problem, RenderError
from dispatch.compose.render import TOKENS, check_rendered, environment, inline_css
from dispatch.store import outbox
from dispatch.store import subscribers as subs

RESEND_AFTER = timedelta(minutes=10)  # a repeated sign-up sends another confirmation after this
MAX_NAME = 200


@dataclass(frozen=True)
class Signup:
    email: str
    key: str  # the normalised address
    name: str | None
    topics: tuple[str, ...]


def read_signup(settings: Settings, email: str, name: str, topics: list[str]
                ) -> tuple[Signup | None, dict[str, str]]:
    """A sign-up form's fields checked: the request, or a message per field at fault."""
    errors: dict[str, str] = {}
    key = ""
    try:
        key = subs.normalize(email)
    except ValueError as exc:
        errors["email"] = f"That address does not look right: {exc}"
    name = " ".join(name.split())
    if len(name) > MAX_NAME or re.search(r"[\x00-\x1f\x7f]", name):
        errors["name"] = f"A name is at most {MAX_NAME} characters, without control characters."
    unknown = [t for t in topics if t not in settings.topics]
    if unknown:
        errors["topics"] = f"Unknown topic(s): {', '.join(unknown)}."
    elif not topics:
        errors["topics"] = "Choose at least one topic."
    if errors:
        return None, errors
    return Signup(email=email.strip(), key=key, name=name or None,
                  topics=tuple(dict.fromkeys(topics))), {}


def request(engine: Engine, signup: Signup, now: datetime) -> bool:
    """Record the sign-up and queue its confirmation, in one transaction. Whatever the answer,
    the visitor is told the same thing: it must not reveal whether the address is known.
    True when a confirmation message was queued."""
    try:
        with engine.begin() as conn:
            sid = subs.signup_row(conn, signup.email, signup.key, name=signup.name,
                                  topics=list(signup.topics), now=now)
            return sid is not None and outbox.queue_confirmation(conn, sid, now, RESEND_AFTER)
    except IntegrityError:
        return False  # the same address signed up at the same moment: that request won


def _duration_words(span: timedelta) -> str:
    hours = round(span.total_seconds() / 3600)
    if hours >= 48 and hours % 24 == 0:
        return f"{hours // 24} days"
    if hours >= 1:
        return f"{hours} hour{'s' if hours != 1 else ''}"
    return f"{round(span.total_seconds() / 60)} minutes"


def confirmation_message(settings: Settings, expiry: timedelta) -> tuple[str, str, str]:
    """(subject, html, text) of the confirmation message, rendered once with the same
    pipeline and checks as an issue; recipients' links are slots filled at delivery."""
    subject = f"Confirm your subscription to {settings.newsletter.name}"
    context = {"newsletter": settings.newsletter, "subject": subject, "slots": TOKENS,
               "expiry": _duration_words(expiry)}
    env = environment(settings)
    try:
        mjml = env.get_template("email/confirm.mjml.j2").render(context)
        text = env.get_template("email/confirm.txt.j2").render(context)
        html = inline_css(mjml2html(mjml))
    except (jinja2.TemplateError, ValueError) as exc:
        raise RenderError(Problem("templates/email/confirm.mjml.j2", str(exc))) from None
    text = re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
    problems = check_rendered(html, text, settings)
    if TOKENS["confirm_url"] not in html or TOKENS["confirm_url"] not in text:
        problems.append("the confirmation link is missing")
    if problems:
        raise RenderError([Problem("templates/email/confirm", p) for p in problems])
    return subject, html, text


def prepare(engine: Engine, settings: Settings, expiry: timedelta, now: datetime) -> None:
    """Render the confirmation message into the store, where every worker finds it."""
    try:
        outbox.prepare_confirmations(engine, *confirmation_message(settings, expiry), now)
    except IntegrityError:
        pass  # another web process starting at the same moment stored the same message
