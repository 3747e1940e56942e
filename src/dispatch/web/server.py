"""uvicorn serving the web app on a background thread, so the caller's main thread can wait
for signals (`dispatch serve`, `dispatch run`) or drive tests."""

from __future__ import annotations

import threading
import time

import uvicorn
from starlette.types import ASGIApp

from dispatch.errors import DispatchError, Problem


class WebServer:
    """uvicorn serving the app on a background thread (`dispatch serve` and `dispatch run`,
    whose main thread waits for signals; the tests)."""

    def __init__(self, app: ASGIApp, host: str, port: int, trusted_proxies: tuple[str, ...],
                 log_level: str = "warning") -> None:
        self.server = uvicorn.Server(uvicorn_config(app, host, port, trusted_proxies,
                                                    log_level))
        self.thread = threading.Thread(target=self.server.run, name="dispatch-web",
                                       daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                config = self.server.config
                raise DispatchError(Problem("web", f"cannot serve on {config.host}:"
                                                   f"{config.port} (in use, or not an address "
                                                   "of this machine)"))
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://{self.server.config.host}:{self.server.config.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def uvicorn_config(app: ASGIApp, host: str, port: int, trusted_proxies: tuple[str, ...],
                   log_level: str) -> uvicorn.Config:
    # No access log: the URLs carry subscribers' tokens, which stay out of logs.
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                          proxy_headers=True, forwarded_allow_ips=list(trusted_proxies),
                          lifespan="off", server_header=False)
