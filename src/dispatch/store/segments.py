"""Segments and topic mixes as SQL over subscribers: counted by the database, never a
Python loop over people."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from itertools import groupby
from typing import Any

from sqlalchemy import Engine, and_, case, exists, func, literal, select
from sqlalchemy.sql.elements import ColumnElement

from dispatch.config import Segment
from dispatch.states import SubscriberStatus
from dispatch.store.schema import subscriber_topics, subscribers, suppressions


def follows(topics: Iterable[str]) -> ColumnElement[bool]:
    return exists().where(and_(subscriber_topics.c.subscriber_id == subscribers.c.id,
                               subscriber_topics.c.topic.in_(list(topics))))


def segment_condition(segment: Segment) -> ColumnElement[bool]:
    """The segment as a SQL condition on subscribers (never a Python loop over people)."""
    if segment.match == "all":
        parts = [follows([topic]) for topic in segment.topics]
    else:
        parts = [follows(segment.topics)] if segment.topics else []
    if segment.exclude:
        parts.append(~follows(segment.exclude))
    return and_(*parts) if parts else subscribers.c.id.is_not(None)


def suppressed() -> ColumnElement[bool]:
    """The subscriber's address is on the suppression list (an index probe per subscriber)."""
    return exists().where(suppressions.c.email_hash == subscribers.c.email_hash)


def topic_mask(bits: Mapping[str, int]) -> Any:
    """Per subscriber, the sum of the bits of the topics they follow (a bitwise OR: each
    topic is followed once; topics without a bit count 0); NULL for a subscriber with no
    topic at all. A correlated lookup on subscriber_topics' primary key."""
    bit = case(dict(bits), value=subscriber_topics.c.topic, else_=0) if bits else literal(0)
    return (select(func.sum(bit)).where(subscriber_topics.c.subscriber_id == subscribers.c.id)
            .scalar_subquery())


def segment_counts(engine: Engine, segments: Mapping[str, Segment]) -> dict[str, int]:
    """Active subscribers in each segment, counted by the database."""
    with engine.connect() as conn:
        return {name: conn.execute(select(func.count()).select_from(subscribers).where(and_(
                    subscribers.c.status == SubscriberStatus.ACTIVE,
                    segment_condition(segment)))).scalar_one()
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


