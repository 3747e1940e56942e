"""config.toml → validated, frozen settings: the schema in schema.py, reading in load.py."""

from __future__ import annotations

from dispatch.config.load import (
                                  DEFAULT_CONFIG,
                                  config_path,
                                  load_settings,
                                  parse_settings,
                                  toml_error,
                                  toml_line,
)
from dispatch.config.schema import (
                                  TOPIC_KEY,
                                  ConsoleSettings,
                                  DeliverySettings,
                                  DkimSettings,
                                  ImapSettings,
                                  InboundSettings,
                                  NewsletterSettings,
                                  RecurringSchedule,
                                  ScheduleSettings,
                                  Segment,
                                  Settings,
                                  SmtpSettings,
                                  StoreSettings,
                                  Topic,
                                  WebhookSettings,
                                  WebSettings,
)

__all__ = [
    "ConsoleSettings", "DEFAULT_CONFIG", "TOPIC_KEY", "DeliverySettings", "DkimSettings",
    "ImapSettings",
    "InboundSettings",
    "NewsletterSettings",
    "RecurringSchedule", "ScheduleSettings", "Segment", "Settings", "SmtpSettings",
    "StoreSettings", "Topic", "WebSettings", "WebhookSettings", "config_path", "load_settings",
    "parse_settings",
    "toml_error", "toml_line",
]
