"""One report from any way in (SMTP, a file, IMAP, a relay's webhook, the web app's
unsubscribes), through one function, record_report: classified, its claim
verified (a signed token in an inbound-domain address, or a keyed Message-ID the outbox
recorded), recorded once and acted on by the store (dispatch.store.reports).

A report whose token does not verify and whose Message-IDs match nothing changes nothing and
is counted as unmatched: a forged report cannot suppress anyone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import mailbox
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from dispatch.audience.tokens import BadToken, Signer
from dispatch.config import Settings
from dispatch.errors import DispatchError, Problem
from dispatch.inbound.classify import Report, classify
from dispatch.inbound.rates import pause_on_rates
from dispatch.states import ReportKind, ReportVia
from dispatch.store import reports, sends
from dispatch.store.reports import Recorded

# Which token purpose each kind of report must come to: a bounce to the VERP sender, an
# unsubscribe to the List-Unsubscribe mailto address. Complaints come to a feedback-loop
# address, naming our message by the VERP sender in its Return-Path or its Message-ID.
PURPOSE_OF = {ReportKind.UNSUBSCRIBE: "mailto"}


def verify(report: Report, signer: Signer, domain: str | None) -> Report:
    """The report with `rows`: those it came with (verified by whoever read its token: a
    relay's echoed metadata, a web link) and the (outbox row, subscriber) pairs named by the
    addresses it came to whose token verifies for the purpose its kind needs. Addresses on
    other domains are not ours."""
    if not domain:
        return report
    purpose = PURPOSE_OF.get(report.kind, "bounce")
    rows = list(report.rows)
    for address in report.addresses:
        local, _, at = address.rpartition("@")
        if at.lower() != domain.lower():
            continue
        try:
            claim = signer.read_row_local_part(local)
        except BadToken:
            continue
        if claim.purpose == purpose:
            rows.append((claim.row_id, claim.subscriber_id))
    return dataclasses.replace(report, rows=tuple(dict.fromkeys(rows)))


@dataclass(frozen=True)
class Outcome:
    report: Report
    recorded: Recorded | None  # None: not a mail message, nothing recorded

    @property
    def kind(self) -> ReportKind:
        return self.recorded.kind if self.recorded else self.report.kind

    def describe(self) -> str:
        """One line: what it became, whom it was about, why, and what changed."""
        words = [str(self.kind)]
        if self.recorded and self.recorded.email:
            words.append(f"{self.recorded.email} ({self.recorded.issue})")
        elif self.recorded and self.recorded.issue:
            words.append(f"({self.recorded.issue})")
        line = " ".join(words)
        if self.report.reason:
            line += f": {self.report.reason}"
        if self.recorded and self.recorded.repeat:
            return line + "; already recorded, nothing changed"
        if self.recorded and self.recorded.changes:
            line += "; " + "; ".join(self.recorded.changes)
        return line


def process(engine: Engine, raw: bytes, settings: Settings, signer: Signer, now: datetime,
            *, recipients: tuple[str, ...] = (), source: str = "file") -> Outcome:
    """Classify, verify, record and act on one message; processing it again changes nothing."""
    report = classify(raw, recipients, source)
    if report.kind == ReportKind.NOT_EMAIL:
        return Outcome(report, None)
    return record_report(engine, report, settings, signer, now)


def record_report(engine: Engine, report: Report, settings: Settings, signer: Signer,
                  now: datetime) -> Outcome:
    """The one way a report is recorded, however it came in: a message (`process`: a file,
    SMTP, IMAP), a relay's webhook event (dispatch.inbound.webhooks), a reader's unsubscribe
    on the web (`web_unsubscribe`). Verify, record and act on it (store.reports.record), then
    decide whether its send must pause on its bounce or complaint rate (inbound.rates).
    Recording the same fingerprint again changes nothing."""
    report = verify(report, signer, settings.delivery.verp_domain)
    via = report.via or (ReportVia.MAILTO if report.kind == ReportKind.UNSUBSCRIBE else None)
    recorded = reports.record(
        engine, fingerprint=report.fingerprint, kind=report.kind, source=report.source,
        rows=report.rows,
        # An unsubscribe counts only with its token: a Message-ID in a reply proves nothing
        # about who asked to leave.
        message_ids=report.message_ids if report.kind != ReportKind.UNSUBSCRIBE else (),
        claimed_issue=report.claimed_issue, reason=report.reason, via=via,
        subscriber=report.subscriber, delivery=settings.delivery, now=now)
    if (recorded.kind in (ReportKind.BOUNCED, ReportKind.COMPLAINT) and not recorded.repeat
            and recorded.row_id is not None and recorded.issue
            and not sends.is_internal(recorded.issue)):
        paused = pause_on_rates(engine, recorded.issue, settings.delivery)
        if paused:
            recorded = dataclasses.replace(recorded, changes=(
                *recorded.changes, f"send {recorded.issue} paused: {paused}"))
    return Outcome(report, recorded)


def web_unsubscribe(engine: Engine, settings: Settings, signer: Signer, subscriber_id: int,
                    row_id: int | None, via: ReportVia, now: datetime) -> Outcome:
    """A reader's unsubscribe on the web app, by a link whose token verified: counted for the
    send of the message the link came in (`row_id`), or, for a link that names no row (sent
    before links did), the last issue the reader was sent. Not recorded when they receive
    nothing already."""
    key = f"web\0{subscriber_id}\0{row_id}\0{via}\0{now.isoformat()}"
    report = Report(ReportKind.UNSUBSCRIBE, hashlib.sha256(key.encode()).hexdigest(),
                    rows=((row_id, subscriber_id),) if row_id is not None else (),
                    source="web", via=via, subscriber=subscriber_id)
    return record_report(engine, report, settings, signer, now)


# ---- Files -----------------------------------------------------------------------------

def read_messages(path: Path, max_size: int) -> Iterator[tuple[str, bytes]]:
    """(label, bytes) of each message in a file: an mbox (it starts with a "From " line)
    yields each message, labelled FILE#N; anything else is one message. DispatchError when
    the file cannot be read, or a message is larger than `max_size` octets (no report is:
    inbound.max_size)."""
    try:
        with path.open("rb") as handle:
            start = handle.read(5)
        size = path.stat().st_size
    except OSError as exc:
        raise DispatchError(Problem(str(path), f"cannot read: {exc.strerror or exc}")) from None
    too_large = f"larger than inbound.max_size ({max_size:,} octets): not read"
    if start != b"From " and size > max_size:
        raise DispatchError(Problem(str(path), too_large))
    if start != b"From ":
        try:
            yield str(path), path.read_bytes()
        except OSError as exc:
            raise DispatchError(Problem(str(path), f"cannot read: {exc.strerror or exc}")
                                ) from None
        return
    try:
        box = mailbox.mbox(path, create=False)
        keys = list(box.keys())
    except (OSError, mailbox.Error) as exc:
        raise DispatchError(Problem(str(path), f"cannot read as mbox: {exc}")) from None
    for number, key in enumerate(keys, 1):
        raw = box.get_bytes(key)
        if len(raw) > max_size:
            raise DispatchError(Problem(f"{path}#{number}", too_large))
        yield f"{path}#{number}", raw
