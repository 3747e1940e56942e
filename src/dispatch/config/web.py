"""config.toml's [web] and [console] tables: the public web app and the newsroom console."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import field_validator, model_validator

from dispatch.config.base import Table
from dispatch.config.fields import (
    Between,
    Duration,
    Flag,
    Port,
    StrList,
    Text,
    fail,
)

_HTTP_URL = r"^https?://[^\s/?#@]+([/?#]\S*)?$"  # no spaces, no user@ before the host
MAX_URL = 2000  # what every browser and proxy carries
MAX_CONSENT = 300  # a line under a form, not a policy


class WebSettings(Table):
    host: Annotated[str, Text()] = "127.0.0.1"
    port: Port = 8025
    confirm_expiry: Annotated[timedelta, Duration()] = timedelta(days=2)  # confirmation link life
    signup_limit: Annotated[int, Between(1, 100_000)] = 5  # per client address per hour
    # Bounds on sign-ups from everyone (audience/bounds.py): unconfirmed sign-ups within
    # confirm_expiry, and confirmation messages per hour, in all and per address domain.
    signup_pending_max: Annotated[int, Between(1, 10_000_000)] = 2000
    signup_pending_per_domain: Annotated[int, Between(1, 10_000_000)] = 200
    confirmations_per_hour: Annotated[int, Between(1, 10_000_000)] = 500
    confirmations_per_domain_hour: Annotated[int, Between(1, 10_000_000)] = 100
    # Proxies whose X-Forwarded-For names the client (the rate limit is per client address).
    trusted_proxies: StrList = ("127.0.0.1",)
    # A welcome message (templates/email/welcome.*) once a subscriber confirms.
    welcome: Annotated[bool, Flag()] = True
    # The sign-up form's link to the privacy policy, and its line on consent (None: the
    # form's own sentence, templates/web/signup.html.j2).
    privacy_url: Annotated[str, Text("an http:// or https:// URL", _HTTP_URL)] | None = None
    consent: Annotated[str, Text()] | None = None

    @field_validator("privacy_url")
    @classmethod
    def _url_length(cls, value: str | None) -> str | None:
        if value is not None and len(value) > MAX_URL:
            raise fail(f"expected a URL of at most {MAX_URL} characters, got {len(value)}")
        return value

    @field_validator("consent")
    @classmethod
    def _short(cls, value: str | None) -> str | None:
        if value is not None and len(value) > MAX_CONSENT:
            raise fail(f"expected at most {MAX_CONSENT} characters (one or two sentences), "
                       f"got {len(value)}")
        return value

    @field_validator("confirm_expiry")
    @classmethod
    def _long_enough(cls, value: timedelta) -> timedelta:
        if value < timedelta(minutes=10):
            raise fail("expected at least 10 minutes")
        return value


class ConsoleSettings(Table):
    """The newsroom console at /admin/ (web/console/). Without its own port it is served by
    the web app (`dispatch serve`, `dispatch run` with [web]); with one, on that listener only,
    so operators can keep it off the public one."""

    enabled: Annotated[bool, Flag()] = False
    host: Annotated[str, Text()] | None = None  # its own listener; default web.host
    port: Port | None = None  # its own listener; None: /admin/ on the web app
    idle_timeout: Annotated[timedelta, Duration()] = timedelta(minutes=30)
    session_lifetime: Annotated[timedelta, Duration()] = timedelta(hours=12)  # absolute
    login_failures: Annotated[int, Between(1, 1000)] = 10  # per account or client, then 429
    lockout: Annotated[timedelta, Duration()] = timedelta(minutes=15)  # the window and the wait

    @model_validator(mode="after")
    def _host_needs_port(self) -> ConsoleSettings:
        if self.host is not None and self.port is None:
            raise fail("host needs port: host is where the console's own listener binds")
        if self.idle_timeout > self.session_lifetime:
            raise fail("idle_timeout is longer than session_lifetime")
        return self
