"""Double opt-in: a sign-up form checked, the confirmation message it sends and the welcome
message that follows the confirmation, rendered with the same pipeline and checks as an issue.
Storing the request and queueing the messages through the normal delivery path is
store/confirmations."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from dispatch.audience.addresses import MAX_NAME, normalize, valid_name
from dispatch.compose.render import render_email
from dispatch.compose.rules import check_rendered
from dispatch.compose.slots import TOKENS
from dispatch.config import Settings
from dispatch.config.topics import unknown_topics
from dispatch.errors import Problem, RenderError

RESEND_AFTER = timedelta(minutes=10)  # a repeated sign-up sends another confirmation after this


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
        key = normalize(email)
    except ValueError as exc:
        errors["email"] = f"That address does not look right: {exc}"
    name = " ".join(name.split())
    if not valid_name(name):
        errors["name"] = f"A name is at most {MAX_NAME} characters, without control characters."
    unknown = unknown_topics(topics, settings.topics)
    if unknown:
        errors["topics"] = f"Unknown topic(s): {', '.join(unknown)}."
    elif not topics:
        errors["topics"] = "Choose at least one topic."
    if errors:
        return None, errors
    return Signup(email=email.strip(), key=key, name=name or None,
                  topics=tuple(dict.fromkeys(topics))), {}


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
    html, text = render_email(settings, "confirm", context, context, "the confirmation")
    problems = check_rendered(html, text, settings)
    if TOKENS["confirm_url"] not in html or TOKENS["confirm_url"] not in text:
        problems.append("the confirmation link is missing")
    if problems:
        raise RenderError([Problem("templates/email/confirm", p) for p in problems])
    return subject, html, text


def welcome_message(settings: Settings) -> tuple[str, str, str]:
    """(subject, html, text) of the welcome message a subscriber gets once, after confirming
    (templates/email/welcome.*, overridable like every template); rendered once, the
    recipient's name and links are slots filled at delivery."""
    subject = f"Welcome to {settings.newsletter.name}"
    context = {"newsletter": settings.newsletter, "subject": subject, "slots": TOKENS,
               "archive_url": f"{settings.newsletter.base_url}/a"}
    html, text = render_email(settings, "welcome", context, context, "the welcome message")
    problems = check_rendered(html, text, settings)
    if problems:
        raise RenderError([Problem("templates/email/welcome", p) for p in problems])
    return subject, html, text
