"""Each subscriber's topics as one integer beside subscriber_topics, so a launch or a segment
reads one column instead of a lookup per topic.

The invariant: subscribers.topic_mask is the OR of topic_bits.bit (as 1 << bit) over the
subscriber's subscriber_topics rows. Every write of subscriber_topics goes through
`set_topics` or `add_topics` here (the CSV import's bulk path writes new subscribers' masks
with `mask_of`), in the same transaction as the rows. A topic gets its bit the first time
anyone follows it; bits stay put, so stored masks never need rewriting, and a topic without
a bit is followed by nobody. 63 bits: when they run out, the bits of topics nobody follows
any more are taken back (no mask holds them).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from sqlalchemy import Connection, bindparam, delete, exists, insert, select, update

from dispatch.errors import DispatchError, Problem
from dispatch.store.schema import subscriber_topics, subscribers, topic_bits

MAX_BITS = 63  # a signed 64-bit column


def bits(conn: Connection, topics: Iterable[str]) -> dict[str, int]:
    """The bit value (1 << bit) of each of `topics` that anyone follows; others are absent.
    Read with a share lock on PostgreSQL, so a bit in use is never taken back under a
    transaction that is writing masks with it."""
    wanted = sorted(set(topics))
    if not wanted:
        return {}
    query = select(topic_bits.c.topic, topic_bits.c.bit).where(topic_bits.c.topic.in_(wanted))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(read=True)
    return {topic: 1 << bit for topic, bit in conn.execute(query)}


def assign(conn: Connection, topics: Iterable[str]) -> dict[str, int]:
    """`bits` for every one of `topics`, giving new topics a free bit."""
    wanted = set(topics)
    found = bits(conn, wanted)
    if wanted <= found.keys():
        return found
    if conn.dialect.name == "postgresql":
        # Bits are handed out one transaction at a time (rare: a topic's first follower).
        conn.exec_driver_sql("LOCK TABLE topic_bits IN SHARE ROW EXCLUSIVE MODE")
    taken = set(conn.execute(select(topic_bits.c.bit)).scalars())
    known = set(conn.execute(select(topic_bits.c.topic)).scalars())
    missing = sorted(wanted - known)
    if len(taken) + len(missing) > MAX_BITS:
        # Topics nobody follows hold bits no mask has: take them back.
        conn.execute(delete(topic_bits).where(~exists().where(
            subscriber_topics.c.topic == topic_bits.c.topic)))
        taken = set(conn.execute(select(topic_bits.c.bit)).scalars())
        if len(taken) + len(missing) > MAX_BITS:
            raise DispatchError(Problem("topics", f"subscribers can follow at most {MAX_BITS} "
                                                  "different topics at once"))
    free = (b for b in range(MAX_BITS) if b not in taken)
    conn.execute(insert(topic_bits), [{"topic": t, "bit": next(free)} for t in missing])
    return bits(conn, wanted)


def mask_of(topic_values: Mapping[str, int], topics: Iterable[str]) -> int:
    mask = 0
    for topic in topics:
        mask |= topic_values[topic]
    return mask


def set_topics(conn: Connection, subscriber_id: int, topics: Iterable[str]) -> None:
    """Replace a subscriber's topics (rows and mask)."""
    chosen = list(dict.fromkeys(topics))
    values = assign(conn, chosen)
    conn.execute(delete(subscriber_topics).where(subscriber_topics.c.subscriber_id
                                                 == subscriber_id))
    if chosen:
        conn.execute(insert(subscriber_topics),
                     [{"subscriber_id": subscriber_id, "topic": t} for t in chosen])
    conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id)
                 .values(topic_mask=mask_of(values, chosen)))


def add_topics(conn: Connection, pairs: list[tuple[int, str]]) -> None:
    """Add (subscriber id, topic) rows none of which exists yet, and their bits to the masks."""
    if not pairs:
        return
    values = assign(conn, {topic for _, topic in pairs})
    added: dict[int, int] = defaultdict(int)
    for sid, topic in pairs:
        added[sid] |= values[topic]
    conn.execute(insert(subscriber_topics),
                 [{"subscriber_id": sid, "topic": topic} for sid, topic in pairs])
    conn.execute(update(subscribers).where(subscribers.c.id == bindparam("sid"))
                 .values(topic_mask=subscribers.c.topic_mask.bitwise_or(bindparam("bits"))),
                 [{"sid": sid, "bits": mask} for sid, mask in added.items()])


def refresh_all(conn: Connection) -> None:
    """Recompute every mask from subscriber_topics, giving every followed topic a bit: for
    rows written around the store (benchmark set-up; migration 0014 does the same)."""
    assign(conn, conn.execute(select(subscriber_topics.c.topic).distinct()).scalars())
    conn.exec_driver_sql(
        "UPDATE subscribers SET topic_mask = COALESCE((SELECT SUM(CAST(1 AS BIGINT) << b.bit) "
        "FROM subscriber_topics t JOIN topic_bits b ON b.topic = t.topic "
        "WHERE t.subscriber_id = subscribers.id), 0)")
