"""Double opt-in confirmations travel as an outbox pseudo-send, CONFIRMATIONS: one stored
variant (the rendered message), one row per request, delivered by the same workers with the
same retries, rate limits and DKIM as an issue. The welcome message after a confirmation is
another, WELCOME: one row per subscriber ever (the outbox's unique key), so a second click,
a second confirmation or a returning reader never gets it twice. The messages are rendered
by audience/signup.py and stored here by deliver/signup_mail.py."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from dispatch.audience.signup import RESEND_AFTER, Signup
from dispatch.states import UNFINISHED, RowState, SendStatus, SendStep
from dispatch.store.schema import outbox, send_variants, sends
from dispatch.store.sends import CONFIRMATIONS, WELCOME, change_status
from dispatch.store.signups import confirm_row, signup_row


def store_message(engine: Engine, issue: str, variant: str, subject: str, html: str,
                  text: str, now: datetime) -> None:
    """Keep a rendered message as the one variant of its pseudo-send (created sent, with no
    recipients, when new), where every worker finds it."""
    try:
        with engine.begin() as conn:
            if conn.execute(select(sends.c.issue).where(sends.c.issue == issue)).first():
                conn.execute(update(sends).where(sends.c.issue == issue)
                             .values(subject=subject))
                conn.execute(delete(send_variants).where(send_variants.c.issue == issue))
            else:
                conn.execute(insert(sends).values(issue=issue, subject=subject,
                                                  status=SendStatus.SENT, recipients=0,
                                                  created_at=now, launched_at=now))
            conn.execute(insert(send_variants).values(issue=issue, variant=variant,
                                                      html=html, text=text))
    except IntegrityError:
        pass  # another web process starting at the same moment stored the same message


def request_confirmation(engine: Engine, wanted: Signup, now: datetime,
                         resend_after: timedelta = RESEND_AFTER) -> bool:
    """Record a sign-up (store/signups.signup_row) and queue its confirmation, in one
    transaction. True when a confirmation was queued; False when nothing was (an active or
    suppressed address, a repeat within `resend_after`, or the same address signing up at
    the same moment)."""
    try:
        with engine.begin() as conn:
            sid = signup_row(conn, wanted.email, wanted.key, name=wanted.name,
                             topics=list(wanted.topics), now=now)
            return sid is not None and queue_confirmation(conn, sid, now, resend_after)
    except IntegrityError:
        return False  # the same address signed up at the same moment: that request won


def queue_confirmation(conn: Connection, subscriber_id: int, now: datetime,
                       resend_after: timedelta) -> bool:
    """Queue a confirmation message for a signed-up subscriber, in the caller's transaction.
    One already waiting, or sent less than `resend_after` ago, is not repeated: a form
    submitted again must not flood a mailbox. False when nothing was queued."""
    previous = conn.execute(select(outbox.c.state, outbox.c.updated_at).where(and_(
        outbox.c.issue == CONFIRMATIONS, outbox.c.subscriber_id == subscriber_id))).first()
    if previous is not None:
        if previous.state in UNFINISHED or previous.updated_at > now - resend_after:
            return False
        # A fresh row, not a reset one: its id gives the new message its own Message-ID.
        conn.execute(delete(outbox).where(and_(outbox.c.issue == CONFIRMATIONS,
                                               outbox.c.subscriber_id == subscriber_id)))
    conn.execute(insert(outbox).values(issue=CONFIRMATIONS, subscriber_id=subscriber_id,
                                       variant="confirm", state=RowState.QUEUED, attempts=0,
                                       next_attempt_at=now, updated_at=now))
    # A confirmation reopens its pseudo-send whatever its status, paused included: a new
    # sign-up is a fresh chance to deliver.
    change_status(conn, SendStep.REOPEN, sends.c.issue == CONFIRMATIONS,
                  finished_at=None, recipients=sends.c.recipients + 1)
    return True


def confirm(engine: Engine, subscriber_id: int, now: datetime, *, welcome: bool
            ) -> tuple[str | None, bool]:
    """The confirmation link's button (store.signups.confirm_row) and, when it activated
    the subscriber and `welcome` is on, their welcome message queued in the same
    transaction. (status afterwards or None, whether a welcome was queued)."""
    with engine.begin() as conn:
        status, activated = confirm_row(conn, subscriber_id, now)
        return status, activated and welcome and queue_welcome(conn, subscriber_id, now)


def queue_welcome(conn: Connection, subscriber_id: int, now: datetime) -> bool:
    """Queue the welcome message for a subscriber who has never had one, in the caller's
    transaction; False when they had one (whatever became of it) or it is not prepared."""
    if conn.execute(select(outbox.c.id).where(and_(
            outbox.c.issue == WELCOME, outbox.c.subscriber_id == subscriber_id))).first():
        return False
    if not conn.execute(select(sends.c.issue).where(sends.c.issue == WELCOME)).first():
        return False  # the web app was started with [web] welcome = false
    conn.execute(insert(outbox).values(issue=WELCOME, subscriber_id=subscriber_id,
                                       variant="welcome", state=RowState.QUEUED, attempts=0,
                                       next_attempt_at=now, updated_at=now))
    change_status(conn, SendStep.REOPEN, sends.c.issue == WELCOME,
                  finished_at=None, recipients=sends.c.recipients + 1)
    return True
