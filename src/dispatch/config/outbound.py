"""config.toml's tables for what goes out: the newsletter's identity, the SMTP relay,
delivery's pace and limits, and DKIM signing."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from dispatch.config.base import Table, folder_of
from dispatch.config.dkim import dkim_key
from dispatch.config.fields import (
    DOMAIN,
    AsMailbox,
    Between,
    Domain,
    Duration,
    EnvName,
    Key,
    Mailbox,
    OneOf,
    Port,
    Text,
    Zone,
    fail,
)
from dispatch.config.relays import MetadataRelay
from dispatch.errors import ConfigError, Problem


class NewsletterSettings(Table):
    name: Annotated[str, Text()]
    sender: Annotated[Mailbox, Text(), AsMailbox()] = Field(alias="from")
    reply: Annotated[Mailbox, Text(), AsMailbox()] | None = Field(None, alias="reply_to")
    base_url: Annotated[str, Text("an http(s) URL", r"^https?://[^\s/]+")]
    address: Annotated[str, Text(lines=True)]  # postal; a line break is fine in a footer
    lang: Annotated[str, Text("a language tag like en or pt-BR",
                              r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")] = "en"
    timezone: Zone = "UTC"

    @field_validator("base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def from_name(self) -> str:
        return self.sender.name or self.name

    @property
    def from_email(self) -> str:
        return self.sender.address

    @property
    def reply_to(self) -> str | None:
        return self.reply.address if self.reply else None


_SECRET = ("secrets are never read from this file: name an environment variable with "
           "smtp.password_env instead")


class SmtpSettings(Table):
    # Not merely an unknown key: the message says where a password does go.
    refused: ClassVar[Mapping[str, str]] = MappingProxyType({"password": _SECRET})

    host: Annotated[str, Text()] = "localhost"
    port: Port = 25
    security: Annotated[Literal["starttls", "tls", "none"], OneOf()] = "none"
    username: Annotated[str, Text()] | None = None
    password_env: Annotated[str, EnvName()] | None = None
    timeout: Annotated[float, Between(0.1, 3600)] = 30.0  # seconds for each command's reply
    # Seconds for the reply to a message's final dot (RFC 5321 4.5.3.2.6 says 10 minutes):
    # a reply lost after the dot leaves the outcome unknown, which costs a possible duplicate.
    data_timeout: Annotated[float, Between(0.1, 3600)] = 600.0
    # The name given in EHLO; None: this host's fully qualified name (what smtplib finds).
    helo_name: Domain | None = None

    def password(self) -> str | None:
        """The SMTP password, read from the environment at the moment it is needed. An unset
        or empty variable is an error: AUTH with an empty password would be refused by the
        relay, or worse, accepted by a misconfigured one."""
        if not self.password_env:
            return None
        value = os.environ.get(self.password_env)
        if not value:
            state = "not set" if value is None else "empty"
            raise ConfigError(Problem("smtp.password_env", f"the environment variable "
                                      f"{self.password_env} is {state}: set it to the SMTP "
                                      "password"))
        return value

    def check_credentials(self) -> None:
        """Raise ConfigError unless AUTH, when configured, has a password to send: called
        before connecting (`dispatch send`, `worker`, `run`, `serve`) and by `dispatch check`."""
        if not self.username:
            return
        if not self.password_env:
            raise ConfigError(Problem("smtp.password_env", "smtp.username is set but no "
                                      "password: name the environment variable holding it"))
        self.password()


class DeliverySettings(Table):
    connections: Annotated[int, Between(1, 64)] = 4
    # Messages per second over all connections; 0: no limit.
    rate: Annotated[float, Between(0, 100_000)] = 0.0
    max_attempts: Annotated[int, Between(1, 100)] = 5
    retry_backoff: Annotated[float, Between(0, 86_400)] = 60.0  # seconds; doubles each attempt
    verp_domain: Domain | None = None
    # With verp_domain: a header carrying each message's row token that this relay hands back
    # in its bounce and complaint webhooks (Postmark's metadata, Mailgun's variables,
    # SendGrid's unique arguments); SES needs none (it echoes the headers).
    relay_metadata: Annotated[MetadataRelay, OneOf()] | None = None
    # The last field of Feedback-ID (Gmail's SenderId); dispatch writes ISSUE:VARIANT:feedback_id.
    # Fields are colon-separated, so the id holds none.
    feedback_id: Annotated[str, Text("a sender id of letters, digits, '.', '_' and '-' (no "
                                     "colons: they separate Feedback-ID's fields)",
                                     r"^[A-Za-z0-9._-]{1,64}$")] | None = None
    # Messages per second to one recipient domain.
    domain_rates: Mapping[Annotated[str, Key(DOMAIN, "expected a domain name as the key")],
                          Annotated[float, Between(0.001, 100_000)]] = Field(default_factory=dict)
    # Consecutive refusals of the session (AUTH, MAIL FROM), or 5.7.x refusals spanning at
    # least two recipient domains, that pause a send.
    sender_failures: Annotated[int, Between(1, 1000)] = 3
    # Seconds of failing to get a session at all (connection refused, timeouts, 421 and other
    # 4xx at the greeting) retried with backoff before the send is paused.
    session_patience: Annotated[float, Between(0, 86_400)] = 300.0
    # Seconds without a heartbeat after which a worker on another host counts as dead and its
    # claimed rows go back to the queue (workers on the same host are checked by pid).
    worker_lease: Annotated[float, Between(5, 86_400)] = 60.0
    # What comes back (dispatch.inbound): soft bounces (4.x.x, mailbox full, delayed) from
    # this many different issues within the window make a subscriber bounced.
    soft_bounce_limit: Annotated[int, Between(1, 1000)] = 3
    soft_bounce_window: Annotated[timedelta, Duration()] = timedelta(days=30)
    # Percentages of a send's delivered messages past which it pauses: hard bounces, and
    # complaints (mailbox providers want spam rates under 0.3 %).
    max_bounce_rate: Annotated[float, Between(0, 100)] = 5.0
    max_complaint_rate: Annotated[float, Between(0, 100)] = 0.3

    @field_validator("domain_rates")
    @classmethod
    def _lower_case(cls, rates: Mapping[str, float]) -> Mapping[str, float]:
        # Read-only, so frozen settings stay frozen all the way down.
        return MappingProxyType({domain.lower(): rate for domain, rate in rates.items()})


class DkimSettings(Table):
    domain: Domain
    selector: Annotated[str, Text("a DKIM selector", r"^[A-Za-z0-9._-]+$")]
    key_file: Annotated[Path, Text("a path to a PEM private key")]  # resolved; must exist

    @field_validator("key_file", mode="before")
    @classmethod
    def _path_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, Path) else value

    @field_validator("key_file")
    @classmethod
    def _existing(cls, value: str, info: ValidationInfo) -> Path:
        root = folder_of(info)
        path = root / value if root else Path(value)
        if not path.is_file():
            raise fail(f"no such file: {path}")
        try:
            dkim_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise fail(f"{path}: {exc}") from None
        return path
