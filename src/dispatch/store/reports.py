"""What comes back, as SQL: recording a received report once (keyed by its fingerprint),
matching it to the outbox row it is about, acting on it (bounced, complained, unsubscribed,
soft bounces counted), and the per-send counts and rates `dispatch status` and the pausing
decision read. Parsing, verifying and deciding (pausing a send on its bounce or complaint
rate) are dispatch.inbound's; every way in records through dispatch.inbound.process's
record_report, which calls `record` here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, Engine, and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from dispatch.config import DeliverySettings
from dispatch.states import WEB_WAYS, ReportKind, ReportVia, RowState, SubscriberStatus
from dispatch.store.schema import outbox, reports, subscribers
from dispatch.store.sends import INTERNAL, is_internal
from dispatch.store.subscribers import mark_suppressed, unsubscribe_in

MAX_REASON = 1000
# Kinds that are about a message we sent: with no row found they are counted as unmatched.
MATCHED_KINDS = (ReportKind.BOUNCED, ReportKind.SOFT, ReportKind.COMPLAINT,
                 ReportKind.UNSUBSCRIBE)


@dataclass(frozen=True)
class Recorded:
    """What recording a report did."""

    kind: ReportKind  # UNMATCHED when it was about a message and none was found
    repeat: bool = False  # recorded before (or a web unsubscribe that changed nothing)
    issue: str | None = None
    email: str | None = None
    changes: tuple[str, ...] = ()  # what changed, in words ("subscriber bounced", …)
    row_id: int | None = None  # the outbox row it was matched to


@dataclass(frozen=True)
class SendRates:
    """One send's messages delivered (sent or bounced since), hard-bounced, and complained
    about (distinct messages): what the pausing decision reads."""

    delivered: int
    bounced: int
    complained: int


@dataclass(frozen=True)
class _Row:
    id: int | None  # None: a subscriber named without their message (an old web link)
    issue: str | None
    subscriber_id: int | None
    state: str
    email: str | None


def _find_row(conn: Connection, rows: Sequence[tuple[int, int]],
              message_ids: Sequence[str]) -> _Row | None:
    query = (select(outbox.c.id, outbox.c.issue, outbox.c.subscriber_id, outbox.c.state,
                    subscribers.c.email)
             .join(subscribers, subscribers.c.id == outbox.c.subscriber_id, isouter=True))
    conditions = [and_(outbox.c.id == row, outbox.c.subscriber_id == sid) for row, sid in rows]
    if message_ids:
        conditions.append(outbox.c.message_id.in_(list(message_ids)))
    for condition in conditions:
        found = conn.execute(query.where(condition).order_by(outbox.c.id).limit(1)).first()
        if found is not None:
            return _Row(found.id, found.issue, found.subscriber_id, found.state, found.email)
    return None


def record(engine: Engine, *, fingerprint: str, kind: ReportKind, source: str,
           rows: Sequence[tuple[int, int]] = (), message_ids: Sequence[str] = (),
           claimed_issue: str | None = None, reason: str | None = None,
           via: ReportVia | None = None, subscriber: int | None = None,
           delivery: DeliverySettings, now: datetime) -> Recorded:
    """Record one report and act on it, in one transaction; a fingerprint seen before
    changes nothing. `rows` are (outbox row, subscriber) pairs named by tokens that verified
    (both must match: SQLite may reuse a deleted row's id), `message_ids`
    the Message-IDs the report quotes (keyed, so one found in the outbox is one we sent).
    `via`: the way an unsubscribe came (required for one). `subscriber`: a subscriber a
    verified web token names, acted on when no row is found (a link sent before links named
    their row), the unsubscribe counted for the last issue they were sent. A web unsubscribe
    (states.WEB_WAYS) from someone who receives nothing already is not recorded."""
    assert (via is not None) == (kind == ReportKind.UNSUBSCRIBE), (kind, via)
    try:
        with engine.begin() as conn:
            earlier = conn.execute(select(reports.c.kind, reports.c.issue, subscribers.c.email,
                                          reports.c.outbox_id)
                                   .join(subscribers,
                                         subscribers.c.id == reports.c.subscriber_id,
                                         isouter=True)
                                   .where(reports.c.fingerprint == fingerprint)).first()
            if earlier is not None:
                return Recorded(ReportKind(earlier.kind), True, earlier.issue, earlier.email,
                                row_id=earlier.outbox_id)
            return _record(conn, fingerprint, kind, source, rows, message_ids,
                           claimed_issue, reason, via, subscriber, delivery, now)
    except IntegrityError:
        # The same report arrived twice at once (two ways in); the other one recorded it.
        return record(engine, fingerprint=fingerprint, kind=kind, source=source,
                      rows=rows, message_ids=message_ids, claimed_issue=claimed_issue,
                      reason=reason, via=via, subscriber=subscriber, delivery=delivery,
                      now=now)


def _record(conn: Connection, fingerprint: str, kind: ReportKind, source: str,
            rows: Sequence[tuple[int, int]], message_ids: Sequence[str], claimed_issue: str | None,
            reason: str | None, via: ReportVia | None, subscriber: int | None,
            delivery: DeliverySettings, now: datetime) -> Recorded:
    row = _find_row(conn, rows, message_ids) if kind in MATCHED_KINDS or (
        rows or message_ids) else None
    if row is None and subscriber is not None and kind == ReportKind.UNSUBSCRIBE:
        row = _Row(None, _last_issue_sent(conn, subscriber), subscriber, "", _email(
            conn, subscriber))
    if row is None and kind in MATCHED_KINDS:
        kind = ReportKind.UNMATCHED
    issue = row.issue if row else claimed_issue
    if issue and kind == ReportKind.UNSUBSCRIBE and is_internal(issue):
        issue = None  # from dispatch's own message (a welcome): not an issue's unsubscribe
    sid = row.subscriber_id if row else None
    reason = reason[:MAX_REASON] if reason else None
    changes: list[str] = []
    if via in WEB_WAYS:
        # No message came: an unsubscribe that changes nothing is nothing to record.
        assert row is not None and sid is not None
        changes = _act(conn, row, sid, kind, reason, via, source, issue, delivery, now)
        if not changes:
            return Recorded(kind, True, issue, row.email, row_id=row.id)
    conn.execute(insert(reports).values(
        fingerprint=fingerprint, kind=kind, source=source, via=via,
        outbox_id=row.id if row else None, issue=issue, subscriber_id=sid, reason=reason,
        received_at=now))
    if row is not None and sid is not None and via not in WEB_WAYS:
        changes = _act(conn, row, sid, kind, reason, via, source, issue, delivery, now)
    return Recorded(kind, False, issue, row.email if row else None, tuple(changes),
                    row.id if row else None)


def _last_issue_sent(conn: Connection, sid: int) -> str | None:
    return conn.execute(select(outbox.c.issue).where(and_(
        outbox.c.subscriber_id == sid, outbox.c.issue.not_in(INTERNAL),
        outbox.c.state == RowState.SENT)).order_by(outbox.c.updated_at.desc(),
                                                   outbox.c.id.desc()).limit(1)).scalar()


def _email(conn: Connection, sid: int) -> str | None:
    return conn.execute(select(subscribers.c.email).where(subscribers.c.id == sid)).scalar()


def unsubscribe_reason(via: ReportVia, source: str, issue: str | None) -> str:
    """What a subscriber's status_reason says after an unsubscribe: the way, and the send."""
    way = f"{via} ({source})" if via == ReportVia.WEBHOOK else str(via)
    return f"unsubscribed by {way}" + (f" from {issue}" if issue else "")


def _act(conn: Connection, row: _Row, sid: int, kind: ReportKind, reason: str | None,
         via: ReportVia | None, source: str, issue: str | None, delivery: DeliverySettings,
         now: datetime) -> list[str]:
    changes = []
    if kind == ReportKind.BOUNCED:
        if row.state == RowState.SENT:
            conn.execute(update(outbox).where(outbox.c.id == row.id).values(
                state=RowState.BOUNCED, reply=reason, updated_at=now))
        if mark_suppressed(conn, sid, SubscriberStatus.BOUNCED, now, reason):
            changes.append("subscriber bounced and suppressed")
    elif kind == ReportKind.SOFT:
        issues = _soft_bounced_issues(conn, sid, now - delivery.soft_bounce_window)
        if issues >= delivery.soft_bounce_limit:
            days = delivery.soft_bounce_window.days
            why = f"{issues} soft bounces in {days} days; the last: {reason or 'no reason'}"
            if mark_suppressed(conn, sid, SubscriberStatus.BOUNCED, now, why[:MAX_REASON]):
                changes.append(f"subscriber bounced and suppressed ({issues} soft bounces)")
        else:
            changes.append(f"soft bounce {issues} of {delivery.soft_bounce_limit}")
    elif kind == ReportKind.COMPLAINT:
        if mark_suppressed(conn, sid, SubscriberStatus.COMPLAINED, now,
                           reason or "a complaint"):
            changes.append("subscriber complained and suppressed")
    elif kind == ReportKind.UNSUBSCRIBE and via is not None and unsubscribe_in(
            conn, sid, now, unsubscribe_reason(via, source, issue)[:MAX_REASON]):
        changes.append("subscriber unsubscribed")
    return changes


def _soft_bounced_issues(conn: Connection, sid: int, since: datetime) -> int:
    """Distinct issues that soft-bounced for this subscriber since then."""
    return int(conn.execute(select(func.count(reports.c.issue.distinct())).where(and_(
        reports.c.subscriber_id == sid, reports.c.kind == ReportKind.SOFT,
        reports.c.received_at >= since))).scalar_one())


def rates(engine: Engine, issue: str) -> SendRates:
    """A send's delivered, hard-bounced and complained-about messages."""
    with engine.connect() as conn:
        delivered, bounced = conn.execute(select(
            func.count(), func.count().filter(outbox.c.state == RowState.BOUNCED)).where(and_(
                outbox.c.issue == issue,
                outbox.c.state.in_((RowState.SENT, RowState.BOUNCED))))).one()
        complained = conn.execute(select(func.count(reports.c.outbox_id.distinct())).where(
            and_(reports.c.issue == issue, reports.c.kind == ReportKind.COMPLAINT))
        ).scalar_one()
    return SendRates(int(delivered), int(bounced), int(complained))


# ---- What editors see --------------------------------------------------------------------

UNSUBSCRIBED_KEYS = {via: f"unsubscribed_{via.replace('-', '_')}" for via in ReportVia}
COUNT_KEYS = ("bounced", "soft_bounced", "complained", *UNSUBSCRIBED_KEYS.values(),
              "auto_replies", "unmatched")
KIND_KEYS: dict[str, str] = {
    ReportKind.BOUNCED: "bounced", ReportKind.SOFT: "soft_bounced",
    ReportKind.COMPLAINT: "complained", ReportKind.AUTO_REPLY: "auto_replies",
    ReportKind.UNMATCHED: "unmatched",
}
# Counted once per message (a second mailto from the same message is not a second reader);
# auto-replies and unmatched reports once per report.
PER_MESSAGE = (ReportKind.BOUNCED, ReportKind.SOFT, ReportKind.COMPLAINT,
               ReportKind.UNSUBSCRIBE)


def _grouped(engine: Engine, issues: Iterable[str | None] | None
             ) -> Iterator[tuple[str | None, str, str | None, int]]:
    """(issue, kind, via, count) for the issues given (None among them: reports naming no
    send), or every issue; a message's reports counted once where PER_MESSAGE, and reports
    with no message (web unsubscribes from old links) each once."""
    messages = func.count(reports.c.outbox_id.distinct()) + func.count().filter(
        reports.c.outbox_id.is_(None))
    query = (select(reports.c.issue, reports.c.kind, reports.c.via, messages, func.count())
             .group_by(reports.c.issue, reports.c.kind, reports.c.via))
    if issues is not None:
        wanted = list(issues)
        named = [i for i in wanted if i is not None]
        condition: ColumnElement[bool] = reports.c.issue.in_(named)
        if None in wanted:
            condition = condition | reports.c.issue.is_(None)
        query = query.where(condition)
    with engine.connect() as conn:
        for slug, kind, via, per_message, total in conn.execute(query):
            yield slug, kind, via, int(per_message if kind in PER_MESSAGE else total)


def counts(engine: Engine, issue: str | None = None) -> dict[str | None, dict[str, int]]:
    """Per issue (None: reports naming no send): messages hard- and soft-bounced, complained
    about and unsubscribed from (by way, COUNT_KEYS), counted once per message; auto-replies
    and unmatched reports counted per report."""
    found: dict[str | None, dict[str, int]] = {}
    for slug, kind, via, n in _grouped(engine, None if issue is None else [issue]):
        # StrEnum keys match the stored strings; a way this code does not know is left out.
        key = (UNSUBSCRIBED_KEYS.get(via) if kind == ReportKind.UNSUBSCRIBE and via  # type: ignore[call-overload]
               else KIND_KEYS.get(kind))
        if key is not None:
            by_issue = found.setdefault(slug, dict.fromkeys(COUNT_KEYS, 0))
            by_issue[key] += n
    return found


def unsubscribes_by_issue_and_via(engine: Engine, issues: Iterable[str]
                                  ) -> dict[str, dict[str, int]]:
    """Per issue asked for (every one present, 0s when none came): messages unsubscribed
    from, by way (each states.ReportVia value), in one query whatever the number of issues."""
    wanted = list(issues)
    found = {issue: dict.fromkeys(ReportVia, 0) for issue in wanted}
    for slug, kind, via, n in _grouped(engine, wanted):
        if kind == ReportKind.UNSUBSCRIBE and via in found.get(slug or "", {}):
            found[slug or ""][via] += n  # type: ignore[index]
    return {issue: {str(via): n for via, n in ways.items()} for issue, ways in found.items()}
