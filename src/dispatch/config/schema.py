"""The settings config.toml holds, as frozen pydantic models: every key, its default and its
rules are declared once, one module per concern (outbound, inbound, web, newsroom); the
whole file and [store] are here.

Models are validated with `context={"path": <config.toml>}`: relative paths in the file are
resolved against its folder.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from dispatch.config.base import Table, folder_of
from dispatch.config.cross_table import derived_defaults, references
from dispatch.config.fields import (
    TOPIC_KEY,
    Key,
    Keyed,
    Text,
    checked,
    fail,
)
from dispatch.config.inbound import (
    ImapSettings,
    InboundSettings,
    MailgunHook,
    PostmarkHook,
    SendgridHook,
    SesHook,
    WebhookSettings,
    env_secret,
)
from dispatch.config.newsroom import RecurringSchedule, ScheduleSettings, Segment, Topic
from dispatch.config.outbound import (
    DeliverySettings,
    DkimSettings,
    NewsletterSettings,
    SmtpSettings,
)
from dispatch.config.web import MAX_CONSENT, MAX_URL, ConsoleSettings, WebSettings

__all__ = [
    "MAX_CONSENT", "MAX_URL", "TOPIC_KEY", "ConsoleSettings", "DeliverySettings",
    "DkimSettings", "ImapSettings", "InboundSettings", "MailgunHook", "NewsletterSettings",
    "PostmarkHook", "RecurringSchedule", "ScheduleSettings", "Segment", "SendgridHook",
    "SesHook", "Settings", "SmtpSettings", "StoreSettings", "Topic", "WebSettings",
    "WebhookSettings", "env_secret",
]


def _table() -> Any:
    # An absent table reads as an empty one, so its defaults (and their checks) apply.
    return Field(default_factory=dict, validate_default=True)


class StoreSettings(Table):
    # A relative sqlite path is relative to config.toml's folder, not the working directory.
    url: Annotated[str, Text("a sqlite:/// or postgresql+psycopg:// URL",
                             r"^(sqlite|postgresql(\+psycopg)?)://")] = Field(
        "sqlite:///dispatch.db", validate_default=True)

    @field_validator("url")
    @classmethod
    def _resolve_sqlite(cls, url: str, info: ValidationInfo) -> str:
        relative = re.match(r"^sqlite:///(?!/)(.+)$", url)
        root = folder_of(info)
        if relative and relative[1] != ":memory:" and root is not None:
            return f"sqlite:///{root / relative[1]}"
        return url


class Settings(Table):
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
