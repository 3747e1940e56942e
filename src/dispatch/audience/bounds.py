"""How many sign-ups may wait, and how much confirmation mail may go out: a bound in all and
per address domain (web settings), so a flood of forms from many clients neither fills the
list with unconfirmed addresses nor turns the newsletter into a mail cannon."""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

from dispatch.config import WebSettings

MAIL_WINDOW = timedelta(hours=1)


class Counts(Protocol):
    """store.signup_counts.SignupCounts, as this layer may name it."""

    @property
    def pending(self) -> int: ...
    @property
    def pending_domain(self) -> int: ...
    @property
    def mailed(self) -> int: ...
    @property
    def mailed_domain(self) -> int: ...


def domain_of(key: str) -> str:
    """The domain of a normalised address."""
    return key.rpartition("@")[2].lower()


def signup_refusal(counts: Counts, web: WebSettings) -> str | None:
    """Why one more sign-up cannot be taken now, in words for the reader; None when it can."""
    if counts.pending >= web.signup_pending_max or counts.mailed >= web.confirmations_per_hour:
        return ("We are receiving more sign-ups than usual right now. Please try again in "
                "an hour.")
    if (counts.pending_domain >= web.signup_pending_per_domain
            or counts.mailed_domain >= web.confirmations_per_domain_hour):
        return ("Many addresses at your email provider signed up in the last hour. Please "
                "try again in an hour.")
    return None
