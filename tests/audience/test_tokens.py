"""dispatch.audience.tokens on its own: what a token proves (purpose, subscriber, address,
age), what it refuses, and where its secret comes from."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from itsdangerous import Signer as HmacSigner
from itsdangerous.encoding import base64_encode
from sqlalchemy import Engine, func, select

from dispatch.audience.tokens import PURPOSES, BadToken, Claim, Signer
from dispatch.store.db import open_store
from dispatch.store.schema import settings_table
from dispatch.store.secrets import SECRET_ENV, existing_secret, secret

KEY = "a test key, long enough to be a real one"
# A whole second, so the issue time a token carries (seconds) is exactly this moment.
ISSUED = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
EMAIL = "Ana.Reader@Example.com"
SKEW = timedelta(seconds=60)
EXPIRING = [p for p, expires in PURPOSES.items() if expires]


@pytest.fixture
def signer() -> Signer:
    return Signer(KEY)


def read(signer: Signer, purpose: str, token: str, at: datetime = ISSUED) -> Claim:
    return signer.read(purpose, token, now=at)


def refused(signer: Signer, purpose: str, token: str, at: datetime = ISSUED) -> BadToken:
    with pytest.raises(BadToken) as caught:
        signer.read(purpose, token, now=at)
    return caught.value


def test_the_purposes_are_the_four_the_app_uses():
    # The tests below cover each purpose; a new one must come with its own expiry decision.
    assert PURPOSES == {"unsubscribe": False, "preferences": False, "confirm": True,
                        "form": True}


@pytest.mark.parametrize("purpose", PURPOSES)
@pytest.mark.parametrize("subscriber_id", [1, 255, 256, 70_000, 2**40])
def test_a_token_reads_back_as_its_subscriber_and_address(signer, purpose, subscriber_id):
    token = signer.token(purpose, subscriber_id, EMAIL, issued=ISSUED)
    claim = read(signer, purpose, token)
    assert claim.subscriber_id == subscriber_id
    assert claim.matches(EMAIL)
    assert token.isascii() and not set(token) & set("/+= ")  # safe in a URL path


@pytest.mark.parametrize("purpose", PURPOSES)
@pytest.mark.parametrize("other", PURPOSES)
def test_a_token_for_one_purpose_is_refused_by_every_other(signer, purpose, other):
    if purpose == other:
        return
    token = signer.token(purpose, 7, EMAIL, issued=ISSUED)
    assert refused(signer, other, token).expired is False


def altered_tokens(token: str) -> Iterator[tuple[str, str]]:
    """(what was done, the result) for every way the tests damage a good token."""
    payload, _, signature = token.rpartition(".")
    first = payload[0]
    yield "payload's first character changed", ("B" if first != "B" else "C") + token[1:]
    yield "subscriber id swapped", base64_encode(b"\x08").decode() + token[token.index("."):]
    yield "signature's last character changed", \
        token[:-1] + ("A" if token[-1] != "A" else "B")
    yield "signature dropped", payload
    yield "signature cut short", token[:-5]
    yield "cut to half", token[:len(token) // 2]
    yield "a character added", token + "A"
    yield "empty", ""
    yield "dots only", "..."
    yield "non-ASCII", token[:-1] + "é"
    yield "signature moved to the front", f"{signature}.{payload}"


@pytest.mark.parametrize("purpose", PURPOSES)
def test_altered_and_truncated_tokens_are_invalid_not_expired(signer, purpose):
    token = signer.token(purpose, 7, EMAIL, issued=ISSUED)
    for what, bad in altered_tokens(token):
        assert bad != token, what
        with pytest.raises(BadToken) as caught:
            signer.read(purpose, bad, now=ISSUED)
        assert caught.value.expired is False, what


@pytest.mark.parametrize("purpose", PURPOSES)
def test_a_token_signed_with_another_key_is_refused(signer, purpose):
    forged = Signer("somebody else's key").token(purpose, 7, EMAIL, issued=ISSUED)
    assert refused(signer, purpose, forged).expired is False


def test_a_well_signed_token_with_the_wrong_shape_is_refused(signer):
    # Signed with the real key and salt, as a leaked key or a future format change could
    # produce: the parts are still checked, not only the signature.
    def signed(purpose: str, *parts: bytes) -> str:
        payload = b".".join(base64_encode(p) for p in parts)
        return HmacSigner(KEY, salt=f"dispatch.{purpose}").sign(payload).decode()

    assert refused(signer, "unsubscribe", signed("unsubscribe", b"\x07")).expired is False
    assert refused(signer, "unsubscribe",
                   signed("unsubscribe", b"\x07", b"abc")).expired is False  # 3-byte tag
    assert refused(signer, "unsubscribe",
                   signed("unsubscribe", b"\x07", b"abcd", b"\x01", b"\x02")).expired is False
    assert refused(signer, "confirm", signed("confirm", b"\x07", b"abcd")).expired is False
    # Only link purposes may name a row: a form token with one more part is refused.
    assert refused(signer, "form", signed("form", b"\x07", b"abcd", b"\x01", b"\x02")
                   ).expired is False


def test_link_tokens_may_name_the_row_their_message_was_and_old_ones_still_verify(signer):
    for purpose in ("unsubscribe", "preferences"):
        with_row = read(signer, purpose, signer.token(purpose, 7, EMAIL, row=123456))
        assert (with_row.subscriber_id, with_row.row_id) == (7, 123456)
        assert with_row.matches(EMAIL)
        before = read(signer, purpose, signer.token(purpose, 7, EMAIL))  # sent before rows
        assert (before.subscriber_id, before.row_id) == (7, None)
    with pytest.raises(AssertionError):
        signer.token("confirm", 7, EMAIL, row=1)


@pytest.mark.parametrize("purpose, lifetime", [("confirm", timedelta(days=2)),
                                               ("form", timedelta(hours=12))])
def test_expiring_tokens_last_their_lifetime_plus_a_minute_of_skew(signer, purpose, lifetime):
    token = signer.token(purpose, 7, EMAIL, issued=ISSUED)
    for age in (timedelta(0), timedelta(seconds=1), lifetime, lifetime + SKEW):
        assert read(signer, purpose, token, ISSUED + age).subscriber_id == 7, age
    for age in (lifetime + SKEW + timedelta(seconds=1), lifetime * 10):
        assert refused(signer, purpose, token, ISSUED + age).expired is True, age


def test_the_lifetime_can_be_configured_per_purpose():
    signer = Signer(KEY, expiry={"confirm": timedelta(hours=1)})
    token = signer.token("confirm", 7, EMAIL, issued=ISSUED)
    assert read(signer, "confirm", token, ISSUED + timedelta(hours=1) + SKEW).subscriber_id == 7
    late = ISSUED + timedelta(hours=1) + SKEW + timedelta(seconds=1)
    assert refused(signer, "confirm", token, late).expired is True
    # The purposes not named keep their default.
    form = signer.token("form", 7, EMAIL, issued=ISSUED)
    assert read(signer, "form", form, ISSUED + timedelta(hours=12)).subscriber_id == 7


@pytest.mark.parametrize("purpose", EXPIRING)
def test_a_token_issued_in_the_future_is_refused_as_invalid(signer, purpose):
    token = signer.token(purpose, 7, EMAIL, issued=ISSUED + timedelta(hours=1))
    assert refused(signer, purpose, token, ISSUED).expired is False


@pytest.mark.parametrize("purpose", ["unsubscribe", "preferences"])
def test_links_in_issues_never_expire(signer, purpose):
    token = signer.token(purpose, 7, EMAIL, issued=ISSUED)
    assert read(signer, purpose, token, ISSUED + timedelta(days=3650)).subscriber_id == 7
    # They carry no time at all: the same token whenever it is made.
    assert signer.token(purpose, 7, EMAIL, issued=ISSUED + timedelta(days=1)) == token


def test_an_expiring_token_without_a_given_time_uses_the_clock(signer):
    token = signer.token("confirm", 7, EMAIL)
    assert signer.read("confirm", token).subscriber_id == 7
    assert refused(signer, "confirm", token, datetime.now(UTC) + timedelta(days=3)).expired


def test_the_claim_matches_its_address_whatever_the_case_and_no_other(signer):
    claim = read(signer, "unsubscribe", signer.token("unsubscribe", 7, EMAIL))
    assert claim.matches("ana.reader@example.com")
    assert claim.matches("ANA.READER@EXAMPLE.COM")
    assert claim.matches("  Ana.Reader@Example.com\n")  # as a form field may bring it
    assert not claim.matches("bob@example.com")
    assert not claim.matches("ana.reader@example.org")
    assert not claim.matches("")


def test_a_token_for_another_address_reads_but_does_not_match(signer):
    # Reading proves the token is ours; whether it is this subscriber's is matches()'s job,
    # since SQLite may give a forgotten subscriber's id to someone new.
    claim = read(signer, "preferences", signer.token("preferences", 7, "old@example.com"))
    assert claim.subscriber_id == 7
    assert not claim.matches(EMAIL)


# ---- The secret ---------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    engine = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    yield engine
    engine.dispose()


def stored_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(settings_table)).scalar_one()


def test_the_secret_is_generated_once_and_kept_across_restarts(store, tmp_path):
    assert existing_secret(store) is None
    first = secret(store)
    assert len(first) >= 32
    assert secret(store) == first and existing_secret(store) == first
    assert stored_rows(store) == 1

    token = Signer(first).token("unsubscribe", 7, EMAIL)
    restarted = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        assert secret(restarted) == first
        assert Signer(secret(restarted)).read("unsubscribe", token).subscriber_id == 7
    finally:
        restarted.dispose()


def test_each_store_gets_its_own_secret(store, tmp_path):
    other = open_store(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        assert secret(other) != secret(store)
    finally:
        other.dispose()


def test_looking_for_the_secret_writes_nothing(store):
    assert existing_secret(store) is None
    assert existing_secret(store) is None
    assert stored_rows(store) == 0


def test_dispatch_secret_wins_and_is_never_stored(store, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "from-the-environment")
    assert existing_secret(store) == "from-the-environment"
    assert secret(store) == "from-the-environment"
    assert stored_rows(store) == 0

    monkeypatch.delenv(SECRET_ENV)
    kept = secret(store)
    assert kept != "from-the-environment" and stored_rows(store) == 1
    monkeypatch.setenv(SECRET_ENV, "from-the-environment")
    assert secret(store) == existing_secret(store) == "from-the-environment"
    monkeypatch.delenv(SECRET_ENV)
    assert secret(store) == kept  # the environment overrode it, never replaced it
