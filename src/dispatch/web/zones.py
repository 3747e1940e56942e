"""The time-zone choice on the preferences page: the zones of `clock.zones()` grouped by
region, the newsletter's own and the common ones first, each labelled with its place, country
and present UTC offset so a reader finds theirs without knowing its IANA name."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from dispatch.clock import COMMON_ZONES, Zone, zones

COMMON = "Common"
REGIONS = {"America": "Americas", "Atlantic": "Atlantic Ocean", "Indian": "Indian Ocean",
           "Pacific": "Pacific Ocean"}  # the others read well as they are


@dataclass(frozen=True)
class Option:
    value: str
    label: str
    selected: bool = False


def offset(zone: str, now: datetime) -> str:
    """`zone`'s offset at `now` as people write it: UTC+9, UTC-3, UTC+5:45, UTC."""
    delta = now.astimezone(ZoneInfo(zone)).utcoffset()
    minutes = round(delta.total_seconds() / 60) if delta is not None else 0
    if not minutes:
        return "UTC"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{'+' if minutes > 0 else '-'}{hours}" + (f":{rest:02d}" if rest else "")


def label(zone: Zone, now: datetime) -> str:
    place = zone.place
    if zone.country and zone.country != place:
        place = f"{place}, {zone.country}"
    return place if zone.name == "UTC" else f"{place} ({offset(zone.name, now)})"


def zone_label(name: str, now: datetime) -> str:
    """A zone by its place when it is offered, else by its name: "Seoul, Korea (South)
    (UTC+9)", "US/Eastern (UTC-5)"."""
    found = next((zone for zone in zones() if zone.name == name), None)
    return label(found, now) if found else f"{name} ({offset(name, now)})"


def zone_groups(first: list[str], current: str | None, now: datetime
                ) -> list[tuple[str, list[Option]]]:
    """(group label, options) for a <select>: "Common" (the zones in `first`, then
    COMMON_ZONES), then one group per region sorted by place. `current`, the subscriber's
    zone, is selected where it first appears; a zone of theirs that is not offered (an alias
    set from a CSV file) heads the common group, so saving the form keeps it."""
    by_name = {zone.name: zone for zone in zones()}
    chosen = current is None  # nothing to select, or already selected once
    common: list[Option] = []
    if current is not None and current not in by_name:
        common.append(Option(current, f"{current} (as set before)", True))
        chosen = True
    for name in dict.fromkeys([*first, *COMMON_ZONES]):
        if name in by_name:
            common.append(Option(name, label(by_name[name], now), not chosen and name == current))
            chosen = chosen or name == current
    groups = [(COMMON, common)]
    regions: dict[str, list[Zone]] = {}
    for zone in zones():
        if zone.region:
            regions.setdefault(zone.region, []).append(zone)
    for region in sorted(regions):
        options = []
        for zone in sorted(regions[region], key=lambda z: z.place):
            options.append(Option(zone.name, label(zone, now),
                                  not chosen and zone.name == current))
            chosen = chosen or zone.name == current
        groups.append((REGIONS.get(region, region), options))
    return groups
