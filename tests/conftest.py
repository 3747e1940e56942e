"""Shared fixtures: a throw-away copy of the shipped project, and the seed texts."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
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


PG_URL = os.environ.get("DISPATCH_TEST_PG_URL",
                        "postgresql+psycopg://dispatch:dispatch@127.0.0.1:5432/dispatch_test")


def _reset_postgres(url: str) -> str | None:
    """Empty the test database; the reason it cannot be reached, or None."""
    from sqlalchemy import create_engine, text
    try:
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        engine.dispose()
    except Exception as exc:  # any failure to reach the server means: skip, and say why
        return f"PostgreSQL not reachable at {url.split('@')[-1]}: {type(exc).__name__}"
    return None


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every store test runs against a fresh SQLite file and a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    reason = _reset_postgres(PG_URL)
    if reason:
        pytest.skip(reason + " (run tests/install-services.sh as root)")
    return PG_URL


def eventually(condition: Callable[[], object], timeout: float = 5.0) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False
