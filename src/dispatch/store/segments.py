"""Segments and topic mixes as SQL over subscribers: counted by the database, never a
Python loop over people."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from itertools import groupby

from sqlalchemy import Engine, and_, exists, false, func, select, true
from sqlalchemy.sql.elements import ColumnElement

from dispatch.config import Segment
from dispatch.states import SubscriberStatus
from dispatch.store import topic_masks
from dispatch.store.schema import subscriber_topics, subscribers, suppressions


def follows(topics: Iterable[str]) -> ColumnElement[bool]:
    return exists().where(and_(subscriber_topics.c.subscriber_id == subscribers.c.id,
                               subscriber_topics.c.topic.in_(list(topics))))


def segment_condition(segment: Segment, values: Mapping[str, int]) -> ColumnElement[bool]:
    """The segment as a condition on subscribers.topic_mask (never a Python loop over
    people, nor a lookup per topic). `values`: topic_masks.bits of the segment's topics (a
    topic without a bit is followed by nobody)."""
    mask = subscribers.c.topic_mask
    parts: list[ColumnElement[bool]] = []
    if segment.topics:
        wanted = topic_masks.mask_of(values, (t for t in segment.topics if t in values))
        if segment.match == "all" and any(t not in values for t in segment.topics):
            parts.append(false())
        elif segment.match == "all":
            parts.append(mask.bitwise_and(wanted) == wanted)
        else:
            parts.append(mask.bitwise_and(wanted) != 0)
    if segment.exclude:
        unwanted = topic_masks.mask_of(values, (t for t in segment.exclude if t in values))
        parts.append(mask.bitwise_and(unwanted) == 0)
    return and_(*parts) if parts else true()


def segment_topics(segments: Iterable[Segment]) -> set[str]:
    return {t for segment in segments for t in (*segment.topics, *segment.exclude)}


def suppressed() -> ColumnElement[bool]:
    """The subscriber's address is on the suppression list (an index probe per subscriber)."""
    return exists().where(suppressions.c.email_hash == subscribers.c.email_hash)


def segment_counts(engine: Engine, segments: Mapping[str, Segment]) -> dict[str, int]:
    """Active subscribers in each segment, counted by the database."""
    with engine.connect() as conn:
        values = topic_masks.bits(conn, segment_topics(segments.values()))
        return {name: conn.execute(select(func.count()).select_from(subscribers).where(and_(
                    subscribers.c.status == SubscriberStatus.ACTIVE,
                    segment_condition(segment, values)))).scalar_one()
                for name, segment in segments.items()}


def active_topic_mixes(engine: Engine) -> dict[frozenset[str], int]:
    """How many active subscribers follow each distinct set of topics (read-only)."""
    query = (select(subscribers.c.id, subscriber_topics.c.topic)
             .join(subscriber_topics, subscriber_topics.c.subscriber_id == subscribers.c.id,
                   isouter=True)
             .where(subscribers.c.status == SubscriberStatus.ACTIVE).order_by(subscribers.c.id))
    with engine.connect() as conn:
        rows = conn.execute(query)
        return Counter(frozenset(topic for _, topic in group if topic)
                       for _, group in groupby(rows, key=lambda row: row[0]))


