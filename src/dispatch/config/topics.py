"""Topic keys: declared in config.toml, chosen by subscribers, carried by briefs. One check
for every place that takes topics from outside (CLI options, CSV rows, web forms)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from dispatch.errors import DispatchError, Problem


def unknown_topics(chosen: Iterable[str], known: Mapping[str, object]) -> list[str]:
    return [t for t in chosen if t not in known]


def check_topics(chosen: Iterable[str], known: Mapping[str, object], where: str = "topics"
                 ) -> list[str]:
    """The chosen topics trimmed and de-duplicated in order; DispatchError naming `where`
    (the field or option the caller read them from) when any is not declared."""
    topics = list(dict.fromkeys(t.strip() for t in chosen if t.strip()))
    unknown = unknown_topics(topics, known)
    if unknown:
        raise DispatchError(Problem(where, f"unknown topic(s) {', '.join(unknown)} "
                                           f"(declared: {', '.join(known) or 'none'})"))
    return topics
