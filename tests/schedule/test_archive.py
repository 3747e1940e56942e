"""Taking issues down from the public archive and putting them back (schedule.hide_issue,
show_issue over store.sends), on a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from dispatch import schedule as scheduling
from dispatch.compose.issues import load_issue
from dispatch.config import Settings
from dispatch.deliver.sending import launch_issue
from dispatch.errors import DispatchError
from dispatch.store import sends
from dispatch.store import subscribers as subs
from dispatch.store.launch import plan_audience
from tests.helpers import EXAMPLE_ISSUE

NOW = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)


def launch(engine: Engine, settings: Settings, slug: str, when: datetime) -> None:
    issue = load_issue(settings.issues_dir / slug, settings)
    assert launch_issue(engine, issue, plan_audience(engine, issue, settings), settings, when)


@pytest.fixture
def archived(engine: Engine, settings: Settings) -> Engine:
    """Two issues that went out a week apart, and a draft folder."""
    subs.add(engine, "ana@example.com", name=None, topics=["technology"], timezone=None,
             known_topics=settings.topics, now=NOW)
    for slug in ("2026-12-04-thaw", "2026-12-11-draft"):
        shutil.copytree(settings.issues_dir / EXAMPLE_ISSUE, settings.issues_dir / slug)
    launch(engine, settings, EXAMPLE_ISSUE, NOW)
    launch(engine, settings, "2026-12-04-thaw", NOW + timedelta(days=7))
    return engine


def listed(engine: Engine) -> list[str]:
    return [s.issue for s in sends.archived_sends(engine)]


def test_a_hidden_issue_leaves_the_archive_and_comes_back(archived: Engine, settings):
    engine = archived
    assert listed(engine) == ["2026-12-04-thaw", EXAMPLE_ISSUE]
    change = scheduling.hide_issue(engine, settings, f"issues/{EXAMPLE_ISSUE}", NOW)
    assert change == scheduling.ArchiveChange(EXAMPLE_ISSUE, changed=True, sent=True)
    assert listed(engine) == ["2026-12-04-thaw"]
    assert sends.archived_variants(engine, EXAMPLE_ISSUE) == []
    assert sends.viewable_html(engine, EXAMPLE_ISSUE, "b1-2-3-4-5") is None
    assert sends.hidden_from_archive(engine, EXAMPLE_ISSUE)
    assert not scheduling.hide_issue(engine, settings, EXAMPLE_ISSUE, NOW).changed
    assert get_status(engine, EXAMPLE_ISSUE) == "sending"  # delivery is not touched

    assert scheduling.show_issue(engine, settings, EXAMPLE_ISSUE).changed
    assert listed(engine) == ["2026-12-04-thaw", EXAMPLE_ISSUE]
    assert sends.archived_variants(engine, EXAMPLE_ISSUE)
    assert not scheduling.show_issue(engine, settings, EXAMPLE_ISSUE).changed


def get_status(engine: Engine, slug: str) -> str:
    found = sends.get_send(engine, slug)
    assert found is not None
    return found.status


def test_a_draft_hidden_before_it_goes_out_never_appears(archived: Engine, settings):
    engine = archived
    change = scheduling.hide_issue(engine, settings, "2026-12-11-draft", NOW)
    assert change == scheduling.ArchiveChange("2026-12-11-draft", changed=True, sent=False)
    launch(engine, settings, "2026-12-11-draft", NOW + timedelta(days=14))
    assert listed(engine) == ["2026-12-04-thaw", EXAMPLE_ISSUE]


@pytest.mark.parametrize("name", ["nothing-here", "~confirmations", "~welcome", "..", ".", "",
                                  "a\x00b", "thaw\nX", "x" * 201])
def test_names_that_are_no_issue_are_refused_and_change_nothing(archived: Engine, settings,
                                                                name):
    for action in (lambda: scheduling.hide_issue(archived, settings, name, NOW),
                   lambda: scheduling.show_issue(archived, settings, name)):
        with pytest.raises(DispatchError) as refused:
            action()
        assert refused.value.exit_code == 1
    with archived.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM archive_hidden")).scalar() == 0
    assert listed(archived) == ["2026-12-04-thaw", EXAMPLE_ISSUE]
