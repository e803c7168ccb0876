"""The glue between the web layer and the engine's services: fetching with
access rules, turning form posts into values, values into display text.

Views and the REST API both call these, so a rule holds in both or neither:
who may read a record, which fields a user may set (the owner of an ``own``
record stays theirs), which records a ref may point at.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from flask import g
from markupsafe import escape
from sqlalchemy.orm import selectinload
from werkzeug.datastructures import MultiDict

from engine import access, lists
from engine.documents import (
    _INVALID,
    DeleteRefused,
    Documents,
    NotFound,
    StaleVersion,
    ValidationFailed,
    names_used,
    quoted,
)
from engine.errors import HandledError
from engine.filters import label_field
from engine.registry import USER, DocType, Field, State
from engine.statuses import StatusEngine, TransitionRefused
from engine.web.base import crm, db_session, locale, principal
from engine.web.display import show, zone

#: ids are 32-bit integers in every database the engine supports; a larger
#: number in a URL names no record (and must not reach PostgreSQL as one)
MAX_ID = 2**31 - 1
#: the deepest offset a page may ask for (deeper pages use the API's cursor)
MAX_OFFSET = 1_000_000

# -- small helpers ---------------------------------------------------------------------


def clean(text: str | None, limit: int = 1000) -> str:
    """Text from a URL or a form as the database may see it: no NUL
    characters (PostgreSQL refuses them), not longer than ``limit``."""
    return (text or "").replace("\x00", "")[:limit]


def company_tz() -> dt.tzinfo:
    """The company's clock, for datetimes shown and typed in forms."""
    if "crm_tz" not in g:
        g.crm_tz = zone(str(crm().registry.settings.get("timezone") or "UTC"))
    return g.crm_tz  # type: ignore[no-any-return]


def valid_id(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if 0 < number <= MAX_ID else None


def shown(f: Field, value: Any) -> str:
    return show(f, value, locale(), company_tz())


# -- reading ------------------------------------------------------------------------


def title_refs(d: DocType) -> list[str]:
    """The refs a type's title shows."""
    used = names_used(d.title, True) if d.title else frozenset()
    return [n for n, f in d.fields.items() if f.type == "ref" and ("doc" in used or n in used)]


def ref_loads(d: DocType, names: Iterable[str | None] | None = None) -> list[Any]:
    """Loader options that fetch the refs ``names`` (default: those the
    type's title shows) for many records at once: one query per ref, not one
    per record."""
    if names is None:
        names = title_refs(d)
    cls = crm().models.cls(d.name)
    return [
        selectinload(getattr(cls, n))
        for n in dict.fromkeys(names)
        if n is not None and n in d.fields and d.fields[n].type == "ref"
    ]


def fetch(doctype: str, obj_id: int, action: str = "read") -> Any:
    """One record the principal may act on, or None (which the caller turns into 404)."""
    if valid_id(obj_id) is None:
        return None
    state = crm()
    cls = state.models.cls(doctype)
    stmt = (
        sa.select(cls)
        .where(cls.id == obj_id)
        .where(access.where(state.models, principal(), doctype, action))
    )
    return db_session().execute(stmt).scalar_one_or_none()


def title(d: DocType, obj: Any) -> str:
    """How a person names the record: its ``title`` template, refs by their titles."""
    try:
        text = documents().title(d.name, obj).strip()
    except HandledError:
        text = ""
    return text or f"{d.label.get(locale())} #{obj.id}"


def _short_label(d: DocType, obj: Any) -> str:
    lf = label_field(d)
    value = getattr(obj, lf.column, None) if lf else None
    return str(value) if value else f"#{obj.id}"


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
            out[f.name] = shown(f, getattr(obj, f.column))
    return out


def ref_href(target_type: str, target_id: Any, target_obj: Any = None) -> str | None:
    """The record page of a referenced record, when the user may open it."""
    registry = crm().registry
    td = registry.documents.get(target_type)
    if td is None or td.builtin or target_id is None:
        return None
    if target_obj is not None:
        ok = access.may_touch(crm().models, principal(), td.name, "read", target_obj)
    else:
        ok = access.allowed(registry, principal(), td.name, "read")
    return f"/{td.resource}/{int(target_id)}" if ok else None


def ref_links(d: DocType, obj: Any) -> dict[str, str]:
    """Links of the record page's refs (loaded already for their titles)."""
    out = {}
    for f in d.fields.values():
        if f.type == "ref" and not f.system:
            target = getattr(obj, f.name)
            if target is not None:
                href = ref_href(f.to or USER, target.id, target)
                if href:
                    out[f.name] = href
    return out


def audit_line(d: DocType, obj: Any) -> dict[str, str]:
    """Who created the record and who changed it last, and when."""
    registry = crm().registry
    users = registry.documents[USER]
    at = Field("at", "datetime")
    out = {}
    for key in ("created", "updated"):
        who = getattr(obj, f"{key}_by", None)
        when = getattr(obj, f"{key}_at", None)
        if when is not None:
            out[key] = shown(at, when)
            out[f"{key}_by"] = title(users, who) if who is not None else ""
    return out


def table_rows(d: DocType, obj: Any) -> dict[str, list[dict[str, Any]]]:
    return {
        f.name: [
            {"id": row.id, **{c.name: getattr(row, c.column) for c in f.fields.values()}}
            for row in getattr(obj, f.name)
        ]
        for f in d.fields.values()
        if f.type == "table"
    }


def list_cells(
    d: DocType, rows: Iterable[Mapping[str, Any]], columns: list[str]
) -> list[dict[str, Any]]:
    """Display text (and a link for refs) per list cell; ref cells come
    already labelled by the list query, so a page costs no query per row."""
    registry = crm().registry
    fields = [registry.field_path(d.name, c)[-1] for c in columns]
    readable = {f.to: ref_href(f.to, 1) is not None for f in fields if f.type == "ref" and f.to}
    out = []
    for row in rows:
        cells = []
        for c, f in zip(columns, fields, strict=True):
            value = row.get(c)
            if f.type == "ref" and value is not None:
                href = f"/{registry.documents[f.to].resource}/{value.id}" if readable.get(f.to) else None  # fmt: skip
                cells.append({"text": str(value.label), "href": href})
            else:
                cells.append({"text": shown(f, value), "href": None})
        out.append({"id": row["id"], "cells": cells})
    return out


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
    for target, ids in wanted.items():
        td = registry.documents[target]
        cls = crm().models.cls(target)
        stmt = sa.select(cls).where(cls.id.in_(ids)).options(*ref_loads(td))
        for obj in db_session().execute(stmt).scalars():
            out[(target, str(obj.id))] = title(td, obj)
    return out


def row_doc(d: DocType, f: Field) -> DocType:
    """A table field's rows seen as a type of their own (for labels of their refs)."""
    return DocType(f"{d.name}.{f.name}", d.loc, d.layer, f.label, f.fields)


def prefix_pattern(text: str) -> str:
    """A LIKE pattern for "starts with", case-insensitive, with wildcards escaped."""
    return text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def lookup(d: DocType, text: str, limit: int = 20) -> list[dict[str, Any]]:
    """Records whose name starts with ``text`` (case-insensitive), within the access rules."""
    state = crm()
    text = clean(text, 100)
    cls = state.models.cls(d.name)
    lf = label_field(d)
    stmt = sa.select(cls).where(access.where(state.models, principal(), d.name, "read"))
    if text and lf is not None:
        column = state.models.table(d.name).c[lf.column]
        dialect = db_session().get_bind().dialect.name
        stmt = stmt.where(lists.prefix_match(column, text, dialect))
        stmt = stmt.order_by(getattr(cls, lf.column), cls.id)
    else:
        stmt = stmt.order_by(cls.id.desc())
    stmt = stmt.options(*ref_loads(d)).limit(limit)
    return [{"id": obj.id, "text": title(d, obj)} for obj in db_session().execute(stmt).scalars()]


def lookup_users(text: str, limit: int = 20) -> list[dict[str, Any]]:
    users = crm().models.table(USER)
    text = clean(text, 100)
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


# -- which fields a form has, and which the user may set -------------------------------


def form_sections(d: DocType) -> list[tuple[str, list[Field]]]:
    """The form's sections; without `form` in metadata, one section of every field
    a person fills in (hidden ones never appear)."""
    if d.form:
        return [
            (s.label.get(locale()), [d.fields[n] for n in s.fields if not d.fields[n].hidden])
            for s in d.form
        ]
    fields = [f for f in d.fields.values() if not f.system and not f.hidden]
    return [("", fields)]


def locked_fields(d: DocType, obj: Any | None) -> set[str]:
    """Fields the form shows but this user may not set: the owner of a type
    whose rule for the action is ``own`` (the record must stay the user's)."""
    action = "create" if obj is None else "update"
    if d.owner and access.rule(crm().registry, principal(), d.name, action) == "own":
        return {d.owner}
    return set()


def settable(f: Field, d: DocType) -> bool:
    """Can a form set this field at all (never audit, status, computed, read-only, hidden)?"""
    if f.system or f.readonly or f.compute or f.hidden:
        return False
    return not (d.statuses and f.name == d.statuses.field)


# -- forms → values -------------------------------------------------------------------


def _field_value(f: Field, form: MultiDict[str, str], name: str) -> Any:
    if f.type == "boolean":
        return form.get(name) in ("1", "on", "true", "yes")
    raw = form.get(name)
    if raw is None:
        return None
    raw = clean(raw, 100_000)
    raw = raw.strip() if f.type != "text" else raw
    if raw == "":
        return None
    if f.type == "datetime":
        # a datetime-local input sends the company's wall-clock time
        try:
            moment = dt.datetime.fromisoformat(raw)
        except ValueError:
            return raw
        return moment.replace(tzinfo=company_tz()) if moment.tzinfo is None else moment
    return raw


def form_values(
    d: DocType, form: MultiDict[str, str], only: Iterable[str] | None = None, obj: Any = None
) -> dict[str, Any]:
    """The values a form posted, for the fields its form shows and the user
    may set (``only``: just these, for a transition's required fields).
    Anything else in the post (owner of an ``own`` record, status, version,
    audit fields, computed, read-only and hidden fields) is ignored."""
    if only is not None:
        names = [n for n in only if n in d.fields]
    else:
        names = [f.name for _, fields in form_sections(d) for f in fields]
    locked = locked_fields(d, obj) if only is None else set()
    values: dict[str, Any] = {}
    for name in names:
        f = d.fields[name]
        if not settable(f, d) or name in locked:
            continue
        if f.type == "table":
            values[f.name] = _table_rows(f, form)
        elif f.type == "boolean" or f.name in form:
            values[f.name] = _field_value(f, form, f.name)
    return values


def _table_rows(f: Field, form: MultiDict[str, str]) -> list[dict[str, Any]]:
    """Rows as posted, in the order of their indexes (the form renumbers
    them after a move); ``<table>-<i>-id`` keeps an existing row."""
    rows: dict[int, dict[str, Any]] = {}
    prefix = f"{f.name}-"
    for key in form:
        if not key.startswith(prefix):
            continue
        parts = key.split("-")
        if len(parts) != 3 or not parts[1].isdigit() or len(parts[1]) > 6:
            continue
        if parts[2] in f.fields or parts[2] == "id":
            rows.setdefault(int(parts[1]), {})
    out = []
    for i in sorted(rows):
        row: dict[str, Any] = {}
        for c in f.fields.values():
            if c.compute or c.readonly or c.hidden:
                continue
            row[c.name] = _field_value(c, form, f"{f.name}-{i}-{c.name}")
        if not any(v not in (None, False) for v in row.values()):
            continue
        ident = valid_id(form.get(f"{f.name}-{i}-id"))
        if ident is not None:
            row = {"id": ident, **row}
        out.append(row)
    return out


def next_values(d: DocType, state: State, form: MultiDict[str, str]) -> list[dict[str, Any]]:
    if state.require_next is None:
        return []
    target = crm().registry.documents[state.require_next.document]
    out = []
    i = 0
    while i < 50 and any(k.startswith(f"next-{i}-") for k in form):
        values = {}
        for f in target.fields.values():
            name = f"next-{i}-{f.name}"
            if name in form and settable(f, target):
                values[f.name] = _field_value(f, form, name)
        if any(v not in (None, False) for v in values.values()):
            out.append(values)
        i += 1
    return out


def next_fields(d: DocType, state: State) -> list[Field]:
    """What the transition form asks of each next document: its required
    fields and its dates, not the link (filled in from this record)."""
    rn = state.require_next
    if rn is None:
        return []
    nd = crm().registry.documents[rn.document]
    return [
        f
        for f in nd.fields.values()
        if settable(f, nd)
        and f.type != "table"
        and (f.required or f.type in ("date", "datetime"))
        and f.name != rn.link
    ]


def initial_values(d: DocType) -> dict[str, Any]:
    """Defaults shown in an empty form (the service applies them again on save)."""
    docs = documents()
    out: dict[str, Any] = {}
    for f in d.fields.values():
        if f.default is None or f.system or f.type == "table":
            continue
        value = docs.default(f)
        if value is not None and value is not _INVALID:
            out[f.name] = value
    return out


def row_defaults(d: DocType) -> dict[str, dict[str, Any]]:
    """What a new row of each table field starts with (its columns' defaults)."""
    return {f.name: initial_values(row_doc(d, f)) for f in d.fields.values() if f.type == "table"}


def current_values(d: DocType, obj: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    rows = table_rows(d, obj)
    for f in d.fields.values():
        if f.type == "table":
            values[f.name] = rows[f.name]
        else:
            values[f.name] = getattr(obj, f.column)
    values["_version"] = obj.version
    return values


# -- writing ------------------------------------------------------------------------


def documents() -> Documents:
    """The request's documents service, acting for the request's principal."""
    if "crm_documents" not in g:
        state = crm()
        g.crm_documents = Documents.for_principal(state.models, db_session(), principal(), state.pm)
    return g.crm_documents  # type: ignore[no-any-return]


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


def _id_of(value: Any) -> Any:
    if hasattr(value, "__table__"):
        return value.id
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return value


def rule_errors(d: DocType, values: Mapping[str, Any], obj: Any | None) -> dict[str, str]:
    """What the access rules refuse in ``values``, by field: the owner of a
    type the user may only create or change ``own`` records of must be the
    user; a ref may only point at a record the user may read (a changed one:
    a ref someone else set stays). Same message for "hidden" as for "missing",
    so that ids of other users' records are not confirmed."""
    state = crm()
    me = principal()
    errors: dict[str, str] = {}
    if d.owner and d.owner in values and d.owner in locked_fields(d, obj):
        given = _id_of(values[d.owner])
        current = me.user_id if obj is None else getattr(obj, d.fields[d.owner].column)
        if given != current or given != me.user_id:
            errors[d.owner] = "you may only keep your own records: it must be you"
    wanted: dict[str, list[tuple[str, int]]] = {}

    def want(path: str, f: Field, raw: Any, current: Any) -> None:
        ident = _id_of(raw)
        if not isinstance(ident, int) or ident == current or f.to in (None, USER):
            return
        target = state.registry.documents.get(f.to)
        if target is None or target.builtin:
            return
        if access.rule(state.registry, me, target.name, "read") is not True:
            wanted.setdefault(target.name, []).append((path, ident))

    for name, raw in values.items():
        f = d.fields.get(name)
        if f is None:
            continue
        if f.type == "ref":
            want(name, f, raw, None if obj is None else getattr(obj, f.column))
        elif f.type == "table" and isinstance(raw, list):
            kept = {r.id: r for r in getattr(obj, f.name)} if obj is not None else {}
            for i, row in enumerate(raw):
                if not isinstance(row, Mapping):
                    continue
                old = kept.get(_id_of(row.get("id")))
                for cname, craw in row.items():
                    c = f.fields.get(cname)
                    if c is not None and c.type == "ref":
                        current = getattr(old, c.column) if old is not None else None
                        want(f"{name}.{i}.{cname}", c, craw, current)
    for target, items in wanted.items():
        models = state.models
        table = models.table(target)
        ids = {ident for _, ident in items if 0 < ident <= MAX_ID}
        seen = set(
            db_session().execute(
                sa.select(table.c.id).where(
                    table.c.id.in_(ids), access.where(models, me, target, "read")
                )
            ).scalars()
        ) if ids else set()  # fmt: skip
        label = quoted(state.registry.documents[target].label, None, state.registry.locale)
        for path, ident in items:
            if ident not in seen:
                errors.setdefault(path, f"there is no {label} #{ident}")
    return errors


def create(d: DocType, values: Mapping[str, Any]) -> tuple[Any, dict[str, str]]:
    refused = rule_errors(d, values, None)
    if refused:
        return None, refused
    return _saved(lambda: documents().create(d.name, values))


def update(
    d: DocType, obj: Any, values: Mapping[str, Any], version: int | None
) -> tuple[Any, dict[str, str]]:
    refused = rule_errors(d, values, obj)
    if refused:
        return None, refused
    return _saved(lambda: documents().update(d.name, obj, values, expected_version=version))


def delete(d: DocType, obj: Any, version: int | None = None) -> str | None:
    _, errors = _saved(lambda: documents().delete(d.name, obj, expected_version=version) or True)
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
    refused = rule_errors(d, fields, obj) if fields else {}
    if refused:
        return list(refused.values()), refused
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


@dataclass
class Move:
    """A transition button of the record page: allowed, or refused with the reasons."""

    state: State
    reasons: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return not self.reasons

    @property
    def direct(self) -> bool:
        """Nothing to ask for: the button posts the transition itself."""
        return not self.state.require and self.state.require_next is None


def transition_moves(d: DocType, obj: Any) -> list[Move]:
    """A button per state the record may go to now; listed transitions that
    a role or a guard refuses are shown too, disabled, saying why."""
    if d.statuses is None or not access.may_touch(crm().models, principal(), d.name, "update", obj):
        return []
    engine = StatusEngine(documents())
    view = documents().view(d, obj)
    source = getattr(obj, d.statuses.field)
    moves = []
    for name, st in d.statuses.states.items():
        if name == source:
            continue
        reasons = engine.rules(d, obj, name, view, require=False)
        if any(r.rule in ("state", "transition", "final") for r in reasons):
            continue
        moves.append(Move(st, [r.message for r in reasons]))
    return moves


def refusals(d: DocType, obj: Any, target: str) -> list[str]:
    """Why the record cannot go to ``target`` whatever the form holds (role,
    guard, no such transition); required fields are the form's business."""
    engine = StatusEngine(documents())
    return [
        r.message for r in engine.rules(d, obj, target, documents().view(d, obj), require=False)
    ]


def allowed_transitions(d: DocType, obj: Any) -> list[State]:
    return [m.state for m in transition_moves(d, obj) if m.allowed]


def history(d: DocType, obj: Any) -> list[dict[str, Any]]:
    if d.statuses is None:
        return []
    states = d.statuses.states
    out = []
    for h in StatusEngine(documents()).history(d.name, obj.id):
        source, target = h.get("from"), h.get("to")
        out.append({
            **h,
            "at_text": shown(Field("at", "datetime"), h.get("at")),
            "by": h.get("by") or "",
            "from_label": states[source].label.get(locale()) if source in states else (source or "—"),
            "to_label": states[target].label.get(locale()) if target in states else (target or ""),
        })  # fmt: skip
    return out


def timeline(d: DocType, obj: Any, offset: int = 0) -> dict[str, Any]:
    """One page of the record's timeline, titled and linked, for the record page."""
    from engine import timeline as tl

    state = crm()
    entries, more = tl.page(
        state.models, db_session(), state.pm, d, obj.id, principal(), offset=offset
    )
    registry = state.registry
    by_type: dict[str, set[int]] = {}
    for e in entries:
        by_type.setdefault(e.doctype, set()).add(e.doc_id)
    titles: dict[tuple[str, int], str] = {}
    for name, ids in by_type.items():
        cls = state.models.cls(name)
        for o in db_session().execute(sa.select(cls).where(cls.id.in_(ids))).scalars():
            titles[(name, o.id)] = title(registry.documents[name], o)
    out = []
    for e in entries:
        td = registry.documents[e.doctype]
        detail = e.detail or ""
        if e.kind == "status" and td.statuses and detail in td.statuses.states:
            detail = td.statuses.states[detail].label.get(locale())
        out.append({
            "at": show(Field("at", "datetime"), e.at, locale()), "kind": e.kind, "type": td.label.get(locale()),
            "title": titles.get((e.doctype, e.doc_id), f"#{e.doc_id}"), "detail": detail,
            "url": f"/{td.resource}/{e.doc_id}",
        })  # fmt: skip
    return {"entries": out, "more": more, "offset": offset}


def record_sections(d: DocType, obj: Any) -> list[tuple[str, Any]]:
    """What plugins add to a record's page (``crm_record_sections``), in
    plugin order; a section's HTML is Markup the plugin escaped itself."""
    state = crm()
    out: list[tuple[str, Any]] = []
    for result in state.pm.hook.crm_record_sections(
        models=state.models, doctype=d, doc=obj, principal=principal()
    ):
        # plain text is escaped: only Markup (a plugin escaped it itself) passes as HTML
        out.extend((str(title), escape(html)) for title, html in result or ())
    return out
