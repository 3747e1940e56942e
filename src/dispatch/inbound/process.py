"""One report from any way in (SMTP, a file, IMAP, a relay's webhook): classified, its claim
verified (a signed token in an inbound-domain address, or a keyed Message-ID the outbox
recorded), recorded once and acted on by the store (dispatch.store.reports).

A report whose token does not verify and whose Message-IDs match nothing changes nothing and
is counted as unmatched: a forged report cannot suppress anyone.
"""

from __future__ import annotations

import dataclasses
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
from dispatch.states import ReportKind
from dispatch.store import reports
from dispatch.store.reports import Recorded

# Which token purpose each kind of report must come to: a bounce to the VERP sender, an
# unsubscribe to the List-Unsubscribe mailto address. Complaints come to a feedback-loop
# address, naming our message by the VERP sender in its Return-Path or its Message-ID.
PURPOSE_OF = {ReportKind.UNSUBSCRIBE: "mailto"}


def verify(report: Report, signer: Signer, domain: str | None) -> Report:
    """The report with `rows`: the (outbox row, subscriber) pairs named by the addresses it
    came to whose token verifies for the purpose its kind needs. Addresses on other domains
    are not ours."""
    if not domain:
        return report
    purpose = PURPOSE_OF.get(report.kind, "bounce")
    rows = []
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
    """Verify, record and act on a report however it was read: a message (`process`), or a
    relay's webhook event turned into a Report (its kind; a fingerprint that is the same
    for the same event, e.g. from the provider's event id; the addresses it names, such as
    the envelope sender our message had; the Message-IDs it quotes; the reason; `source`
    naming the provider). Recording the same fingerprint again changes nothing."""
    report = verify(report, signer, settings.delivery.verp_domain)
    recorded = reports.record(
        engine, fingerprint=report.fingerprint, kind=report.kind, source=report.source,
        rows=report.rows,
        # A mailto unsubscribe counts only with its token: a Message-ID in a reply proves
        # nothing about who asked to leave.
        message_ids=report.message_ids if report.kind != ReportKind.UNSUBSCRIBE else (),
        claimed_issue=report.claimed_issue, reason=report.reason,
        delivery=settings.delivery, now=now)
    return Outcome(report, recorded)


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
