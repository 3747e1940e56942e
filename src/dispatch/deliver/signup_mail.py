"""The double opt-in messages: the confirmation (and the welcome message after it) rendered
once with the pipeline and checks of an issue (audience/signup.py) and kept as the one
variant of its pseudo-send (store/confirmations.py), where every worker finds it and builds
each reader's copy like any message (deliver/messages.py)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine

from dispatch.audience.signup import confirmation_message, welcome_message
from dispatch.config import Settings
from dispatch.store.confirmations import store_message
from dispatch.store.sends import CONFIRMATIONS, WELCOME


def prepare_confirmations(engine: Engine, settings: Settings, expiry: timedelta,
                          now: datetime, *, welcome: bool = True) -> None:
    """Render and store the confirmation message (and the welcome message, unless `welcome`
    is off); refreshed on every start so a changed template or newsletter name applies to
    the next message. A template that fails its checks raises RenderError before anything
    is stored."""
    messages = [(CONFIRMATIONS, "confirm", *confirmation_message(settings, expiry))]
    if welcome:
        messages.append((WELCOME, "welcome", *welcome_message(settings)))
    for issue, variant, subject, html, text in messages:
        store_message(engine, issue, variant, subject, html, text, now)
