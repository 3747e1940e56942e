"""The one reader of subscriber filters (audience/filters.py) that `dispatch subscribers
list` and the console's subscribers page both use."""

from __future__ import annotations

import pytest

from dispatch.audience.filters import SubscriberFilter, parse_filter
from dispatch.config import Settings
from dispatch.errors import DispatchError
from dispatch.states import SubscriberStatus


def test_empty_values_are_no_filter(settings: Settings):
    assert parse_filter(settings) == SubscriberFilter()
    assert parse_filter(settings, search=" ", status="", topic="", segment="") == \
        SubscriberFilter()


def test_known_values_become_the_stores_filter(settings: Settings):
    wanted = parse_filter(settings, search=" ana ", status="active", topic="security",
                          segment="asia-watchers")
    assert wanted == SubscriberFilter(search="ana", status=SubscriberStatus.ACTIVE,
                                      topic="security",
                                      segment=settings.segments["asia-watchers"])


def test_every_bad_value_is_named_with_a_suggestion_in_one_error(settings: Settings):
    with pytest.raises(DispatchError) as bad:
        parse_filter(settings, status="actve", topic="securty", segment="nope",
                     search="x" * 321, prefix="--")
    found = {p.path: p.message for p in bad.value.problems}
    assert list(found) == ["--search", "--status", "--topic", "--segment"]
    assert "did you mean 'active'?" in found["--status"]
    assert "did you mean 'security'?" in found["--topic"]
    assert found["--segment"].startswith("unknown segment 'nope' (one of: asia-watchers, "
                                         "security-desk)")


def test_the_console_locates_by_field_name(settings: Settings):
    with pytest.raises(DispatchError) as bad:
        parse_filter(settings, topic="nope")
    assert [p.path for p in bad.value.problems] == ["topic"]
