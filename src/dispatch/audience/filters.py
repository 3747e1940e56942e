"""Which subscribers someone asked to see: the filters of `dispatch subscribers list` and of
the console's subscribers page, read from what was typed and checked against config.toml
in one place. The store's list_subscribers takes the result."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

from dispatch.config import Segment, Settings
from dispatch.errors import DispatchError, Problem
from dispatch.states import SubscriberStatus

SEARCH_MAX = 320  # an address at its longest; a longer search matches nobody anyway


@dataclass(frozen=True)
class SubscriberFilter:
    """Every filter given, each None when not: a part of the address or name, a status, a
    topic key and a declared segment."""

    search: str | None = None
    status: SubscriberStatus | None = None
    topic: str | None = None
    segment: Segment | None = None


def parse_filter(settings: Settings, *, search: str | None = None, status: str | None = None,
                 topic: str | None = None, segment: str | None = None,
                 prefix: str = "") -> SubscriberFilter:
    """The filter for these values as typed (an empty value is no filter); DispatchError
    with one problem per bad value, located by its name after `prefix` ("--" for the CLI's
    options, "" for the console's fields)."""
    search, status, topic, segment = (_given(v) for v in (search, status, topic, segment))
    problems: list[Problem] = []
    if search is not None and len(search) > SEARCH_MAX:
        problems.append(Problem(f"{prefix}search", f"at most {SEARCH_MAX} characters"))
    if status is not None and status not in set(SubscriberStatus):
        problems.append(Problem(f"{prefix}status", _unknown("status", status,
                                                            list(SubscriberStatus))))
    if topic is not None and topic not in settings.topics:
        problems.append(Problem(f"{prefix}topic", _unknown("topic", topic, settings.topics)))
    if segment is not None and segment not in settings.segments:
        problems.append(Problem(f"{prefix}segment", _unknown("segment", segment,
                                                             settings.segments)))
    if problems:
        raise DispatchError(problems)
    return SubscriberFilter(search=search,
                            status=SubscriberStatus(status) if status is not None else None,
                            topic=topic,
                            segment=settings.segments[segment] if segment is not None else None)


def _given(value: str | None) -> str | None:
    return value.strip() or None if value is not None else None


def _unknown(what: str, value: str, known: Iterable[str]) -> str:
    names = sorted(str(k) for k in known)
    close = difflib.get_close_matches(value, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (f"unknown {what} {value[:80]!r} (one of: {', '.join(names) or 'none declared'})"
            f"{hint}")
