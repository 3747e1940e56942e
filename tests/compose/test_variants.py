"""dispatch.compose.variants with small issues built in the test: which briefs a topic mix
gets, how variants are named and ordered, and which variants an issue can ever need."""

from __future__ import annotations

import dataclasses
from itertools import combinations
from pathlib import Path

import pytest

from dispatch.compose.models import Brief, Issue
from dispatch.compose.variants import (
    Variant,
    matched_briefs,
    plan_variants,
    possible_variants,
    variant_for,
)


def brief(slug: str, *topics: str) -> Brief:
    return Brief(path=Path(f"{slug}.md"), slug=slug, title=slug.title(), topics=topics,
                 summary=f"About {slug}.", body=f"{slug} body.", body_line=5)


def issue(*briefs: Brief, personalize: bool = True) -> Issue:
    return Issue(path=Path("issues/test"), slug="test", subject="Test", briefs=briefs,
                 personalize=personalize)


SUMMIT = brief("summit", "diplomacy", "east-asia")
MISSILE = brief("missile", "security")
TARIFF = brief("tariff", "economy")
DRILLS = brief("drills", "security", "diplomacy")
CHIPS = brief("chips", "technology", "economy")
# Positions 1..5, so ids read off the order above.
WEEK = issue(SUMMIT, MISSILE, TARIFF, DRILLS, CHIPS)


def ids(variants: dict[str, Variant]) -> list[str]:
    return list(variants)


# ---- Matching ---------------------------------------------------------------------------


@pytest.mark.parametrize("topics, expected", [
    (["security"], (MISSILE, DRILLS)),
    (["diplomacy"], (SUMMIT, DRILLS)),
    (["economy", "security"], (MISSILE, TARIFF, DRILLS, CHIPS)),
    (["security", "economy"], (MISSILE, TARIFF, DRILLS, CHIPS)),  # the issue's order
    (["security", "security"], (MISSILE, DRILLS)),
    (["east-asia", "diplomacy", "security", "economy", "technology"],
     (SUMMIT, MISSILE, TARIFF, DRILLS, CHIPS)),
])
def test_a_subscriber_gets_every_brief_sharing_a_topic_in_issue_order(topics, expected):
    assert matched_briefs(WEEK, topics) == expected


@pytest.mark.parametrize("topics", [[], ["culture"], ("culture", "sport")])
def test_a_mix_sharing_no_topic_gets_nothing(topics):
    assert matched_briefs(WEEK, topics) == ()


def test_topics_are_matched_whatever_iterable_brings_them():
    assert matched_briefs(WEEK, iter(["technology"])) == (CHIPS,)
    assert matched_briefs(WEEK, frozenset({"technology"})) == (CHIPS,)


@pytest.mark.parametrize("topics", [[], ["culture"], ["security"], ["economy", "diplomacy"]])
def test_an_issue_not_personalized_gives_everyone_every_brief(topics):
    everyone = dataclasses.replace(WEEK, personalize=False)
    assert matched_briefs(everyone, topics) == WEEK.briefs


# ---- Naming -----------------------------------------------------------------------------


@pytest.mark.parametrize("briefs, expected", [
    ((SUMMIT,), "b1"),
    ((CHIPS,), "b5"),
    ((MISSILE, DRILLS), "b2-4"),
    ((SUMMIT, MISSILE, TARIFF, DRILLS, CHIPS), "b1-2-3-4-5"),
])
def test_a_variant_is_named_by_the_1_based_positions_of_its_briefs(briefs, expected):
    variant = variant_for(WEEK, briefs)
    assert variant.id == expected
    assert variant.briefs == briefs


def test_a_variant_lists_its_topics_in_first_seen_order():
    variant = variant_for(WEEK, (SUMMIT, DRILLS, CHIPS))
    assert variant.topics == ("diplomacy", "east-asia", "security", "technology", "economy")


def test_the_id_follows_the_issue_not_the_brief_values():
    # The same brief at another position makes another id: ids are positions, so a reordered
    # issue renames its variants.
    reordered = issue(CHIPS, TARIFF, DRILLS, MISSILE, SUMMIT)
    assert variant_for(reordered, (MISSILE, DRILLS)).id == "b3-4"


# ---- Planning ---------------------------------------------------------------------------


def test_mixes_matching_the_same_briefs_share_one_variant():
    mixes = [["security"], ["security", "culture"], ["culture", "security"]]
    variants = plan_variants(WEEK, mixes)
    assert ids(variants) == ["b2-4"]
    assert variants["b2-4"].briefs == (MISSILE, DRILLS)


def test_a_mix_matching_nothing_needs_no_variant():
    assert plan_variants(WEEK, [[], ["culture"], ["sport", "weather"]]) == {}
    assert ids(plan_variants(WEEK, [["culture"], ["technology"]])) == ["b5"]


def test_variants_come_fullest_first_then_by_id():
    mixes = [["technology"], ["east-asia"], ["security"], ["economy"],
             ["diplomacy", "economy"], ["east-asia", "security", "economy", "technology"]]
    # 5, 4, 2, 2, 1 and 1 briefs; equal counts in the order of their ids.
    assert ids(plan_variants(WEEK, mixes)) == ["b1-2-3-4-5", "b1-3-4-5", "b2-4", "b3-5",
                                                "b1", "b5"]


def test_the_order_does_not_depend_on_the_order_of_the_mixes():
    mixes = [["technology"], ["security"], ["diplomacy", "economy"], ["east-asia"]]
    assert ids(plan_variants(WEEK, mixes)) == ids(plan_variants(WEEK, reversed(mixes)))


def test_an_issue_not_personalized_needs_one_variant_whoever_reads_it():
    everyone = dataclasses.replace(WEEK, personalize=False)
    variants = plan_variants(everyone, [["security"], [], ["culture"], ["economy"]])
    assert ids(variants) == ["b1-2-3-4-5"]
    assert ids(possible_variants(everyone)) == ["b1-2-3-4-5"]


# ---- Every possible variant -------------------------------------------------------------


def test_three_topics_one_brief_each_give_every_subset():
    trio = issue(brief("a", "security"), brief("b", "economy"), brief("c", "diplomacy"))
    assert ids(possible_variants(trio)) == ["b1-2-3", "b1-2", "b1-3", "b2-3", "b1", "b2", "b3"]


def test_overlapping_topics_give_only_the_variants_a_reader_can_get():
    # Whoever follows security gets both security briefs, so brief 1 alone never goes out.
    trio = issue(brief("a", "security"), brief("b", "security", "economy"),
                 brief("c", "diplomacy"))
    assert ids(possible_variants(trio)) == ["b1-2-3", "b1-2", "b2-3", "b2", "b3"]


def test_every_mix_a_subscriber_can_follow_has_its_variant_among_the_possible_ones():
    possible = possible_variants(WEEK)
    known = [*WEEK.topics, "culture"]
    for size in range(len(known) + 1):
        for mix in combinations(known, size):
            planned = plan_variants(WEEK, [mix])
            assert set(planned) <= set(possible), mix
            for variant_id, variant in planned.items():
                assert possible[variant_id] == variant


def test_variants_are_labelled_by_the_smallest_topic_mix_that_gets_them(settings):
    from dispatch.compose.issues import load_issue
    from dispatch.compose.variants import possible_variants, variant_label
    from tests.helpers import EXAMPLE_ISSUE

    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    named = {vid: variant_label(issue, v, settings.topics)
             for vid, v in possible_variants(issue).items()}
    assert named["b3-5"] == "Security"
    assert named["b1-2-3"] == "East Asia"
    assert named["b1-2-3-5"] == "East Asia + Security"
    assert named["b1-2-3-4-5"] == "East Asia + Diplomacy + Security"
    assert len(set(named.values())) == len(named)  # one name per variant
