"""Rendering compared with committed expected output.

After an intended change to templates or rendering, regenerate with:

    pytest tests/compose/test_golden.py --update-golden

and review the diff of tests/golden/ before committing it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from dispatch.compose.issues import load_issue
from dispatch.compose.render import render_variant
from dispatch.compose.variants import possible_variants
from dispatch.config import load_settings
from tests.helpers import EXAMPLE_ISSUE, ROOT

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / EXAMPLE_ISSUE
NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
VARIANTS = ["b1-2-3-4-5", "b3-5"]


@pytest.mark.parametrize("variant_id", VARIANTS)
@pytest.mark.parametrize("kind", ["html", "txt"])
def test_golden(variant_id, kind, request):
    settings = load_settings(ROOT / "config.toml")
    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    rendered = render_variant(issue, possible_variants(issue)[variant_id], settings, NOW)
    actual = rendered.html if kind == "html" else rendered.text
    path = GOLDEN / f"{variant_id}.{kind}"
    if request.config.getoption("--update-golden"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
    assert path.is_file(), "no golden file: run pytest tests/compose/test_golden.py --update-golden"
    assert actual == path.read_text(encoding="utf-8"), (
        f"{path.name} differs from the rendering; if intended, run "
        "pytest tests/compose/test_golden.py --update-golden and review the diff")
