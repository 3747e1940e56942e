"""The brief editor's checks of what comes from outside (compose/editing.py)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from dispatch.compose import editing
from dispatch.errors import ContentError, DispatchError


@pytest.mark.parametrize("name", ["01-hiroshima-meeting.md", "a.md", "brief-2.md"])
def test_plain_names_pass(name: str):
    assert editing.check_name(name) == name


@pytest.mark.parametrize("name", [
    "evil.md\n", "evil\n.md", "CON.md", "con.md", "nul.md", "com1.md", "lpt9.md", "Upper.md",
    "a_b.md", "a.b.md", "-a.md", "a-.md", "a--b.md", ".md", "a.MD", "a.md/", "../a.md",
    "a" * 150 + ".md"])
def test_any_other_name_is_refused(name: str):
    with pytest.raises(DispatchError):
        editing.check_name(name)


def test_pasted_text_titled_like_a_device_gets_a_plain_name(tmp_path: Path):
    text = "Con\n\nThe standfirst.\n\nA first paragraph.\n\nA second one.\n"
    name, _ = editing.import_pasted(text, {}, tmp_path, date(2026, 12, 7))
    assert name == "brief-con.md"


@pytest.mark.parametrize("extra", ["a: " + "[" * 3000, "a: " + "{" * 60,
                                   "".join(f"{'  ' * i}k{i}:\n" for i in range(80))])
def test_front_matter_nested_deep_is_a_located_problem(extra: str):
    with pytest.raises(ContentError) as bad:
        editing.to_text(editing.BriefForm(title="T", extra=extra))
    assert "nested" in str(bad.value)


def test_a_deep_file_opens_with_its_front_matter_as_text():
    text = "---\na: " + "[" * 3000 + "]" * 3000 + "\n---\n\nBody\n"
    form = editing.to_form(text)
    assert form.extra.startswith("a: [[[") and form.body == "Body\n"


def test_a_deep_file_does_not_check(tmp_path: Path):
    text = "---\ntitle: T\na: " + "[" * 3000 + "]" * 3000 + "\n---\n\nBody\n"
    with pytest.raises(ContentError) as bad:
        editing.checked_brief(tmp_path / "deep.md", text, {})
    assert str(bad.value).startswith("deep.md:2: nested more than 50")
