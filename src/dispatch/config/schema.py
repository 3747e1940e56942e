"""The settings config.toml holds, as frozen pydantic models: every key, its default and its
rules are declared here once.

Models are validated with `context={"path": <config.toml>}`: relative paths in the file are
resolved against its folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import FrozenInstanceError
from datetime import date, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from dispatch.config.cross_table import derived_defaults, references
from dispatch.config.dkim import dkim_key
from dispatch.config.fields import (
    TOPIC_KEY,
    AsMailbox,
    Between,
    Duration,
    EnvName,
    Flag,
    IanaZone,
    Key,
    Keyed,
    Mailbox,
    OneOf,
    Strings,
    Text,
    checked,
    fail,
    show,
)
from dispatch.errors import ConfigError, Problem

_DOMAIN = r"^[A-Za-z0-9.-]+\.[A-Za-z]{2,}$"
_HTTP_URL = r"^https?://[^\s/?#@]+([/?#]\S*)?$"  # no spaces, no user@ before the host
MAX_URL = 2000  # what every browser and proxy carries
MAX_CONSENT = 300  # a line under a form, not a policy

Port = Annotated[int, Between(1, 65535)]
Zone = Annotated[str, Text(), IanaZone()]
Domain = Annotated[str, Text("a domain name", _DOMAIN)]
StrList = Annotated[tuple[str, ...], Strings()]


def _table() -> Any:
    # An absent table reads as an empty one, so its defaults (and their checks) apply.
    return Field(default_factory=dict, validate_default=True)


def _root(info: ValidationInfo) -> Path | None:
    """config.toml's folder, when the models are validated from a file."""
    path = info.context.get("path") if isinstance(info.context, dict) else None
    return Path(path).parent if path is not None else None


class _Table(BaseModel):
    """One TOML table: unknown keys refused, no type coercion, read-only once read."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    def __setattr__(self, name: str, value: Any) -> None:
        # An AttributeError, as frozen dataclasses raise (pydantic's own is a ValueError).
        if name in self.__private_attributes__:
            return super().__setattr__(name, value)
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")


class NewsletterSettings(_Table):
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


class SmtpSettings(_Table):
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

    @model_validator(mode="wrap")
    @classmethod
    def _no_password(cls, data: Any, handler: Callable[[Any], Any]) -> Any:
        # Not merely an unknown key: the message says where a password does go.
        if isinstance(data, dict) and "password" in data:
            rest = {key: value for key, value in data.items() if key != "password"}
            return checked(handler, rest, [(("password",), _SECRET)])
        return handler(data)

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


class DeliverySettings(_Table):
    connections: Annotated[int, Between(1, 64)] = 4
    # Messages per second over all connections; 0: no limit.
    rate: Annotated[float, Between(0, 100_000)] = 0.0
    max_attempts: Annotated[int, Between(1, 100)] = 5
    retry_backoff: Annotated[float, Between(0, 86_400)] = 60.0  # seconds; doubles each attempt
    verp_domain: Domain | None = None
    # With verp_domain: a header carrying each message's row token that this relay hands back
    # in its bounce and complaint webhooks (Postmark's metadata, Mailgun's variables,
    # SendGrid's unique arguments); SES needs none (it echoes the headers).
    relay_metadata: Annotated[Literal["postmark", "mailgun", "sendgrid"], OneOf()] | None = None
    # The last field of Feedback-ID (Gmail's SenderId); dispatch writes ISSUE:VARIANT:feedback_id.
    # Fields are colon-separated, so the id holds none.
    feedback_id: Annotated[str, Text("a sender id of letters, digits, '.', '_' and '-' (no "
                                     "colons: they separate Feedback-ID's fields)",
                                     r"^[A-Za-z0-9._-]{1,64}$")] | None = None
    # Messages per second to one recipient domain.
    domain_rates: Mapping[Annotated[str, Key(_DOMAIN, "expected a domain name as the key")],
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


class DkimSettings(_Table):
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
        root = _root(info)
        path = root / value if root else Path(value)
        if not path.is_file():
            raise fail(f"no such file: {path}")
        try:
            dkim_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise fail(f"{path}: {exc}") from None
        return path


def env_secret(where: str, name: str | None, what: str) -> str:
    """A secret read from the environment variable `name` at the moment it is needed; an
    unset or empty one is a located ConfigError (an empty key would verify nothing)."""
    value = os.environ.get(name) if name else None
    if not value:
        state = "not named" if not name else "not set" if value is None else "empty"
        raise ConfigError(Problem(where, f"the environment variable {name or ''} is "
                                         f"{state}: set it to {what}".replace("  ", " ")))
    return value


class ImapSettings(_Table):
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


class SesHook(_Table):
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


class PostmarkHook(_Table):
    # Postmark secures webhooks with HTTP basic auth credentials put in the webhook's URL.
    username: Annotated[str, Text("a user name without a colon", r"^[^:]+$")]
    password_env: Annotated[str, EnvName()]

    def password(self) -> str:
        return env_secret("inbound.webhooks.postmark.password_env", self.password_env,
                          "the password in Postmark's webhook URL")


class MailgunHook(_Table):
    signing_key_env: Annotated[str, EnvName()]
    # How old a signed timestamp may be (either way: clocks drift).
    max_age: Annotated[timedelta, Duration()] = timedelta(minutes=5)

    def signing_key(self) -> str:
        return env_secret("inbound.webhooks.mailgun.signing_key_env", self.signing_key_env,
                          "Mailgun's HTTP webhook signing key")


class SendgridHook(_Table):
    # The signed event webhook's verification key (base64 DER, as SendGrid shows it).
    public_key_env: Annotated[str, EnvName()]
    max_age: Annotated[timedelta, Duration()] = timedelta(minutes=10)

    def public_key(self) -> str:
        return env_secret("inbound.webhooks.sendgrid.public_key_env", self.public_key_env,
                          "SendGrid's signed event webhook verification key")


class WebhookSettings(_Table):
    """Relays' bounce and complaint webhooks at the web app (/hooks/<provider>); a provider
    without its table here gets 404."""

    ses: SesHook | None = None
    postmark: PostmarkHook | None = None
    mailgun: MailgunHook | None = None
    sendgrid: SendgridHook | None = None
    max_size: Annotated[int, Between(1_000, 50_000_000)] = 2_000_000  # octets per request


class InboundSettings(_Table):
    """`dispatch inbound serve` (and `dispatch run` when this table is present): the SMTP
    server that receives bounces, complaints and mailto unsubscribes for delivery.verp_domain."""

    host: Annotated[str, Text()] = "127.0.0.1"
    port: Port = 2525
    max_size: Annotated[int, Between(10_000, 100_000_000)] = 10_000_000  # octets per message
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
        root = _root(info)
        return root / value if root else Path(value)


class StoreSettings(_Table):
    # A relative sqlite path is relative to config.toml's folder, not the working directory.
    url: Annotated[str, Text("a sqlite:/// or postgresql+psycopg:// URL",
                             r"^(sqlite|postgresql(\+psycopg)?)://")] = Field(
        "sqlite:///dispatch.db", validate_default=True)

    @field_validator("url")
    @classmethod
    def _resolve_sqlite(cls, url: str, info: ValidationInfo) -> str:
        relative = re.match(r"^sqlite:///(?!/)(.+)$", url)
        root = _root(info)
        if relative and relative[1] != ":memory:" and root is not None:
            return f"sqlite:///{root / relative[1]}"
        return url


class Topic(_Table):
    key: str
    label: Annotated[str, Text()]
    keywords: StrList = ()


class Segment(_Table):
    name: str
    topics: StrList = ()
    match: Annotated[Literal["any", "all"], OneOf()] = "any"
    exclude: StrList = ()


class ScheduleSettings(_Table):
    grace: Annotated[timedelta, Duration()] = timedelta(hours=1)  # how late a missed issue may go
    default_timezone: Zone  # for subscribers without a zone; Settings supplies newsletter's
    sync: Annotated[float, Between(0.1, 3600)] = 2.0  # seconds between looks at the store


class WebSettings(_Table):
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


class ConsoleSettings(_Table):
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


class RecurringSchedule(_Table):
    name: Annotated[str, Text("lower-case letters, digits and hyphens (it names the issues)",
                              TOPIC_KEY.pattern)]
    cron: Annotated[str, Text('a five-field cron expression like "0 7 * * fri"',
                              r"^\S+(\s+\S+){4}$")]
    timezone: Zone  # Settings supplies newsletter.timezone when the file gives none
    folder: Annotated[str, Text()]  # briefs waiting for a digest; relative to config.toml's folder
    subject: Annotated[str, Text()]  # may hold {date}, the fire date in the schedule's zone

    @field_validator("cron")
    @classmethod
    def _fires(cls, cron: str) -> str:
        # Imported here: APScheduler is loaded only when a file has schedules to check.
        from dispatch.config.cron import cron_trigger
        try:
            cron_trigger(cron, "UTC")
        except ValueError as exc:
            raise fail(f"invalid cron expression {show(cron)}: {exc}") from None
        return cron

    @field_validator("subject")
    @classmethod
    def _only_date(cls, subject: str) -> str:
        try:
            subject.format(date=date(2026, 1, 1))
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise fail(f"subject may only use {{date}} (e.g. {{date:%d %B}}): {exc}") from None
        return subject


class Settings(_Table):
    newsletter: NewsletterSettings
    smtp: SmtpSettings = _table()
    delivery: DeliverySettings = _table()
    dkim: DkimSettings | None = None
    store: StoreSettings = _table()
    topics: Annotated[
        Mapping[Annotated[str, Key(TOPIC_KEY.pattern,
                                   "topic keys are lower-case letters, digits and hyphens")],
                Topic], Keyed("key")] = Field(default_factory=dict)
    segments: Annotated[Mapping[str, Segment], Keyed("name")] = Field(default_factory=dict)
    schedule: ScheduleSettings
    web: WebSettings | None = None  # None: `dispatch run` serves no web app
    inbound: InboundSettings | None = None  # None: `dispatch run` runs no inbound server
    console: ConsoleSettings = _table()
    schedules: tuple[RecurringSchedule, ...] = ()

    _path: Path

    @model_validator(mode="wrap")
    @classmethod
    def _whole_file(cls, data: Any, handler: Callable[[Any], Any]) -> Any:
        if not isinstance(data, dict):
            return handler(data)
        data = derived_defaults(data, NewsletterSettings.model_fields["timezone"].default)
        problems = references(data)
        delivery = data.get("delivery")
        if "inbound" in data and not (isinstance(delivery, dict) and delivery.get("verp_domain")):
            problems.append((("inbound",), "set delivery.verp_domain too: the domain bounces "
                                           "and mailto unsubscribes are addressed to"))
        if isinstance(delivery, dict) and delivery.get("relay_metadata") and not delivery.get(
                "verp_domain"):
            problems.append((("delivery", "relay_metadata"), "set delivery.verp_domain too: "
                             "the metadata is the row token of the inbound domain's addresses"))
        return checked(handler, data, problems)

    @field_validator("schedules", mode="before")
    @classmethod
    def _entries(cls, value: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise fail("expected [[schedules]] entries")
        return tuple(value)

    @field_validator("topics")
    @classmethod
    def _some_topics(cls, topics: Mapping[str, Topic]) -> Mapping[str, Topic]:
        if not topics:
            raise fail("declare at least one topic")
        return topics

    def model_post_init(self, context: Any, /) -> None:
        if isinstance(context, dict) and "path" in context:
            self._path = Path(context["path"])

    @property
    def path(self) -> Path:
        """config.toml, absolute."""
        return self._path

    @property
    def root(self) -> Path:
        """The project folder: where config.toml lives; issues/ and templates/ sit beside it."""
        return self.path.parent

    @property
    def issues_dir(self) -> Path:
        return self.root / "issues"

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"
