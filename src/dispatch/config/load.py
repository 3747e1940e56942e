"""config.toml → Settings, or a ConfigError listing every problem with its key path and line.

Every problem in the file is collected before anything is raised, so an operator fixes the
whole file in one pass. Unknown keys are errors: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from dispatch.config.fields import OURS, Loc, show
from dispatch.config.schema import Settings
from dispatch.errors import ConfigError, Problem, display_path

DEFAULT_CONFIG = Path("config.toml")

# Pydantic's error types that the schema's own types do not reword, in the operator's words.
_MESSAGES = {
    "missing": "required key is missing",
    "extra_forbidden": "unknown key",
    "model_type": "expected a table, got {got}",
    "model_attributes_type": "expected a table, got {got}",
    "dict_type": "expected a table, got {got}",
}


def toml_error(exc: tomllib.TOMLDecodeError) -> tuple[str, int | None]:
    """A TOML syntax error as a message and the line it is on."""
    match = re.search(r"\(at line (\d+), column \d+\)", str(exc))
    message = re.sub(r"\s*\(at line.*\)", "", str(exc))
    return f"invalid TOML: {message}", int(match[1]) if match else None


def key_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic location as the file's key path: `schedules[0].cron`, `smtp.port`."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "[key]":  # a table key refused: the problem is the key itself
            path += f".{part}" if path else part
    return path


def message(error: ErrorDetails) -> str:
    if error["type"] == OURS:
        return error["msg"]
    template = _MESSAGES.get(error["type"])
    return template.format(got=show(error["input"])) if template else error["msg"]


def problems_of(exc: ValidationError, shown: str, line: Callable[[Loc], int | None],
                say: Callable[[ErrorDetails], str] = message) -> list[Problem]:
    """Every error of a file model's validation as `shown:LINE: key.path: message`; `line`
    finds a location in the file's text (TOML, YAML front matter)."""
    problems = []
    for error in exc.errors():
        key = key_path(error["loc"])
        problems.append(Problem(shown, f"{key}: {say(error)}" if key else say(error),
                                line(error["loc"])))
    return problems


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
    key, rest = parts[depth], ".".join(parts[depth:])
    # The rest of the path may be one quoted key holding dots: "gmail.com" = 20.
    pattern = re.compile(r"^\s*(" + re.escape(key) + r'|"' + re.escape(key) + r'"|"'
                         + re.escape(rest) + r'")\s*[=.]')
    for i in range(start + (1 if depth else 0), len(lines)):
        if depth and re.match(r"^\s*\[", lines[i]):
            break
        if pattern.match(lines[i]):
            return i + 1
    return start + 1 if depth else None


def parse_settings(text: str, path: Path) -> Settings:
    """Settings from config.toml's text; `path` resolves the relative paths in it."""
    shown = display_path(path)
    try:
        doc: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(Problem(shown, *toml_error(exc))) from None
    try:
        return Settings.model_validate(doc, context={"path": path.resolve()})
    except ValidationError as exc:
        raise ConfigError(problems_of(exc, shown, lambda loc: toml_line(text, key_path(loc)))
                          ) from None


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
        text = path.read_text(encoding="utf-8-sig")  # a BOM is tolerated
    except FileNotFoundError:
        raise ConfigError(Problem(shown, "config file not found (use --config PATH or "
                                         "set DISPATCH_CONFIG)")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(Problem(shown, f"cannot read config file: {exc}")) from None
    return parse_settings(text, path)
