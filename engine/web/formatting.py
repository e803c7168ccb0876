"""Values as a person reads them: a record's title, display values and links,
list cells, the audit line, the status history, the timeline, and what
plugins add to a record's page.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from flask import g
from markupsafe import escape

from engine import access
from engine.errors import HandledError
from engine.i18n import gettext
from engine.registry import USER, DocType, Field
from engine.statuses import StatusEngine
from engine.web.base import crm, db_session, locale, principal
from engine.web.display import show, zone
from engine.web.fetch import documents, ref_loads


def company_tz() -> dt.tzinfo:
    """The company's clock, for datetimes shown and typed in forms."""
    if "crm_tz" not in g:
        g.crm_tz = zone(str(crm().registry.settings.get("timezone") or "UTC"))
    return g.crm_tz


def shown(f: Field, value: Any) -> str:
    return show(f, value, locale(), company_tz())


def title(d: DocType, obj: Any) -> str:
    """How a person names the record: its ``title`` template, refs by their titles."""
    try:
        text = documents().title(d.name, obj, as_read=True).strip()
    except HandledError:
        text = ""
    return text or f"{d.label.get(locale())} #{obj.id}"


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
            to = f.to or USER
            if target is None:
                out[f.name] = ""
            elif access.may_see(crm().models, principal(), to, target):
                out[f.name] = title(registry.documents[to], target)
            else:  # a record the user may not read: its id, never its name
                out[f.name] = access.hidden_label(registry, target.id, locale())
        else:
            out[f.name] = shown(f, getattr(obj, f.column))
        kind = record_type_field(d, f)
        if kind is not None and getattr(obj, f.column) is not None and getattr(obj, kind.column):
            found = record_titles([(getattr(obj, kind.column), getattr(obj, f.column))])
            out[f.name] = next(iter(found.values()))[0]
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
        kind = record_type_field(d, f)
        if kind is not None and getattr(obj, f.column) is not None and getattr(obj, kind.column):
            key = (getattr(obj, kind.column), getattr(obj, f.column))
            href = record_titles([key])[key][1]
            if href:
                out[f.name] = href
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


def shown_rows(d: DocType, obj: Any) -> dict[str, list[dict[str, Any]]]:
    """The record's table rows as its page shows them: refs by their titles
    (one query per target type; "#7 — no access" for one the user may not read)."""
    from engine.web.fetch import row_doc
    from engine.web.lookup import ref_labels

    rows = table_rows(d, obj)
    extra = [(row_doc(d, d.fields[name]), row) for name, items in rows.items() for row in items]
    labels = ref_labels(d, {}, extra) if extra else {}
    for name, items in rows.items():
        for row in items:
            for c in d.fields[name].fields.values():
                if c.type == "ref" and row.get(c.name) is not None:
                    row[c.name] = labels.get((c.to or USER, str(row[c.name])), row[c.name])
    return rows


def record_type_field(d: DocType, f: Field) -> Field | None:
    """For an integer ``doc_id`` beside a text ``doctype`` (the way the
    engine's plugins point at a record of any type: a task's, a process's,
    a notification's document), the field that names the record's type."""
    if f.name != "doc_id" or f.type != "integer":
        return None
    kind = d.fields.get("doctype")
    return kind if kind is not None and kind.type == "string" else None


def record_titles(
    pairs: Iterable[tuple[str, int]],
) -> dict[tuple[str, int], tuple[str, str | None]]:
    """(type, id) → (title, link) of records of any type: one query per type,
    within the access rules; a record the user may not read is named by its
    id only ("#79 — no access") and has no link, one of no known type by its id."""
    state = crm()
    registry = state.registry
    by_type: dict[str, set[int]] = {}
    for name, ident in pairs:
        by_type.setdefault(name, set()).add(ident)
    out: dict[tuple[str, int], tuple[str, str | None]] = {}
    for name, ids in by_type.items():
        td = registry.documents.get(name)
        if td is None or td.builtin:
            out.update({(name, i): (f"#{i}", None) for i in ids})
            continue
        cls = state.models.cls(name)
        seen = access.visible(state.models, principal(), name)
        may_open = access.allowed(registry, principal(), name, "read")
        stmt = sa.select(cls).where(cls.id.in_(ids), seen).options(*ref_loads(td))
        for o in db_session().execute(stmt).scalars():
            out[(name, o.id)] = (title(td, o), f"/{td.resource}/{o.id}" if may_open else None)
        for i in ids:
            out.setdefault((name, i), (access.hidden_label(registry, i, locale()), None))
    return out


def _record_refs(
    d: DocType, rows: list[Mapping[str, Any]], columns: list[str]
) -> dict[tuple[str, int], tuple[str, int]]:
    """(column, row id) → (type, id) for the page's ``doc_id`` columns: one query."""
    wanted = [c for c in columns if c in d.fields and record_type_field(d, d.fields[c])]
    ids = [row["id"] for row in rows if any(row.get(c) is not None for c in wanted)]
    if not wanted or not ids:
        return {}
    table = crm().models.table(d.name)
    kind = record_type_field(d, d.fields[wanted[0]])
    assert kind is not None
    types = dict(
        db_session()
        .execute(sa.select(table.c.id, table.c[kind.column]).where(table.c.id.in_(ids)))
        .all()
    )
    return {
        (c, row["id"]): (str(types[row["id"]]), int(row[c]))
        for row in rows
        for c in wanted
        if row.get(c) is not None and types.get(row["id"])
    }


def list_cells(
    d: DocType, rows: Iterable[Mapping[str, Any]], columns: list[str]
) -> list[dict[str, Any]]:
    """Display text (and a link for refs) per list cell; ref cells come
    already labelled by the list query, so a page costs no query per row
    (a ``doc_id`` column costs one query, and one per type it points at)."""
    registry = crm().registry
    rows = list(rows)
    fields = [registry.field_path(d.name, c)[-1] for c in columns]
    readable = {f.to: ref_href(f.to, 1) is not None for f in fields if f.type == "ref" and f.to}
    records = _record_refs(d, rows, columns)
    titles = record_titles(records.values())
    out = []
    for row in rows:
        cells = []
        for c, f in zip(columns, fields, strict=True):
            value = row.get(c)
            if (c, row["id"]) in records:
                text, href = titles[records[(c, row["id"])]]
                cells.append({"text": text, "href": href})
            elif f.type == "ref" and value is not None:
                href = f"/{registry.documents[f.to].resource}/{value.id}" if readable.get(f.to) and value.readable else None  # fmt: skip
                cells.append({"text": str(value.label), "href": href})
            elif f.type == "phone" and value:  # a number a page script may call (data-phone)
                cells.append({"text": shown(f, value), "href": None, "phone": str(value)})
            else:
                cells.append({"text": shown(f, value), "href": None})
        out.append({"id": row["id"], "cells": cells})
    return out


def history(d: DocType, obj: Any) -> list[dict[str, Any]]:
    if d.statuses is None:
        return []
    states = d.statuses.states
    rights = access.field_rights(crm().registry, principal(), d.name)
    out = []
    for h in StatusEngine(documents()).history(d.name, obj.id):
        if not rights.readable(str(h.get("field") or d.statuses.field)):
            continue  # the changes of a field hidden from the user
        source, target = h.get("from"), h.get("to")
        old, new = states.get(source or ""), states.get(target or "")
        out.append({
            **h,
            "at_text": shown(Field("at", "datetime"), h.get("at")),
            "by": h.get("by") or "",
            "from_label": old.label.get(locale()) if old else (source or "—"),
            "to_label": new.label.get(locale()) if new else (target or ""),
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
        seen = access.visible(state.models, principal(), name)
        for o in db_session().execute(sa.select(cls).where(cls.id.in_(ids), seen)).scalars():
            titles[(name, o.id)] = title(registry.documents[name], o)
    out = []
    for e in entries:
        td = registry.documents[e.doctype]
        detail = e.detail or ""
        if e.kind == "status" and td.statuses and detail in td.statuses.states:
            detail = td.statuses.states[detail].label.get(locale())
        elif e.kind == "merged":
            merged = [int(i) for i in json.loads(detail or "[]")]
            detail = gettext(
                "merged %(n)s records into this one: %(ids)s",
                n=len(merged), ids=", ".join(f"#{i}" for i in merged),
            )  # fmt: skip
        out.append({
            "at": shown(Field("at", "datetime"), e.at), "kind": e.kind, "type": td.label.get(locale()),
            "title": titles.get((e.doctype, e.doc_id)) or access.hidden_label(registry, e.doc_id, locale()),
            "detail": detail,
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
