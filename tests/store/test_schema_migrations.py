"""store/schema.py and the migrations describe one database: after `upgrade head` on a fresh
store, Alembic's autogenerate comparison finds nothing to add, drop or alter."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

from dispatch.store.schema import metadata


def test_the_migrated_database_matches_the_schema(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={
            "compare_type": True, "compare_server_default": True})
        diff: list[Any] = compare_metadata(context, metadata)
    assert diff == [], "\n".join(map(str, diff))  # what a migration 00NN must add
