"""The launch over topic masks against a straightforward reference: on generated subscribers
(random topics written by every store path, statuses, suppressions) and random issues
(briefs' topics, segments, personalised or not), the plan and the outbox equal what a plain
query over subscriber_topics and suppressions, with compose's own matching per subscriber,
gives. On SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from datetime import UTC, datetime

import pytest
from sqlalchemy import and_, exists, insert, or_, select

from dispatch.audience import csvio
from dispatch.compose.issues import load_issue
from dispatch.compose.variants import matched_briefs, variant_for
from dispatch.config import Segment
from dispatch.store import imports
from dispatch.store import subscribers as subs
from dispatch.store.launch import NO_MATCH, NO_TOPICS, launch, plan_audience
from dispatch.store.schema import outbox, subscriber_topics, subscribers, suppressions
from dispatch.store.segments import follows
from tests.helpers import EXAMPLE_ISSUE

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
STATUSES = ["active"] * 6 + ["unsubscribed", "bounced", "pending"]


def some(rng: random.Random, items: list[str], most: int | None = None) -> list[str]:
    return rng.sample(items, rng.randint(0, len(items) if most is None else most))


def generate(engine, settings, rng: random.Random) -> None:
    topics = list(settings.topics)
    known = settings.topics
    people = [f"p{i}@example.com" for i in range(60)]
    for email in people[:40]:
        subs.add(engine, email, name=None, topics=some(rng, topics), timezone=None,
                 known_topics=known, now=NOW, status=rng.choice(STATUSES))
    # The import's two paths: new subscribers, and topics merged into existing ones.
    rows = [csvio.Row(line=i + 2, email=e, key=e, name=None, topics=some(rng, topics),
                      timezone=None) for i, e in enumerate(rng.sample(people, 35))]
    imports.import_rows(engine, rows, NOW)
    for email in rng.sample(people[:40], 12):
        subs.update_subscriber(engine, email, now=NOW, known_topics=known,
                               topics=some(rng, topics))
    with engine.begin() as conn:  # active yet on the list: the list wins
        listed = {h for h, in conn.execute(select(suppressions.c.email_hash))}
        hashes = conn.execute(select(subscribers.c.email_hash)).scalars().all()
        for digest in set(rng.sample(hashes, 8)) - listed:
            conn.execute(insert(suppressions).values(email_hash=digest, reason="complained",
                                                     created_at=NOW))


def random_issue(settings, rng: random.Random):
    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    topics = list(settings.topics)
    briefs = tuple(dataclasses.replace(b, topics=tuple(some(rng, topics, 3)))
                   for b in issue.briefs)
    segments = {f"s{i}": Segment(name=f"s{i}", topics=tuple(some(rng, topics, 3)),
                                 match=rng.choice(["any", "all"]),
                                 exclude=tuple(some(rng, topics, 2)))
                for i in range(3)}
    chosen = tuple(rng.sample(sorted(segments), rng.randint(0, 2)))
    issue = dataclasses.replace(issue, briefs=briefs, segments=chosen,
                                personalize=rng.random() < 0.8)
    return issue, settings.model_copy(update={"segments": segments})


def reference(engine, issue, settings) -> tuple[Counter[str], Counter[str], dict[str, str]]:
    """Per variant, per skip reason, and email -> variant, by plain queries."""
    def condition(segment: Segment):
        if segment.match == "all":
            parts = [follows([t]) for t in segment.topics]
        else:
            parts = [follows(segment.topics)] if segment.topics else []
        if segment.exclude:
            parts.append(~follows(segment.exclude))
        return and_(*parts) if parts else subscribers.c.id.is_not(None)

    inside = (or_(*(condition(settings.segments[n]) for n in issue.segments))
              if issue.segments else subscribers.c.id.is_not(None))
    on_list = exists().where(suppressions.c.email_hash == subscribers.c.email_hash)
    with engine.connect() as conn:
        people = conn.execute(select(subscribers.c.id, subscribers.c.email,
                                     subscribers.c.status, inside, on_list)).all()
        followed: dict[int, list[str]] = {}
        for sid, topic in conn.execute(select(subscriber_topics.c.subscriber_id,
                                              subscriber_topics.c.topic)):
            followed.setdefault(sid, []).append(topic)
    per_variant: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    rows: dict[str, str] = {}
    for sid, email, status, is_inside, is_listed in people:
        if status != "active":
            skipped[f"status {status}"] += 1
        elif not is_inside:
            skipped["outside the issue's segments"] += 1
        elif is_listed:
            skipped["suppressed"] += 1
        elif not (briefs := matched_briefs(issue, followed.get(sid, []))):
            skipped[NO_MATCH if followed.get(sid) else NO_TOPICS] += 1
        else:
            rows[email] = variant_for(issue, briefs).id
            per_variant[rows[email]] += 1
    return per_variant, skipped, rows


@pytest.mark.parametrize("seed", range(4))
def test_the_plan_and_the_outbox_equal_the_reference(engine, settings, seed):
    rng = random.Random(seed)
    generate(engine, settings, rng)
    for round_ in range(3):
        issue, wired = random_issue(settings, rng)
        issue = dataclasses.replace(issue, slug=f"{issue.slug}-{round_}")
        per_variant, skipped, rows = reference(engine, issue, wired)
        audience = plan_audience(engine, issue, wired)
        assert (audience.per_variant, audience.skipped) == (per_variant, skipped), issue
        if not audience.recipients:
            continue
        assert launch(engine, issue, audience,
                      {vid: ("<p>x</p>", "x") for vid in audience.variants}, NOW)
        with engine.connect() as conn:
            got = dict(conn.execute(select(subscribers.c.email, outbox.c.variant)
                                    .join(subscribers, subscribers.c.id == outbox.c.subscriber_id)
                                    .where(outbox.c.issue == issue.slug)).all())
        assert got == rows
