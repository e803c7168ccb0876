"""Roles and permissions from metadata, synced into Flask-AppBuilder's tables.

Each document type gets ``can_read``, ``can_write`` and ``can_delete``; a
role holds the ones its ``access`` rules grant (its own rule, or the
``everyone`` rule; ``own`` counts: the row filter narrows it later).
``crm migrate`` runs the sync, never a web worker.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from flask_appbuilder.security.sqla.models import (
    Permission,
    PermissionView,
    Role,
    ViewMenu,
    assoc_permissionview_role,
)

from engine.registry import Registry

PERMISSIONS = ("can_read", "can_write", "can_delete")


def granted(registry: Registry, role: str) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for d in registry.documents.values():
        rule = d.access_of(role, registry.roles)
        if rule is None:
            continue
        if rule.read:
            out.add(("can_read", d.name))
        if rule.create or rule.update:
            out.add(("can_write", d.name))
        if rule.delete:
            out.add(("can_delete", d.name))
    return out


def sync(appbuilder: Any, registry: Registry) -> list[str]:
    """Create the permissions and roles the metadata names; return what changed.

    Set-based: the permissions, views, their pairs and the roles' grants are
    each read once and written in one statement per table, in one
    transaction (Flask-AppBuilder's own helpers commit once per grant: a
    few hundred commits for a configuration of thirty types). The outcome is
    Flask-AppBuilder's: every view's ``base_permissions`` and every menu
    entry's ``menu_access``, all granted to the Admin role, and a
    permission a view no longer exposes removed."""
    sm = appbuilder.sm
    session = sm.session
    changes: list[str] = []
    doc_names = [d.name for d in registry.documents.values()]
    admin_name = sm.auth_role_admin
    # (permission, view) pairs: Flask-AppBuilder's views and menus, the types, the shared ones
    views: dict[str, set[str]] = {}
    for baseview in appbuilder.baseviews:
        views.setdefault(baseview.class_permission_name, set()).update(baseview.base_permissions)
    menus: list[str] = []
    if appbuilder.menu is not None:
        for category in appbuilder.menu.get_list():
            menus.append(category.name)
            menus += [item.name for item in category.childs if item.name != "-"]
    pairs: list[tuple[str, str]] = [(p, v) for v, perms in views.items() for p in sorted(perms)]
    pairs += [("menu_access", m) for m in menus]
    pairs += [(perm, name) for name in doc_names for perm in PERMISSIONS]
    user_view = sm.user_view.__class__.__name__
    shared = [
        # everyone who logs in may read the API's description
        ("can_get", "OpenApi"),
        ("can_show", "SwaggerView"),
        # and may see their own profile and change their own password
        ("can_this_form_get", "ResetMyPasswordView"),
        ("can_this_form_post", "ResetMyPasswordView"),
        ("can_userinfo", user_view),
        ("resetmypassword", user_view),  # the profile's "reset my password" button
    ]
    pairs += shared
    pairs = list(dict.fromkeys(pairs))

    perm_t, view_t = Permission.__table__, ViewMenu.__table__
    pv_t, role_t = PermissionView.__table__, Role.__table__
    grant_t = assoc_permissionview_role

    def ids(table: sa.Table, names: Iterable[str]) -> dict[str, int]:
        wanted = set(names)
        have = dict(session.execute(sa.select(table.c.name, table.c.id)).all())
        missing = sorted(wanted - have.keys())
        if missing:
            session.execute(sa.insert(table), [{"name": n} for n in missing])
            have = dict(session.execute(sa.select(table.c.name, table.c.id)).all())
        return have

    perm_ids = ids(perm_t, (p for p, _ in pairs))
    view_ids = ids(view_t, (v for _, v in pairs))
    role_names = [admin_name, *registry.roles]
    had_roles = set(session.execute(sa.select(role_t.c.name)).scalars())
    role_ids = ids(role_t, role_names)
    changes += [f"add role {r}" for r in registry.roles if r not in had_roles]

    def pv_map() -> dict[tuple[str, str], int]:
        rows = session.execute(
            sa.select(perm_t.c.name, view_t.c.name, pv_t.c.id)
            .join(perm_t, perm_t.c.id == pv_t.c.permission_id)
            .join(view_t, view_t.c.id == pv_t.c.view_menu_id)
        )
        return {(p, v): i for p, v, i in rows}

    pvs = pv_map()
    missing_pvs = [pair for pair in pairs if pair not in pvs]
    if missing_pvs:
        session.execute(
            sa.insert(pv_t),
            [{"permission_id": perm_ids[p], "view_menu_id": view_ids[v]} for p, v in missing_pvs],
        )
        pvs = pv_map()
    # a permission a view of Flask-AppBuilder's no longer exposes goes, from every role
    obsolete = [
        i for (p, v), i in pvs.items() if v in views and p not in views[v] and p != "menu_access"
    ]
    if obsolete:
        session.execute(sa.delete(grant_t).where(grant_t.c.permission_view_id.in_(obsolete)))
        session.execute(sa.delete(pv_t).where(pv_t.c.id.in_(obsolete)))
        pvs = {k: i for k, i in pvs.items() if i not in set(obsolete)}

    granted_now: dict[int, set[int]] = {}
    for role_id, pv_id in session.execute(
        sa.select(grant_t.c.role_id, grant_t.c.permission_view_id)
    ):
        granted_now.setdefault(role_id, set()).add(pv_id)
    add: list[dict[str, int]] = []
    remove: list[tuple[int, int]] = []
    admin_id = role_ids[admin_name]
    add += [
        {"role_id": admin_id, "permission_view_id": pvs[pair]}
        for pair in pairs
        if pvs[pair] not in granted_now.get(admin_id, set())
    ]
    doc_pvs = {pvs[(perm, name)]: (perm, name) for name in doc_names for perm in PERMISSIONS}
    for role_name in registry.roles:
        role_id = role_ids[role_name]
        have_ids = granted_now.get(role_id, set())
        add += [
            {"role_id": role_id, "permission_view_id": pvs[pair]}
            for pair in shared
            if pvs[pair] not in have_ids
        ]
        want = granted(registry, role_name)
        have = {doc_pvs[i] for i in have_ids if i in doc_pvs}
        for key in sorted(want - have):
            add.append({"role_id": role_id, "permission_view_id": pvs[key]})
            changes.append(f"grant {role_name}: {key[0]} on {key[1]}")
        for key in sorted(have - want):
            remove.append((role_id, pvs[key]))
            changes.append(f"revoke {role_name}: {key[0]} on {key[1]}")
    if add:
        session.execute(sa.insert(grant_t), add)
    for role_id, pv_id in remove:
        session.execute(
            sa.delete(grant_t).where(
                grant_t.c.role_id == role_id, grant_t.c.permission_view_id == pv_id
            )
        )
    session.commit()
    session.expire_all()  # the security manager's cached roles see the new grants
    return changes
