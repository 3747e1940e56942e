"""The web app under load over real HTTP (uvicorn, one process, SQLite): one-click
unsubscribes from 8 concurrent clients, preference pages, and the archive page.

Run: pytest -m bench -s tests/bench/test_web_bench.py
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from dispatch.audience import csvio
from dispatch.audience.tokens import Signer
from dispatch.config import load_settings
from dispatch.devtools.sink import free_port
from dispatch.store import imports
from dispatch.store import subscribers as subs
from dispatch.store.db import open_store
from dispatch.store.secrets import secret
from dispatch.web.app import create_app
from dispatch.web.server import WebServer
from tests.helpers import configure_web

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
PEOPLE = 2_000
CLIENTS = 8


@pytest.mark.bench
def test_web_throughput(project: Path):
    port = free_port()
    settings = load_settings(configure_web(project, 2525, port))
    engine = open_store(settings.store.url)
    rows = [csvio.Row(line=i + 2, email=f"reader{i}@example.com",
                     key=f"reader{i}@example.com", name=f"Reader {i}", topics=["security"],
                     timezone=None) for i in range(PEOPLE)]
    imports.import_rows(engine, rows, NOW)
    signer = Signer(secret(engine))
    people = subs.list_subscribers(engine)
    server = WebServer(create_app(engine, settings), "127.0.0.1", port, ("127.0.0.1",))
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url) as http:
            def timed(paths: list[str], method: str) -> float:
                def one(path: str) -> int:
                    data = {"List-Unsubscribe": "One-Click"} if method == "POST" else None
                    return http.request(method, path, data=data).status_code
                start = time.perf_counter()
                with ThreadPoolExecutor(CLIENTS) as pool:
                    codes = list(pool.map(one, paths))
                elapsed = time.perf_counter() - start
                assert set(codes) == {200}
                return len(paths) / elapsed

            pages = timed([f"/p/{signer.token('preferences', p.id, p.email)}"
                           for p in people[:1000]], "GET")
            clicks = timed([f"/u/{signer.token('unsubscribe', p.id, p.email)}"
                            for p in people[:1000]], "POST")
            repeats = timed([f"/u/{signer.token('unsubscribe', p.id, p.email)}"
                             for p in people[:1000]], "POST")
            home = timed(["/"] * 1000, "GET")
    finally:
        server.stop()
    assert subs.count(engine, "unsubscribed") == 1000
    print(f"\nweb, {CLIENTS} concurrent clients, SQLite, one uvicorn process on 2 cores:")
    print(f"  preference pages:          {pages:7.0f} requests/s")
    print(f"  one-click unsubscribes:    {clicks:7.0f} requests/s (each a store transaction)")
    print(f"  repeated one-clicks:       {repeats:7.0f} requests/s (nothing to change)")
    print(f"  sign-up form:              {home:7.0f} requests/s")
