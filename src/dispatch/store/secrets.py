"""The token secret: DISPATCH_SECRET, or generated once and kept in the store, so links stay
valid across restarts and on every machine that shares the store."""

from __future__ import annotations

import os
import secrets

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from dispatch.store.schema import settings_table

SECRET_ENV = "DISPATCH_SECRET"


_QUERY = select(settings_table.c.value).where(settings_table.c.key == "token_secret")


def existing_secret(engine: Engine) -> str | None:
    """DISPATCH_SECRET, else the secret kept in the store, else None (nothing is written)."""
    if value := os.environ.get(SECRET_ENV):
        return value
    with engine.connect() as conn:
        return conn.execute(_QUERY).scalar()


def secret(engine: Engine) -> str:
    """The token secret, generated and kept in the store on first use."""
    if (found := existing_secret(engine)) is not None:
        return found
    try:
        with engine.begin() as conn:
            conn.execute(settings_table.insert().values(key="token_secret",
                                                        value=secrets.token_urlsafe(32)))
    except IntegrityError:
        pass  # another process made it first: use theirs
    with engine.connect() as conn:
        return conn.execute(_QUERY).scalar_one()
