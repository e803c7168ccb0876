"""The record page's related lists and actions.

Every document type with a ref to the record's type gets a list on the
record: how many of its records point here, the first few by the related
type's list columns, and an "add" link whose form comes prefilled with the
ref to this record (``/deal/add?customer=5``). Each list is the same page
query as the type's own list, under the same access rules: one query for the
rows and one for the count per related type, whatever the number of rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from engine import access, lists
from engine.filters import FilterError
from engine.registry import DocType, Field
from engine.web import formatting
from engine.web.base import crm, db_session, locale, principal

#: rows (of three columns) shown per related list; the count says how many there are in all
ROWS = 5


@dataclass
class Related:
    doctype: DocType
    field: Field
    label: str
    columns: list[str]
    headers: list[str]
    cells: list[dict[str, Any]]
    count: int
    capped: bool
    add_url: str | None
    list_url: str | None


def referring(d: DocType) -> list[tuple[DocType, Field]]:
    """The (type, ref field) pairs that point at ``d``, in the metadata's order."""
    out = []
    for t in crm().registry.documents.values():
        if t.builtin:
            continue
        for f in t.fields.values():
            if f.type == "ref" and f.to == d.name and f.stored and not f.hidden:
                out.append((t, f))
    return out


def _columns(t: DocType, back: str) -> list[str]:
    from engine.web.views import list_columns

    return [c for c in list_columns(t) if c.split(".")[0] != back][:3]


def related_lists(d: DocType, obj: Any) -> list[Related]:
    state, who = crm(), principal()
    registry = state.registry
    out = []
    pairs = referring(d)
    for t, f in pairs:
        if not access.allowed(registry, who, t.name, "read"):
            continue
        # the type as the user sees it: a ref hidden from them lists nothing
        # (its count would tell what it points to), hidden columns are left out
        t = access.restricted(registry, who, t)
        if f.name not in t.fields:
            continue
        columns = _columns(t, f.name)
        try:
            page = lists.page(
                state.models, db_session(), t.name, filter={f.name: obj.id},
                order=t.list.order if t.list else None, limit=ROWS, columns=columns,
                user_id=who.user_id, base_where=access.where(state.models, who, t.name, "read"),
                principal=who,
            )  # fmt: skip
        except FilterError:
            db_session().rollback()
            continue
        label = t.label.get(locale())
        if sum(1 for x, _ in pairs if x.name == t.name) > 1:  # two refs from one type: say which
            label = f"{label} · {f.label.get(locale())}"
        can_create = access.allowed(registry, who, t.name, "create")
        filters = t.list.filters if t.list else ()
        out.append(
            Related(
                doctype=t, field=f, label=label, columns=columns,
                headers=[registry.field_path(t.name, c)[-1].label.get(locale()) for c in columns],
                cells=formatting.list_cells(t, page.rows, columns), count=page.count,
                capped=page.count_capped,
                add_url=f"/{t.resource}/add?{urlencode({f.name: obj.id})}" if can_create else None,
                list_url=f"/{t.resource}/?{urlencode({'f_' + f.name: obj.id})}" if f.name in filters else None,
            )
        )  # fmt: skip
    return out


def record_actions(d: DocType, obj: Any) -> list[dict[str, str]]:
    """What plugins offer to do with the record (``crm_record_actions``):
    Call, Email, Plan… as ``{"label", "url"}`` items, in plugin order. A URL
    must be a path on this site or a ``tel:``/``mailto:``/``sms:`` link."""
    state = crm()
    out: list[dict[str, str]] = []
    for result in state.pm.hook.crm_record_actions(doctype=d, doc=obj, principal=principal()):
        for item in result or ():
            label, url = str(item.get("label", "")), str(item.get("url", ""))
            safe = url.startswith("/") and not url.startswith("//")
            if label and (safe or url.split(":", 1)[0] in ("tel", "mailto", "sms")):
                out.append({"label": label, "url": url, "icon": str(item.get("icon", ""))})
    return out
