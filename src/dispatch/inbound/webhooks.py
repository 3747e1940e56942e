"""Relays' bounce, complaint and unsubscribe webhooks: each request is verified by its
provider's documented method (dispatch.inbound.providers, one module per provider) before
anything in it is believed; each event then becomes a `Report` recorded through the one path
every way in takes (dispatch.inbound.process.record_report), fingerprinted by the provider's
event id, so a repeated delivery of the same event changes nothing more.

An event is matched to the outbox row by what the relay echoes of our message: a signed row
token (the List-Unsubscribe mailto address in SES's copy of the headers, or the
`dispatch-row` metadata Postmark, Mailgun and SendGrid hand back when delivery.relay_metadata
is on) or the keyed Message-ID. An event naming neither is counted as unmatched; an
unsubscribe counts only with a token.

The HTTP shell is dispatch.web.webhooks; this module does the checking and recording.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine

from dispatch.audience.tokens import BadToken, Signer
from dispatch.config import Settings, WebhookSettings
from dispatch.inbound.classify import Report
from dispatch.inbound.process import record_report
from dispatch.inbound.providers import PROVIDERS
from dispatch.inbound.providers.base import (
    Event,
    Fetcher,
    Incoming,
    Malformed,
    Misconfigured,
    Provider,
    Unauthenticated,
    Unverified,
)
from dispatch.inbound.providers.ses import fetch_https
from dispatch.states import ReportKind, ReportVia

__all__ = ["Fetcher", "Incoming", "Malformed", "Misconfigured", "Outcome", "Unauthenticated",
           "Unverified", "Webhooks", "fetch_https", "rows_named"]

# The metadata key our messages carry the row token under (delivery.relay_metadata).
ROW_KEY = "dispatch-row"
ROW_TOKEN = re.compile(r"(?<![0-9a-z-])([bu]-[0-9a-z]{1,13}-[0-9a-z]{1,13}-[a-z2-7]{16})"
                       r"(?:@([A-Za-z0-9.-]+))?")


@dataclass
class Outcome:
    """What one request did, for the response body and the log."""

    counts: dict[str, int] = field(default_factory=dict)
    note: str = ""

    def add(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def describe(self) -> str:
        parts = [f"{kind} {n}" for kind, n in sorted(self.counts.items())]
        return "; ".join(filter(None, [self.note, ", ".join(parts)])) or "nothing to record"


def rows_named(echoed: Iterable[str], signer: Signer, domain: str | None
               ) -> tuple[tuple[int, int], ...]:
    """(outbox row, subscriber) pairs named by row tokens that verify in what the relay
    echoed back. A token in an address must be on the inbound domain; a bare one (our
    metadata) stands alone. Either purpose will do (unlike a message's tokens, which
    dispatch.inbound.process holds to the purpose its kind needs): the relay proved it sent
    the event, and what it echoes is our own message's headers."""
    rows: list[tuple[int, int]] = []
    for text in echoed:
        for token, at in ROW_TOKEN.findall(text.lower()[:4000]):
            if at and (not domain or at.rstrip(".") != domain.lower()):
                continue
            try:
                claim = signer.read_row_local_part(token)
                rows.append((claim.row_id, claim.subscriber_id))
            except BadToken:
                continue
    return tuple(dict.fromkeys(rows))


class Webhooks:
    """The configured providers' endpoints as one function of the raw request (`handle`);
    it raises Unverified (403), Unauthenticated (401), Malformed (400) or Misconfigured (503)
    before anything is recorded."""

    def __init__(self, engine: Engine, settings: Settings, hooks: WebhookSettings,
                 signer: Signer, clock: Callable[[], datetime], fetch: Fetcher = fetch_https
                 ) -> None:
        self.engine, self.settings, self.signer, self.clock = engine, settings, signer, clock
        self.providers: dict[str, Provider] = {
            name: PROVIDERS[name](table, clock, fetch)
            for name, table in hooks.providers().items()}

    def handle(self, name: str, incoming: Incoming) -> Outcome:
        provider = self.providers[name]
        verified = provider.verify(incoming)
        return self.record(provider.events(verified.payload), Outcome(note=verified.note))

    def record(self, events: Iterable[Event], outcome: Outcome) -> Outcome:
        now = self.clock()
        for event in events:
            if event.kind == ReportKind.IGNORED:
                outcome.add(str(event.kind))
                continue
            report = Report(event.kind, event.fingerprint, event.reason,
                            addresses=(event.recipient,) if event.recipient else (),
                            message_ids=event.message_ids,
                            failed=(event.recipient,) if event.recipient else (),
                            rows=rows_named(event.echoed, self.signer,
                                            self.settings.delivery.verp_domain),
                            source=event.provider,
                            via=ReportVia.WEBHOOK if event.kind == ReportKind.UNSUBSCRIBE
                            else None)
            recorded = record_report(self.engine, report, self.settings, self.signer,
                                     now).recorded
            assert recorded is not None
            outcome.add("repeat" if recorded.repeat else str(recorded.kind))
        return outcome
