"""The value types of config.toml, each refusing a bad value in the operator's words.

Pydantic's own messages ("Input should be a valid integer") name neither the accepted range
nor the value given, so every type here rewords them as `expected <what>, got <value>`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Annotated, Any, NamedTuple, get_args

from email_validator import EmailNotValidError, validate_email
from pydantic import GetCoreSchemaHandler, ValidationError
from pydantic_core import CoreSchema, InitErrorDetails, PydanticCustomError, core_schema

from dispatch.clock import is_zone
from dispatch.config.suggest import did_you_mean, zone_names
from dispatch.text import control_character

Loc = tuple[str | int, ...]
TOPIC_KEY = re.compile(r"^[a-z0-9][a-z0-9-]*$")  # also names schedules (and so issues)
OURS = "dispatch"  # the error type of every message written here; load.py shows it as is


def show(value: object) -> str:
    """A value as a message quotes it: text in quotes (control characters escaped, so the
    message stays on its line), tables and lists by their kind."""
    if isinstance(value, str):
        return '"' + "".join(c if c.isprintable() else repr(c)[1:-1] for c in value) + '"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "a list"
    return repr(value)


def fail(message: str) -> PydanticCustomError:
    # No context is passed, so braces in the message (e.g. "{date}") are kept as written.
    return PydanticCustomError(OURS, message)


def expected(what: str, value: object) -> PydanticCustomError:
    return fail(f"expected {what}, got {show(value)}")


def _details(problems: list[tuple[Loc, str]]) -> list[InitErrorDetails]:
    return [InitErrorDetails(type=fail(message), loc=loc, input=None) for loc, message in problems]


def located(problems: list[tuple[Loc, str]]) -> ValidationError:
    """Problems below the value being validated; pydantic prefixes the value's own location."""
    return ValidationError.from_exception_data("config", _details(problems))


def checked(handler: Callable[[Any], Any], value: Any, problems: list[tuple[Loc, str]]) -> Any:
    """handler(value), with `problems` reported alongside whatever it finds itself."""
    try:
        result = handler(value)
    except ValidationError as exc:
        errors = [InitErrorDetails(type=PydanticCustomError(e["type"], e["msg"]), loc=e["loc"],
                                   input=e["input"]) for e in exc.errors()] + _details(problems)
        raise ValidationError.from_exception_data("config", errors) from None
    if problems:
        raise located(problems)
    return result


def _reworded(schema: CoreSchema, message: Callable[[Any], PydanticCustomError]) -> CoreSchema:
    """`schema`, with pydantic's own complaints replaced by `message(value)`; ours pass as is."""
    def reword(value: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            if all(e["type"] == OURS for e in exc.errors()):
                raise
            raise message(value) from None
    return core_schema.no_info_wrap_validator_function(reword, schema)


@dataclass(frozen=True)
class Text:
    """A non-blank string, trimmed; `pattern` is matched before trimming. Control characters
    are refused (they would reach a mail header), line breaks too unless `lines`."""

    what: str = "a string"
    pattern: str | None = None
    lines: bool = False

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> CoreSchema:
        schema = core_schema.no_info_after_validator_function(
            self._check, core_schema.str_schema(pattern=self.pattern))
        return _reworded(schema, lambda value: expected(self.what, value))

    def _check(self, value: str) -> str:
        if not value.strip():
            raise expected(self.what, value)
        allowed = "\t\r\n" if self.lines else ""
        if control_character(value, allowed) is not None:
            raise fail(f"expected text without control characters, got {show(value)}")
        return value.strip()


ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


@dataclass(frozen=True)
class EnvName:
    """The name of an environment variable. Anything else is most likely the secret itself,
    pasted in by mistake, so the message never shows the value."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> CoreSchema:
        return _reworded(core_schema.str_schema(pattern=ENV_NAME), lambda _: fail(
            "does not look like an environment variable name (letters, digits and _, not "
            "starting with a digit); the value is not shown"))


@dataclass(frozen=True)
class Key:
    """A table key held to `pattern`, refused with a fixed `message`."""

    pattern: str
    message: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> CoreSchema:
        return _reworded(core_schema.str_schema(pattern=self.pattern),
                         lambda _: fail(self.message))


@dataclass(frozen=True)
class Between:
    """An integer (when the field is an int) or a number within [lo, hi]; a bool is neither."""

    lo: float
    hi: float

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> CoreSchema:
        schema: CoreSchema
        if source is int:
            what = f"an integer {self.lo}-{self.hi}"
            schema = core_schema.int_schema(ge=int(self.lo), le=int(self.hi))
        else:
            what = f"a number {self.lo:g}-{self.hi:g}"
            schema = core_schema.float_schema(ge=self.lo, le=self.hi, allow_inf_nan=False)
        return _reworded(schema, lambda value: expected(what, value))


class Flag:
    """true or false, nothing else (TOML's own booleans; "yes" or 1 are refused)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> CoreSchema:
        return _reworded(core_schema.bool_schema(strict=True),
                         lambda value: expected("true or false", value))


class OneOf:
    """A Literal's choices, listed in the message when the value is none of them."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> CoreSchema:
        what = "one of " + ", ".join(get_args(source))
        return _reworded(handler(source), lambda value: expected(what, value))


class Strings:
    """A list of non-blank strings, trimmed, held as a tuple."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(self._check)

    @staticmethod
    def _check(value: Any) -> tuple[str, ...]:
        if not isinstance(value, (list, tuple)) or not all(
                isinstance(v, str) and v.strip() for v in value):
            raise expected("a list of strings", value)
        item = Text()
        return tuple(item._check(v) for v in value)


_DURATION = re.compile(r"^(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?$")


class Duration:
    """Seconds as a number, or text like "2d", "1h", "90m", "1h30m"."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(self._check)

    @staticmethod
    def _check(value: Any) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
                return timedelta(seconds=value)
            match = _DURATION.match(value.strip()) if isinstance(value, str) else None
            if match and any(match.groups()):
                d, h, m, s = (int(g or 0) for g in match.groups())
                return timedelta(days=d, hours=h, minutes=m, seconds=s)
        except OverflowError:  # inf, or more days than a timedelta holds
            pass
        raise expected('seconds or a duration like "1h" or "90m"', value)


class IanaZone:
    """An IANA time zone name this machine's zone database knows."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    @staticmethod
    def _check(value: str) -> str:
        if not is_zone(value):
            raise fail(f"unknown IANA time zone {show(value)}{did_you_mean(value, zone_names())}")
        return value


class Mailbox(NamedTuple):
    name: str  # the display name; "" when only an address was given
    address: str


class AsMailbox:
    """"Name <addr>" or a bare address, the address's syntax checked (no DNS)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    @staticmethod
    def _check(value: str) -> Mailbox:
        match = re.fullmatch(r"\s*(?:(.*?)\s*<([^<>]+)>|([^<>\s]+))\s*", value)
        if not match:
            raise expected('"Name <address>" or an address', value)
        address = (match[2] or match[3]).strip()
        try:
            validate_email(address, check_deliverability=False)
        except EmailNotValidError as exc:
            raise fail(f"invalid address {address!r}: {exc}") from None
        return Mailbox((match[1] or "").strip().strip('"'), address)


@dataclass(frozen=True)
class Keyed:
    """A table of tables whose keys name their entries: each entry is handed its key as
    `field`, which the file itself may not set. Held read-only."""

    field: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> CoreSchema:
        return core_schema.no_info_wrap_validator_function(self._validate, handler(source))

    def _validate(self, value: Any, handler: Callable[[Any], Any]) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            return MappingProxyType(handler(value))
        clashes: list[tuple[Loc, str]] = [((key, self.field), "unknown key") for key, entry
                                          in value.items() if isinstance(entry, dict)
                                          and self.field in entry]
        named = {key: {**entry, self.field: key} if isinstance(entry, dict) else entry
                 for key, entry in value.items()}
        return MappingProxyType(checked(handler, named, clashes))


DOMAIN = r"^[A-Za-z0-9.-]+\.[A-Za-z]{2,}$"
Port = Annotated[int, Between(1, 65535)]
Zone = Annotated[str, Text(), IanaZone()]
Domain = Annotated[str, Text("a domain name", DOMAIN)]
StrList = Annotated[tuple[str, ...], Strings()]
