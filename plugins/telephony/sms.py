"""(being written)"""

from __future__ import annotations

from typing import Any

JOBS: dict[str, Any] = {}
SCHEDULES: list[tuple[str, int]] = []


def check(registry: Any) -> list[Any]:
    return []


def register(appbuilder: Any, registry: Any) -> None:
    return None


def record_actions(doctype: Any, doc: Any, principal: Any) -> list[Any]:
    return []


def record_sections(models: Any, doctype: Any, doc: Any, principal: Any) -> list[Any]:
    return []


def receipt(docs: Any, provider: str, provider_id: str, status: str, error: Any, at: Any) -> Any:
    """A delivery receipt for the SMS the provider knows as ``provider_id``."""
    return None
