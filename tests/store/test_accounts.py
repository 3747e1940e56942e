"""Console accounts in the store, on SQLite and PostgreSQL: argon2 hashes, sessions with
idle and absolute expiry, the login throttle, the audit log."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import Engine, select

from dispatch.errors import DispatchError
from dispatch.states import Role
from dispatch.store import accounts, audit
from dispatch.store.schema import user_sessions, users

NOW = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
PASSWORD = "correct horse battery staple"
IDLE, LIFE = timedelta(minutes=30), timedelta(hours=12)
WINDOW = timedelta(minutes=15)


def test_passwords_are_kept_as_argon2_hashes_only(engine: Engine):
    user = accounts.add_user(engine, " Ana@Example.ORG ", PASSWORD, "editor", NOW)
    assert user.email == "ana@example.org" and user.role == Role.EDITOR
    with engine.connect() as conn:
        stored = conn.execute(select(users.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert accounts.authenticate(engine, "ANA@example.org", PASSWORD, "c", NOW, limit=10,
                                 window=WINDOW) == user
    assert accounts.authenticate(engine, "ana@example.org", PASSWORD + "x", "c", NOW,
                                 limit=10, window=WINDOW) is None


@pytest.mark.parametrize("email, password, role, message", [
    ("not an address", PASSWORD, "editor", "not an email address"),
    ("bo@example.org", "short", "editor", "at least 12 characters"),
    ("bo@example.org", " " + PASSWORD, "editor", "no leading or trailing spaces"),
    ("bo@example.org", PASSWORD, "owner", "expected one of editor, operator, admin"),
])
def test_bad_accounts_are_refused_and_nothing_is_written(engine: Engine, email, password,
                                                         role, message):
    with pytest.raises(DispatchError, match=message):
        accounts.add_user(engine, email, password, role, NOW)
    assert accounts.list_users(engine) == []


def test_an_address_has_one_account(engine: Engine):
    accounts.add_user(engine, "ana@example.org", PASSWORD, "editor", NOW)
    with pytest.raises(DispatchError, match="exists"):
        accounts.add_user(engine, "ANA@example.org", PASSWORD, "admin", NOW)


def test_sessions_expire_when_idle_or_old_and_are_kept_as_hashes(engine: Engine):
    user = accounts.add_user(engine, "ana@example.org", PASSWORD, "operator", NOW)
    sid = accounts.start_session(engine, user, NOW)
    with engine.connect() as conn:
        assert sid not in conn.execute(select(user_sessions.c.id_hash)).scalar_one()
    moment = NOW
    for _ in range(40):  # kept alive by use, 20 minutes apart, up to 12 hours...
        moment += timedelta(minutes=20)
        if moment - NOW > LIFE:
            break
        assert accounts.find_session(engine, sid, moment, idle=IDLE, lifetime=LIFE)
    # ...but never beyond its absolute lifetime.
    assert accounts.find_session(engine, sid, NOW + LIFE + timedelta(minutes=1), idle=IDLE,
                                 lifetime=LIFE) is None
    other = accounts.start_session(engine, user, NOW)
    assert accounts.find_session(engine, other, NOW + IDLE + timedelta(seconds=1), idle=IDLE,
                                 lifetime=LIFE) is None
    assert accounts.session_count(engine, user.email) == 0  # expired rows are deleted


def test_disabling_resetting_or_signing_in_again_revokes_sessions(engine: Engine):
    user = accounts.add_user(engine, "ana@example.org", PASSWORD, "admin", NOW)
    first = accounts.start_session(engine, user, NOW)
    second = accounts.start_session(engine, user, NOW, previous=first)
    assert accounts.find_session(engine, first, NOW, idle=IDLE, lifetime=LIFE) is None
    assert accounts.find_session(engine, second, NOW, idle=IDLE, lifetime=LIFE) is not None
    accounts.reset_password(engine, user.email, "another long passphrase")
    assert accounts.find_session(engine, second, NOW, idle=IDLE, lifetime=LIFE) is None
    third = accounts.start_session(engine, user, NOW)
    accounts.set_disabled(engine, user.email)
    assert accounts.find_session(engine, third, NOW, idle=IDLE, lifetime=LIFE) is None
    assert accounts.authenticate(engine, user.email, "another long passphrase", "c", NOW,
                                 limit=10, window=WINDOW) is None
    accounts.set_disabled(engine, user.email, False)
    assert accounts.authenticate(engine, user.email, "another long passphrase", "c", NOW,
                                 limit=10, window=WINDOW) is not None


def test_failures_throttle_the_account_and_the_client_for_the_window(engine: Engine):
    accounts.add_user(engine, "ana@example.org", PASSWORD, "editor", NOW)
    for i in range(3):
        assert accounts.authenticate(engine, "ana@example.org", "wrong", f"client{i}", NOW,
                                     limit=3, window=WINDOW) is None
    with pytest.raises(accounts.Throttled):
        accounts.authenticate(engine, "ana@example.org", PASSWORD, "fresh", NOW, limit=3,
                              window=WINDOW)
    later = NOW + WINDOW + timedelta(seconds=1)
    assert accounts.authenticate(engine, "ana@example.org", PASSWORD, "fresh", later,
                                 limit=3, window=WINDOW) is not None
    # Unknown accounts count against the client too: guessing names is throttled.
    for name in ("a", "b", "c"):
        accounts.authenticate(engine, f"{name}@example.org", "x", "guesser", later, limit=3,
                              window=WINDOW)
    with pytest.raises(accounts.Throttled):
        accounts.authenticate(engine, "ana@example.org", PASSWORD, "guesser", later, limit=3,
                              window=WINDOW)


class CountingHasher(PasswordHasher):
    """The real argon2 hasher, counting the passwords it checks."""

    def __init__(self) -> None:
        super().__init__()
        self.checks = 0
        self.lock = threading.Lock()

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        with self.lock:
            self.checks += 1
        return super().verify(hash, password)


def in_parallel(count: int, attempt: Callable[[int], Any]) -> list[str]:
    """`count` attempts on as many threads, all released at once by a barrier."""
    barrier = threading.Barrier(count)

    def one(i: int) -> str:
        barrier.wait()
        try:
            return "ok" if attempt(i) is not None else "wrong"
        except accounts.Throttled:
            return "throttled"
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


@pytest.mark.parametrize(("attempts", "same"), [(100, "account"), (60, "client")])
def test_parallel_wrong_passwords_check_no_more_passwords_than_the_limit(
        engine: Engine, monkeypatch: pytest.MonkeyPatch, attempts: int, same: str):
    accounts.add_user(engine, "ana@example.org", PASSWORD, "editor", NOW)
    hasher = CountingHasher()
    monkeypatch.setattr(accounts, "_HASHER", hasher)
    limit = 10

    def attempt(i: int) -> accounts.User | None:
        email = "ana@example.org" if same == "account" else f"guess{i}@example.org"
        client = f"client{i}" if same == "account" else "one-client"
        return accounts.authenticate(engine, email, "wrong", client, NOW, limit=limit,
                                     window=WINDOW)
    results = in_parallel(attempts, attempt)
    assert hasher.checks == limit
    assert results.count("wrong") == limit
    assert results.count("throttled") == attempts - limit


def test_a_success_forgives_the_account_and_gives_the_client_its_attempt_back(
        engine: Engine):
    accounts.add_user(engine, "ana@example.org", PASSWORD, "editor", NOW)
    for _ in range(5):  # a shared office address signs in many times a day
        for _ in range(3):
            assert accounts.authenticate(engine, "ana@example.org", PASSWORD, "office", NOW,
                                         limit=3, window=WINDOW) is not None
    for _ in range(2):
        accounts.authenticate(engine, "ana@example.org", "typo", "office", NOW, limit=3,
                              window=WINDOW)
    assert accounts.authenticate(engine, "ana@example.org", PASSWORD, "office", NOW,
                                 limit=3, window=WINDOW) is not None


def test_the_audit_log_keeps_who_what_and_when_newest_first(engine: Engine):
    audit.record(engine, "ana@example.org", "schedule", "slug=x", NOW, "at 07:00")
    audit.record(engine, "cli:root", "user.add", "bo@example.org", NOW + timedelta(1))
    found = audit.entries(engine)
    assert [(e.actor, e.action, e.target) for e in found] == [
        ("cli:root", "user.add", "bo@example.org"), ("ana@example.org", "schedule", "slug=x")]
    assert found[1].at == NOW and found[1].detail == "at 07:00"
    assert [e.action for e in audit.entries(engine, actor="ana@example.org")] == ["schedule"]
