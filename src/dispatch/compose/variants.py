"""Topic matching and variant planning: which briefs each topic mix receives.

A variant is one distinct set of matched briefs. Everyone whose topics match the same briefs
shares a variant, so an issue is rendered once per variant, never once per person.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations

from dispatch.compose.models import Brief, Issue, topics_of


@dataclass(frozen=True)
class Variant:
    id: str  # stable: the 1-based positions of its briefs in the issue, e.g. "b1-3-4"
    briefs: tuple[Brief, ...]

    @property
    def topics(self) -> tuple[str, ...]:
        return topics_of(self.briefs)


def matched_briefs(issue: Issue, topics: Iterable[str]) -> tuple[Brief, ...]:
    """The briefs a subscriber following `topics` receives (all of them when not personalized)."""
    if not issue.personalize:
        return issue.briefs
    wanted = set(topics)
    return tuple(b for b in issue.briefs if wanted.intersection(b.topics))


def variant_for(issue: Issue, briefs: tuple[Brief, ...]) -> Variant:
    positions = [i + 1 for i, b in enumerate(issue.briefs) if b in briefs]
    return Variant(id="b" + "-".join(map(str, positions)), briefs=briefs)


def variant_by_id(issue: Issue, vid: str) -> Variant:
    """The variant an id names (the inverse of variant_for); ValueError for an id that names
    no set of this issue's briefs."""
    try:
        positions = [int(p) for p in vid.removeprefix("b").split("-")]
    except ValueError:
        raise ValueError(f"not a variant id: {vid!r}") from None
    if not vid.startswith("b") or not positions or any(
            not 1 <= p <= len(issue.briefs) for p in positions) or positions != sorted(
            set(positions)):
        raise ValueError(f"not a variant of {issue.slug}: {vid!r}")
    return variant_for(issue, tuple(issue.briefs[p - 1] for p in positions))


def plan_variants(issue: Issue, topic_sets: Iterable[Iterable[str]]) -> dict[str, Variant]:
    """The distinct variants the given topic mixes need, keyed by id; a mix that matches no
    brief needs none (that subscriber gets no email)."""
    variants: dict[str, Variant] = {}
    for topics in topic_sets:
        briefs = matched_briefs(issue, topics)
        if briefs:
            variant = variant_for(issue, briefs)
            variants.setdefault(variant.id, variant)
    return dict(sorted(variants.items(), key=lambda kv: (-len(kv[1].briefs), kv[0])))


def possible_variants(issue: Issue) -> dict[str, Variant]:
    """Every variant some topic mix can produce: each subset of the issue's topics."""
    topics = issue.topics
    mixes = (combo for size in range(1, len(topics) + 1) for combo in combinations(topics, size))
    return plan_variants(issue, mixes)



def variant_label(issue: Issue, variant: Variant, labels: Mapping[str, str]) -> str:
    """A variant as an editor reads it: the smallest topic mix whose readers get it, by the
    topics' display names ("East Asia + Security"); unique per variant, since a mix decides
    its variant. The id (b1-3) stays in file names and URLs. `labels`: topic key → label."""
    if not issue.personalize:
        return "everyone"
    topics = issue.topics
    for size in range(1, len(topics) + 1):
        for mix in combinations(topics, size):
            if matched_briefs(issue, mix) == variant.briefs:
                return " + ".join(labels.get(topic, topic) for topic in mix)
    return " + ".join(labels.get(topic, topic) for topic in variant.topics)
