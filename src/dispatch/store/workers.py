"""The worker registry: delivery processes register with a heartbeat, and a dead one's
claimed rows go back to the queue (its pid gone on this host, or silent past the lease).
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

from sqlalchemy import (
    Connection,
    and_,
    case,
    delete,
    insert,
    or_,
    select,
    update,
)

from dispatch.states import (
    RowState,
)
from dispatch.store.schema import (
    outbox,
    workers,
)


def host_identity() -> str:
    """This machine as the workers table names it: the host name, plus the PID namespace
    where Linux tells it, so two containers that share a host name never probe each other's
    process ids."""
    try:
        namespace = f"/pidns:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}{namespace}"[:200]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def register(conn: Connection, worker_id: str, host: str, lease: timedelta,
             now: datetime) -> int:
    """Join as a live worker; rows orphaned by dead workers go back to the queue (how many)."""
    if conn.dialect.name == "sqlite":
        conn.execute(delete(workers))  # we hold the one-worker lock: nobody else lives
    conn.execute(insert(workers).values(id=worker_id, host=host, pid=os.getpid(),
                                        started_at=now, heartbeat_at=now))
    return requeue_orphans(conn, worker_id, host, lease, now)


def heartbeat(conn: Connection, worker_id: str, host: str, lease: timedelta,
              now: datetime) -> int:
    """Say this worker lives; return the rows of dead workers to the queue (how many)."""
    conn.execute(update(workers).where(workers.c.id == worker_id).values(heartbeat_at=now))
    return requeue_orphans(conn, worker_id, host, lease, now)


def unregister(conn: Connection, worker_id: str) -> None:
    conn.execute(delete(workers).where(workers.c.id == worker_id))


def requeue_orphans(conn: Connection, worker_id: str, host: str, lease: timedelta,
                    now: datetime) -> int:
    """A worker is dead when its process is gone (probed for workers on this host, so a
    killed neighbour's rows come back within a heartbeat) or when it has been silent for
    delivery.worker_lease (the only sign across hosts); its claimed rows are queued again
    with no attempt used."""
    for wid, pid in conn.execute(select(workers.c.id, workers.c.pid).where(and_(
            workers.c.host == host, workers.c.id != worker_id))).all():
        if not _alive(pid):
            conn.execute(delete(workers).where(workers.c.id == wid))
    conn.execute(delete(workers).where(workers.c.heartbeat_at < now - lease))
    live = select(workers.c.id)
    result = conn.execute(
        update(outbox)
        .where(and_(outbox.c.state == RowState.SENDING,
                    or_(outbox.c.claimed_by.is_(None), outbox.c.claimed_by.not_in(live))))
        .values(state=case((outbox.c.attempts > 0, RowState.RETRYING), else_=RowState.QUEUED),
                claimed_by=None, updated_at=now))
    return result.rowcount
