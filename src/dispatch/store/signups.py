"""Sign-up requests waiting for their confirmation link: what a form asked for an address
that already has a subscriber row, applied only on the link's button; withdrawn when the
subscriber leaves. Queueing the confirmation message itself: store/confirmations.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, and_, delete, insert, select, update

from dispatch.states import OPEN, RowState, SubscriberStatus
from dispatch.store.schema import outbox, signup_requests, subscribers
from dispatch.store.sends import CONFIRMATIONS
from dispatch.store.suppressions import activate, suppression_reason
from dispatch.store.topic_masks import set_topics


@dataclass(frozen=True)
class SignupRequest:
    """What a sign-up form asked for an address that already had a subscriber row."""

    name: str | None
    topics: tuple[str, ...]
    requested_at: datetime


def signup_request(engine: Engine, subscriber_id: int) -> SignupRequest | None:
    with engine.connect() as conn:
        return read_request(conn, subscriber_id)


def read_request(conn: Connection, subscriber_id: int) -> SignupRequest | None:
    row = conn.execute(select(signup_requests)
                       .where(signup_requests.c.subscriber_id == subscriber_id)).first()
    if row is None:
        return None
    return SignupRequest(name=row.name, topics=tuple(json.loads(row.topics)),
                         requested_at=row.requested_at)


def withdraw_request(conn: Connection, subscriber_id: int, now: datetime) -> None:
    """Drop a waiting sign-up request and the confirmation not yet sent for it: a subscriber
    who left must not get one (store.outbox.Job.deliverable lets a confirmation reach an
    unsubscribed address, which only has one queued while its request waits)."""
    conn.execute(delete(signup_requests)
                 .where(signup_requests.c.subscriber_id == subscriber_id))
    conn.execute(update(outbox).where(and_(
        outbox.c.issue == CONFIRMATIONS, outbox.c.subscriber_id == subscriber_id,
        outbox.c.state.in_(OPEN))).values(state=RowState.SKIPPED, updated_at=now))


def signup_row(conn: Connection, email: str, key: str, *, name: str | None,
               topics: list[str], now: datetime) -> int | None:
    """The subscriber a sign-up form asks to confirm. A new address is created pending with
    what was asked. An existing pending or unsubscribed one is left exactly as it is: what
    was asked waits in signup_requests until the confirmation link is clicked (`confirm`),
    since whoever sent the form may not own the address. None (nothing recorded) for an
    active address, and for one that bounced or complained, which is never mailed again."""
    row = conn.execute(select(subscribers.c.id, subscribers.c.status)
                       .where(subscribers.c.email_key == key)).first()
    if row is None:
        if suppression_reason(conn, key) in (SubscriberStatus.BOUNCED,
                                             SubscriberStatus.COMPLAINED):
            return None
        sid: int = conn.execute(insert(subscribers).values(
            email=email, email_key=key, name=name, status=SubscriberStatus.PENDING,
            created_at=now).returning(subscribers.c.id)).scalar_one()
        if topics:
            set_topics(conn, sid, topics)
        return sid
    if row.status not in (SubscriberStatus.PENDING, SubscriberStatus.UNSUBSCRIBED):
        return None
    # The latest request wins: the confirmation page shows what a click will apply.
    conn.execute(delete(signup_requests).where(signup_requests.c.subscriber_id == row.id))
    conn.execute(insert(signup_requests).values(subscriber_id=row.id, name=name,
                                                topics=json.dumps(topics),
                                                requested_at=now))
    return int(row.id)


def confirm(engine: Engine, subscriber_id: int, now: datetime) -> str | None:
    """The confirmation link's button (`confirm_row` in a transaction of its own)."""
    with engine.begin() as conn:
        return confirm_row(conn, subscriber_id, now)[0]


def confirm_row(conn: Connection, subscriber_id: int, now: datetime
                ) -> tuple[str | None, bool]:
    """The confirmation link's button: a pending subscriber, or an unsubscribed one with a
    sign-up request waiting, becomes active with what the request asked (name, topics) and
    is no longer suppressed. Their status afterwards (None if they are gone) and whether
    this call activated them."""
    # Locked (PostgreSQL): a second press of the button waits, then finds them active.
    row = conn.execute(select(subscribers.c.email_key, subscribers.c.status)
                       .where(subscribers.c.id == subscriber_id).with_for_update()).first()
    if row is None:
        return None, False
    request = read_request(conn, subscriber_id)
    if row.status != SubscriberStatus.PENDING and not (
            row.status == SubscriberStatus.UNSUBSCRIBED and request is not None):
        return str(row.status), False
    if request is not None:
        conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id)
                     .values(name=request.name))
        set_topics(conn, subscriber_id, request.topics)
        conn.execute(delete(signup_requests)
                     .where(signup_requests.c.subscriber_id == subscriber_id))
    activate(conn, subscriber_id, row.email_key, now)
    return SubscriberStatus.ACTIVE, True
