"""Constants and plain functions shared by test modules. Fixtures live in conftest.py; test
modules import from here, never from each other, so each can be read and run on its own."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from dispatch.audience.csvio import Row
from dispatch.compose.issues import load_issue
from dispatch.config import Settings, load_settings
from dispatch.devtools.demo import generate_subscribers
from dispatch.devtools.sink import Received, smtp_sink
from dispatch.store import imports
from dispatch.store.db import open_store

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT.parent / "shared" / "seeds"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXAMPLE_ISSUE = "2026-11-27-thaw"

BASE_PG_URL = os.environ.get("DISPATCH_TEST_PG_URL",
                             "postgresql+psycopg://dispatch:dispatch@127.0.0.1:5432/dispatch_test")
# Under pytest-xdist each worker empties and fills a database of its own (dispatch_test_gw0…),
# made on first use: two workers must never drop each other's tables.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
PG_URL = f"{BASE_PG_URL}_{_WORKER}" if _WORKER else BASE_PG_URL

# What prepare_project sets up: enough recipients that a send takes long enough to be
# interrupted, over a fixed number of SMTP connections.
PREPARED_RECIPIENTS = 1200
PREPARED_CONNECTIONS = 2


def seed_files() -> list[Path]:
    return sorted(SEEDS.glob("*.txt")) if SEEDS.is_dir() else []


needs_seeds = pytest.mark.skipif(not seed_files(), reason=f"seed texts not found in {SEEDS}")


def _create_database(url: str) -> None:
    """A worker's own database, made beside the base one if it is not there yet."""
    from sqlalchemy import create_engine, text
    name = url.rsplit("/", 1)[1]
    base = create_engine(BASE_PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with base.connect() as conn:
            if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                            {"n": name}).first() is None:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        base.dispose()


def reset_postgres(url: str) -> str | None:
    """Empty the test database; the reason it cannot be reached, or None."""
    from sqlalchemy import create_engine, text
    try:
        if url != BASE_PG_URL:
            _create_database(url)
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        engine.dispose()
    except Exception as exc:
        return f"PostgreSQL not reachable at {url.split('@')[-1]}: {type(exc).__name__}"
    return None


def eventually(condition: Callable[[], object], timeout: float = 5.0) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def run_cli(project: Path, *args: str, stdin: str | None = None
            ) -> subprocess.CompletedProcess[str]:
    """`dispatch ARGS` as an operator types it in the project folder."""
    return subprocess.run([sys.executable, "-m", "dispatch", *args], cwd=project, check=False,
                          capture_output=True, text=True, timeout=180, input=stdin)


def prepare_project(project: Path, port: int) -> list[str]:
    """Point the project's config.toml at an SMTP server on `port` with no retry wait, and
    import PREPARED_RECIPIENTS subscribers who all receive the example issue; their
    addresses."""
    config = project / "config.toml"
    text = config.read_text()
    text = re.sub(r"(?m)^port = \d+", f"port = {port}", text)
    text = re.sub(r"(?m)^connections = \d+", f"connections = {PREPARED_CONNECTIONS}", text)
    text = re.sub(r"(?m)^retry_backoff = \d+", "retry_backoff = 0", text)
    config.write_text(text)
    settings = load_settings(config)
    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    rows = generate_subscribers(settings, issue.topics, PREPARED_RECIPIENTS, seed=11)
    engine = open_store(settings.store.url)
    imports.import_rows(engine, rows, datetime.now(UTC))
    engine.dispose()
    return [r.email for r in rows]


def launch_example_once(engine: Engine, settings: Settings, now: datetime) -> str:
    """Launch the example issue unless it has a send already; its slug."""
    from dispatch.deliver.sending import launch_issue
    from dispatch.store.launch import plan_audience
    from dispatch.store.sends import get_send
    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    if get_send(engine, issue.slug) is None:
        assert launch_issue(engine, issue, plan_audience(engine, issue, settings), settings,
                            now)
    return issue.slug


def send_example_to_sink(engine: Engine, settings: Settings, now: datetime) -> list[Received]:
    """Launch the example issue and deliver it to an in-process sink: what arrived."""
    from dispatch.deliver.sending import run_worker
    from dispatch.deliver.transport import smtp_transport
    with smtp_sink() as (handler, port):
        wired = configure_delivery(settings, port)
        slug = launch_example_once(engine, wired, now)
        run_worker(engine, wired, smtp_transport(wired.smtp), issue=slug)
    return list(handler.received)


def outbox_rows(engine: Engine) -> dict[str, tuple[str, int, str | None]]:
    """email -> (state, attempts, reply) of every outbox row."""
    from sqlalchemy import select

    from dispatch.store.schema import outbox, subscribers
    with engine.connect() as conn:
        found = conn.execute(select(subscribers.c.email, outbox.c.state, outbox.c.attempts,
                                    outbox.c.reply)
                             .join(subscribers, subscribers.c.id == outbox.c.subscriber_id))
        return {email: (state, attempts, reply) for email, state, attempts, reply in found}


def configure_delivery(settings: Settings, port: int, **delivery: object) -> Settings:
    """`settings` delivering to a plain-text SMTP server on localhost `port`, with fast,
    bounded retries (extra [delivery] values as keywords)."""
    return settings.model_copy(update={
        "newsletter": settings.newsletter.model_copy(
            update={"base_url": "https://news.example.org"}),
        "smtp": settings.smtp.model_copy(update={"host": "127.0.0.1", "port": port,
                                                 "security": "none", "timeout": 5.0}),
        "delivery": settings.delivery.model_copy(update={
            "connections": 2, "retry_backoff": 0.0, "max_attempts": 3, **delivery})})


def configure_web(project: Path, smtp_port: int, web_port: int, extra: str = "") -> Path:
    """Rewrite the project's config.toml to serve the web app on `web_port` (its base_url)
    and deliver to `smtp_port`; `extra` lines go into [web]. The config file's path."""
    config = project / "config.toml"
    text = config.read_text()
    text = re.sub(r"(?m)^port = \d+", f"port = {smtp_port}", text)
    text = re.sub(r"(?m)^base_url = .*$", f'base_url = "http://127.0.0.1:{web_port}"', text)
    text = re.sub(r"(?m)^retry_backoff = \d+", "retry_backoff = 0", text)
    text += f"\n[web]\nport = {web_port}\nsignup_limit = 4\n{extra}"
    config.write_text(text)
    return config


def populate_audience(engine: Engine, settings: Settings, count: int, now: datetime,
                      domains: tuple[str, ...] = ("example.com",)) -> list[Row]:
    """`count` generated subscribers who all receive the example issue, their addresses spread
    over `domains` in turn, imported at `now`."""
    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    rows = generate_subscribers(settings, issue.topics, count)
    for i, row in enumerate(rows):
        email = row.email.replace("@example.com", f"@{domains[i % len(domains)]}")
        rows[i] = dataclasses.replace(row, email=email, key=email)
    imports.import_rows(engine, rows, now)
    return rows


def one_reader_per_variant(settings: Settings, name: str | None = None) -> list[Row]:
    """A subscriber for each possible variant of the example issue (the first topic mix that
    produces it), so a send delivers every variant once."""
    from itertools import combinations

    from dispatch.compose.variants import matched_briefs, variant_for

    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    seen: set[str] = set()
    rows: list[Row] = []
    for size in range(1, len(issue.topics) + 1):
        for mix in combinations(issue.topics, size):
            briefs = matched_briefs(issue, mix)
            vid = variant_for(issue, briefs).id
            if briefs and vid not in seen:
                seen.add(vid)
                email = f"reader-{vid}@example.com"
                rows.append(Row(line=len(rows) + 1, email=email, key=email,
                                name=name if name is not None else f"Reader {vid}",
                                topics=list(mix), timezone=None))
    return rows


def send_every_variant(engine: Engine, settings: Settings, now: datetime,
                       name: str | None = None) -> dict[str, bytes]:
    """Launch the example issue for one reader per variant and deliver it through the real
    path (render, outbox, worker, SMTP) to an aiosmtpd sink: each variant's message as the
    sink received it, by variant id. `settings` must deliver to nowhere in particular: the
    SMTP host and port are replaced by the sink's."""
    from email import message_from_bytes

    from dispatch.deliver.sending import launch_issue, run_worker
    from dispatch.deliver.transport import smtp_transport
    from dispatch.devtools.sink import smtp_sink
    from dispatch.store.launch import plan_audience

    rows = one_reader_per_variant(settings, name)
    imports.import_rows(engine, rows, now)
    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    with smtp_sink() as (handler, port):
        settings = configure_delivery(settings, port)
        assert launch_issue(engine, issue, plan_audience(engine, issue, settings), settings, now)
        run_worker(engine, settings, smtp_transport(settings.smtp), issue=issue.slug)
    by_variant = {str(message_from_bytes(r.data)["X-Dispatch-Variant"]): r.data
                  for r in handler.received}
    assert len(by_variant) == len(rows), "every variant delivered once"
    return by_variant
