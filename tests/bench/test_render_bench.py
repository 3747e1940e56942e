"""Rendering speed: one variant of a ten-brief issue, and one recipient's substitution.

Run: pytest -m bench -s tests/bench/test_render_bench.py
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from datetime import UTC, datetime

import pytest

from dispatch.compose.issues import load_issue
from dispatch.compose.message import Recipient, build_template, message_id, personalize
from dispatch.compose.render import render_variant
from dispatch.compose.variants import variant_for
from tests.helpers import EXAMPLE_ISSUE

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


@pytest.mark.bench
def test_render_and_substitution_speed(settings):
    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    # Ten briefs: the example's five, each twice under its own file name.
    briefs = tuple(issue.briefs) + tuple(
        dataclasses.replace(b, path=b.path.with_name("copy-" + b.path.name)) for b in issue.briefs)
    ten = dataclasses.replace(issue, briefs=briefs)
    variant = variant_for(ten, ten.briefs)
    render_variant(ten, variant, settings, NOW)  # warm the template cache

    timings = []
    for _ in range(20):
        start = time.perf_counter()
        rendered = render_variant(ten, variant, settings, NOW)
        timings.append(time.perf_counter() - start)
    render_ms = statistics.median(timings) * 1000

    template = build_template(rendered, ten, settings)
    people = [Recipient(email=f"reader{i}@example.com", name=f"Reader {i}",
                        unsubscribe_url=f"https://news.example.org/u/token{i:08d}",
                        preferences_url=f"https://news.example.org/p/token{i:08d}",
                        view_url=f"https://news.example.org/a/{ten.slug}/{variant.id}",
                        message_id=message_id(ten.slug, str(i), settings))
              for i in range(20_000)]
    start = time.perf_counter()
    total = 0
    for person in people:
        total += len(personalize(template, person, NOW, settings))
    per_message_us = (time.perf_counter() - start) / len(people) * 1e6

    print(f"\nrender one variant of a {len(briefs)}-brief issue: median {render_ms:.1f} ms "
          f"over {len(timings)} runs ({len(rendered.html) / 1024:.1f} KB HTML)")
    print(f"substitute one recipient's fields: {per_message_us:.1f} µs per message "
          f"({len(people):,} messages, {total / len(people) / 1024:.1f} KB each)")
    assert total > 0
