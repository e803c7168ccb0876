"""Forms: which fields a form has and which the user may set, the values a
form posted (table rows and the next documents of a transition too), and the
values an empty or an edit form starts with.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from werkzeug.datastructures import MultiDict

from engine import access
from engine.documents import (
    INVALID,
)
from engine.fieldtypes import valid_id
from engine.registry import SELF, USER, DocType, Field, State
from engine.web.base import crm, db_session, locale, principal
from engine.web.display import input_value
from engine.web.fetch import clean, documents, row_doc
from engine.web.formatting import company_tz, table_rows


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
    locked = set()
    if d.owner and access.rule(crm().registry, principal(), d.name, action) == "own":
        locked.add(d.owner)
    allowed = state_allows(d, obj)
    if allowed is not None:  # the record's state keeps all but these as they are
        locked |= {name for name in d.fields if name not in allowed}
    return locked


def state_allows(d: DocType, obj: Any | None) -> tuple[str, ...] | None:
    """The fields the user may still change in the record's state (``editable``
    of the state): None for every field, an empty tuple for none."""
    if obj is None or d.statuses is None:
        return None
    state = d.statuses.states.get(getattr(obj, d.statuses.field, None) or "")
    if state is None:
        return None
    who = principal()
    allowed: tuple[str, ...] | None = state.editable_by(who.roles, who.admin)
    return allowed


def settable(f: Field, d: DocType) -> bool:
    """Can a form set this field at all (never audit, status, computed, read-only, hidden)?"""
    if f.system or f.readonly or f.compute or f.hidden:
        return False
    return not (d.statuses and f.name == d.statuses.field)


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


def refused_values(d: DocType, form: MultiDict[str, str], obj: Any = None) -> dict[str, Any]:
    """What a form posted for fields the field rules keep from the user
    (hidden ones, read-only ones): handed on, so that the save refuses them
    by field, rather than dropped unseen. A read-only input that sends back
    the text the form showed (the record's value, or a new record's
    default) is no change and is left out."""
    registry = crm().registry
    full = registry.documents[d.name]
    rights = access.field_rights(registry, principal(), d.name)
    if rights.everything:
        return {}
    shown = current_values(full, obj) if obj is not None else initial_values(full)
    tz = company_tz()
    out: dict[str, Any] = {}
    for name, f in full.fields.items():
        if f.type == "table" and rights.writable(name):
            # a posted column hidden from the user: the rows as posted, refused by column
            hidden = {c for c in f.fields if not rights.readable(f"{name}.{c}")}
            if any(key.split("-")[-1] in hidden for key in form if key.startswith(f"{name}-")):
                out[name] = _table_rows(f, form)
            continue
        if rights.writable(name) or not settable(f, full):
            continue
        if f.type == "table":
            if any(key.startswith(f"{name}-") for key in form):
                out[name] = _table_rows(f, form)
        elif name in form:
            if (
                rights.readable(name)
                and (form.get(name) or "").strip() == input_value(f, shown.get(name), tz).strip()
            ):
                continue
            out[name] = _field_value(f, form, name)
    return out


def _table_rows(f: Field, form: MultiDict[str, str]) -> list[dict[str, Any]]:
    """Rows as posted, in the order of their indexes (the form renumbers
    them after a move); ``<table>-<i>-id`` keeps an existing row."""
    return [row for _, row in indexed_rows(f, form)]


def indexed_rows(f: Field, form: MultiDict[str, str]) -> list[tuple[int, dict[str, Any]]]:
    """The rows a form posted with the index each had in the form (an empty
    row is skipped, so the two may differ)."""
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
        out.append((i, row))
    return out


def computes(d: DocType) -> bool:
    """Whether the type's form has computed fields (a total, a row's amount)."""
    return any(
        f.compute or (f.type == "table" and any(c.compute for c in f.fields.values()))
        for f in d.fields.values()
    )


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


def inherited_refs(d: DocType, nd: DocType) -> list[str]:
    """The refs a next document takes from this one when not given: those
    both types have, to the same type (the customer, the contact, the
    manager), as the status engine fills them in."""
    return [
        name
        for name, f in nd.fields.items()
        if f.type == "ref" and not f.system and not f.readonly
        and name in d.fields and d.fields[name].type == "ref" and d.fields[name].to == f.to
    ]  # fmt: skip


def next_fields(d: DocType, state: State) -> list[Field]:
    """What the transition form asks of each next document: its required
    fields and its dates, and the refs it takes from this record (shown
    filled in: the customer, the contact, the Interest, the manager); not a
    link to this record itself."""
    rn = state.require_next
    if rn is None:
        return []
    registry = crm().registry
    # as the user sees the type: no field hidden from them or read-only to them
    nd = access.restricted(registry, principal(), registry.documents[rn.document])
    taken = set(inherited_refs(d, nd)) | {k for k, v in rn.link.items() if v != SELF}
    return [
        f
        for f in nd.fields.values()
        if settable(f, nd)
        and f.type != "table"
        and (f.required or f.type in ("date", "datetime") or f.name in taken)
        and rn.link.get(f.name) != SELF
    ]


def next_prefill(d: DocType, state: State, obj: Any) -> dict[str, Any]:
    """A next document's form filled in from this record: its links and the
    refs it would take from it anyway; a ref the user may not read is left out."""
    rn = state.require_next
    if rn is None:
        return {}
    nd = crm().registry.documents[rn.document]
    sources = {name: name for name in inherited_refs(d, nd)}
    sources.update({k: v for k, v in rn.link.items() if v != SELF})
    models, me = crm().models, principal()
    out: dict[str, Any] = {}
    for name, source in sources.items():
        f = d.fields.get(source)
        if f is None or not settable(nd.fields[name], nd):
            continue
        if f.type == "ref":
            target = getattr(obj, f.name, None)
            if target is None or not access.may_see(models, me, f.to or USER, target):
                continue
            out[name] = target.id
        elif getattr(obj, f.column, None) is not None:
            out[name] = getattr(obj, f.column)
    return out


def initial_values(d: DocType) -> dict[str, Any]:
    """Defaults shown in an empty form (the service applies them again on save)."""
    docs = documents()
    out: dict[str, Any] = {}
    for f in d.fields.values():
        if f.default is None or f.system or f.type == "table":
            continue
        value = docs.default(f)
        if value is not None and value is not INVALID:
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


def seen_refs(d: DocType, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (a form prefilled from a link's query) without the refs to
    records the user may not read: one query per target type."""
    state = crm()
    wanted: dict[str, dict[str, int]] = {}
    for name, value in values.items():
        f = d.fields.get(name)
        if f is not None and f.type == "ref" and value not in (None, ""):
            ident = valid_id(value)
            if ident is None:
                continue
            wanted.setdefault(f.to or USER, {})[name] = ident
    out = dict(values)
    for target, refs in wanted.items():
        table = state.models.table(target)
        seen = access.visible(state.models, principal(), target, table)
        found = set(
            db_session()
            .execute(sa.select(table.c.id).where(table.c.id.in_(refs.values()), seen))
            .scalars()
        )
        for name, ident in refs.items():
            if ident not in found:
                out.pop(name)
    return out
