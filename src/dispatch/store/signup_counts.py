"""What the sign-up bounds are decided on (audience/bounds.py decides): pending sign-ups and
the confirmation messages of the last hour, in all and for one address domain."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, and_, func, select

from dispatch.states import SubscriberStatus
from dispatch.store.schema import outbox, subscribers
from dispatch.store.sends import CONFIRMATIONS


@dataclass(frozen=True)
class SignupCounts:
    pending: int  # subscribers signed up since `pending_since`, not yet confirmed
    pending_domain: int  # of which at the domain asked about
    mailed: int  # confirmation messages queued or sent since `mailed_since`
    mailed_domain: int  # of which to the domain


def signup_counts(engine: Engine, domain: str, *, pending_since: datetime,
                  mailed_since: datetime) -> SignupCounts:
    """The counts for a sign-up at `domain` (lower-case), in two queries."""
    at_domain = subscribers.c.email_key.like(
        "%@" + domain.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_"),
        escape="\\")
    with engine.connect() as conn:
        pending = conn.execute(
            select(func.count(), func.count().filter(at_domain)).select_from(subscribers)
            .where(and_(subscribers.c.status == SubscriberStatus.PENDING,
                        subscribers.c.created_at > pending_since))).one()
        # A row's updated_at is when it was queued or last tried: within the hour either way.
        mailed = conn.execute(
            select(func.count(), func.count().filter(at_domain))
            .select_from(outbox.join(subscribers, subscribers.c.id == outbox.c.subscriber_id))
            .where(and_(outbox.c.issue == CONFIRMATIONS,
                        outbox.c.updated_at > mailed_since))).one()
    return SignupCounts(int(pending[0]), int(pending[1]), int(mailed[0]), int(mailed[1]))
