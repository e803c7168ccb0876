"""Problems found in metadata, and the errors that carry them to the user.

Every problem points at YAML (``file:line:col``) so that a consultant can fix
it without reading a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Loc:
    """Where a metadata node came from; line and column are 1-based."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


UNKNOWN = Loc("<engine>", 0, 0)


@dataclass(frozen=True, order=True)
class Problem:
    loc: Loc
    message: str

    def __str__(self) -> str:
        return f"{self.loc}: {self.message}"


class HandledError(Exception):
    """An error the user caused and can fix: printed as is, never a traceback."""


class MetadataError(HandledError):
    """One or more problems in a configuration."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = sorted(set(problems))
        super().__init__("\n".join(str(p) for p in self.problems))


def a_or_an(word: str) -> str:
    """``word`` with its indefinite article, for a message: "an integer", "a date"."""
    return f"an {word}" if word[:1].lower() in "aeiou" else f"a {word}"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A hint such as ' (did you mean `amount`?)', or '' when nothing is close."""
    close = difflib.get_close_matches(str(word), sorted(set(choices)), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""
