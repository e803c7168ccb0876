"""The glue between the web layer and the engine's services: fetching with
access rules, turning form posts into values, values into display text.

Views and the REST API both call these, so a rule holds in both or neither.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from werkzeug.datastructures import MultiDict

from engine import access, expressions
from engine.documents import DeleteRefused, Documents, NotFound, StaleVersion, ValidationFailed
from engine.errors import HandledError
from engine.filters import label_field
from engine.registry import USER, DocType, Field, State
from engine.statuses import StatusEngine, TransitionRefused
from engine.web.base import crm, db_session, locale, principal
from engine.web.display import show

# -- reading ------------------------------------------------------------------------


def fetch(doctype: str, obj_id: int, action: str = "read") -> Any:
    """One record the principal may act on, or None (which the caller turns into 404)."""
    state = crm()
    cls = state.models.cls(doctype)
    stmt = (
        sa.select(cls)
        .where(cls.id == obj_id)
        .where(access.where(state.models, principal(), doctype, action))
    )
    return db_session().execute(stmt).scalar_one_or_none()


def title(d: DocType, obj: Any) -> str:
    if not d.title:
        return f"{d.label.get(locale())} #{obj.id}"
    try:
        return expressions.render(d.title, doc_context(d, obj)).strip() or f"#{obj.id}"
    except expressions.ExpressionError:
        return f"#{obj.id}"


def doc_view(d: DocType, obj: Any, depth: int = 1) -> expressions.DocView:
    """What templates see of a record; refs one level deep, shown by their title."""
    registry = crm().registry

    def wrap(name: str, raw: Any) -> Any:
        f = d.fields[name]
        if f.type == "ref" and raw is not None and depth > 0:
            return doc_view(registry.documents[f.to or USER], raw, depth - 1)
        if f.type == "ref" and raw is not None:
            return _short_label(registry.documents[f.to or USER], raw)
        if f.type == "table" and raw is not None:
            return [expressions.DocView(row, list(f.fields)) for row in raw]
        return raw

    return expressions.DocView(
        obj, list(d.fields), title=lambda v: _plain_title(d, obj, depth), wrap=wrap
    )


def _plain_title(d: DocType, obj: Any, depth: int) -> str:
    if not d.title:
        return f"#{obj.id}"
    if depth <= 0:
        return _short_label(d, obj)
    return title_from(d, obj, depth)


def title_from(d: DocType, obj: Any, depth: int) -> str:
    try:
        return expressions.render(
            d.title or "", expressions.context_for(doc_view(d, obj, depth - 1))
        ).strip()
    except expressions.ExpressionError:
        return f"#{obj.id}"


def _short_label(d: DocType, obj: Any) -> str:
    lf = label_field(d)
    value = getattr(obj, lf.column, None) if lf else None
    return str(value) if value else f"#{obj.id}"


def doc_context(d: DocType, obj: Any) -> dict[str, Any]:
    return expressions.context_for(doc_view(d, obj))


def display_values(d: DocType, obj: Any) -> dict[str, str]:
    registry = crm().registry
    out: dict[str, str] = {"__title__": title(d, obj)}
    if d.statuses:
        out["__state__"] = getattr(obj, d.statuses.field)
    for f in d.fields.values():
        if f.type == "table":
            continue
        if f.type == "ref":
            target = getattr(obj, f.name)
            out[f.name] = "" if target is None else title(registry.documents[f.to or USER], target)
        else:
            out[f.name] = show(f, getattr(obj, f.column), locale())
    return out


def table_rows(d: DocType, obj: Any) -> dict[str, list[dict[str, Any]]]:
    return {
        f.name: [
            {c.name: getattr(row, c.column) for c in f.fields.values()}
            for row in getattr(obj, f.name)
        ]
        for f in d.fields.values()
        if f.type == "table"
    }


def list_cells(
    d: DocType, rows: Iterable[Mapping[str, Any]], columns: list[str]
) -> list[dict[str, Any]]:
    """Display text per list cell; ref cells come already labelled by the list query."""
    registry = crm().registry
    out = []
    for row in rows:
        cells = []
        for c in columns:
            f = registry.field_path(d.name, c)[-1]
            value = row.get(c)
            cells.append(
                str(value) if f.type == "ref" and value is not None else show(f, value, locale())
            )
        out.append({"id": row["id"], "cells": cells})
    return out


def ref_labels(d: DocType, values: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """Labels for the refs a form shows as selected, one query per target type."""
    registry = crm().registry
    wanted: dict[str, set[int]] = {}
    for f in d.fields.values():
        if f.type == "ref" and values.get(f.name):
            try:
                wanted.setdefault(f.to or USER, set()).add(int(values[f.name]))
            except (TypeError, ValueError):
                continue
    out: dict[tuple[str, str], str] = {}
    for target, ids in wanted.items():
        td = registry.documents[target]
        cls = crm().models.cls(target)
        for obj in db_session().execute(sa.select(cls).where(cls.id.in_(ids))).scalars():
            out[(target, str(obj.id))] = title(td, obj)
    return out


def prefix_pattern(text: str) -> str:
    """A LIKE pattern for "starts with", case-insensitive, with wildcards escaped."""
    return text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def lookup(d: DocType, text: str, limit: int = 20) -> list[dict[str, Any]]:
    """Records whose name starts with ``text`` (case-insensitive), within the access rules."""
    state = crm()
    cls = state.models.cls(d.name)
    lf = label_field(d)
    stmt = sa.select(cls).where(access.where(state.models, principal(), d.name, "read"))
    if text and lf is not None:
        stmt = stmt.where(
            sa.func.lower(getattr(cls, lf.column)).like(prefix_pattern(text), escape="\\")
        )
        stmt = stmt.order_by(getattr(cls, lf.column), cls.id)
    else:
        stmt = stmt.order_by(cls.id.desc())
    return [
        {"id": obj.id, "text": title(d, obj)}
        for obj in db_session().execute(stmt.limit(limit)).scalars()
    ]


def lookup_users(text: str, limit: int = 20) -> list[dict[str, Any]]:
    users = crm().models.table(USER)
    stmt = sa.select(users.c.id, users.c.username, users.c.first_name, users.c.last_name).where(
        users.c.active.is_(True)
    )
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


# -- forms → values -------------------------------------------------------------------


def _field_value(f: Field, form: MultiDict[str, str], name: str) -> Any:
    if f.type == "boolean":
        return form.get(name) in ("1", "on", "true", "yes")
    raw = form.get(name)
    if raw is None:
        return None
    raw = raw.strip() if f.type != "text" else raw
    return raw if raw != "" else None


def form_values(
    d: DocType, form: MultiDict[str, str], only: Iterable[str] | None = None
) -> dict[str, Any]:
    """The values a form posted, for the fields a user may set."""
    wanted = set(only) if only is not None else None
    values: dict[str, Any] = {}
    for f in d.fields.values():
        if wanted is not None and f.name not in wanted:
            continue
        if f.system or f.readonly or f.compute or f.hidden:
            continue
        if d.statuses and f.name == d.statuses.field:
            continue
        if f.type == "table":
            values[f.name] = _table_rows(f, form)
        elif f.type == "boolean" or f.name in form:
            values[f.name] = _field_value(f, form, f.name)
    return values


def _table_rows(f: Field, form: MultiDict[str, str]) -> list[dict[str, Any]]:
    rows: dict[int, dict[str, Any]] = {}
    prefix = f"{f.name}-"
    for key in form:
        if not key.startswith(prefix):
            continue
        parts = key.split("-")
        if len(parts) != 3 or not parts[1].isdigit() or parts[2] not in f.fields:
            continue
        rows.setdefault(int(parts[1]), {})
    out = []
    for i in sorted(rows):
        row = {}
        for c in f.fields.values():
            if c.compute or c.readonly:
                continue
            row[c.name] = _field_value(c, form, f"{f.name}-{i}-{c.name}")
        if any(v not in (None, False) for v in row.values()):
            out.append(row)
    return out


def next_values(d: DocType, state: State, form: MultiDict[str, str]) -> list[dict[str, Any]]:
    if state.require_next is None:
        return []
    target = crm().registry.documents[state.require_next.document]
    out = []
    i = 0
    while any(k.startswith(f"next-{i}-") for k in form):
        values = {}
        for f in target.fields.values():
            name = f"next-{i}-{f.name}"
            if name in form:
                values[f.name] = _field_value(f, form, name)
        if any(v not in (None, False) for v in values.values()):
            out.append(values)
        i += 1
    return out


def initial_values(d: DocType) -> dict[str, Any]:
    """Defaults shown in an empty form (the service applies them again on save)."""
    out: dict[str, Any] = {}
    for f in d.fields.values():
        if f.default is None or f.system:
            continue
        if f.default == "current_user":
            out[f.name] = principal().user_id
        elif f.default == "today":
            out[f.name] = dt.date.today()
        elif f.default == "now":
            out[f.name] = dt.datetime.now(dt.UTC)
        else:
            out[f.name] = f.default
    return out


def current_values(d: DocType, obj: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in d.fields.values():
        if f.type == "table":
            values[f.name] = table_rows(d, obj)[f.name]
        else:
            values[f.name] = getattr(obj, f.column)
    values["_version"] = obj.version
    return values


# -- writing ------------------------------------------------------------------------


def documents() -> Documents:
    state = crm()
    return Documents.for_principal(state.models, db_session(), principal(), state.pm)


def _saved(write: Any) -> tuple[Any, dict[str, str]]:
    """Run one write in the request's transaction: commit, or roll back and say why."""
    session = db_session()
    try:
        obj = write()
        session.commit()
    except ValidationFailed as exc:
        session.rollback()
        return None, exc.errors
    except StaleVersion as exc:
        session.rollback()
        return None, {"_version": str(exc)}
    except (DeleteRefused, NotFound, HandledError) as exc:
        session.rollback()
        return None, {"_form": str(exc)}
    return obj, {}


def create(d: DocType, values: Mapping[str, Any]) -> tuple[Any, dict[str, str]]:
    return _saved(lambda: documents().create(d.name, values))


def update(
    d: DocType, obj: Any, values: Mapping[str, Any], version: int | None
) -> tuple[Any, dict[str, str]]:
    return _saved(lambda: documents().update(d.name, obj, values, expected_version=version))


def delete(d: DocType, obj: Any) -> str | None:
    _, errors = _saved(lambda: documents().delete(d.name, obj) or True)
    return next(iter(errors.values()), None)


def transition(
    d: DocType,
    obj: Any,
    target: str,
    fields: Mapping[str, Any],
    nexts: list[dict[str, Any]],
    version: int | None,
) -> tuple[list[str], dict[str, str]]:
    """Apply a transition; ([], {}) when done, else the reasons and field errors."""
    session = db_session()
    try:
        StatusEngine(documents()).apply(
            d.name, obj, target, fields=fields or None, next=nexts, expected_version=version
        )
        session.commit()
    except TransitionRefused as exc:
        session.rollback()
        return [r.message for r in exc.reasons], {
            r.field: r.message for r in exc.reasons if r.field
        }
    except ValidationFailed as exc:
        session.rollback()
        return [], exc.errors
    except (StaleVersion, HandledError) as exc:
        session.rollback()
        return [str(exc)], {}
    return [], {}


def allowed_transitions(d: DocType, obj: Any) -> list[State]:
    if d.statuses is None or not access.may_touch(crm().models, principal(), d.name, "update", obj):
        return []
    names = StatusEngine(documents()).allowed_targets(d.name, obj)
    return [d.statuses.states[n] for n in names]


def history(d: DocType, obj: Any) -> list[dict[str, Any]]:
    if d.statuses is None:
        return []
    states = d.statuses.states
    out = []
    for h in StatusEngine(documents()).history(d.name, obj.id):
        source, target = h.get("from"), h.get("to")
        out.append({
            **h,
            "at_text": show(Field("at", "datetime"), h.get("at"), locale()),
            "by": h.get("by") or "",
            "from_label": states[source].label.get(locale()) if source in states else (source or "—"),
            "to_label": states[target].label.get(locale()) if target in states else (target or ""),
        })  # fmt: skip
    return out
