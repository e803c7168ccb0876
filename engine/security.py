"""Roles and permissions from metadata, synced into Flask-AppBuilder's tables.

Each document type gets ``can_read``, ``can_write`` and ``can_delete``; a
role holds the ones its ``access`` rules grant (its own rule, or the
``everyone`` rule; ``own`` counts: the row filter narrows it later).
``crm migrate`` runs the sync, never a web worker.
"""

from __future__ import annotations

from typing import Any

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
    """Create the permissions and roles the metadata names; return what changed."""
    sm = appbuilder.sm
    changes: list[str] = []
    if sm.find_role(sm.auth_role_admin) is None:
        sm.add_role(sm.auth_role_admin)
    # Flask-AppBuilder's own pages (users, roles, menus): their permissions, for Admin
    appbuilder.add_permissions(update_perms=True)
    doc_names = [d.name for d in registry.documents.values()]
    pvms = {}
    for name in doc_names:
        for perm in PERMISSIONS:
            pvms[(perm, name)] = sm.add_permission_view_menu(perm, name)
    # everyone who logs in may read the API's description
    # and may see their own profile and change their own password
    shared = [
        sm.add_permission_view_menu("can_get", "OpenApi"),
        sm.add_permission_view_menu("can_show", "SwaggerView"),
        sm.add_permission_view_menu("can_this_form_get", "ResetMyPasswordView"),
        sm.add_permission_view_menu("can_this_form_post", "ResetMyPasswordView"),
        sm.add_permission_view_menu("can_userinfo", sm.user_view.__class__.__name__),
        # the profile's "reset my password" button (an action of the user view)
        sm.add_permission_view_menu("resetmypassword", sm.user_view.__class__.__name__),
    ]
    admin = sm.find_role(sm.auth_role_admin) or sm.add_role(sm.auth_role_admin)
    for pvm in [*pvms.values(), *shared]:
        if pvm not in admin.permissions:
            sm.add_permission_role(admin, pvm)
    for role_name in registry.roles:
        role = sm.find_role(role_name)
        if role is None:
            role = sm.add_role(role_name)
            changes.append(f"add role {role_name}")
        for pvm in shared:
            if pvm not in role.permissions:
                sm.add_permission_role(role, pvm)
        want = granted(registry, role_name)
        have = {
            (p.permission.name, p.view_menu.name)
            for p in role.permissions
            if p.view_menu.name in doc_names and p.permission.name in PERMISSIONS
        }
        for key in sorted(want - have):
            sm.add_permission_role(role, pvms[key])
            changes.append(f"grant {role_name}: {key[0]} on {key[1]}")
        for key in sorted(have - want):
            sm.del_permission_role(role, pvms[key])
            changes.append(f"revoke {role_name}: {key[0]} on {key[1]}")
    return changes
