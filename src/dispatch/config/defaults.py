"""Tuning values: the cadences, backoffs and batch sizes that are not settings an operator
writes in config.toml (those are config/schema.py's), written once here.

They are passed in as parameters (`Tuning` for the delivery loop, `batch=` for the store's
batched work), so a test that needs a quicker backoff passes its own values rather than
patching a module's constant.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tuning:
    """The delivery loop's cadences (deliver/worker.py, deliver/loop.py), in seconds."""

    heartbeat: float = 2.0  # between heartbeats, each also finding dead workers on this host
    poll: float = 2.0  # between looks at an idle outbox
    status_every: float = 0.5  # between looks at whether the sends in hand were paused
    count_every: float = 5.0  # between counts of the rows left (the progress line's total)
    record_every: float = 0.03  # an outcome may wait this long for its commit when no
    # connection needs it
    session_backoff: float = 0.5  # before trying again for a session, doubling per failure
    session_backoff_max: float = 30.0
    look_every: float = 30.0  # `dispatch serve`: between looks for due mail with no wake-up
    restart_backoff: float = 1.0  # a run that failed (store or relay gone, the SQLite
    # worker lock taken) is tried again after this, doubling per failure in a row
    restart_backoff_max: float = 60.0


TUNING = Tuning()

# Python's default 5 ms GIL switch interval makes a connection thread whose reply has arrived
# wait behind the store work; 0.5 ms lifted throughput to Postfix's smtp-sink by about 15%.
# Set by the commands that deliver in bulk (`dispatch send`, `dispatch worker`), not by the
# library for every process that happens to deliver.
SWITCH_INTERVAL = 0.0005

IMPORT_BATCH = 10_000  # CSV rows per transaction-internal batch (store/imports.py)
SUBSCRIBER_BATCH = 5_000  # subscribers read per query when streaming them (store/subscribers)
