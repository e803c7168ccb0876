"""The merge page (``/merge/<type>/?ids=3,7,9``), its undo, the merge log and
what a record page says about merges (see engine/merge.py)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import abort, flash, redirect, request, url_for
from flask_appbuilder import BaseView, expose
from flask_login import login_required

from engine import access
from engine import merge as merging
from engine.documents import ValidationFailed
from engine.errors import HandledError
from engine.i18n import gettext
from engine.registry import DocType, Field
from engine.web import fetch, formatting
from engine.web.base import crm, db_session, error_page, locale, principal


def _doctype(resource: str) -> DocType:
    for d in crm().registry.documents.values():
        if d.resource == resource and not d.builtin:
            return d
    abort(404)


def merge_url(d: DocType, ids: list[int]) -> str:
    """The merge page of these records (the quality check links here)."""
    return f"/merge/{d.resource}/?ids={','.join(str(i) for i in ids)}"


def _default_choices(fields: list[Any], records: list[Any]) -> dict[str, int]:
    """Each field from the survivor (the first record), or from the first
    record that has a value where the survivor has none."""
    out = {}
    for f in fields:
        source = records[0]
        if getattr(source, f.column) in (None, ""):
            source = next((r for r in records if getattr(r, f.column) not in (None, "")), source)
        out[f.name] = source.id
    return out


class MergeView(BaseView):
    route_base = "/merge"
    default_view = "log"

    @expose("/<resource>/", methods=["GET", "POST"])
    @login_required
    def page(self, resource: str) -> Any:
        d = _doctype(resource)
        if not access.allowed(crm().registry, principal(), d.name, "update"):
            abort(403)
        docs = fetch.documents()
        try:
            ids = merging.parse_ids(fetch.clean(request.values.get("ids"), 400))
            records = merging.load(docs, d.name, ids)
        except merging.MergeError as exc:
            return error_page(exc.status, str(exc))
        state = crm()
        if request.method == "POST":
            return self._post(d, records)
        # the user may keep any record they may merge the others into
        keepable = [
            r for r in records
            if merging.may_merge(state.models, principal(), d.name, r, [o for o in records if o is not r])
        ]  # fmt: skip
        if not keepable:
            abort(403)
        return self._render(d, records, keepable[0].id, _default_choices(self._fields(d), records))

    def _fields(self, d: DocType) -> list[Any]:
        rights = access.field_rights(crm().registry, principal(), d.name)
        return merging.choosable(d, rights)

    def _render(
        self, d: DocType, records: list[Any], survivor: int, chosen: dict[str, int],
        error: str | None = None, status: int = 200,
    ) -> Any:  # fmt: skip
        seen = access.restricted(crm().registry, principal(), d)
        fields = self._fields(d)
        cells = {r.id: formatting.display_values(seen, r) for r in records}
        html = self.render_template(
            "crm/merge.html", d=d, records=records, fields=fields, cells=cells,
            titles={r.id: formatting.title(d, r) for r in records}, survivor=survivor,
            chosen=chosen, error=error, ids=",".join(str(r.id) for r in records),
            label=lambda f: f.label.get(locale()),
            counts=_reference_counts(d, records),
        )  # fmt: skip
        return html, status

    def _post(self, d: DocType, records: list[Any]) -> Any:
        by_id = {r.id: r for r in records}
        survivor = request.form.get("survivor", type=int)
        chosen: dict[str, int] = {}
        for f in self._fields(d):
            value = request.form.get(f"field_{f.name}", type=int)
            if value is not None:
                chosen[f.name] = value
        if survivor is None or survivor not in by_id:
            return self._render(d, records, records[0].id, chosen,
                                gettext("choose the record to keep"), 400)  # fmt: skip
        others = [r.id for r in records if r.id != survivor]
        session = db_session()
        try:
            merge_id = merging.merge(fetch.documents(), d.name, survivor, others, chosen)
            session.commit()
        except merging.MergeError as exc:
            session.rollback()
            if exc.status == 403:
                abort(403)
            return self._render(d, records, survivor, chosen, str(exc), exc.status)
        except ValidationFailed as exc:
            session.rollback()
            message = "; ".join(f"{k}: {v}" for k, v in exc.errors.items())
            return self._render(d, records, survivor, chosen, message, 422)
        except HandledError as exc:
            session.rollback()
            return self._render(d, records, survivor, chosen, str(exc), 422)
        flash(
            gettext("Merged %(n)s records into this one (merge #%(id)s); it can be undone below",
                    n=len(others), id=merge_id),
            "success",
        )  # fmt: skip
        return redirect(f"/{d.resource}/{survivor}")

    @expose("/undo/<int:merge_id>", methods=["POST"])
    @login_required
    def undo(self, merge_id: int) -> Any:
        session = db_session()
        try:
            m = merging.undo(fetch.documents(), merge_id)
            session.commit()
        except merging.MergeError as exc:
            session.rollback()
            if exc.status == 403:
                abort(403)
            if exc.status == 404:
                abort(404)
            flash(str(exc), "danger")
            return redirect(request.referrer or url_for("MergeView.log"))
        except HandledError as exc:
            session.rollback()
            flash(str(exc), "danger")
            return redirect(request.referrer or url_for("MergeView.log"))
        d = crm().registry.documents[m.doctype]
        flash(gettext("Merge #%(id)s undone: the records are back", id=merge_id), "success")
        return redirect(f"/{d.resource}/{m.survivor_id}")

    @expose("/")
    @login_required
    def log(self) -> Any:
        state = crm()
        rows = []
        for m in merging.log(state.models, db_session(), principal()):
            d = state.registry.documents[m.doctype]
            rows.append({
                "m": m, "type": d.label.get(locale()), "url": f"/{d.resource}/{m.survivor_id}",
                "at": formatting.shown(_AT, m.at), "merged": [f"/{d.resource}/{i}" for i in m.merged_ids],
            })  # fmt: skip
        return self.render_template("crm/merge_log.html", rows=rows)


_AT = Field("at", "datetime")


def _reference_counts(d: DocType, records: list[Any]) -> dict[int, int]:
    """How many rows refer to each record (what the merge will move), one
    grouped query per referencing column."""
    state = crm()
    ids = [r.id for r in records]
    out = dict.fromkeys(ids, 0)
    for ref in merging.references(state.models, d.name):
        t = ref.table
        col = t.c[ref.column]
        cond: sa.ColumnElement[bool] = col.in_(ids)
        if ref.type_column is not None:
            cond = sa.and_(t.c[ref.type_column] == d.name, cond)
        for target, n in db_session().execute(
            sa.select(col, sa.func.count()).where(cond).group_by(col)
        ):
            out[target] = out.get(target, 0) + n
    return out


def record_info(d: DocType, obj: Any) -> dict[str, Any]:
    """What a record page says: where an archived record went; the merges it
    survived, each with its undo."""
    state = crm()
    into = getattr(obj, merging.ARCHIVE_COLUMN, None)
    out: dict[str, Any] = {"into": None, "merges": []}
    if into is not None:
        target = db_session().get(state.models.cls(d.name), into)
        title = formatting.title(d, target) if target is not None else f"#{into}"
        out["into"] = {"url": f"/{d.resource}/{into}", "title": title}
        return out
    for m in merging.of_record(state.models, db_session(), d.name, obj.id):
        out["merges"].append({
            "id": m.id, "n": len(m.merged_ids), "at": formatting.shown(_AT, m.at),
            "merged": [{"id": i, "url": f"/{d.resource}/{i}"} for i in m.merged_ids],
        })  # fmt: skip
    return out
