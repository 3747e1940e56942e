"""The base of every file model (config.toml's tables, issue.toml, a brief's front matter):
unknown keys refused with a "did you mean", no type coercion, read-only once read."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationInfo, model_validator

from dispatch.config.fields import Loc, checked
from dispatch.config.suggest import did_you_mean

LISTED_KEYS = 8  # a model with this many keys or fewer lists them all for an unknown one


def unknown_key(key: str, known: Iterable[str]) -> str:
    names = sorted(known)
    hint = did_you_mean(key, names)
    if not hint and len(names) <= LISTED_KEYS:
        hint = f" (expected: {', '.join(names)})"
    return f"unknown key{hint}"


def folder_of(info: ValidationInfo) -> Path | None:
    """config.toml's folder, when the models are validated from a file."""
    path = info.context.get("path") if isinstance(info.context, dict) else None
    return Path(path).parent if path is not None else None


class Table(BaseModel):
    """One table of a file: every key declared, unknown ones refused with the nearest known
    one suggested. `refused` names keys that get a message of their own instead."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    refused: ClassVar[Mapping[str, str]] = {}

    @model_validator(mode="wrap")
    @classmethod
    def _known_keys(cls, data: Any, handler: Callable[[Any], Any]) -> Any:
        if not isinstance(data, dict):
            return handler(data)
        known = [field.alias or name for name, field in cls.model_fields.items()]
        problems: list[tuple[Loc, str]] = []
        for key in data:
            if key not in known:
                name = str(key)
                problems.append(((name,), cls.refused.get(name) or unknown_key(name, known)))
        if not problems:
            return handler(data)
        return checked(handler, {k: v for k, v in data.items() if k in known}, problems)

    def __setattr__(self, name: str, value: Any) -> None:
        # An AttributeError, as frozen dataclasses raise (pydantic's own is a ValueError).
        if name in self.__private_attributes__:
            return super().__setattr__(name, value)
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")
