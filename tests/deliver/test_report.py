"""The typed send report (deliver/report.py): one value per send, the same figures for every
shell, and a fixed number of queries whatever the number of sends."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, event, update

from dispatch.compose.issues import load_issue
from dispatch.config import Settings
from dispatch.deliver import control
from dispatch.deliver.report import SendReport, send_reports
from dispatch.states import RowState, SendStatus
from dispatch.store import subscribers as subs
from dispatch.store.schema import outbox
from tests.helpers import EXAMPLE_ISSUE

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def _launch(engine: Engine, settings: Settings, slugs: list[str]) -> None:
    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    for n, email in enumerate(("ana@example.com", "bo@example.com", "cy@example.com")):
        subs.add(engine, email, name=None, topics=["east-asia", "security"][: 1 + n % 2],
                 timezone=None, known_topics=settings.topics, now=NOW)
    for slug in slugs:
        plan = control.prepare_send(engine, dataclasses.replace(issue, slug=slug), settings)
        assert control.launch_planned(engine, plan, settings, NOW)
    with engine.begin() as conn:  # a problem reply in every send, for last_errors
        conn.execute(update(outbox).where(outbox.c.variant.is_not(None)).values(
            state=RowState.FAILED, reply="550 5.2.0 full", attempts=1, updated_at=NOW))


class Queries:
    """Counts the SQL statements an engine runs while it is active."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.n = engine, 0

    def _count(self, *_: object) -> None:
        self.n += 1

    def __enter__(self) -> Queries:
        event.listen(self.engine, "before_cursor_execute", self._count)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._count)


def test_the_report_costs_the_same_queries_for_one_send_as_for_six(engine: Engine,
                                                                    settings: Settings) -> None:
    _launch(engine, settings, ["one-send"])
    with Queries(engine) as one:
        [single] = send_reports(engine)
    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    for slug in (f"send-{n}" for n in range(5)):
        plan = control.prepare_send(engine, dataclasses.replace(issue, slug=slug), settings)
        assert control.launch_planned(engine, plan, settings, NOW)
    with Queries(engine) as six:
        everything = send_reports(engine)
    assert len(everything) == 6 and one.n == six.n
    assert single.last_errors and single.last_errors[0].reply == "550 5.2.0 full"
    with Queries(engine) as named:
        [report] = send_reports(engine, "send-3")
    assert named.n == six.n + 1  # the send looked up by name, and its delivery timeline
    assert report.issue == "send-3" and report.status == SendStatus.SENDING


def test_every_shell_reads_the_same_typed_value(engine: Engine, settings: Settings) -> None:
    _launch(engine, settings, ["typed"])
    [report] = send_reports(engine, "typed")
    assert isinstance(report, SendReport)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.status = SendStatus.SENT  # type: ignore[misc]
    data = json.loads(json.dumps(report.to_json()))  # what --json prints, and the API will
    assert data["states"]["failed"] == report.states[RowState.FAILED] == 3
    assert data["status"] == "sending" and data["recipients"] == report.recipients == 3
    assert list(data["states"]) == list(RowState)
    assert data["last_errors"][0]["email"].endswith("@example.com")
    assert set(data["reports"]) >= {"bounced", "complained", "unmatched"}
    assert report.unsubscribed == 0
