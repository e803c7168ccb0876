"""Who may do what: the ``access`` rules of metadata, as answers and SQL.

One module answers for the web forms, lists, REST, counts, ref pickers,
kanban, calendar and exports alike, so the rules cannot drift apart. ``own``
becomes a WHERE clause on the owner column: another user's record is simply
not found (404), never shown and never counted.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import sqlalchemy as sa

from engine.registry import (
    ACCESS_ACTIONS,
    FIELD_LEVELS,
    USER,
    DocType,
    Field,
    Registry,
    frozen_map,
)

Rule = Literal[True, False, "own"]
#: the archive flag's column (engine/models.py: ARCHIVE_COLUMN)
ARCHIVE_COLUMN = "merged_into"
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
    *,
    archived: bool = False,
) -> sa.ColumnElement[bool]:
    """The rows the principal may act on, as a WHERE clause; on ``table`` (an
    alias of the type's table, in a join) when given.

    Records archived by a merge (engine/merge.py) are left out: a list, a
    count, a report, a picker, an export or a search never shows them as
    live. ``archived=True`` keeps them, for the paths that name one record
    by id to read it (its page says what it was merged into) or its title."""
    r = rule(models.registry, principal, doctype, action)
    if r is False or (r is not True and principal.user_id is None):
        return sa.false()
    kept = sa.true() if archived else live(models, doctype, table)
    if r is True:
        return kept
    d = models.registry.documents[doctype]
    owner = d.fields[d.owner] if d.owner else None
    if owner is None:
        return sa.false()
    source = table if table is not None else models.table(doctype)
    return sa.and_(source.c[owner.column] == principal.user_id, kept)


def live(models: Any, doctype: str, table: sa.FromClause | None = None) -> sa.ColumnElement[bool]:
    """The rows of ``doctype`` that no merge archived (every row of a type
    without the archive column: the users)."""
    source = table if table is not None else models.table(doctype)
    column = source.c.get(ARCHIVE_COLUMN)
    return sa.true() if column is None else column.is_(None)


def visible(
    models: Any, principal: Principal | None, doctype: str, table: sa.FromClause | None = None
) -> sa.ColumnElement[bool]:
    """The targets of a ref the principal may see through it (a dotted filter,
    a search, a label): the type's read rule. Users are names everyone sees
    (the people pickers), and the engine's own work (no principal) sees all."""
    if principal is None or doctype == USER:
        return sa.true()
    return where(models, principal, doctype, "read", table, archived=True)


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
    """For one loaded record: the same rule as :func:`where`, without a query
    (an archived record may still be read, never changed)."""
    if action != "read" and getattr(obj, ARCHIVE_COLUMN, None) is not None:
        return False
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


# --- fields ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldRights:
    """What a principal may do with each field of a type: the fields ``hidden``
    from them (never shown, filtered, sorted, searched, exported or summed) and
    those ``readonly`` to them (shown, never changed); every other field follows
    the type's rules."""

    hidden: frozenset[str] = frozenset()
    readonly: frozenset[str] = frozenset()

    def readable(self, name: str) -> bool:
        return name not in self.hidden

    def writable(self, name: str) -> bool:
        return name not in self.hidden and name not in self.readonly

    @property
    def everything(self) -> bool:
        return not self.hidden and not self.readonly


ALL_FIELDS = FieldRights()


def field_rights(registry: Registry, principal: Principal | None, doctype: str) -> FieldRights:
    """The principal's rights on the fields of ``doctype``: per field the most
    generous level (``none`` < ``read`` < ``write``) among their roles that have
    a rule on the type; a role whose rule names no fields gives every field.
    Administrators and the engine's own work (no principal) see every field. A
    computed field is hidden with any field it is computed from."""
    if principal is None or principal.admin:
        return ALL_FIELDS
    d = registry.documents.get(doctype)
    if d is None:
        return ALL_FIELDS
    names = field_names(d)
    best: dict[str, int] | None = None
    for role in principal.roles:
        r = d.access_of(role, registry.roles)
        if r is None:
            continue
        if not r.fields:
            return ALL_FIELDS
        levels = {name: FIELD_LEVELS.index(r.fields.get(name, "write")) for name in names}
        best = levels if best is None else {n: max(best[n], levels[n]) for n in names}
    if best is None:
        return ALL_FIELDS
    hidden = {n for n, level in best.items() if level == 0}
    readonly = {n for n, level in best.items() if level == 1}
    for t in d.fields.values():
        if t.type == "table" and t.name in hidden:  # a hidden table hides its columns
            hidden |= {f"{t.name}.{c}" for c in t.fields}
    if hidden:
        computed: dict[str, frozenset[str]] = {}
        for f in d.fields.values():
            if f.compute:
                # a table's name stands for its rows: any hidden column hides the result
                computed[f.name] = _names_used(f.compute) | {
                    f"{n}.{c}"
                    for n in _names_used(f.compute)
                    if n in d.fields and d.fields[n].type == "table"
                    for c in d.fields[n].fields
                }
            for c in f.fields.values() if f.type == "table" else ():
                if c.compute:
                    computed[f"{f.name}.{c.name}"] = frozenset(
                        f"{f.name}.{n}" for n in _names_used(c.compute)
                    )
        grew = True
        while grew:
            grew = False
            for name, used in computed.items():
                if name not in hidden and used & hidden:
                    hidden.add(name)
                    grew = True
    return FieldRights(frozenset(hidden), frozenset(readonly - hidden))


def field_names(d: DocType) -> list[str]:
    """The names a field rule may give: every field, and ``table.column`` for
    the columns of a table's rows."""
    names = list(d.fields)
    for f in d.fields.values():
        if f.type == "table":
            names += [f"{f.name}.{c}" for c in f.fields]
    return names


@functools.lru_cache(maxsize=1024)
def _names_used(expression: str) -> frozenset[str]:
    from engine.documents.values import names_used

    return names_used(expression)


def path_readable(
    registry: Registry, principal: Principal | None, doctype: str, path: str | Sequence[str]
) -> bool:
    """May the principal see every field of a dotted path (``customer.email``):
    the ref on this type, and the field on the type it leads to?"""
    return hidden_path(registry, principal, doctype, path) is None


def hidden_path(
    registry: Registry, principal: Principal | None, doctype: str, path: str | Sequence[str]
) -> str | None:
    """The first field of a dotted path hidden from the principal, as
    ``Type.field``, or None when they may see all of it."""
    parts = path.split(".") if isinstance(path, str) else list(path)
    current = doctype
    for part in parts:
        d = registry.documents.get(current)
        if d is None:
            return None
        if not field_rights(registry, principal, current).readable(part):
            return f"{current}.{part}"
        f = d.fields.get(part)
        if f is None or f.type != "ref":
            return None
        current = f.to or USER
    return None


def restricted(registry: Registry, principal: Principal | None, d: DocType) -> DocType:
    """The type as the principal sees it: without the fields hidden from them,
    the read-only ones marked ``readonly``, list columns, filters, searched
    fields and form sections without what they may not see. Pages and forms
    built from it cannot show what the principal may not read."""
    rights = field_rights(registry, principal, d.name)

    def seen(path: str) -> bool:
        return path_readable(registry, principal, d.name, path)

    if rights.everything and (
        d.list is None or all(seen(c) for c in (*d.list.columns, *d.list.search, *d.list.filters))
    ):
        return d  # (a dotted column may lead to a field hidden on another type)

    def shown(f: Field, prefix: str = "") -> Field:
        if f.type == "table":
            columns = {
                n: shown(c, f"{f.name}.")
                for n, c in f.fields.items()
                if f"{f.name}.{n}" not in rights.hidden
            }
            f = replace(f, fields=frozen_map(columns))
        return replace(f, readonly=True) if prefix + f.name in rights.readonly else f

    fields = {n: shown(f) for n, f in d.fields.items() if n not in rights.hidden}
    spec = d.list
    if spec is not None:
        order = spec.order if seen(spec.order_field) else "-id"
        spec = replace(
            spec,
            columns=tuple(c for c in spec.columns if seen(c)),
            search=tuple(c for c in spec.search if seen(c)),
            filters=tuple(c for c in spec.filters if seen(c)),
            order=order,
        )
    form = tuple(
        replace(s, fields=tuple(n for n in s.fields if n not in rights.hidden)) for s in d.form
    )
    return replace(d, fields=frozen_map(fields), list=spec, form=form)
