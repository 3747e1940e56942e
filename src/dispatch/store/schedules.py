"""Recurring schedules in the store: which fire times were acted on, which briefs were carried."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Connection, Engine, and_, func, insert, select

from dispatch.store.schema import carried_briefs, schedule_runs


def last_run(engine: Engine, name: str) -> datetime | None:
    """The latest fire time of a recurring schedule that was acted on (in any way)."""
    with engine.connect() as conn:
        return conn.execute(select(func.max(schedule_runs.c.fire_time))
                            .where(schedule_runs.c.name == name)).scalar()


def has_run(engine: Engine, name: str, fire_time: datetime) -> bool:
    with engine.connect() as conn:
        return conn.execute(select(schedule_runs.c.outcome).where(and_(
            schedule_runs.c.name == name, schedule_runs.c.fire_time == fire_time))
        ).first() is not None


def record_run(conn: Connection, name: str, fire_time: datetime, outcome: str, now: datetime,
               issue: str | None = None, note: str | None = None) -> None:
    """Raises IntegrityError when that fire time was acted on already (by another process)."""
    conn.execute(insert(schedule_runs).values(name=name, fire_time=fire_time, outcome=outcome,
                                              issue=issue, note=note, created_at=now))


def carried(engine: Engine, folder: str) -> set[str]:
    """File names of the briefs in `folder` that an earlier digest carried."""
    with engine.connect() as conn:
        return set(conn.execute(select(carried_briefs.c.name)
                                .where(carried_briefs.c.folder == folder)).scalars())


def record_carried(conn: Connection, folder: str, names: Iterable[str], issue: str,
                   now: datetime) -> None:
    conn.execute(insert(carried_briefs), [{"folder": folder, "name": name, "issue": issue,
                                           "created_at": now} for name in names])
