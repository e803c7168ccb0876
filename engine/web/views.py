"""HTML views generated per document type: list, record, add, edit, delete,
transition and the ref picker's search. Every query goes through the access
rules; every write goes through the documents service and the status engine.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import abort, flash, jsonify, redirect, request, url_for
from flask_appbuilder import BaseView, expose
from flask_login import login_required

from engine import access, lists
from engine.filters import FilterError
from engine.registry import DocType, Field
from engine.web import service
from engine.web.base import crm, db_session, locale, principal
from engine.web.boards import BoardsMixin
from engine.web.display import input_value, show

PAGE_SIZE = 25


def _require(action: str, d: DocType) -> None:
    if not access.allowed(crm().registry, principal(), d.name, action):
        abort(403 if principal().user_id is not None else 401)


def form_fields(d: DocType) -> list[tuple[str, list[Field]]]:
    """The form's sections; without `form` in metadata, one section of every editable field."""
    if d.form:
        return [(s.label.get(locale()), [d.fields[n] for n in s.fields]) for s in d.form]
    fields = [f for f in d.fields.values() if not f.system and not f.hidden]
    return [("", fields)]


def list_columns(d: DocType) -> list[str]:
    if d.list:
        return list(d.list.columns)
    return [n for n, f in d.fields.items() if not f.system and f.type not in ("table", "text")][:6]


def _filters_from_args(d: DocType) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    for name in d.list.filters if d.list else ():
        value = request.args.get(f"f_{name}")
        if value not in (None, ""):
            spec[name] = value
    return spec


class DocumentView(BoardsMixin, BaseView):
    """One per document type; the class attribute ``doctype`` says which."""

    doctype: str = ""
    default_view = "list"

    @property
    def d(self) -> DocType:
        return crm().registry.documents[self.doctype]  # type: ignore[no-any-return]

    # -- list ------------------------------------------------------------------

    @expose("/")
    @login_required
    def list(self) -> Any:
        d = self.d
        _require("read", d)
        state = crm()
        spec = _filters_from_args(d)
        segment = request.args.get("segment")
        segments = {n: s for n, s in state.registry.segments.items() if s.document == d.name}
        if segment in segments:
            spec = {**segments[segment].filter, **spec}
        try:
            offset = max(0, int(request.args.get("offset", 0)))
        except ValueError:
            offset = 0
        order = request.args.get("order") or None
        if order and order.lstrip("-") not in d.fields:
            order = None
        columns = list_columns(d)
        try:
            page = lists.page(
                state.models, db_session(), d.name, filter=spec or None, search=request.args.get("q") or None,
                order=order, offset=offset, limit=PAGE_SIZE, columns=columns,
                user_id=principal().user_id, base_where=access.where(state.models, principal(), d.name, "read"),
            )  # fmt: skip
        except FilterError as exc:
            flash(str(exc), "danger")
            return redirect(url_for(f"{type(self).__name__}.list"))
        count_text = f"{page.count:,}".replace(",", "\u00a0") + ("+" if page.count_capped else "")
        return self.render_template(
            "crm/list.html", d=d, page=page, count_text=count_text,
            has_more=page.count_capped or offset + PAGE_SIZE < page.count, columns=columns, cells=service.list_cells(d, page.rows, columns),
            segments=segments, segment=segment, spec=spec, offset=offset, page_size=PAGE_SIZE,
            order=order or (d.list.order if d.list else "-created_at"), view=type(self).__name__,
            filter_fields=[d.fields[n] for n in (d.list.filters if d.list else ())],
            can_create=access.allowed(state.registry, principal(), d.name, "create"), label=lambda f: f.label.get(locale()),
        )  # fmt: skip

    # -- record ----------------------------------------------------------------

    def _get(self, obj_id: int, action: str = "read") -> Any:
        obj = service.fetch(self.d.name, obj_id, action)
        if obj is None:
            abort(404)
        return obj

    @expose("/<int:obj_id>")
    @login_required
    def show(self, obj_id: int) -> Any:
        d = self.d
        _require("read", d)
        obj = self._get(obj_id)
        state = crm()
        return self.render_template(
            "crm/show.html", d=d, obj=obj, sections=form_fields(d), values=service.display_values(d, obj),
            rows=service.table_rows(d, obj), view=type(self).__name__,
            transitions=service.allowed_transitions(d, obj), history=service.history(d, obj),
            can_update=access.may_touch(state.models, principal(), d.name, "update", obj),
            can_delete=access.may_touch(state.models, principal(), d.name, "delete", obj),
            label=lambda f: f.label.get(locale()), show=lambda f, v: show(f, v, locale()),
        )  # fmt: skip

    # -- add and edit ------------------------------------------------------------

    def _form(
        self, obj: Any, values: dict[str, Any], errors: dict[str, str], title: str, action: str
    ) -> Any:
        d = self.d
        return self.render_template(
            "crm/form.html", d=d, obj=obj, sections=form_fields(d), values=values, errors=errors,
            title=title, action=action, view=type(self).__name__, refs=service.ref_labels(d, values),
            label=lambda f: f.label.get(locale()), input_value=input_value,
            help=lambda f: f.help.get(locale()) if f.help else "", state=crm(),
        )  # fmt: skip

    @expose("/add", methods=["GET", "POST"])
    @login_required
    def add(self) -> Any:
        d = self.d
        _require("create", d)
        title = d.label.get(locale())
        if request.method == "GET":
            return self._form(
                None, service.initial_values(d), {}, title, url_for(f"{type(self).__name__}.add")
            )
        values = service.form_values(d, request.form)
        obj, errors = service.create(d, values)
        if errors:
            return self._form(
                None, values, errors, title, url_for(f"{type(self).__name__}.add")
            ), 422
        return redirect(url_for(f"{type(self).__name__}.show", obj_id=obj.id))

    @expose("/<int:obj_id>/edit", methods=["GET", "POST"])
    @login_required
    def edit(self, obj_id: int) -> Any:
        d = self.d
        _require("update", d)
        obj = self._get(obj_id, "update")
        title = service.title(d, obj)
        action = url_for(f"{type(self).__name__}.edit", obj_id=obj_id)
        if request.method == "GET":
            return self._form(obj, service.current_values(d, obj), {}, title, action)
        values = service.form_values(d, request.form)
        version = request.form.get("_version", type=int)
        obj2, errors = service.update(d, obj, values, version)
        if errors:
            values["_version"] = version
            return self._form(
                obj, values, errors, title, action
            ), 409 if "_version" in errors else 422
        return redirect(url_for(f"{type(self).__name__}.show", obj_id=obj2.id))

    @expose("/<int:obj_id>/delete", methods=["POST"])
    @login_required
    def delete(self, obj_id: int) -> Any:
        d = self.d
        _require("delete", d)
        obj = self._get(obj_id, "delete")
        error = service.delete(d, obj)
        if error:
            flash(error, "danger")
            return redirect(url_for(f"{type(self).__name__}.show", obj_id=obj_id))
        flash(f"{d.label.get(locale())} deleted", "info")
        return redirect(url_for(f"{type(self).__name__}.list"))

    # -- transitions ---------------------------------------------------------------

    @expose("/<int:obj_id>/transition/<target>", methods=["GET", "POST"])
    @login_required
    def transition(self, obj_id: int, target: str) -> Any:
        d = self.d
        _require("update", d)
        obj = self._get(obj_id, "update")
        if d.statuses is None or target not in d.statuses.states:
            abort(404)
        state = d.statuses.states[target]
        if request.method == "POST":
            fields = service.form_values(d, request.form, only=state.require)
            nexts = service.next_values(d, state, request.form)
            reasons, errors = service.transition(
                d, obj, target, fields, nexts, request.form.get("_version", type=int)
            )
            if not reasons and not errors:
                flash(f"→ {state.label.get(locale())}", "success")
                return redirect(url_for(f"{type(self).__name__}.show", obj_id=obj_id))
            values, next_rows = fields, nexts
        else:
            reasons, errors, values = [], {}, service.current_values(d, obj)
            next_rows = (
                [service.initial_values(crm().registry.documents[state.require_next.document])]
                if state.require_next
                else []
            )
        return self.render_template(
            "crm/transition.html", d=d, obj=obj, target=state, reasons=reasons, errors=errors, values=values,
            next_rows=next_rows, view=type(self).__name__, title=service.title(d, obj),
            require=[d.fields[n] for n in state.require],
            next_doc=crm().registry.documents[state.require_next.document] if state.require_next else None,
            label=lambda f: f.label.get(locale()), input_value=input_value, state=crm(),
            refs=service.ref_labels(d, values), help=lambda f: "",
        ), 422 if reasons or errors else 200  # fmt: skip

    # -- ref picker ----------------------------------------------------------------

    @expose("/lookup")
    @login_required
    def lookup(self) -> Any:
        """Records whose name starts with what was typed, for ref pickers (select2's format)."""
        d = self.d
        if not access.allowed(crm().registry, principal(), d.name, "read"):
            return jsonify({"results": []})
        return jsonify({"results": service.lookup(d, request.args.get("q", ""), limit=20)})


class UserLookupView(BaseView):
    """Users for ref pickers (``manager``, ``assignee``): active ones whose
    login, first or last name starts with what was typed."""

    route_base = "/crm_users"

    @expose("/lookup")
    @login_required
    def lookup(self) -> Any:
        return jsonify({"results": service.lookup_users(request.args.get("q", "")[:100], limit=20)})


def register_views(appbuilder: Any, state: Any) -> None:
    registry = state.registry
    appbuilder.add_view_no_menu(UserLookupView())
    category_of = _categories(registry)
    for d in registry.documents.values():
        if d.builtin:
            continue
        view = type(
            f"{d.name}View", (DocumentView,), {"doctype": d.name, "route_base": f"/{d.resource}"}
        )
        appbuilder.add_view_no_menu(view())
        category, label = category_of(d)
        appbuilder.add_link(
            d.name, href=f"/{d.resource}/", label=d.label.get(registry.locale), category=category,
            category_label=label,
        )  # fmt: skip


def _categories(registry: Any) -> Any:
    """Group the menu: documents with statuses under Sales, the rest under Directory."""
    ru = registry.locale == "ru"

    def category(d: DocType) -> tuple[str, str]:
        if d.statuses is not None:
            return "crm:sales", "Продажи" if ru else "Sales"
        return "crm:directory", "Справочники" if ru else "Directory"

    return category


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
