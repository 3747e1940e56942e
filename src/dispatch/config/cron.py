"""Five-field crontab expressions with crontab's meaning, as APScheduler 3 triggers.

A leaf: config.toml's [[schedules]] are checked with it, and the scheduler fires by it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _cron_day(token: str, end: bool) -> int:
    if token.isdigit() and 0 <= int(token) <= 7:
        day = int(token)
    elif token[:3] in _CRON_DAYS:
        day = _CRON_DAYS.index(token[:3])
    else:
        raise ValueError(f"unknown weekday {token!r}")
    return 7 if end and day == 0 else day  # "fri-sun" runs to the week's end


def _cron_weekdays(field: str) -> str:
    """A crontab weekday field (0 or 7 = Sunday) as APScheduler 3 weekday names: APScheduler
    3 counts 0 as Monday, so "0 7 * * 5" would otherwise fire on Saturdays."""
    if field == "*":
        return field
    days: set[int] = set()
    for part in field.lower().split(","):
        span, _, step = part.partition("/")
        if span == "*":
            lo, hi = 0, 6
        elif "-" in span:
            first, last = span.split("-", 1)
            lo, hi = _cron_day(first, False), _cron_day(last, True)
        else:
            lo = hi = _cron_day(span, False)
            hi = 6 if step else hi
        if (step and not step.isdigit()) or lo > hi:
            raise ValueError(f"cannot read the weekday field {field!r}")
        days.update(d % 7 for d in range(lo, hi + 1, int(step or 1)))
    return ",".join(_CRON_DAYS[d] for d in sorted(days))


def cron_trigger(expr: str, zone: str) -> CronTrigger:
    """A five-field crontab expression with crontab's meaning, in an IANA zone."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"expected five fields, got {len(fields)}")
    minute, hour, day, month, weekday = fields
    if day != "*" and weekday != "*":
        # crontab fires when either matches; APScheduler only when both do.
        raise ValueError("give a day of the month or a weekday, not both")
    return CronTrigger(minute=minute, hour=hour, day=day, month=month,
                       day_of_week=_cron_weekdays(weekday), timezone=ZoneInfo(zone))


def fire_times(trigger: CronTrigger, after: datetime, until: datetime,
               limit: int = 1000) -> list[datetime]:
    """The trigger's fire times in (after, until], in UTC, the latest `limit` of them."""
    times: list[datetime] = []
    moment = trigger.get_next_fire_time(None, after + timedelta(microseconds=1))
    while moment is not None and moment <= until:
        times.append(moment.astimezone(UTC))
        times = times[-limit:]
        moment = trigger.get_next_fire_time(moment, moment)
    return times


def next_fire(expr: str, zone: str, now: datetime) -> datetime | None:
    """The next fire time after `now`, in UTC."""
    moment = cron_trigger(expr, zone).get_next_fire_time(None, now)
    return moment.astimezone(UTC) if moment else None
