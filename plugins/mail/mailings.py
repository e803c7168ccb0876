"""(being written)"""

from __future__ import annotations

from typing import Any

#: background jobs of this part, by name (crm_jobs)
JOBS: dict[str, Any] = {}
#: periodic jobs of this part, as (job name, every N seconds) (crm_schedules)
SCHEDULES: list[tuple[str, int]] = []


def register(appbuilder: Any, registry: Any) -> None:
    """Add this part's pages to the app."""


def record_actions(doctype: Any, doc: Any, principal: Any) -> list[Any]:
    """This part's buttons in a record's header."""
    return []
