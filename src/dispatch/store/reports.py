"""What comes back, as SQL: recording a received report once (keyed by its fingerprint),
matching it to the outbox row it is about, acting on it (bounced, complained, unsubscribed,
soft bounces counted), pausing a send whose bounce or complaint rate is too high, and the
per-send counts `dispatch status` shows. Parsing and verifying reports is dispatch.inbound's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from dispatch.config import DeliverySettings
from dispatch.states import ReportKind, RowState, SendStatus, SubscriberStatus
from dispatch.store.schema import outbox, reports, sends, subscribers
from dispatch.store.sends import INTERNAL, change_status, is_internal
from dispatch.store.subscribers import mark_suppressed, unsubscribe_in

MAX_REASON = 1000
# A rate over fewer delivered messages than this is noise, not a verdict on the list: one
# bounce among the first ten messages must not pause a send of a hundred thousand.
MIN_RATE_SAMPLE = 20
# Kinds that are about a message we sent: with no row found they are counted as unmatched.
MATCHED_KINDS = (ReportKind.BOUNCED, ReportKind.SOFT, ReportKind.COMPLAINT,
                 ReportKind.UNSUBSCRIBE)


@dataclass(frozen=True)
class Recorded:
    """What recording a report did."""

    kind: ReportKind  # UNMATCHED when it was about a message and none was found
    repeat: bool = False  # recorded before: nothing changed this time
    issue: str | None = None
    email: str | None = None
    changes: tuple[str, ...] = ()  # what changed, in words ("subscriber bounced", …)
    row_id: int | None = None  # the outbox row it was matched to


@dataclass(frozen=True)
class _Row:
    id: int
    issue: str
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
           delivery: DeliverySettings, now: datetime) -> Recorded:
    """Record one report and act on it, in one transaction; a fingerprint seen before
    changes nothing. `rows` are (outbox row, subscriber) pairs named by tokens that verified
    (both must match: SQLite may reuse a deleted row's id), `message_ids`
    the Message-IDs the report quotes (keyed, so one found in the outbox is one we sent)."""
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
                           claimed_issue, reason, delivery, now)
    except IntegrityError:
        # The same report arrived twice at once (two ways in); the other one recorded it.
        return record(engine, fingerprint=fingerprint, kind=kind, source=source,
                      rows=rows, message_ids=message_ids, claimed_issue=claimed_issue,
                      reason=reason, delivery=delivery, now=now)


def _record(conn: Connection, fingerprint: str, kind: ReportKind, source: str,
            rows: Sequence[tuple[int, int]], message_ids: Sequence[str], claimed_issue: str | None,
            reason: str | None, delivery: DeliverySettings, now: datetime) -> Recorded:
    row = _find_row(conn, rows, message_ids) if kind in MATCHED_KINDS or (
        rows or message_ids) else None
    if row is None and kind in MATCHED_KINDS:
        kind = ReportKind.UNMATCHED
    issue = row.issue if row else claimed_issue
    sid = row.subscriber_id if row else None
    reason = reason[:MAX_REASON] if reason else None
    conn.execute(insert(reports).values(
        fingerprint=fingerprint, kind=kind, source=source,
        via="mailto" if kind == ReportKind.UNSUBSCRIBE else None,
        outbox_id=row.id if row else None, issue=issue, subscriber_id=sid, reason=reason,
        received_at=now))
    changes: list[str] = []
    if row is not None and sid is not None:
        changes += _act(conn, row, sid, kind, reason, delivery, now)
    return Recorded(kind, False, issue, row.email if row else None, tuple(changes),
                    row.id if row else None)


def _act(conn: Connection, row: _Row, sid: int, kind: ReportKind, reason: str | None,
         delivery: DeliverySettings, now: datetime) -> list[str]:
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
    elif kind == ReportKind.UNSUBSCRIBE and unsubscribe_in(conn, sid, now):
        changes.append("subscriber unsubscribed")
    if kind in (ReportKind.BOUNCED, ReportKind.COMPLAINT) and not is_internal(row.issue):
        paused = _pause_on_rates(conn, row.issue, delivery)
        if paused:
            changes.append(f"send {row.issue} paused: {paused}")
    return changes


def _soft_bounced_issues(conn: Connection, sid: int, since: datetime) -> int:
    """Distinct issues that soft-bounced for this subscriber since then."""
    return int(conn.execute(select(func.count(reports.c.issue.distinct())).where(and_(
        reports.c.subscriber_id == sid, reports.c.kind == ReportKind.SOFT,
        reports.c.received_at >= since))).scalar_one())


def _pause_on_rates(conn: Connection, issue: str, delivery: DeliverySettings) -> str | None:
    """Pause a sending issue whose hard-bounce or complaint rate passed its limit; the
    reason, or None."""
    delivered, bounced = conn.execute(select(
        func.count(), func.count().filter(outbox.c.state == RowState.BOUNCED)).where(and_(
            outbox.c.issue == issue,
            outbox.c.state.in_((RowState.SENT, RowState.BOUNCED))))).one()
    if delivered < MIN_RATE_SAMPLE:
        return None
    complained = conn.execute(select(func.count(reports.c.outbox_id.distinct())).where(and_(
        reports.c.issue == issue, reports.c.kind == ReportKind.COMPLAINT))).scalar_one()
    reason = None
    if 100 * bounced / delivered > delivery.max_bounce_rate:
        reason = (f"hard-bounce rate {100 * bounced / delivered:.1f} % ({bounced} of "
                  f"{delivered} delivered) passed delivery.max_bounce_rate "
                  f"{delivery.max_bounce_rate:g} %")
    elif 100 * complained / delivered > delivery.max_complaint_rate:
        reason = (f"complaint rate {100 * complained / delivered:.2f} % ({complained} of "
                  f"{delivered} delivered) passed delivery.max_complaint_rate "
                  f"{delivery.max_complaint_rate:g} %")
    if reason and change_status(conn, SendStatus.PAUSED, [SendStatus.SENDING],
                                sends.c.issue == issue, reason=reason):
        return reason
    return None


# ---- Unsubscribes on the web -------------------------------------------------------------

def web_unsubscribe(engine: Engine, subscriber_id: int, via: str, now: datetime) -> bool:
    """store.subscribers.unsubscribe, counted for the last issue the subscriber was sent
    (`via`: one-click or preferences); False when they received nothing already."""
    with engine.begin() as conn:
        if not unsubscribe_in(conn, subscriber_id, now):
            return False
        issue = conn.execute(select(outbox.c.issue).where(and_(
            outbox.c.subscriber_id == subscriber_id, outbox.c.issue.not_in(INTERNAL),
            outbox.c.state == RowState.SENT)).order_by(outbox.c.updated_at.desc(),
                                                       outbox.c.id.desc()).limit(1)).scalar()
        key = f"web\0{subscriber_id}\0{via}\0{now.isoformat()}"
        conn.execute(insert(reports).values(
            fingerprint=hashlib.sha256(key.encode()).hexdigest(), kind=ReportKind.UNSUBSCRIBE,
            source="web", via=via, issue=issue, subscriber_id=subscriber_id,
            received_at=now))
    return True


# ---- What editors see --------------------------------------------------------------------

COUNT_KEYS = ("bounced", "soft_bounced", "complained", "unsubscribed_one_click",
              "unsubscribed_mailto", "unsubscribed_preferences", "auto_replies", "unmatched")


def counts(engine: Engine, issue: str | None = None) -> dict[str | None, dict[str, int]]:
    """Per issue (None: reports naming no send): messages hard- and soft-bounced, complained
    about and unsubscribed from (by way), counted once per message; auto-replies and
    unmatched reports counted per report."""
    query = (select(reports.c.issue, reports.c.kind, reports.c.via,
                    func.count(reports.c.outbox_id.distinct()), func.count())
             .group_by(reports.c.issue, reports.c.kind, reports.c.via))
    if issue is not None:
        query = query.where(reports.c.issue == issue)
    found: dict[str | None, dict[str, int]] = {}
    with engine.connect() as conn:
        for slug, kind, via, messages, total in conn.execute(query):
            key = _count_key(kind, via)
            if key is None:
                continue
            by_issue = found.setdefault(slug, dict.fromkeys(COUNT_KEYS, 0))
            per_message = kind in (ReportKind.BOUNCED, ReportKind.SOFT, ReportKind.COMPLAINT) or (
                kind == ReportKind.UNSUBSCRIBE and via == "mailto")
            by_issue[key] += messages if per_message else total
    return found


def _count_key(kind: str, via: str | None) -> str | None:
    keys: dict[str, str] = {
        ReportKind.BOUNCED: "bounced", ReportKind.SOFT: "soft_bounced",
        ReportKind.COMPLAINT: "complained", ReportKind.AUTO_REPLY: "auto_replies",
        ReportKind.UNMATCHED: "unmatched",
    }
    if kind == ReportKind.UNSUBSCRIBE:
        return {"mailto": "unsubscribed_mailto", "one-click": "unsubscribed_one_click",
                "preferences": "unsubscribed_preferences"}.get(via or "")
    return keys.get(kind)
