"""Menus grouped by what a sales department looks for, filtered by access rules.

Flask-AppBuilder checks a ``menu_access`` permission per item with a query
each; document types are checked against the metadata's rules instead (no
query), and the remaining built-in items are cached per request.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, g

from engine import access
from engine.web.base import principal


def install_menu(appbuilder: Any, state: Any) -> None:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    registry = state.registry
    sm = appbuilder.sm

    def fab_visible(name: str) -> bool:
        cache = g.setdefault("crm_menu_cache", {})
        if name not in cache:
            cache[name] = sm.has_access("menu_access", name)
        return bool(cache[name])

    def visible(item: Any) -> bool:
        if item.name in registry.documents:
            return access.allowed(registry, principal(), item.name, "read")
        if item.name.startswith("crm:"):
            return True
        if item.childs:
            return any(visible(child) for child in item.childs if child and child.name != "-")
        return fab_visible(item.name)

    app.jinja_env.filters["is_menu_visible"] = visible
