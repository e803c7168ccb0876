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
