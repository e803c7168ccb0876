"""The ref picker: records found as the type's list search finds them, users by
the start of their name, and the
labels of the refs a form shows as selected.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from engine import access, lists, refwhere
from engine.fieldtypes import Invalid, valid_id
from engine.filters import escape_like, label_field
from engine.registry import USER, DocType
from engine.web.base import crm, db_session, locale, principal
from engine.web.fetch import clean, documents, ref_loads, row_doc
from engine.web.formatting import title


def prefix_pattern(text: str) -> str:
    """A LIKE pattern for "starts with", case-insensitive, with wildcards escaped."""
    return escape_like(text.lower()) + "%"


def constraint(d: DocType, args: Mapping[str, str]) -> sa.ColumnElement[bool] | None:
    """What a constrained ref (``where:``) lets the picker offer: ``for`` names
    the ref (``Deal.interest``), ``f.<field>`` the values of the fields of the
    form it depends on. An empty one narrows nothing (see engine/refwhere.py);
    one that is not a valid value offers nothing."""
    state = crm()
    found = refwhere.field_for(state.registry, args.get("for", ""), d)
    if found is None:
        return None
    owner, f = found
    assert f.where is not None
    docs = documents()
    values: dict[str, Any] = {}
    for name in f.where.depends:
        raw = clean(args.get(refwhere.PARAM + name, ""), 200)
        try:
            values[name] = docs.normalize(owner.fields[name], raw)
        except Invalid:
            return sa.false()
    me = principal()
    return refwhere.condition(state.models, f, values, user_id=me.user_id, principal=me)


def lookup(
    d: DocType, text: str, limit: int = 20, where: sa.ColumnElement[bool] | None = None
) -> list[dict[str, Any]]:
    """Records the list search finds for ``text`` (the same meaning: the words
    anywhere in the type's search fields), within the access rules; ``where``
    narrows them further (a constrained ref's :func:`constraint`)."""
    state = crm()
    text = clean(text, 100)
    cls = state.models.cls(d.name)
    lf = label_field(d)
    stmt = sa.select(cls).where(access.where(state.models, principal(), d.name, "read"))
    if where is not None:
        stmt = stmt.where(where)
    if text:
        dialect = db_session().get_bind().dialect.name
        stmt = stmt.where(lists.search_where(state.models, principal(), d, text, dialect))
        stmt = stmt.order_by(*([getattr(cls, lf.column)] if lf is not None else []), cls.id)
    else:
        stmt = stmt.order_by(cls.id.desc())
    stmt = stmt.options(*ref_loads(d)).limit(limit)
    return [{"id": obj.id, "text": title(d, obj)} for obj in db_session().execute(stmt).scalars()]


def lookup_users(
    text: str, limit: int = 20, where: sa.ColumnElement[bool] | None = None
) -> list[dict[str, Any]]:
    users = crm().models.table(USER)
    text = clean(text, 100)
    stmt = sa.select(users.c.id, users.c.username, users.c.first_name, users.c.last_name).where(
        users.c.active.is_(True)
    )
    if where is not None:
        stmt = stmt.where(where)
    if text:
        escaped = prefix_pattern(text)
        stmt = stmt.where(
            sa.or_(
                *(
                    sa.func.lower(users.c[c]).like(escaped, escape="\\")
                    for c in ("username", "first_name", "last_name")
                )
            )
        )
    stmt = stmt.order_by(users.c.first_name, users.c.last_name, users.c.id).limit(limit)
    return [
        {"id": r.id, "text": f"{r.first_name} {r.last_name}".strip() or r.username}
        for r in db_session().execute(stmt)
    ]


def ref_labels(
    d: DocType, values: Mapping[str, Any], extra: Iterable[tuple[DocType, Mapping[str, Any]]] = ()
) -> dict[tuple[str, str], str]:
    """Labels for the refs a form shows as selected (its table rows' too),
    one query per target type."""
    registry = crm().registry
    wanted: dict[str, set[int]] = {}

    def collect(doc: DocType, vals: Mapping[str, Any]) -> None:
        for f in doc.fields.values():
            if f.type == "ref" and vals.get(f.name) not in (None, ""):
                raw = vals[f.name]
                ident = valid_id(raw.id if hasattr(raw, "id") else raw)
                if ident is not None:
                    wanted.setdefault(f.to or USER, set()).add(ident)
            elif f.type == "table" and isinstance(vals.get(f.name), list):
                for row in vals[f.name]:
                    if isinstance(row, Mapping):
                        collect(row_doc(doc, f), row)

    collect(d, values)
    for doc, vals in extra:
        collect(doc, vals)
    out: dict[tuple[str, str], str] = {}
    models, me = crm().models, principal()
    for target, ids in wanted.items():
        td = registry.documents[target]
        cls = models.cls(target)
        seen = access.visible(models, me, target)
        stmt = sa.select(cls).where(cls.id.in_(ids), seen).options(*ref_loads(td))
        for obj in db_session().execute(stmt).scalars():
            out[(target, str(obj.id))] = title(td, obj)
        for ident in ids:  # a record the user may not read is named by its id only
            out.setdefault((target, str(ident)), access.hidden_label(registry, ident, locale()))
    return out
