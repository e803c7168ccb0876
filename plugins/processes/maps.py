"""(being written)"""

from __future__ import annotations

from typing import Any


def register(appbuilder: Any, registry: Any) -> None:
    return None


def record_sections(models: Any, defs: Any, doctype: Any, doc: Any, principal: Any) -> list[Any]:
    return []
