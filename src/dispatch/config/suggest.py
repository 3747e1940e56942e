""""Did you mean": the nearest known name to a mistyped one (keys, topics, time zones)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from functools import cache
from zoneinfo import available_timezones


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """" (did you mean 'x'?)" for the closest of `choices` to a mistyped `word`, or ""."""
    options = list(choices)
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not close:
        # A slip of case ("asia/seoul") scores low against long names: compare folded too.
        folded = {option.lower(): option for option in options}
        close = [folded[c] for c in difflib.get_close_matches(word.lower(), folded, n=1)]
    return f" (did you mean {close[0]!r}?)" if close else ""


@cache
def zone_names() -> tuple[str, ...]:
    """Every IANA time zone name this machine's zone database knows."""
    return tuple(sorted(available_timezones()))
