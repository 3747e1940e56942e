"""config.toml → validated, frozen settings.

Every problem in the file is collected before anything is raised, so an operator fixes the
whole file in one pass. Unknown keys are errors: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email

from dispatch.errors import ConfigError, Problem, display_path

DEFAULT_CONFIG = Path("config.toml")
TOPIC_KEY = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_MISSING: Any = object()


@dataclass(frozen=True)
class NewsletterSettings:
    name: str
    from_name: str
    from_email: str
    reply_to: str | None
    base_url: str
    address: str
    lang: str = "en"
    timezone: str = "UTC"


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "localhost"
    port: int = 25
    security: str = "none"  # "starttls", "tls" or "none"
    username: str | None = None
    password_env: str | None = None
    timeout: float = 30.0

    def password(self) -> str | None:
        """The SMTP password, read from the environment at the moment it is needed."""
        return os.environ.get(self.password_env) if self.password_env else None


@dataclass(frozen=True)
class DeliverySettings:
    connections: int = 4
    rate: float = 0.0  # messages per second over all connections; 0 means unlimited
    max_attempts: int = 5
    retry_backoff: float = 60.0  # seconds before the first retry; doubles each attempt
    verp_domain: str | None = None
    feedback_id: str | None = None
    domain_rates: Mapping[str, float] = field(default_factory=dict)  # per recipient domain
    sender_failures: int = 3  # consecutive sender-side failures (5.7.x, auth) that pause a send


@dataclass(frozen=True)
class DkimSettings:
    domain: str
    selector: str
    key_file: Path  # PEM private key; absolute, resolved against config.toml's folder


@dataclass(frozen=True)
class StoreSettings:
    url: str


@dataclass(frozen=True)
class Topic:
    key: str
    label: str
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True)
class Segment:
    name: str
    topics: tuple[str, ...]
    match: str = "any"  # "any" or "all"
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScheduleSettings:
    grace: timedelta = timedelta(hours=1)  # how late a missed issue may still go out
    default_timezone: str = "UTC"  # local-time delivery for subscribers without a zone
    sync: float = 2.0  # seconds between the daemon's looks at the store


@dataclass(frozen=True)
class WebSettings:
    host: str = "127.0.0.1"
    port: int = 8025
    confirm_expiry: timedelta = timedelta(days=2)  # how long a confirmation link works
    signup_limit: int = 5  # sign-up requests per client address per hour
    # Proxies whose X-Forwarded-For names the client (the rate limit is per client address).
    trusted_proxies: tuple[str, ...] = ("127.0.0.1",)


@dataclass(frozen=True)
class RecurringSchedule:
    name: str
    cron: str
    timezone: str
    folder: str  # briefs waiting for a digest; relative to config.toml's folder
    subject: str  # may hold {date}, the fire date in the schedule's zone


@dataclass(frozen=True)
class Settings:
    path: Path
    newsletter: NewsletterSettings
    smtp: SmtpSettings
    delivery: DeliverySettings
    store: StoreSettings
    topics: Mapping[str, Topic]
    segments: Mapping[str, Segment] = field(default_factory=dict)
    schedules: tuple[RecurringSchedule, ...] = ()
    dkim: DkimSettings | None = None
    schedule: ScheduleSettings = ScheduleSettings()
    web: WebSettings | None = None  # None: `dispatch run` serves no web app

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


class _Reader:
    """Reads one table of the TOML document, recording problems instead of raising."""

    def __init__(self, data: Any, path: str, problems: list[tuple[str, str]]) -> None:
        self.path = path
        self.problems = problems
        if not isinstance(data, dict):
            self.fail(f"expected a table, got {_show(data)}")
            data = {}
        self.data: dict[str, Any] = data
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, message: str, key: str | None = None) -> None:
        self.problems.append((self.key(key) if key else self.path, message))

    def _get(self, name: str, default: Any) -> Any:
        self.seen.add(name)
        if name in self.data:
            return self.data[name]
        if default is _MISSING:
            self.fail("required key is missing", name)
        return default

    def str(self, name: str, default: Any = _MISSING, *, pattern: str | None = None,
            expected: str = "a string") -> Any:
        value = self._get(name, default)
        if value is default:
            return value
        if not isinstance(value, str) or not value.strip() or (
                pattern and not re.match(pattern, value)):
            self.fail(f"expected {expected}, got {_show(value)}", name)
            return default if default is not _MISSING else ""
        return value.strip()

    def int(self, name: str, default: int, lo: int, hi: int) -> int:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            self.fail(f"expected an integer {lo}-{hi}, got {_show(value)}", name)
            return default
        return value

    def number(self, name: str, default: float, lo: float, hi: float) -> float:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            self.fail(f"expected a number {lo:g}-{hi:g}, got {_show(value)}", name)
            return default
        return float(value)

    def choice(self, name: str, default: str, options: tuple[str, ...]) -> str:
        value = self._get(name, default)
        if value not in options:
            self.fail(f"expected one of {', '.join(options)}, got {_show(value)}", name)
            return default
        return value

    def str_list(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self._get(name, default)
        if value is default:
            return default
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            self.fail(f"expected a list of strings, got {_show(value)}", name)
            return default
        return tuple(v.strip() for v in value)

    def table(self, name: str) -> _Reader:
        return _Reader(self._get(name, {}), self.key(name), self.problems)

    def done(self) -> None:
        for extra in sorted(set(self.data) - self.seen):
            self.fail("unknown key", extra)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _email(reader: _Reader, name: str, value: str | None) -> tuple[str, str] | None:
    """Split "Name <addr>" and check the address's syntax (no DNS)."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*(?:(.*?)\s*<([^<>]+)>|([^<>\s]+))\s*", value)
    if not match:
        reader.fail(f'expected "Name <address>" or an address, got {_show(value)}', name)
        return None
    display, address = (match[1] or "").strip().strip('"'), (match[2] or match[3]).strip()
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        reader.fail(f"invalid address {address!r}: {exc}", name)
        return None
    return display, address


def _domain_rates(reader: _Reader) -> dict[str, float]:
    rates = {}
    for domain in list(reader.data):
        if not re.match(r"^[A-Za-z0-9.-]+\.[A-Za-z]{2,}$", domain):
            reader.seen.add(domain)
            reader.fail("expected a domain name as the key", domain)
            continue
        rates[domain.lower()] = reader.number(domain, 1.0, 0.001, 100_000)
    return rates


def _zone(reader: _Reader, name: str, value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        reader.fail(f"unknown IANA time zone {_show(value)}", name)
    return value


_DURATION = re.compile(r"^(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?$")


def _duration(reader: _Reader, name: str, default: timedelta) -> timedelta:
    """Seconds as a number, or text like "2d", "1h", "90m", "1h30m"."""
    value = reader._get(name, default)
    if value is default:
        return default
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return timedelta(seconds=value)
    match = _DURATION.match(value.strip()) if isinstance(value, str) and value.strip() else None
    if not match or not any(match.groups()):
        reader.fail(f'expected seconds or a duration like "1h" or "90m", got {_show(value)}',
                    name)
        return default
    d, h, m, sec = (int(g or 0) for g in match.groups())
    return timedelta(days=d, hours=h, minutes=m, seconds=sec)


def _parse(doc: dict[str, Any], path: Path) -> tuple[Settings | None, list[tuple[str, str]]]:
    problems: list[tuple[str, str]] = []
    top = _Reader(doc, "", problems)

    nl = top.table("newsletter")
    name = nl.str("name")
    sender = _email(nl, "from", nl.str("from"))
    reply = _email(nl, "reply_to", nl.str("reply_to", None))
    base_url = nl.str("base_url", pattern=r"^https?://[^\s/]+", expected="an http(s) URL")
    newsletter = NewsletterSettings(
        name=name,
        from_name=(sender[0] or name) if sender else "",
        from_email=sender[1] if sender else "",
        reply_to=reply[1] if reply else None,
        base_url=(base_url or "").rstrip("/"),
        address=nl.str("address"),
        lang=nl.str("lang", "en", pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$",
                    expected="a language tag like en or pt-BR"),
        timezone=_zone(nl, "timezone", nl.str("timezone", "UTC")),
    )
    nl.done()

    sm = top.table("smtp")
    if "password" in sm.data:
        sm.seen.add("password")
        sm.fail("secrets are never read from this file: name an environment variable "
                "with smtp.password_env instead", "password")
    smtp = SmtpSettings(
        host=sm.str("host", "localhost"),
        port=sm.int("port", 25, 1, 65535),
        security=sm.choice("security", "none", ("starttls", "tls", "none")),
        username=sm.str("username", None),
        password_env=sm.str("password_env", None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                            expected="an environment variable name"),
        timeout=sm.number("timeout", 30.0, 0.1, 3600),
    )
    sm.done()

    dl = top.table("delivery")
    delivery = DeliverySettings(
        connections=dl.int("connections", 4, 1, 64),
        rate=dl.number("rate", 0.0, 0, 100_000),
        max_attempts=dl.int("max_attempts", 5, 1, 100),
        retry_backoff=dl.number("retry_backoff", 60.0, 0, 86_400),
        verp_domain=dl.str("verp_domain", None, pattern=r"^[A-Za-z0-9.-]+\.[A-Za-z]{2,}$",
                           expected="a domain name"),
        feedback_id=dl.str("feedback_id", None),
        domain_rates=MappingProxyType(_domain_rates(dl.table("domain_rates"))),
        sender_failures=dl.int("sender_failures", 3, 1, 1000),
    )
    dl.done()

    dkim = None
    if "dkim" in doc:
        dk = top.table("dkim")
        domain = dk.str("domain", pattern=r"^[A-Za-z0-9.-]+\.[A-Za-z]{2,}$",
                        expected="a domain name")
        selector = dk.str("selector", pattern=r"^[A-Za-z0-9._-]+$", expected="a DKIM selector")
        key_file = path.parent / dk.str("key_file", expected="a path to a PEM private key")
        if "key_file" in dk.data and not key_file.is_file():
            dk.fail(f"no such file: {key_file}", "key_file")
        dkim = DkimSettings(domain=domain, selector=selector, key_file=key_file)
        dk.done()

    st = top.table("store")
    url = st.str("url", f"sqlite:///{path.parent / 'dispatch.db'}",
                 pattern=r"^(sqlite|postgresql(\+psycopg)?)://",
                 expected="a sqlite:/// or postgresql+psycopg:// URL")
    relative = re.match(r"^sqlite:///(?!/)(.+)$", url)
    if relative and relative[1] != ":memory:":
        url = f"sqlite:///{path.parent / relative[1]}"
    store = StoreSettings(url=url)
    st.done()

    topics: dict[str, Topic] = {}
    tt = top.table("topics")
    for key in tt.data:
        t = tt.table(key)
        if not TOPIC_KEY.match(key):
            t.fail("topic keys are lower-case letters, digits and hyphens")
        topics[key] = Topic(key=key, label=t.str("label"), keywords=t.str_list("keywords"))
        t.done()
    if not topics and "topics" in doc:
        tt.fail("declare at least one topic")

    segments: dict[str, Segment] = {}
    sg = top.table("segments")
    for key in sg.data:
        s = sg.table(key)
        seg = Segment(name=key, topics=s.str_list("topics"),
                      match=s.choice("match", "any", ("any", "all")),
                      exclude=s.str_list("exclude"))
        for field_name in ("topics", "exclude"):
            for topic in getattr(seg, field_name):
                if topic not in topics:
                    s.fail(f"unknown topic {topic!r} (declared: {', '.join(topics) or 'none'})",
                           field_name)
        segments[key] = seg
        s.done()

    sc = top.table("schedule")
    schedule = ScheduleSettings(
        grace=_duration(sc, "grace", timedelta(hours=1)),
        default_timezone=_zone(sc, "default_timezone",
                               sc.str("default_timezone", newsletter.timezone)),
        sync=sc.number("sync", 2.0, 0.1, 3600))
    sc.done()

    web = None
    if "web" in doc:
        wb = top.table("web")
        web = WebSettings(
            host=wb.str("host", "127.0.0.1"), port=wb.int("port", 8025, 1, 65535),
            confirm_expiry=_duration(wb, "confirm_expiry", timedelta(days=2)),
            signup_limit=wb.int("signup_limit", 5, 1, 100_000),
            trusted_proxies=wb.str_list("trusted_proxies", ("127.0.0.1",)))
        if web.confirm_expiry < timedelta(minutes=10):
            wb.fail("expected at least 10 minutes", "confirm_expiry")
        wb.done()

    schedules: list[RecurringSchedule] = []
    raw_schedules = top._get("schedules", [])
    if not isinstance(raw_schedules, list):
        top.fail("expected [[schedules]] entries", "schedules")
        raw_schedules = []
    for i, raw in enumerate(raw_schedules):
        r = _Reader(raw, f"schedules[{i}]", problems)
        cron = r.str("cron", pattern=r"^\S+(\s+\S+){4}$",
                      expected='a five-field cron expression like "0 7 * * fri"')
        recurring = RecurringSchedule(
            name=r.str("name", f"digest-{i + 1}", pattern=TOPIC_KEY.pattern,
                       expected="lower-case letters, digits and hyphens (it names the issues)"),
            cron=cron, timezone=_zone(r, "timezone", r.str("timezone", newsletter.timezone)),
            folder=r.str("folder"), subject=r.str("subject"))
        if cron and not any(key.startswith(f"schedules[{i}].cron") for key, _ in problems):
            from dispatch.config.cron import cron_trigger
            try:
                cron_trigger(cron, "UTC")
            except ValueError as exc:
                r.fail(f"invalid cron expression {_show(cron)}: {exc}", "cron")
        if recurring.subject and "{" in recurring.subject:
            try:
                recurring.subject.format(date=datetime(2026, 1, 1).date())
            except (KeyError, IndexError, ValueError, AttributeError) as exc:
                r.fail(f"subject may only use {{date}} (e.g. {{date:%d %B}}): {exc}", "subject")
        if recurring.name in {s.name for s in schedules}:
            r.fail(f"another schedule is already named {recurring.name!r}", "name")
        schedules.append(recurring)
        r.done()
    top.done()

    if problems:
        return None, problems
    return Settings(path=path, newsletter=newsletter, smtp=smtp, delivery=delivery, store=store,
                    topics=MappingProxyType(topics), segments=MappingProxyType(segments),
                    schedules=tuple(schedules), dkim=dkim, schedule=schedule, web=web), []


def toml_line(text: str, key_path: str) -> int | None:
    """Best-effort line number of a dotted key path in the TOML source, for error messages."""
    lines = text.splitlines()
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", key_path)
    # Find the deepest table header that is a prefix of the key path.
    start, depth = 0, 0
    for n in range(len(parts), 0, -1):
        head = parts[:n]
        if head[-1].startswith("["):
            index = int(head[-1][1:-1])
            pattern = re.compile(r"^\s*\[\[\s*" + re.escape(".".join(head[:-1])) + r"\s*\]\]")
            hits = [i for i, line in enumerate(lines) if pattern.match(line)]
            if index < len(hits):
                start, depth = hits[index], n
                break
            continue
        pattern = re.compile(r"^\s*\[\s*(" + ".".join(f"(?:{re.escape(p)}|\"{re.escape(p)}\")"
                                                      for p in head) + r")\s*\]")
        hit = next((i for i, line in enumerate(lines) if pattern.match(line)), None)
        if hit is not None:
            start, depth = hit, n
            break
    if depth == len(parts):
        return start + 1 if lines else None
    key = parts[depth]
    pattern = re.compile(r"^\s*(" + re.escape(key) + r'|"' + re.escape(key) + r'")\s*[=.]')
    for i in range(start + (1 if depth else 0), len(lines)):
        if depth and re.match(r"^\s*\[", lines[i]):
            break
        if pattern.match(lines[i]):
            return i + 1
    return start + 1 if depth else None


def config_path(explicit: Path | None = None) -> Path:
    """--config, else $DISPATCH_CONFIG, else ./config.toml."""
    if explicit is not None:
        return explicit
    env = os.environ.get("DISPATCH_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG


def load_settings(path: Path | None = None) -> Settings:
    """Load and validate config.toml; raise ConfigError listing every problem found."""
    path = config_path(path)
    shown = display_path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(Problem(shown, "config file not found (use --config PATH or "
                                         "set DISPATCH_CONFIG)")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(Problem(shown, f"cannot read config file: {exc}")) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        message = re.sub(r"\s*\(at line.*\)", "", str(exc))
        raise ConfigError(Problem(shown, f"invalid TOML: {message}",
                                  int(match[1]) if match else None)) from None
    settings, problems = _parse(doc, path.resolve())
    if problems:
        raise ConfigError([Problem(shown, f"{key}: {message}", toml_line(text, key))
                           for key, message in problems])
    assert settings is not None
    return settings
