"""config.toml's [inbound] tables: the SMTP server, the IMAP mailbox and the relays'
webhooks that bring back bounces, complaints and unsubscribes."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ValidationInfo, field_validator

from dispatch.config.base import Table, folder_of
from dispatch.config.fields import (
    Between,
    Duration,
    EnvName,
    OneOf,
    Port,
    Strings,
    Text,
    fail,
    show,
)
from dispatch.config.relays import WEBHOOK_PROVIDERS
from dispatch.errors import ConfigError, Problem


def env_secret(where: str, name: str | None, what: str) -> str:
    """A secret read from the environment variable `name` at the moment it is needed; an
    unset or empty one is a located ConfigError (an empty key would verify nothing)."""
    value = os.environ.get(name) if name else None
    if not value:
        state = "not named" if not name else "not set" if value is None else "empty"
        raise ConfigError(Problem(where, f"the environment variable {name or ''} is "
                                         f"{state}: set it to {what}".replace("  ", " ")))
    return value


class ImapSettings(Table):
    """`dispatch inbound poll` (and `dispatch run`): a bounce mailbox read over IMAP, for
    deployments that cannot receive SMTP."""

    host: Annotated[str, Text()]
    port: Port = 993
    security: Annotated[Literal["tls", "starttls", "none"], OneOf()] = "tls"
    username: Annotated[str, Text()]
    password_env: Annotated[str, EnvName()]
    folder: Annotated[str, Text()] = "INBOX"
    # Where processed messages are moved (made when missing); unset: they are flagged \Seen
    # in place and only unseen ones are read.
    move_to: Annotated[str, Text()] | None = None
    interval: Annotated[timedelta, Duration()] = timedelta(minutes=5)  # between polls
    timeout: Annotated[float, Between(1, 600)] = 60.0  # seconds for each IMAP command

    def password(self) -> str:
        return env_secret("inbound.imap.password_env", self.password_env,
                          "the IMAP password")


class SesHook(Table):
    # SNS topics whose notifications are taken: a genuine SNS signature proves only that
    # AWS sent it, and anyone can point their own topic at this URL.
    topic_arns: Annotated[tuple[str, ...], Strings()]

    @field_validator("topic_arns")
    @classmethod
    def _arns(cls, arns: tuple[str, ...]) -> tuple[str, ...]:
        for arn in arns:
            if not re.fullmatch(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]{1,256}",
                                arn):
                raise fail(f"{show(arn)} is not an SNS topic ARN "
                           "(arn:aws:sns:REGION:ACCOUNT:NAME)")
        if not arns:
            raise fail("name at least one SNS topic ARN")
        return arns


class PostmarkHook(Table):
    # Postmark secures webhooks with HTTP basic auth credentials put in the webhook's URL.
    username: Annotated[str, Text("a user name without a colon", r"^[^:]+$")]
    password_env: Annotated[str, EnvName()]

    def password(self) -> str:
        return env_secret("inbound.webhooks.postmark.password_env", self.password_env,
                          "the password in Postmark's webhook URL")


class MailgunHook(Table):
    signing_key_env: Annotated[str, EnvName()]
    # How old a signed timestamp may be (either way: clocks drift).
    max_age: Annotated[timedelta, Duration()] = timedelta(minutes=5)

    def signing_key(self) -> str:
        return env_secret("inbound.webhooks.mailgun.signing_key_env", self.signing_key_env,
                          "Mailgun's HTTP webhook signing key")


class SendgridHook(Table):
    # The signed event webhook's verification key (base64 DER, as SendGrid shows it).
    public_key_env: Annotated[str, EnvName()]
    max_age: Annotated[timedelta, Duration()] = timedelta(minutes=10)

    def public_key(self) -> str:
        return env_secret("inbound.webhooks.sendgrid.public_key_env", self.public_key_env,
                          "SendGrid's signed event webhook verification key")


class WebhookSettings(Table):
    """Relays' bounce and complaint webhooks at the web app (/hooks/<provider>); a provider
    without its table here gets 404."""

    ses: SesHook | None = None
    postmark: PostmarkHook | None = None
    mailgun: MailgunHook | None = None
    sendgrid: SendgridHook | None = None
    max_size: Annotated[int, Between(1_000, 50_000_000)] = 2_000_000  # octets per request

    def providers(self) -> dict[str, Any]:
        """The configured providers' tables, by name (relays.WEBHOOK_PROVIDERS)."""
        tables = {name: getattr(self, name) for name in WEBHOOK_PROVIDERS}
        return {name: table for name, table in tables.items() if table is not None}


class InboundSettings(Table):
    """`dispatch inbound serve` (and `dispatch run` when this table is present): the SMTP
    server that receives bounces, complaints and mailto unsubscribes for delivery.verp_domain."""

    host: Annotated[str, Text()] = "127.0.0.1"
    port: Port = 2525
    max_size: Annotated[int, Between(10_000, 100_000_000)] = 10_000_000  # octets per message
    # Connections at once, in all and from one client address; beyond: 421 at the greeting.
    max_connections: Annotated[int, Between(1, 10_000)] = 100
    max_connections_per_client: Annotated[int, Between(1, 10_000)] = 10
    # Seconds a connection may stay silent; seconds a message's DATA may take in all.
    idle_timeout: Annotated[float, Between(1, 3600)] = 30.0
    message_deadline: Annotated[float, Between(1, 86_400)] = 300.0
    # Where each accepted message is kept (fsynced) before the 250; relative to config.toml.
    spool: Annotated[Path, Text("a folder path")] = Path("spool/inbound")
    # false: `dispatch run` runs no SMTP server (the reports come by IMAP or webhooks only).
    smtp: bool = True
    imap: ImapSettings | None = None
    webhooks: WebhookSettings | None = None

    @field_validator("spool", mode="before")
    @classmethod
    def _path_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, Path) else value

    @field_validator("spool")
    @classmethod
    def _resolved(cls, value: str | Path, info: ValidationInfo) -> Path:
        root = folder_of(info)
        return root / value if root else Path(value)
