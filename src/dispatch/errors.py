"""The error tree. Every user-facing failure carries one or more located problems."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One thing wrong, with where it is: a file and line, or a config key path."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"


class DispatchError(Exception):
    """Base of every error dispatch reports to a user (never shown as a traceback)."""

    exit_code = 1

    def __init__(self, problems: list[Problem] | Problem | str) -> None:
        if isinstance(problems, str):
            problems = [Problem("dispatch", problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ConfigError(DispatchError):
    """config.toml is missing or invalid; nothing else may run."""

    exit_code = 2


class ContentError(DispatchError):
    """A brief, issue or plain-text import is malformed."""


class RenderError(DispatchError):
    """A template failed or a rendered variant broke an email-correctness rule."""


def display_path(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when possible."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
