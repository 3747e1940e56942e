"""Console accounts: users and their argon2 password hashes, sessions kept in the store
(revocable, with idle and absolute expiry), and the login throttle. The shells (`dispatch
users`, web/console/) only call these; every change is also written to the audit log
(store/audit.py) by the caller that knows who acted.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, Engine, case, delete, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from dispatch.audience.addresses import normalize
from dispatch.errors import DispatchError, Problem
from dispatch.states import Role
from dispatch.store.schema import login_attempts, user_sessions, users

MIN_PASSWORD = 12  # characters; long passphrases beat rules about symbols
_HASHER = PasswordHasher()
# Verified when the account is unknown or disabled, so the answer takes as long either way.
_DUMMY = _HASHER.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class User:
    id: int
    email: str
    role: Role
    disabled: bool
    created_at: datetime


@dataclass(frozen=True)
class Session:
    """A signed-in browser: its user and the CSRF token its forms carry."""

    user: User
    csrf: str
    created_at: datetime


class Throttled(DispatchError):
    """Too many failed sign-ins for this account or from this client."""


def _user(row: object) -> User:
    data = dict(row._mapping)  # type: ignore[attr-defined]
    return User(id=data["id"], email=data["email"], role=Role(data["role"]),
                disabled=bool(data["disabled"]), created_at=data["created_at"])


_COLUMNS = (users.c.id, users.c.email, users.c.role, users.c.disabled, users.c.created_at)


def account_key(email: str) -> str:
    """An account's email as stored: checked, normalised, lower-case."""
    try:
        return normalize(email)
    except ValueError as exc:
        raise DispatchError(Problem("EMAIL", f"not an email address: {exc}")) from None


def _lookup(email: str) -> str:
    """The stored form of what someone typed at sign-in (no error for a typo: it just fails)."""
    try:
        return normalize(email)
    except ValueError:
        return email.strip().lower()


def check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise DispatchError(Problem("--role", f"expected one of {', '.join(Role)}, got "
                                              f"{role!r}")) from None


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise DispatchError(Problem("password", f"at least {MIN_PASSWORD} characters, please "
                                                f"(got {len(password)})"))
    if password != password.strip() or "\n" in password:
        raise DispatchError(Problem("password", "no leading or trailing spaces or line "
                                                "breaks (a paste that caught too much?)"))
    return password


def add_user(engine: Engine, email: str, password: str, role: str, now: datetime) -> User:
    key, checked_role = account_key(email), check_role(role)
    digest = _HASHER.hash(check_password(password))
    try:
        with engine.begin() as conn:
            conn.execute(insert(users).values(email=key, role=checked_role,
                                              password_hash=digest, disabled=False,
                                              created_at=now))
    except IntegrityError:
        raise DispatchError(Problem(key, "an account with this address exists")) from None
    return require_user(engine, key)


def get_user(engine: Engine, email: str) -> User | None:
    with engine.connect() as conn:
        row = conn.execute(select(*_COLUMNS).where(users.c.email == _lookup(email))
                           ).first()
    return _user(row) if row else None


def require_user(engine: Engine, email: str) -> User:
    found = get_user(engine, email)
    if found is None:
        raise DispatchError(Problem(email, "no such account (dispatch users list)"))
    return found


def list_users(engine: Engine) -> list[User]:
    with engine.connect() as conn:
        return [_user(r) for r in conn.execute(select(*_COLUMNS).order_by(users.c.email))]


def set_role(engine: Engine, email: str, role: str) -> User:
    found, checked_role = require_user(engine, email), check_role(role)
    with engine.begin() as conn:
        conn.execute(update(users).where(users.c.id == found.id).values(role=checked_role))
    return require_user(engine, email)


def set_disabled(engine: Engine, email: str, disabled: bool = True) -> User:
    """Disable (or enable) an account; disabling signs it out everywhere."""
    found = require_user(engine, email)
    with engine.begin() as conn:
        conn.execute(update(users).where(users.c.id == found.id).values(disabled=disabled))
        if disabled:
            conn.execute(delete(user_sessions).where(user_sessions.c.user_id == found.id))
    return require_user(engine, email)


def reset_password(engine: Engine, email: str, password: str) -> User:
    """A new password; every session of the account is revoked."""
    found = require_user(engine, email)
    digest = _HASHER.hash(check_password(password))
    with engine.begin() as conn:
        conn.execute(update(users).where(users.c.id == found.id).values(password_hash=digest))
        conn.execute(delete(user_sessions).where(user_sessions.c.user_id == found.id))
    return found


# ---- Signing in ------------------------------------------------------------------------------

def _attempt(conn: Connection, key: str, now: datetime, since: datetime) -> int:
    """Count one more attempt for `key` and return the count, in one statement: the upsert
    holds the row's lock until the transaction ends, so parallel attempts count one after
    another. A window that started at or before `since` starts again."""
    table = login_attempts
    insert_ = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    expired = table.c.since <= literal(since, table.c.since.type)
    statement = insert_(table).values(key=key, since=now, attempts=1).on_conflict_do_update(
        index_elements=[table.c.key],
        set_={"attempts": case((expired, 1), else_=table.c.attempts + 1),
              "since": case((expired, literal(now, table.c.since.type)),
                            else_=table.c.since)},
    ).returning(table.c.attempts)
    return int(conn.execute(statement).scalar_one())


def authenticate(engine: Engine, email: str, password: str, client: str, now: datetime, *,
                 limit: int, window: timedelta) -> User | None:
    """The account if the password is right and it is enabled, else None. Every attempt is
    counted against the account and the client before its password is checked; Throttled,
    with no password checked, when either has had `limit` attempts in a window (one that
    started at its first attempt, within `window`). A success forgives the account and gives
    the client its attempt back."""
    keys = [f"account:{_lookup(email)[:300]}", f"client:{client[:90]}"]
    since = now - window
    with engine.begin() as conn:
        conn.execute(delete(login_attempts).where(login_attempts.c.since <= since))
        # Always the account's row first, then the client's: no two attempts wait on each
        # other's rows in opposite order.
        counts = [_attempt(conn, key, now, since) for key in keys]
        if any(count > limit for count in counts):
            raise Throttled(Problem("login", "too many failed sign-ins; try again later"))
        row = conn.execute(select(*_COLUMNS, users.c.password_hash)
                           .where(users.c.email == _lookup(email))).first()
    ok = False
    try:
        ok = _HASHER.verify(row.password_hash if row else _DUMMY, password)
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok or row is None or row.disabled:
        return None
    with engine.begin() as conn:
        conn.execute(delete(login_attempts).where(login_attempts.c.key == keys[0]))
        conn.execute(update(login_attempts).where(login_attempts.c.key == keys[1],
                                                  login_attempts.c.attempts > 0)
                     .values(attempts=login_attempts.c.attempts - 1))
        if _HASHER.check_needs_rehash(row.password_hash):
            conn.execute(update(users).where(users.c.id == row.id)
                         .values(password_hash=_HASHER.hash(password)))
    return _user(row)


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def start_session(engine: Engine, user: User, now: datetime,
                  previous: str | None = None) -> str:
    """A new session id for `user` (a new one at every sign-in: an id planted before it is
    worth nothing after); `previous`, the browser's old session, is revoked."""
    session_id = secrets.token_urlsafe(32)
    with engine.begin() as conn:
        if previous:
            conn.execute(delete(user_sessions).where(user_sessions.c.id_hash == _hash(previous)))
        conn.execute(insert(user_sessions).values(id_hash=_hash(session_id), user_id=user.id,
                                                  csrf=secrets.token_urlsafe(32),
                                                  created_at=now, seen_at=now))
    return session_id


def find_session(engine: Engine, session_id: str, now: datetime, *, idle: timedelta,
                 lifetime: timedelta) -> Session | None:
    """The live session with this id, its idle clock restarted; None (and the row deleted)
    when it is unknown, idle too long, too old, or its account disabled."""
    if not session_id or len(session_id) > 100:
        return None
    key = _hash(session_id)
    with engine.begin() as conn:
        row = conn.execute(select(*_COLUMNS, user_sessions.c.csrf, user_sessions.c.created_at
                                  .label("started"), user_sessions.c.seen_at)
                           .join(users, users.c.id == user_sessions.c.user_id)
                           .where(user_sessions.c.id_hash == key)).first()
        if row is None:
            return None
        if row.disabled or now - row.seen_at > idle or now - row.started > lifetime:
            conn.execute(delete(user_sessions).where(user_sessions.c.id_hash == key))
            return None
        conn.execute(update(user_sessions).where(user_sessions.c.id_hash == key)
                     .values(seen_at=now))
    return Session(_user(row), row.csrf, row.started)


def end_session(engine: Engine, session_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(delete(user_sessions).where(user_sessions.c.id_hash == _hash(session_id)))


def session_count(engine: Engine, email: str) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(user_sessions)
                            .join(users, users.c.id == user_sessions.c.user_id)
                            .where(users.c.email == _lookup(email))).scalar_one()
