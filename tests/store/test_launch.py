"""The launch as set-based SQL: the database picks the audience and each row's variant, on a
real SQLite file and a real PostgreSQL server. Every row is checked against compose's own
matching (matched_briefs, variant_for) done in Python per subscriber."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select

from dispatch.audience.addresses import email_hash
from dispatch.compose.issues import load_issue
from dispatch.compose.variants import matched_briefs, variant_for
from dispatch.store import subscribers as subs
from dispatch.store.launch import NO_MATCH, NO_TOPICS, launch, plan_audience
from dispatch.store.schema import outbox, send_variants, sends, suppressions
from tests.helpers import EXAMPLE_ISSUE

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def rendered_stub(variants) -> dict[str, tuple[str, str]]:
    return {vid: (f"<p>{vid}</p>", vid) for vid in variants}


def every_mix(engine, settings, issue):
    """One active subscriber per subset of the config's topics (the empty one included), plus
    one with a topic no brief carries; their expected variant ids, by email."""
    expected: dict[str, str | None] = {}
    topics = list(settings.topics)
    for size in range(len(topics) + 1):
        for combo in itertools.combinations(topics, size):
            email = f"mix-{'-'.join(combo) or 'none'}@example.com"
            subs.add(engine, email, name=None, topics=list(combo), timezone=None,
                     known_topics=settings.topics, now=NOW)
            briefs = matched_briefs(issue, combo)
            expected[email] = variant_for(issue, briefs).id if briefs else None
    return expected


def outbox_variants(engine, slug) -> dict[str, str]:
    from dispatch.store.schema import subscribers
    with engine.connect() as conn:
        return dict(conn.execute(select(subscribers.c.email, outbox.c.variant)
                                 .join(subscribers, subscribers.c.id == outbox.c.subscriber_id)
                                 .where(outbox.c.issue == slug)).all())


def test_each_row_gets_the_variant_compose_would_pick(engine, settings):
    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    expected = every_mix(engine, settings, issue)
    subs.add(engine, "gone@example.com", name=None, topics=["security"], timezone=None,
             known_topics=settings.topics, now=NOW, status="unsubscribed")
    audience = plan_audience(engine, issue, settings)
    reached = {email: vid for email, vid in expected.items() if vid}
    assert audience.recipients == len(reached)
    assert audience.skipped[NO_TOPICS] == 1  # counted with its reason, not silently left out
    assert audience.skipped["status unsubscribed"] == 1
    assert set(audience.variants) == set(reached.values())
    assert launch(engine, issue, audience, rendered_stub(audience.variants), NOW)
    assert outbox_variants(engine, issue.slug) == reached
    with engine.connect() as conn:
        stored = set(conn.execute(select(send_variants.c.variant)).scalars())
        recipients = conn.execute(select(sends.c.recipients)).scalar_one()
    assert stored == set(reached.values()) and recipients == len(reached)


def test_a_topic_no_brief_carries_is_no_match_and_an_unpersonalised_issue_reaches_all(
        engine, settings):
    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    carried = {t for b in issue.briefs for t in b.topics}
    spare = [t for t in settings.topics if t not in carried]
    briefs = tuple(dataclasses.replace(b, topics=tuple(t for t in b.topics if t != "economy"))
                   for b in issue.briefs)
    narrow = dataclasses.replace(issue, briefs=tuple(b for b in briefs if b.topics))
    subs.add(engine, "economist@example.com", name=None, topics=["economy", *spare],
             timezone=None, known_topics=settings.topics, now=NOW)
    subs.add(engine, "nobody@example.com", name=None, topics=[], timezone=None,
             known_topics=settings.topics, now=NOW)
    audience = plan_audience(engine, narrow, settings)
    assert audience.recipients == 0
    assert audience.skipped == {NO_MATCH: 1, NO_TOPICS: 1}
    everyone = dataclasses.replace(issue, personalize=False)
    audience = plan_audience(engine, everyone, settings)
    assert audience.per_variant == {variant_for(issue, issue.briefs).id: 2}
    assert launch(engine, everyone, audience, rendered_stub(audience.variants), NOW)
    assert set(outbox_variants(engine, issue.slug).values()) == {
        variant_for(issue, issue.briefs).id}


def test_suppressed_active_subscribers_and_segments_are_left_out(engine, settings):
    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    for name in ("ana", "bo", "cy"):
        subs.add(engine, f"{name}@example.com", name=None, topics=["east-asia"], timezone=None,
                 known_topics=settings.topics, now=NOW)
    subs.add(engine, "sec@example.com", name=None, topics=["security"], timezone=None,
             known_topics=settings.topics, now=NOW)
    with engine.begin() as conn:  # active yet on the list: the list wins
        conn.execute(insert(suppressions).values(email_hash=email_hash("bo@example.com"),
                                                 reason="complained", created_at=NOW))
    asia = dataclasses.replace(issue, segments=("asia-watchers",))
    audience = plan_audience(engine, asia, settings)
    assert audience.skipped == {"suppressed": 1, "outside the issue's segments": 1}
    assert launch(engine, asia, audience, rendered_stub(audience.variants), NOW)
    assert set(outbox_variants(engine, issue.slug)) == {"ana@example.com", "cy@example.com"}


def test_an_unforeseen_variant_is_rendered_at_launch_and_zones_get_their_release(
        engine, settings):
    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    subs.add(engine, "seoul@example.com", name=None, topics=["east-asia"],
             timezone="Asia/Seoul", known_topics=settings.topics, now=NOW)
    subs.add(engine, "plain@example.com", name=None, topics=["east-asia"], timezone=None,
             known_topics=settings.topics, now=NOW)
    audience = plan_audience(engine, issue, settings)
    # Between the plan and the launch someone changes topics to a mix nobody had.
    subs.update_subscriber(engine, "plain@example.com", now=NOW,
                           known_topics=settings.topics, topics=["security"])
    asked: list[str] = []

    def render(variants):
        asked.extend(variants)
        return rendered_stub(variants)

    releases = {"Asia/Seoul": NOW + timedelta(hours=3), None: NOW + timedelta(hours=5)}
    assert launch(engine, issue, audience, rendered_stub(audience.variants), NOW,
                  render=render, release=releases.__getitem__)
    security = variant_for(issue, matched_briefs(issue, ["security"])).id
    assert asked == [security]
    assert outbox_variants(engine, issue.slug)["plain@example.com"] == security
    from dispatch.store.schema import subscribers
    with engine.connect() as conn:
        due = dict(conn.execute(select(subscribers.c.email, outbox.c.next_attempt_at)
                                .join(subscribers, subscribers.c.id == outbox.c.subscriber_id)
                                ).all())
        stored = set(conn.execute(select(send_variants.c.variant)).scalars())
    assert due == {"seoul@example.com": releases["Asia/Seoul"],
                   "plain@example.com": releases[None]}
    assert security in stored
