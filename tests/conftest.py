"""Shared fixtures: a throw-away copy of the shipped project, and a fresh store per backend.
Constants and helper functions are in helpers.py."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from dispatch.config import Settings, load_settings
from dispatch.store.db import open_store
from tests.helpers import PG_URL, ROOT, reset_postgres


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of config.toml and issues/ in a temporary folder, safe to modify."""
    shutil.copy(ROOT / "config.toml", tmp_path / "config.toml")
    shutil.copytree(ROOT / "issues", tmp_path / "issues")
    return tmp_path


@pytest.fixture
def settings(project: Path) -> Settings:
    return load_settings(project / "config.toml")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true",
                     help="Rewrite tests/golden/ from the current rendering.")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every store test runs against a fresh SQLite file and a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    reason = reset_postgres(PG_URL)
    if reason:
        pytest.skip(reason + " (run tests/install-services.sh as root)")
    return PG_URL


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    """The store at `store_url`, migrated; disposed after the test."""
    engine = open_store(store_url)
    yield engine
    engine.dispose()
