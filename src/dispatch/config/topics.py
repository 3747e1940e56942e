"""Topic keys: declared in config.toml, chosen by subscribers, carried by briefs. One check
for every place that takes topics from outside (CLI options, CSV rows, web forms)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from dispatch.config.suggest import did_you_mean
from dispatch.errors import DispatchError, Problem


class Labelled(Protocol):
    """A declared topic as these functions read it (config.schema.Topic)."""

    @property
    def label(self) -> str: ...


def topic_labels(known: Mapping[str, Labelled], keys: Iterable[str] | None = None) -> list[str]:
    """The display labels of `keys`, in their order (every declared topic in config.toml's
    order when None): the one place a topic key becomes the name readers and editors see.
    A key no longer declared is left out."""
    if keys is None:
        return [topic.label for topic in known.values()]
    return [known[key].label for key in keys if key in known]


def followed_labels(known: Mapping[str, Labelled], keys: Iterable[str]) -> list[str]:
    """A reader's topics by label, in config.toml's order (a subscriber's are stored
    unordered)."""
    wanted = set(keys)
    return topic_labels(known, [key for key in known if key in wanted])


def topic_label(known: Mapping[str, Labelled], key: str) -> str:
    """One topic's label; the key itself for one no longer declared."""
    topic = known.get(key)
    return topic.label if topic else key


def unknown_topics(chosen: Iterable[str], known: Mapping[str, object]) -> list[str]:
    return [t for t in chosen if t not in known]


def check_topics(chosen: Iterable[str], known: Mapping[str, object], where: str = "topics"
                 ) -> list[str]:
    """The chosen topics trimmed and de-duplicated in order; DispatchError naming `where`
    (the field or option the caller read them from) when any is not declared."""
    topics = list(dict.fromkeys(t.strip() for t in chosen if t.strip()))
    unknown = unknown_topics(topics, known)
    if unknown:
        named = ", ".join(f"{t}{did_you_mean(t, known)}" for t in unknown)
        raise DispatchError(Problem(where, f"unknown topic(s) {named} "
                                           f"(declared: {', '.join(known) or 'none'})"))
    return topics
