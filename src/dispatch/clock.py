"""Time: the clock every stage is handed, IANA zone names, and wall-clock times in a zone.

The clock is passed in (never read deep inside a stage) so tests and the scheduler decide
what "now" is. See docs/architecture.md.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones


def utcnow() -> datetime:
    return datetime.now(UTC)


@lru_cache(maxsize=1024)
def is_zone(name: str) -> bool:
    """Whether `name` is an IANA time zone this machine's zone database knows."""
    if not name or name != name.strip():
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def zone_names() -> list[str]:
    """Every IANA zone name, sorted (for a choice on a web page)."""
    return sorted(available_timezones() - {"localtime", "Factory"})


@lru_cache(maxsize=512)
def local_release(wall: datetime, zone: str) -> datetime:
    """The instant a wall-clock time happens in a zone, in UTC. The zone database decides
    the offset (DST included): a time skipped by a spring-forward happens at the same
    distance after the gap's start, an hour repeated in autumn the first time round."""
    return wall.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
