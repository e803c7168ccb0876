"""Menus grouped by what a sales department looks for, filtered by access
rules, and what the chrome of every page costs.

Flask-AppBuilder checks a ``menu_access`` permission per menu item with a
query each, and loads the user's roles and groups with a query each. Here
document types are checked against the metadata's rules (no query), the
remaining built-in items are answered by one query per request, and the user
comes with their roles and groups in the same statement that loads them: a
page's chrome costs two statements however many items the menu has.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import current_app, g, session
from flask_login import current_user
from sqlalchemy.orm import joinedload

from engine import access
from engine.fieldtypes import valid_id
from engine.sessions import STAMP_KEY, stamp
from engine.web.base import principal


def install_menu(appbuilder: Any, state: Any) -> None:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    registry = state.registry
    sm = appbuilder.sm

    def fab_names(items: list[Any]) -> list[str]:
        names: list[str] = []
        for item in items:
            if not item or item.name == "-":
                continue
            if item.childs:
                names += fab_names(item.childs)
            elif item.name not in registry.documents and not item.name.startswith("crm:"):
                names.append(item.name)
        return names

    def fab_visible(name: str) -> bool:
        """Every built-in item's ``menu_access`` in one query, once per request."""
        if "crm_menu_access" not in g:
            names = fab_names(appbuilder.menu.get_list())
            anonymous = not current_user.is_authenticated
            if not names or (anonymous and sm.get_public_role() is None):
                g.crm_menu_access = set()
            else:
                g.crm_menu_access = set(sm.get_user_menu_access(names))
        return name in g.crm_menu_access

    def visible(item: Any) -> bool:
        if item.name in registry.documents:
            return access.allowed(registry, principal(), item.name, "read")
        if item.name.startswith("crm:") and not item.childs:
            # the engine's and plugins' own pages check access themselves;
            # a link added with ``cond=`` shows only when it says so (no query)
            return item.should_render()
        if item.name.startswith("crm:"):
            return any(visible(child) for child in item.childs if child and child.name != "-")
        if item.childs:
            return any(visible(child) for child in item.childs if child and child.name != "-")
        return fab_visible(item.name)

    app.jinja_env.filters["is_menu_visible"] = visible
    install_user_loader(sm)


def install_user_loader(sm: Any) -> None:
    """Load the session's user with their roles and groups (and the groups'
    roles) in one statement: Flask-AppBuilder's loader fetches each lazily."""
    user_cls = sm.user_model
    options = [joinedload(user_cls.roles)]
    groups = getattr(user_cls, "groups", None)
    if groups is not None:
        group_cls = groups.property.mapper.class_
        options.append(joinedload(groups).joinedload(group_cls.roles))

    def load_user(pk: Any) -> Any:
        ident = valid_id(pk)
        if ident is None:
            return None
        # the session's stamp must still be the user's (engine.sessions): a
        # logout, a new password, deactivation or new roles end the session
        sessions = current_app.extensions["crm.sessions"]
        stmt = (
            sa.select(user_cls, sessions.version_column(user_cls))
            .options(*options)
            .where(user_cls.id == ident)
        )
        row = sm.session.execute(stmt).unique().first()
        if row is None or not row[0].is_active:
            return None
        if session.get(STAMP_KEY) != stamp(row[0], row[1]):
            return None
        return row[0]

    sm.lm.user_loader(load_user)
