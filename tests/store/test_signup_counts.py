"""The counts the sign-up bounds are decided on (store/signup_counts.py, audience/bounds.py),
on SQLite and PostgreSQL, with the clock passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from dispatch.audience.bounds import domain_of, signup_refusal
from dispatch.audience.signup import Signup
from dispatch.config import Settings, WebSettings
from dispatch.deliver.signup_mail import prepare_confirmations
from dispatch.store.confirmations import request_confirmation
from dispatch.store.signup_counts import SignupCounts, signup_counts

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def sign_up(engine: Engine, email: str, at: datetime) -> bool:
    return request_confirmation(engine, Signup(email, email.lower(), None, ("security",)), at)


def test_pending_sign_ups_and_confirmations_are_counted_in_all_and_per_domain(
        engine: Engine, settings: Settings):
    prepare_confirmations(engine, settings, timedelta(days=2), NOW - timedelta(days=4))
    assert sign_up(engine, "old@one.example", NOW - timedelta(days=3))
    for n in range(3):
        assert sign_up(engine, f"r{n}@one.example", NOW - timedelta(minutes=n))
    assert sign_up(engine, "a@two.example", NOW)
    assert sign_up(engine, "b@xone.example", NOW)  # not one.example's
    assert sign_up(engine, "c@one_example", NOW)  # LIKE's _ is no wildcard
    counts = signup_counts(engine, domain_of("x@One.Example"),
                           pending_since=NOW - timedelta(days=2),
                           mailed_since=NOW - timedelta(hours=1))
    assert counts == SignupCounts(pending=6, pending_domain=3, mailed=6, mailed_domain=3)
    later = signup_counts(engine, "one.example", pending_since=NOW - timedelta(days=4),
                          mailed_since=NOW + timedelta(minutes=1))
    assert (later.pending, later.pending_domain, later.mailed) == (7, 4, 0)


def test_each_bound_refuses_with_words_for_the_reader():
    web = WebSettings(signup_pending_max=10, signup_pending_per_domain=3,
                      confirmations_per_hour=20, confirmations_per_domain_hour=5)
    assert signup_refusal(SignupCounts(9, 2, 19, 4), web) is None
    for counts in (SignupCounts(10, 0, 0, 0), SignupCounts(0, 0, 20, 0)):
        assert "more sign-ups than usual" in str(signup_refusal(counts, web))
    for counts in (SignupCounts(3, 3, 0, 0), SignupCounts(0, 0, 5, 5)):
        assert "your email provider" in str(signup_refusal(counts, web))
