"""What a save can be refused with: bad values, a stale version, a missing
record, a delete that other records still refer to."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from engine.errors import HandledError


class ValidationFailed(HandledError):
    """Values that do not fit their fields, all of them at once, by field path
    (``customer``, ``lines.2.qty``, ``next.0.due``; rows count from 0), so a
    form can show each message next to its input. Nothing has been written."""

    def __init__(self, errors: Mapping[str, str], duplicates: Mapping[str, Any] | None = None):
        self.errors = dict(errors)
        #: field → the other record holding a ``unique`` value (plans.Duplicate)
        self.duplicates = dict(duplicates or {})
        super().__init__("; ".join(f"{path}: {message}" for path, message in self.errors.items()))


class StaleVersion(HandledError):
    """Someone saved the record after the user loaded it: overwriting their
    change silently would lose it, so the user is told who and when."""

    def __init__(self, message: str, by: str | None, at: dt.datetime | None, version: int | None):
        self.by = by
        self.at = at
        self.version = version
        super().__init__(message)


class NotFound(HandledError):
    """No record with that id (or the type has none that may be written)."""


class DeleteRefused(HandledError):
    """Other records still refer to the one being deleted."""


class DuplicatesFound(HandledError):
    """Values of ``unique: warn`` fields that other records hold, while the
    caller asked to stop at warnings (a form before "save anyway")."""

    def __init__(self, warnings: Mapping[str, Any]):
        self.warnings = dict(warnings)
        super().__init__("; ".join(w.message for w in self.warnings.values()))
