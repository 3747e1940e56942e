"""config.toml's newsroom tables: topics, segments, [schedule] and [[schedules]]."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Literal

from pydantic import field_validator

from dispatch.config.base import Table
from dispatch.config.fields import (
    TOPIC_KEY,
    Between,
    Duration,
    OneOf,
    StrList,
    Text,
    Zone,
    fail,
    show,
)


class Topic(Table):
    key: str
    label: Annotated[str, Text()]
    keywords: StrList = ()


class Segment(Table):
    name: str
    topics: StrList = ()
    match: Annotated[Literal["any", "all"], OneOf()] = "any"
    exclude: StrList = ()


class ScheduleSettings(Table):
    grace: Annotated[timedelta, Duration()] = timedelta(hours=1)  # how late a missed issue may go
    default_timezone: Zone  # for subscribers without a zone; Settings supplies newsletter's
    sync: Annotated[float, Between(0.1, 3600)] = 2.0  # seconds between looks at the store


class RecurringSchedule(Table):
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
