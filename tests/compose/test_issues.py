from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from dispatch.compose.issues import load_issue, parse_when, resolve_issue_path
from dispatch.errors import ContentError
from tests.helpers import EXAMPLE_ISSUE


def test_example_issue_loads(settings):
    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    assert len(issue.briefs) >= 4
    assert len(issue.topics) >= 3
    assert issue.briefs[0].path.name == "01-hiroshima-meeting.md"
    assert issue.send_at == datetime(2026, 11, 27, 7, 0, tzinfo=ZoneInfo("Asia/Seoul"))
    assert issue.personalize is True and issue.segments == ()


@pytest.mark.parametrize("value, expected", [
    ("2026-12-01T07:00:00+09:00", datetime(2026, 11, 30, 22, 0, tzinfo=UTC)),
    ("2026-12-01 07:00 Asia/Seoul", datetime(2026, 11, 30, 22, 0, tzinfo=UTC)),
    ("2026-12-01T07:00[Europe/Berlin]", datetime(2026, 12, 1, 6, 0, tzinfo=UTC)),
    ("2026-07-01T07:00 Europe/Berlin", datetime(2026, 7, 1, 5, 0, tzinfo=UTC)),
    ("2026-12-01T07:00Z", datetime(2026, 12, 1, 7, 0, tzinfo=UTC)),
    (datetime(2026, 12, 1, 7, tzinfo=timezone(timedelta(hours=-5))),
     datetime(2026, 12, 1, 12, 0, tzinfo=UTC)),
])
def test_parse_when(value, expected):
    assert parse_when(value) == expected


@pytest.mark.parametrize("value, message", [
    ("2026-12-01T07:00", "no offset or zone"),
    ("tomorrow", "not an ISO 8601 time"),
    ("2026-12-01T07:00 Mars/Olympus", "unknown IANA time zone"),
])
def test_parse_when_rejects(value, message):
    with pytest.raises(ValueError, match=message):
        parse_when(value)


def edit(settings, text_from: str, text_to: str) -> None:
    path = settings.issues_dir / EXAMPLE_ISSUE / "issue.toml"
    text = path.read_text()
    assert text_from in text
    path.write_text(text.replace(text_from, text_to))


@pytest.mark.parametrize("old, new, expected", [
    ('send_at = "2026-11-27T07:00 Asia/Seoul"', 'send_at = "2026-11-27T07:00"',
     "issue.toml:3: send_at: '2026-11-27T07:00' has no offset or zone"),
    ("personalize = true", 'personalize = true\nsegments = ["nobody"]',
     "segments[0]: unknown segment 'nobody'"),
    ('"05-taiwan-strait.md",', '"05-taiwan-strait.md", "06-missing.md",',
     "no brief named '06-missing.md'"),
    ('subject = "Seoul', 'title = "Seoul', "subject: required"),
    ('subject = "Seoul', 'subject = Seoul', "invalid TOML"),
])
def test_bad_issue_toml(settings, old, new, expected):
    edit(settings, old, new)
    with pytest.raises(ContentError) as info:
        load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    assert any(expected in str(p) for p in info.value.problems), info.value.problems


def test_brief_problems_surface_through_the_issue(settings):
    path = settings.issues_dir / EXAMPLE_ISSUE / "04-trade-lists.md"
    path.write_text(path.read_text().replace("title:", "titel:"))
    with pytest.raises(ContentError) as info:
        load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    assert {p.message for p in info.value.problems} >= {"title: required key is missing"}


def test_default_brief_order_is_sorted_md_files(settings):
    edit(settings, "briefs = [", "unused = [")
    with pytest.raises(ContentError, match="unused: unknown key"):
        load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    path = settings.issues_dir / EXAMPLE_ISSUE / "issue.toml"
    path.write_text('subject = "S"\n')
    issue = load_issue(path.parent, settings)
    names = [b.path.name for b in issue.briefs]
    assert names == sorted(names) and len(names) == 5


def test_missing_issue_folder(settings):
    with pytest.raises(ContentError, match="no such issue folder"):
        resolve_issue_path("2099-01-01-nothing", settings)
    assert resolve_issue_path(EXAMPLE_ISSUE, settings) == settings.issues_dir / EXAMPLE_ISSUE


@pytest.mark.parametrize("old, new, expected", [
    ('subject = "Seoul', r'subject = "Hi\r\nBcc: all@example.org\r\nX-Injected: yes\r\n',
     "issue.toml:1: subject: contains the control character U+000D at position 3"),
    ('subject = "Seoul', r'subject = "\u0085Seoul', "subject: contains the control character "
                                                     "U+0085 at position 1"),
    ('subject = "Seoul', r'subject = "\u2028Seoul', "subject: contains the control character "
                                                     "U+2028"),
    ('preheader = "A memorial', r'preheader = "\u001b[2JA memorial',
     "issue.toml:2: preheader: contains the control character U+001B"),
])
def test_control_characters_in_header_values_are_refused(settings, old, new, expected):
    edit(settings, old, new)
    with pytest.raises(ContentError) as info:
        load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    assert any(expected in str(p) for p in info.value.problems), info.value.problems
    assert all("\r" not in str(p) and "\n" not in str(p) for p in info.value.problems)


@pytest.mark.parametrize("entry", ["../outside.md", "/etc/passwd", "link.md",
                                   "sub/../../outside.md"])
def test_briefs_outside_the_issue_folder_are_refused(settings, entry):
    folder = settings.issues_dir / EXAMPLE_ISSUE
    outside = folder.parent / "outside.md"
    outside.write_text((folder / "01-hiroshima-meeting.md").read_text())
    (folder / "link.md").symlink_to(outside)
    (folder / "sub").mkdir()
    edit(settings, '"05-taiwan-strait.md",', f'"05-taiwan-strait.md", "{entry}",')
    with pytest.raises(ContentError) as info:
        load_issue(folder, settings)
    (problem,) = info.value.problems
    assert problem.path.endswith(f"{EXAMPLE_ISSUE}/issue.toml") and problem.line == 5
    assert problem.message.startswith(f"briefs[5]: {entry!r} lies outside the issue folder ")


def test_a_symlink_pointing_out_is_refused_when_briefs_are_not_listed(settings):
    folder = settings.issues_dir / EXAMPLE_ISSUE
    (folder / "99-elsewhere.md").symlink_to(folder / ".." / ".." / "config.toml")
    edit(settings, "briefs = [", "unused = [")
    text = (folder / "issue.toml").read_text()
    (folder / "issue.toml").write_text(text[:text.index("unused = [")])
    with pytest.raises(ContentError) as info:
        load_issue(folder, settings)
    (problem,) = info.value.problems
    assert problem.path.endswith(f"{EXAMPLE_ISSUE}/99-elsewhere.md")
    assert problem.message == ("a symbolic link to a file outside the issue folder; briefs "
                               "must be inside it")


def test_a_nul_in_a_brief_name_is_a_located_problem(settings):
    edit(settings, '"05-taiwan-strait.md",', r'"05-taiwan-strait.md", "x\u0000.md",')
    with pytest.raises(ContentError) as info:
        load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    (problem,) = info.value.problems
    assert problem.line == 5 and problem.message == "briefs[5]: 'x\\x00.md' is not a file name"


def test_a_symlink_within_the_folder_is_fine(settings):
    folder = settings.issues_dir / EXAMPLE_ISSUE
    (folder / "alias.md").symlink_to(folder / "05-taiwan-strait.md")
    edit(settings, '"05-taiwan-strait.md",', '"alias.md",')
    assert load_issue(folder, settings).briefs[-1].path.name == "alias.md"


def test_mistakes_in_issue_toml_are_all_located_with_suggestions(settings):
    edit(settings, 'subject = "Seoul', 'subjet = "Seoul')
    edit(settings, 'send_at = "2026-11-27T07:00 Asia/Seoul"', 'send_at = "2026-11-27T07:00 '
                                                             'Asia/Seul"')
    edit(settings, "personalize = true", 'personalize = "yes"\nsegments = ["security-dsk"]')
    path = settings.issues_dir / EXAMPLE_ISSUE / "04-trade-lists.md"
    path.write_text(path.read_text().replace("title:", "titel:"))
    with pytest.raises(ContentError) as info:
        load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    found = [f"{p.path.rsplit('/', 1)[-1]}:{p.line}: {p.message}" for p in info.value.problems]
    assert set(found) >= {
        "issue.toml:None: subject: required key is missing",
        "issue.toml:1: subjet: unknown key (did you mean 'subject'?)",
        "issue.toml:3: send_at: unknown IANA time zone 'Asia/Seul' (did you mean "
        "'Asia/Seoul'?)",
        "issue.toml:5: segments[0]: unknown segment 'security-dsk' (did you mean "
        "'security-desk'?) (config.toml declares: asia-watchers, security-desk)",
        'issue.toml:4: personalize: expected true or false, got "yes"'}
    # The briefs' own problems come in the same pass.
    assert "04-trade-lists.md:2: titel: unknown key (did you mean 'title'?)" in found


def test_a_brief_listed_twice_is_located(settings):
    edit(settings, '"05-taiwan-strait.md",', '"05-taiwan-strait.md", "05-taiwan-strait.md",')
    with pytest.raises(ContentError) as info:
        load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    assert [(p.line, p.message) for p in info.value.problems] == [
        (5, "briefs: '05-taiwan-strait.md' is listed twice")]
