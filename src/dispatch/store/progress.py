"""Reading where sends stand: outbox rows per state, the latest problem replies, the
delivery timeline and rate, the variants stored at launch, live workers, whether mail is due.
Reads only: the status report (deliver/report.py) and the console are built on these.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Engine,
    and_,
    func,
    select,
)

from dispatch.states import (
    OPEN,
    PROBLEMS,
    RowState,
    SendStatus,
)
from dispatch.store.outbox import LEASE
from dispatch.store.schema import (
    outbox,
    sends,
    subscribers,
    workers,
)


def live_workers(engine: Engine, now: datetime, lease: timedelta = LEASE) -> int:
    """Delivery processes (workers or daemons) whose heartbeat is recent."""
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(workers).where(
            workers.c.heartbeat_at >= now - lease)).scalar_one()


def state_counts(engine: Engine, issue: str | None = None) -> dict[str, Counter[str]]:
    """Outbox rows per state, per issue."""
    query = select(outbox.c.issue, outbox.c.state, func.count()).group_by(outbox.c.issue,
                                                                          outbox.c.state)
    if issue:
        query = query.where(outbox.c.issue == issue)
    counts: dict[str, Counter[str]] = {}
    with engine.connect() as conn:
        for slug, state, n in conn.execute(query):
            counts.setdefault(slug, Counter())[state] = n
    return counts


def delivery_timeline(engine: Engine, issue: str, buckets: int = 30
                      ) -> list[tuple[datetime, int]]:
    """Messages delivered over time, for the console's chart: (bucket start, count) over
    at most `buckets` equal spans from the first delivery to the last."""
    with engine.connect() as conn:
        times = sorted(conn.execute(select(outbox.c.updated_at).where(and_(
            outbox.c.issue == issue, outbox.c.state == RowState.SENT))).scalars())
    if not times:
        return []
    span = max((times[-1] - times[0]) / buckets, timedelta(seconds=1))
    counts: Counter[int] = Counter(min(int((t - times[0]) / span), buckets - 1) for t in times)
    return [(times[0] + span * i, counts[i]) for i in range(max(counts) + 1)]


def sent_since(engine: Engine, issue: str, since: datetime) -> int:
    """Messages of an issue delivered after `since` (the console's live rate)."""
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(outbox).where(and_(
            outbox.c.issue == issue, outbox.c.state == RowState.SENT,
            outbox.c.updated_at > since))).scalar_one()


def last_errors(engine: Engine, issues: Iterable[str] | None, limit: int = 5
                ) -> dict[str, list[dict[str, Any]]]:
    """The `limit` latest problem replies of each issue (or of every issue), in one query
    whatever the number of issues: a status report over many sends costs what one does."""
    rank = func.row_number().over(partition_by=outbox.c.issue,
                                  order_by=(outbox.c.updated_at.desc(), outbox.c.id.desc()))
    condition = and_(outbox.c.state.in_(PROBLEMS), outbox.c.reply.is_not(None))
    if issues is not None:
        condition = and_(condition, outbox.c.issue.in_(list(issues)))
    ranked = (select(outbox.c.issue, subscribers.c.email, outbox.c.state, outbox.c.attempts,
                     outbox.c.reply, outbox.c.updated_at, rank.label("n"))
              .join(subscribers, subscribers.c.id == outbox.c.subscriber_id, isouter=True)
              .where(condition).subquery())
    query = select(ranked).where(ranked.c.n <= limit).order_by(ranked.c.issue, ranked.c.n)
    found: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as conn:
        for row in conn.execute(query).mappings():
            entry = dict(row)
            found.setdefault(entry.pop("issue"), []).append(entry)
            del entry["n"]
    return found


def mail_due(engine: Engine, now: datetime) -> bool:
    """Whether any running send has a message waiting for a worker."""
    running = select(sends.c.issue).where(sends.c.status == SendStatus.SENDING)
    with engine.connect() as conn:
        return conn.execute(select(outbox.c.id).where(and_(
            outbox.c.issue.in_(running), outbox.c.state.in_(OPEN),
            outbox.c.next_attempt_at <= now)).limit(1)).first() is not None
