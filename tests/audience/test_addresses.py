"""Display names: the one rule shared by the CLI, CSV import, the store and the sign-up form."""

from __future__ import annotations

import pytest

from dispatch.audience.addresses import name_problem, valid_name


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
