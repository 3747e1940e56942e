"""Pausing a send on what comes back: a send whose hard-bounce or complaint rate passes
delivery.max_bounce_rate or delivery.max_complaint_rate is paused, since mailing on would
hurt the sender's reputation with every mailbox provider. The store reads the rates
(store.reports.rates) and writes the pause; the decision is here.
"""

from __future__ import annotations

from sqlalchemy import Engine

from dispatch.config import DeliverySettings
from dispatch.states import SendStep
from dispatch.store import reports, sends
from dispatch.store.reports import SendRates

# A rate over fewer delivered messages than this is noise, not a verdict on the list: one
# bounce among the first ten messages must not pause a send of a hundred thousand.
MIN_RATE_SAMPLE = 20


def verdict(rates: SendRates, delivery: DeliverySettings) -> str | None:
    """Why the send must pause, or None."""
    delivered, bounced, complained = rates.delivered, rates.bounced, rates.complained
    if delivered < MIN_RATE_SAMPLE:
        return None
    if 100 * bounced / delivered > delivery.max_bounce_rate:
        return (f"hard-bounce rate {100 * bounced / delivered:.1f} % ({bounced} of "
                f"{delivered} delivered) passed delivery.max_bounce_rate "
                f"{delivery.max_bounce_rate:g} %")
    if 100 * complained / delivered > delivery.max_complaint_rate:
        return (f"complaint rate {100 * complained / delivered:.2f} % ({complained} of "
                f"{delivered} delivered) passed delivery.max_complaint_rate "
                f"{delivery.max_complaint_rate:g} %")
    return None


def pause_on_rates(engine: Engine, issue: str, delivery: DeliverySettings) -> str | None:
    """Pause a sending issue whose rates passed their limits; the reason when it paused it
    (a send not sending, or paused already, is left as it is)."""
    reason = verdict(reports.rates(engine, issue), delivery)
    if reason and sends.set_status(engine, issue, SendStep.PAUSE, reason=reason):
        return reason
    return None
