"""The send lifecycle: every step of states.SEND_STEPS moves a send only from the states it
declares, to the one it declares, and every status write goes through it."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select

from dispatch.states import SEND_STEPS, RowState, SendStatus, SendStep
from dispatch.store import sends
from dispatch.store.schema import outbox
from dispatch.store.schema import sends as sends_table

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
SRC = Path(__file__).resolve().parents[2] / "src" / "dispatch"


def _put(engine: Engine, issue: str, status: SendStatus) -> None:
    with engine.begin() as conn:
        conn.execute(insert(sends_table).values(issue=issue, subject="s", status=status,
                                                recipients=0, created_at=NOW))


def _status(engine: Engine, issue: str) -> SendStatus:
    with engine.connect() as conn:
        return SendStatus(conn.execute(select(sends_table.c.status).where(
            sends_table.c.issue == issue)).scalar_one())


def test_every_step_moves_only_from_its_declared_states(engine: Engine) -> None:
    for step, (sources, target) in SEND_STEPS.items():
        for status in SendStatus:
            issue = f"{step}-{status}"
            _put(engine, issue, status)
            moved = sends.set_status(engine, issue, step, reason="why")
            assert moved == (status in sources), (step, status)
            assert _status(engine, issue) == (target if moved else status), (step, status)


def test_no_step_comes_from_any_state() -> None:
    for step, (sources, _) in SEND_STEPS.items():
        assert sources and sources != frozenset(SendStatus), step
    assert set(SEND_STEPS) == set(SendStep)


def test_finish_is_its_own_step_and_only_for_sends_with_nothing_left(engine: Engine) -> None:
    _put(engine, "done", SendStatus.SENDING)
    _put(engine, "busy", SendStatus.SENDING)
    _put(engine, "held", SendStatus.PAUSED)
    with engine.begin() as conn:
        for issue, state in (("done", RowState.SENT), ("busy", RowState.SENT),
                             ("busy", RowState.RETRYING)):
            conn.execute(insert(outbox).values(issue=issue, subscriber_id=None, variant="v",
                                               state=state, attempts=1, next_attempt_at=NOW,
                                               updated_at=NOW))
    assert sends.finish_done(engine, NOW) == 1
    assert [_status(engine, i) for i in ("done", "busy", "held")] == [
        SendStatus.SENT, SendStatus.SENDING, SendStatus.PAUSED]
    assert sends.get_send(engine, "done").finished_at == NOW  # type: ignore[union-attr]


def test_no_module_writes_a_send_status_but_the_lifecycle() -> None:
    """An `update(sends)…status=` outside store/sends.change_status would be a second way."""
    writers = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        if re.search(r"update\(sends\)[^\n]*\n?[^\n]*status\s*=", text):
            writers.append(path.relative_to(SRC).as_posix())
    assert writers == ["store/sends.py"]
    assert len(re.findall(r"status=target", (SRC / "store/sends.py").read_text())) == 1


@pytest.mark.parametrize("step", list(SendStep))
def test_each_step_is_in_the_architecture_table(step: SendStep) -> None:
    doc = (SRC.parents[1] / "docs" / "architecture.md").read_text()
    assert f"| `{step}` |" in doc
