"""The time-zone choice: clock.zones() read from the machine's zone database (zone.tab), and
its grouping for the preferences page."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import available_timezones

from dispatch.clock import COMMON_ZONES, is_zone, zone_names, zones
from dispatch.web.zones import COMMON, offset, zone_groups, zone_label

JANUARY = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
JULY = datetime(2026, 7, 15, 12, 0, tzinfo=UTC)


def test_only_canonical_names_of_places_are_offered():
    names = zone_names()
    assert names == sorted(names) and len(names) == len(set(names)) > 300
    assert all(is_zone(name) for name in names)
    assert set(names) <= available_timezones()
    legacy = {"W-SU", "Zulu", "Etc/GMT+5", "Etc/GMT-14", "US/Eastern", "US/Pacific", "GB",
              "Asia/Calcutta", "Europe/Kiev", "America/Buenos_Aires", "Asia/Saigon", "EST",
              "EST5EDT", "CET", "Universal", "Greenwich", "Factory", "localtime"}
    assert not legacy & set(names)
    assert {"Asia/Kolkata", "Europe/Kyiv", "America/Argentina/Buenos_Aires",
            "Asia/Ho_Chi_Minh", "Europe/Amsterdam", "UTC"} <= set(names)
    assert all(name == "UTC" or name.count("/") >= 1 for name in names)
    assert set(COMMON_ZONES) <= set(names)


def test_each_zone_knows_its_region_place_and_country():
    by_name = {zone.name: zone for zone in zones()}
    assert by_name["America/Argentina/Buenos_Aires"].place == "Argentina / Buenos Aires"
    assert by_name["America/Argentina/Buenos_Aires"].region == "America"
    assert by_name["Asia/Kolkata"].country == "India"
    assert by_name["America/Port_of_Spain"].place == "Port of Spain"


def test_offsets_read_as_people_write_them_and_follow_the_season():
    assert offset("Asia/Seoul", JANUARY) == "UTC+9"
    assert offset("Asia/Kolkata", JANUARY) == "UTC+5:30"
    assert offset("Asia/Kathmandu", JANUARY) == "UTC+5:45"
    assert offset("America/St_Johns", JANUARY) == "UTC-3:30"
    assert offset("Europe/London", JANUARY) == "UTC"
    assert offset("Europe/London", JULY) == "UTC+1"
    assert offset("America/New_York", JULY) == "UTC-4"
    assert zone_label("Asia/Kolkata", JANUARY) == "Kolkata, India (UTC+5:30)"
    assert zone_label("Asia/Singapore", JANUARY) == "Singapore (UTC+8)"
    assert zone_label("UTC", JANUARY) == "UTC"
    assert zone_label("US/Eastern", JANUARY) == "US/Eastern (UTC-5)"


def test_common_zones_come_first_then_every_zone_once_by_region():
    groups = zone_groups(["Asia/Seoul", "Asia/Seoul"], None, JANUARY)
    label, common = groups[0]
    assert label == COMMON
    assert [o.value for o in common][:2] == ["Asia/Seoul", "America/Los_Angeles"]
    assert len(common) == len(COMMON_ZONES)  # the newsletter's zone is one of them
    regions = [label for label, _ in groups[1:]]
    assert regions == sorted(regions) and "Americas" in regions and "Indian Ocean" in regions
    listed = [o.value for _, options in groups[1:] for o in options]
    assert sorted(listed) == [name for name in zone_names() if name != "UTC"]
    by_name = {zone.name: zone for zone in zones()}
    for _, options in groups[1:]:
        places = [by_name[o.value].place for o in options]
        assert places == sorted(places)
    assert not any(o.selected for _, options in groups for o in options)


def test_a_readers_zone_is_selected_once_even_where_it_is_listed_twice():
    groups = zone_groups(["Asia/Seoul"], "Europe/Paris", JANUARY)
    selected = [(label, o.value) for label, options in groups for o in options if o.selected]
    assert selected == [(COMMON, "Europe/Paris")]
    groups = zone_groups(["Asia/Seoul"], "Africa/Nairobi", JANUARY)
    selected = [(label, o.value) for label, options in groups for o in options if o.selected]
    assert selected == [("Africa", "Africa/Nairobi")]
    groups = zone_groups(["Asia/Seoul"], "W-SU", JANUARY)
    assert groups[0][1][0].value == "W-SU" and groups[0][1][0].selected
    assert sum(o.selected for _, options in groups for o in options) == 1
