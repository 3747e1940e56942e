"""Opening the store: an Engine on SQLite (WAL) or PostgreSQL, migrated to this code's schema."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from dispatch.errors import DispatchError, Problem

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class StoreError(DispatchError):
    """The database cannot be opened or is not at a schema this code understands."""


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    # WAL lets readers (the web app, `dispatch status`) work while a send writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create(url: str) -> Engine:
    """An Engine for the URL; a SQLite file and its folder are created on first use."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(Problem("store.url", f"not a database URL: {url!r}")) from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def upgrade(engine: Engine) -> str:
    """Apply pending migrations; refuse a database newer than this code."""
    head = head_revision()
    try:
        current = current_revision(engine)
    except OperationalError as exc:
        raise StoreError(Problem("store.url", f"cannot open the database: {exc.orig}")) from None
    scripts = ScriptDirectory.from_config(_alembic_config())
    known = {rev.revision for rev in scripts.walk_revisions()}
    if current is not None and current not in known:
        raise StoreError(Problem("store.url", f"the database is at schema revision {current}, "
                                              f"newer than this dispatch ({head}): upgrade "
                                              "dispatch before using this database"))
    if current != head:
        config = _alembic_config()
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    return head


def open_store(url: str) -> Engine:
    """The store, migrated: what every command that needs subscribers calls."""
    engine = create(url)
    upgrade(engine)
    return engine
