"""The audit log: who did what, when. Written by every console action and account change,
read by admins on the console's audit page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, insert, select

from dispatch.store.schema import audit_log

READER = "reader"  # the actor of what subscribers do themselves on the web (preferences)


@dataclass(frozen=True)
class Entry:
    at: datetime
    actor: str
    action: str
    target: str
    detail: str | None


def record(engine: Engine, actor: str, action: str, target: str, now: datetime,
           detail: str | None = None) -> None:
    with engine.begin() as conn:
        record_in(conn, actor, action, target, now, detail)


def record_in(conn: Connection, actor: str, action: str, target: str, now: datetime,
              detail: str | None = None) -> None:
    """`record` in the caller's transaction: the entry stands or falls with the change."""
    conn.execute(insert(audit_log).values(at=now, actor=actor, action=action,
                                          target=target[:2000], detail=detail))


def subscriber_target(subscriber_id: int) -> str:
    """The target of an entry about one subscriber, as their history looks it up."""
    return f"subscriber {subscriber_id}"


def about(conn: Connection, target: str) -> list[Entry]:
    """Every entry about `target`, oldest first."""
    query = (select(audit_log.c.at, audit_log.c.actor, audit_log.c.action, audit_log.c.target,
                    audit_log.c.detail).where(audit_log.c.target == target)
             .order_by(audit_log.c.id))
    return [Entry(*row) for row in conn.execute(query)]


def entries(engine: Engine, limit: int = 200, actor: str | None = None) -> list[Entry]:
    """The latest entries first."""
    query = select(audit_log.c.at, audit_log.c.actor, audit_log.c.action, audit_log.c.target,
                   audit_log.c.detail).order_by(audit_log.c.id.desc()).limit(limit)
    if actor:
        query = query.where(audit_log.c.actor == actor)
    with engine.connect() as conn:
        return [Entry(*row) for row in conn.execute(query)]
