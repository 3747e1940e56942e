"""Spacing messages out: an overall rate and per-recipient-domain rates, each a bucket that
reserves its own next slot."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping


class RateLimiter:
    """Spaces messages to at most `rate` per second overall and per recipient domain."""

    def __init__(self, rate: float, domain_rates: Mapping[str, float],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._intervals = {"": 1 / rate if rate else 0.0,
                           **{d: 1 / r for d, r in domain_rates.items()}}
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def delay(self, domain: str) -> float:
        """Reserve the next slot for a message to `domain`; seconds to wait until it. Each
        bucket reserves its own earliest slot, so a slow domain never holds up the others."""
        keys = [k for k in ("", domain.lower()) if self._intervals.get(k)]
        if not keys:
            return 0.0
        with self._lock:
            now = self._clock()
            starts = []
            for k in keys:
                start = max(now, self._next.get(k, now))
                self._next[k] = start + self._intervals[k]
                starts.append(start)
        return max(starts) - now
