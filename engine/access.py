"""Who may do what: the ``access`` rules of metadata, as answers and SQL.

One module answers for the web forms, lists, REST, counts, ref pickers,
kanban, calendar and exports alike, so the rules cannot drift apart. ``own``
becomes a WHERE clause on the owner column: another user's record is simply
not found (404), never shown and never counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa

from engine.registry import ACCESS_ACTIONS, USER, Registry

Rule = Literal[True, False, "own"]
ADMIN_ROLE = "Admin"


@dataclass(frozen=True)
class Principal:
    """The person acting: a user id and the role names they hold."""

    user_id: int | None
    username: str = ""
    roles: frozenset[str] = field(default_factory=frozenset)

    @property
    def admin(self) -> bool:
        return ADMIN_ROLE in self.roles

    @classmethod
    def of(cls, user: Any) -> Principal:
        """From a Flask-AppBuilder user (or an anonymous one)."""
        if user is None or not getattr(user, "is_authenticated", False):
            return cls(None)
        return cls(user.id, user.username, frozenset(r.name for r in user.roles))

    @classmethod
    def system(cls) -> Principal:
        """The engine itself (jobs, plugins' background work): may do everything, owns nothing."""
        return cls(None, "system", frozenset({ADMIN_ROLE}))


def rule(registry: Registry, principal: Principal, doctype: str, action: str) -> Rule:
    """The most generous rule any of the principal's roles grants (each role by
    its own rule, or by ``everyone``'s when the type names it not)."""
    if action not in ACCESS_ACTIONS:
        raise ValueError(f"unknown action {action}")
    if principal.admin:
        return True
    d = registry.documents[doctype]
    best: Rule = False
    for role in principal.roles:
        r = d.access_of(role, registry.roles)
        if r is None:
            continue
        value = r.rule(action)
        if value is True or value == "all":
            return True
        if value == "own":
            best = "own"
    return best


def allowed(registry: Registry, principal: Principal, doctype: str, action: str) -> bool:
    """May the principal do this to at least some records of the type?"""
    return rule(registry, principal, doctype, action) is not False


def where(
    models: Any,
    principal: Principal,
    doctype: str,
    action: str = "read",
    table: sa.FromClause | None = None,
) -> sa.ColumnElement[bool]:
    """The rows the principal may act on, as a WHERE clause; on ``table`` (an
    alias of the type's table, in a join) when given."""
    r = rule(models.registry, principal, doctype, action)
    if r is True:
        return sa.true()
    if r is False or principal.user_id is None:
        return sa.false()
    d = models.registry.documents[doctype]
    owner = d.fields[d.owner] if d.owner else None
    if owner is None:
        return sa.false()
    source = table if table is not None else models.table(doctype)
    return source.c[owner.column] == principal.user_id


def visible(
    models: Any, principal: Principal | None, doctype: str, table: sa.FromClause | None = None
) -> sa.ColumnElement[bool]:
    """The targets of a ref the principal may see through it (a dotted filter,
    a search, a label): the type's read rule. Users are names everyone sees
    (the people pickers), and the engine's own work (no principal) sees all."""
    if principal is None or doctype == USER:
        return sa.true()
    return where(models, principal, doctype, "read", table)


def may_see(models: Any, principal: Principal | None, doctype: str, obj: Any) -> bool:
    """For one loaded ref target: the same rule as :func:`visible`."""
    if principal is None or doctype == USER:
        return True
    return may_touch(models, principal, doctype, "read", obj)


NO_ACCESS = {"en": "no access", "ru": "нет доступа"}


def hidden_label(registry: Registry, target_id: Any, locale: str | None = None) -> str:
    """What a ref to a record the user may not read shows instead of its name."""
    lang = locale or str(registry.locale or "en")
    return f"#{target_id} — {NO_ACCESS.get(lang, NO_ACCESS['en'])}"


def may_touch(models: Any, principal: Principal, doctype: str, action: str, obj: Any) -> bool:
    """For one loaded record: the same rule as :func:`where`, without a query."""
    r = rule(models.registry, principal, doctype, action)
    if r is True:
        return True
    if r is False or principal.user_id is None:
        return False
    d = models.registry.documents[doctype]
    if not d.owner:
        return False
    return getattr(obj, d.fields[d.owner].column, None) == principal.user_id


def readable_types(registry: Registry, principal: Principal) -> Iterable[str]:
    return [name for name in registry.documents if allowed(registry, principal, name, "read")]
