"""Shared fixtures: a throw-away copy of the shipped project, and the seed texts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dispatch.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT.parent / "shared" / "seeds"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXAMPLE_ISSUE = "2026-11-27-thaw"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of config.toml and issues/ in a temporary folder, safe to modify."""
    shutil.copy(ROOT / "config.toml", tmp_path / "config.toml")
    shutil.copytree(ROOT / "issues", tmp_path / "issues")
    return tmp_path


@pytest.fixture
def settings(project: Path) -> Settings:
    return load_settings(project / "config.toml")


def seed_files() -> list[Path]:
    return sorted(SEEDS.glob("*.txt")) if SEEDS.is_dir() else []


needs_seeds = pytest.mark.skipif(not seed_files(), reason=f"seed texts not found in {SEEDS}")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true",
                     help="Rewrite tests/golden/ from the current rendering.")
