"""Display names: the one rule shared by the CLI, CSV import, the store and the sign-up form."""

from __future__ import annotations

import pytest

from dispatch.audience.addresses import _validated, name_problem, normalize, valid_name


@pytest.mark.parametrize("name", ["Ana", "김민지", "O'Brien-Smith", "x" * 200, "Ana\u00a0Reader"])
def test_ordinary_names_pass(name):
    assert valid_name(name) and name_problem(name) is None


@pytest.mark.parametrize("name, expected", [
    ("Ana\r\nBcc: x@example.org", "name contains the control character U+000D at position 4"),
    ("Ana\x07", "U+0007"),  # BEL
    ("\x1b[31mAna", "U+001B"),  # ESC
    ("Ana\tReader", "U+0009"),
    ("Ana\x7f", "U+007F"),  # DEL
    ("Ana\x85", "U+0085"),  # C1 NEL
    ("Ana\x9b", "U+009B"),  # C1 CSI
    ("Ana\u2028Reader", "U+2028"),
    ("Ana\u2029Reader", "U+2029"),
    ("x" * 201, "name longer than 200 characters (201)"),
    ("x" * 10_000, "name longer than 200 characters (10000)"),
])
def test_names_unfit_for_a_header_are_refused(name, expected):
    problem = name_problem(name)
    assert problem is not None and expected in problem
    assert not valid_name(name)


# Addresses near every rule email-validator applies: the fast path for plain ASCII must give
# exactly its answer (the same key, or a refusal with the same message).
TRICKY = [
    "Ana@Example.COM", "  padded@example.com  ", "a.b.c@example.com", "a..b@example.com",
    ".a@example.com", "a.@example.com", "a@example.com.", "a@.example.com", "a@example..com",
    "a+tag@example.com", "o'brien@example.ie", "x!#$%&'*+-/=?^_`{|}~@example.com",
    "a b@example.com", "a,b@example.com", "a(b)@example.com", "a[b]@example.com",
    "a\\b@example.com", '"quoted"@example.com', '"a b"@example.com', "a@b@example.com",
    "@example.com", "a@", "a", "", "a@b", "a@localhost", "a@test", "a@x.test", "a@x.local",
    "a@x.invalid", "a@x.onion", "a@x.arpa", "a@example", "a@example.123", "a@123.com",
    "a@-x.com", "a@x-.com", "a@x_y.com", "a@xn--bcher-kva.example", "a@xn--bcher.example",
    "a@[127.0.0.1]", "a@[IPv6:::1]", "a@EXAMPLE.COM", "A@B.CO", "ü@example.com",
    "a@bücher.example", "a@b\u00a0.com", "x" * 64 + "@example.com", "x" * 65 + "@example.com",
    "a@" + "x" * 63 + ".com", "a@" + "x" * 64 + ".com",
    "a@" + ".".join(["x" * 60] * 4) + ".com",  # domain over 253 octets
    "x" * 60 + "@" + ".".join(["y" * 60] * 3) + ".com",  # address over 254
    "x" * 50 + "@" + ".".join(["y" * 60] * 3) + ".com",  # just under
    "a@example.com\x00", "a\x00b@example.com", "a@exa\tmple.com", "postmaster@example.com",
    "a@sub.sub.sub.example.co.uk", "a@example.museum", "a@example.c", "a@1.2.3.4",
]


def _answer(check, address):
    try:
        return "ok", check(address)
    except ValueError as exc:
        return "refused", str(exc)


@pytest.mark.parametrize("address", TRICKY)
def test_the_ascii_fast_path_answers_as_email_validator(address):
    assert _answer(normalize, address) == _answer(lambda a: _validated(a.strip()), address)


def test_generated_addresses_agree_too():
    import random
    rng = random.Random(7)
    alphabet = "abcXYZ019.-_+'@!#\"() "
    for _ in range(3000):
        address = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        address += rng.choice(["@example.com", "@EXAMPLE.org", "@a.b", "", "@x-.io", "@xn--a.b"])
        assert _answer(normalize, address) == _answer(lambda a: _validated(a.strip()), address)
