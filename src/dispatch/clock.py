"""Time: the clock every stage is handed, IANA zone names, and wall-clock times in a zone.

The clock is passed in (never read deep inside a stage) so tests and the scheduler decide
what "now" is. See docs/architecture.md.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

# Offered first on the preferences page (after the newsletter's own zone): where most
# readers of an English-language newsletter live, west to east.
COMMON_ZONES = ("America/Los_Angeles", "America/Denver", "America/Chicago", "America/New_York",
                "America/Sao_Paulo", "UTC", "Europe/London", "Europe/Paris", "Europe/Berlin",
                "Africa/Lagos", "Africa/Johannesburg", "Asia/Dubai", "Asia/Kolkata",
                "Asia/Singapore", "Asia/Shanghai", "Asia/Tokyo", "Asia/Seoul",
                "Australia/Sydney", "Pacific/Auckland")


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


_REGIONS = {"Africa", "America", "Antarctica", "Arctic", "Asia", "Atlantic", "Australia",
            "Europe", "Indian", "Pacific"}


@dataclass(frozen=True)
class Zone:
    """A zone a person picks: its canonical name, its region (the name's first part) and
    place ("Argentina / Buenos Aires"), and the country zone.tab gives it."""

    name: str
    region: str
    place: str
    country: str | None = None


def _tzdata_file(name: str) -> str | None:
    """A file of the zone database (zone.tab, iso3166.tab) where zoneinfo finds the zones:
    the system's first, then the tzdata package's."""
    for folder in zoneinfo.TZPATH:
        try:
            with open(f"{folder}/{name}", encoding="utf-8") as file:
                return file.read()
        except OSError:
            continue
    try:
        return (resources.files("tzdata") / "zoneinfo" / name).read_text(encoding="utf-8")
    except (ModuleNotFoundError, OSError):
        return None


def _rows(text: str | None) -> list[list[str]]:
    return [line.split("\t") for line in (text or "").splitlines()
            if line.strip() and not line.startswith("#")]


@lru_cache(maxsize=1)
def zones() -> tuple[Zone, ...]:
    """The zones people pick from, sorted by name: one canonical name per place as the zone
    database's zone.tab lists them (Europe/Kyiv, Asia/Kolkata), and UTC. Never its
    backward-compatible aliases (W-SU, Zulu, US/Eastern, Asia/Calcutta) nor Etc/GMT+5, whose
    sign is the reverse of what people expect. Without a zone.tab: every Region/Place name."""
    known = available_timezones()
    countries = {row[0]: row[1] for row in _rows(_tzdata_file("iso3166.tab")) if len(row) > 1}
    listed = {row[2]: countries.get(row[0]) for row in _rows(_tzdata_file("zone.tab"))
              if len(row) > 2}
    if not listed:
        listed = {name: None for name in known
                  if "/" in name and name.split("/")[0] in _REGIONS}
    found = [Zone(name, *_region_place(name), country)
             for name, country in listed.items() if name in known]
    found.append(Zone("UTC", "", "UTC"))
    return tuple(sorted(found, key=lambda z: z.name))


def _region_place(name: str) -> tuple[str, str]:
    region, _, place = name.partition("/")
    return region, place.replace("/", " / ").replace("_", " ")


def zone_names() -> list[str]:
    """The names of `zones()`: the choice of zone on a web page."""
    return [zone.name for zone in zones()]


@lru_cache(maxsize=512)
def local_release(wall: datetime, zone: str) -> datetime:
    """The instant a wall-clock time happens in a zone, in UTC. The zone database decides
    the offset (DST included): a time skipped by a spring-forward happens at the same
    distance after the gap's start, an hour repeated in autumn the first time round."""
    return wall.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
