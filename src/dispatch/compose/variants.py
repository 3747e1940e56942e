"""Topic matching and variant planning: which briefs each topic mix receives.

A variant is one distinct set of matched briefs. Everyone whose topics match the same briefs
shares a variant, so an issue is rendered once per variant, never once per person.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations

from dispatch.compose.models import Brief, Issue, topics_of
from dispatch.config.topics import Labelled, topic_label

# A variant's id: ID_PREFIX and the 1-based positions of its briefs in the issue, ascending,
# joined by ID_SEPARATOR ("b1-3-4": briefs 1, 3 and 4). Stable while the issue's briefs keep
# their order; the launch computes the same ids in SQL (store.outbox) from these two.
ID_PREFIX = "b"
ID_SEPARATOR = "-"


def variant_id(positions: Iterable[int]) -> str:
    return ID_PREFIX + ID_SEPARATOR.join(map(str, positions))


def brief_positions(vid: str) -> list[int]:
    """The 1-based brief positions a variant id names; ValueError for a malformed id."""
    if not vid.startswith(ID_PREFIX):
        raise ValueError(f"not a variant id: {vid!r}")
    try:
        positions = [int(p) for p in vid.removeprefix(ID_PREFIX).split(ID_SEPARATOR)]
    except ValueError:
        raise ValueError(f"not a variant id: {vid!r}") from None
    if positions != sorted(set(positions)) or any(p < 1 for p in positions):
        raise ValueError(f"not a variant id: {vid!r}")
    return positions


def fullest_first(vid: str) -> tuple[int, str]:
    """A sort key putting the variants with the most briefs first, then by id."""
    return (-(vid.count(ID_SEPARATOR) + 1), vid)


@dataclass(frozen=True)
class Variant:
    id: str  # variant_id of its briefs' positions, e.g. "b1-3-4"
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
    return Variant(id=variant_id(positions), briefs=briefs)


def variant_by_id(issue: Issue, vid: str) -> Variant:
    """The variant an id names (the inverse of variant_for); ValueError for an id that names
    no set of this issue's briefs."""
    try:
        positions = brief_positions(vid)
    except ValueError:
        raise ValueError(f"not a variant of {issue.slug}: {vid!r}") from None
    if any(p > len(issue.briefs) for p in positions):
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



def smallest_mix(issue: Issue, variant: Variant) -> tuple[str, ...]:
    """The smallest topic mix whose readers get this variant (its briefs' topics when no mix
    does): the sample reader of previews and test copies follows it."""
    topics = issue.topics
    for size in range(1, len(topics) + 1):
        for mix in combinations(topics, size):
            if matched_briefs(issue, mix) == variant.briefs:
                return mix
    return variant.topics


def variant_label(issue: Issue, variant: Variant, known: Mapping[str, Labelled]) -> str:
    """A variant as an editor reads it: its smallest topic mix by the topics' display names
    ("East Asia + Security"); unique per variant, since a mix decides its variant. The id
    (b1-3) stays in file names and URLs. `known`: the declared topics (settings.topics)."""
    if not issue.personalize:
        return "everyone"
    return " + ".join(topic_label(known, topic) for topic in smallest_mix(issue, variant))
