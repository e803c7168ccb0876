"""HTML views generated per document type: list, record, add, edit, delete,
transition, export, import (engine/web/imports.py) and the ref picker's
search. Every query goes through the access rules; every write goes through
the documents service and the status engine. A malformed id, filter or
parameter is a 4xx with a message, never a 500.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from flask import (
    Response,
    abort,
    flash,
    g,
    has_request_context,
    jsonify,
    redirect,
    request,
    stream_with_context,
    url_for,
)
from flask_appbuilder import BaseView, expose
from flask_login import login_required
from markupsafe import escape

from engine import access, lists, transfer
from engine import segments as segments_api
from engine.filters import FilterError, resolve_path
from engine.i18n import gettext, lazy_gettext
from engine.registry import USER, DocType, Field, Label
from engine.web import fetch, formatting, forms, lookup, merge, related, writes
from engine.web.base import crm, db_session, locale, principal
from engine.web.boards import BoardsMixin
from engine.web.display import input_value
from engine.web.imports import ImportMixin

PAGE_SIZE = 25


def _require(action: str, d: DocType) -> None:
    if not access.allowed(crm().registry, principal(), d.name, action):
        abort(403 if principal().user_id is not None else 401)


def _stop_at_duplicates() -> None:
    """A form stops at the first ``unique: warn`` duplicates and shows them;
    posted again ("save anyway") with the same ones, it saves."""
    docs = fetch.documents()
    docs.stop_at_warnings = True
    docs.confirmed = set(fetch.clean(request.form.get("_save_anyway"), 2000).split())


def _status(errors: dict[str, str]) -> int:
    """Warnings to confirm are no error: the form asks (200); errors are 422."""
    return 200 if set(errors) == {writes.WARNINGS} else 422


def form_fields(d: DocType) -> list[tuple[str, list[Field]]]:
    return forms.form_sections(d)


def list_columns(d: DocType) -> list[str]:
    if d.list:
        return list(d.list.columns)
    return [n for n, f in d.fields.items() if not f.system and not f.hidden and f.type not in ("table", "text")][:6]  # fmt: skip


def unplaced(errors: dict[str, str], shown: set[str], d: DocType | None = None) -> list[str]:
    """Messages about fields the page has no input for: shown above the form
    (a column of a table ``d`` shows no input for, hidden from the user, too)."""
    out = []
    for path, message in errors.items():
        if path in ("_version", "_form", writes.WARNINGS):
            continue
        head, *rest = path.split(".")
        table = d.fields.get(head) if d is not None else None
        column_missing = (
            table is not None and table.type == "table" and len(rest) == 2
            and rest[1] not in table.fields
        )  # fmt: skip
        if (head not in shown and path not in shown) or column_missing:
            out.append(f"{path}: {message}")
    return out


def sortable(d: DocType, column: str) -> bool:
    f = d.fields.get(column)
    return f is not None and f.stored and f.type != "ref"


def _filters_from_args(d: DocType) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    for name in d.list.filters if d.list else ():
        value = fetch.clean(request.args.get(f"f_{name}"), 200).strip()
        if value:
            spec[name] = value
    return spec


def _json_filter() -> dict[str, Any] | None:
    """``?filter=<json>``: a structured filter, as the REST list takes it (a
    dashboard card links to its list so). Compiled under the user's rules like
    any other filter; raises FilterError for one that is not a JSON object."""
    from engine.web.api import bad_text

    raw = request.args.get("filter")
    if not raw:
        return None
    try:
        spec = json.loads(raw)
    except (ValueError, RecursionError):
        raise FilterError(gettext("`filter` is not valid JSON")) from None
    if not isinstance(spec, dict):
        raise FilterError(gettext('`filter` must be a JSON object such as {"stage": "new"}'))
    if bad_text(spec):
        raise FilterError(gettext("`filter` must not hold NUL characters or unpaired surrogates"))
    return spec


def _ops(cond: Any) -> dict[str, Any]:
    if isinstance(cond, dict):
        return dict(cond)
    if isinstance(cond, (list, tuple)):
        return {"in": list(cond)}
    return {"eq": cond}


def conjoin(first: dict[str, Any], then: dict[str, Any]) -> dict[str, Any]:
    """Both filters at once: a field both name keeps the operators of each
    (``status: {nin: [...]}`` and ``status: open``); where both use the same
    operator on it, ``then``'s condition stands (the list's own field filter
    over a card's)."""
    out = dict(first)
    for path, cond in then.items():
        out[path] = {**_ops(out[path]), **_ops(cond)} if path in out else cond
    return out


#: how an operator reads on a filter's chip
_OP_TEXT = {"eq": ":", "in": ":", "ne": " ≠", "nin": " ≠", "lt": " <", "lte": " ≤", "gt": " >",
            "gte": " ≥", "contains": " ∋", "between": ":"}  # fmt: skip


def describe_filter(d: DocType, spec: dict[str, Any]) -> list[str]:
    """A structured filter as a person reads it, one condition a line:
    ``Status ≠ Done, Cancelled``, ``Due < now``, ``Assignee: me``."""
    words = {"current_user": gettext("me"), "today": gettext("today"), "now": gettext("now")}
    out: list[str] = []
    for path, cond in spec.items():
        try:
            f = _filter_field(d, str(path))
        except (KeyError, FilterError):
            continue
        name = f.label.get(locale())

        def text(v: Any, f: Field = f) -> str:
            if isinstance(v, str) and v in words:
                return words[v]
            if f.type == "enum" and str(v) in f.values:
                return f.values[str(v)].get(locale())
            return "—" if v is None else str(v)

        for op, value in _ops(cond).items():
            if op == "set":
                state = gettext("filled in") if value else gettext("empty")
                out.append(f"{name}: {state}")
            elif op == "between" and isinstance(value, list) and len(value) == 2:
                out.append(f"{name}: {text(value[0])} … {text(value[1])}")
            else:
                values = value if isinstance(value, list) else [value]
                out.append(f"{name}{_OP_TEXT.get(op, ' ' + op)} " + ", ".join(map(text, values)))
    return out


def _filter_field(d: DocType, name: str) -> Field:
    """The field a list filter asks for: a field of the type, or for a dotted
    name (``customer.rating``) the field it leads to, named by the whole path
    and labelled "Customer · Rating"."""
    if "." not in name:
        return d.fields[name]
    path = resolve_path(crm().registry, d, name)
    last = path[-1][1]
    label = Label({lang: " · ".join(f.label.get(lang) for _, f in path) for lang in (locale(), "")})
    return dataclasses.replace(last, name=name, label=label)


def _saved(d: DocType) -> list[Any]:
    """The user's own and the shared saved segments of the type: read once a
    request (the list's query and its segment manager both need them)."""
    cache = g.setdefault("crm_saved_segments", {})
    if d.name not in cache:
        cache[d.name] = segments_api.saved(crm().models, db_session(), principal(), d.name)
    return cache[d.name]


def _saved_segments(d: DocType) -> list[dict[str, Any]]:
    """The user's own and the shared saved segments of the type, for the
    list page's segment manager: which the user may rename or delete."""
    who = principal()
    return [
        {
            "name": f.name,
            "label": f.label,
            "shared": f.shared,
            "mine": f.owner_id == who.user_id,
            "may_change": segments_api.may_change(f.owner_id, f.shared, who),
        }
        for f in _saved(d)
    ]


def _save_args(d: DocType) -> dict[str, str]:
    """What "Save as segment" saves: the list's filters and segment."""
    names = {f"f_{n}" for n in (d.list.filters if d.list else ())} | {"segment"}
    return {k: v for k, v in request.args.items() if k in names and v}


def _offset() -> int:
    try:
        return min(max(0, int(request.args.get("offset", 0))), fetch.MAX_OFFSET)
    except ValueError:
        return 0


def _labels() -> dict[str, Any]:
    """What every template of these views uses to print a field."""
    tz = formatting.company_tz()
    return {
        "label": lambda f: f.label.get(locale()),
        "show": formatting.shown,
        "input_value": lambda f, v: input_value(f, v, tz, locale()),
        "help": lambda f: f.help.get(locale()) if f.help else "",
        "state": crm(),
    }


class DocumentView(BoardsMixin, ImportMixin, BaseView):
    """One per document type; the class attribute ``doctype`` says which."""

    doctype: str = ""
    default_view = "list"

    @property
    def d(self) -> DocType:
        """The type as the user sees it: without the fields hidden from them,
        their read-only fields marked so (see ``access.restricted``)."""
        registry = crm().registry
        return access.restricted(registry, principal(), registry.documents[self.doctype])

    @property
    def view_name(self) -> str:
        return type(self).__name__

    # -- list ------------------------------------------------------------------

    def _list_query(self, d: DocType) -> tuple[dict[str, Any], str | None, str | None, Any]:
        """Filters, search and order from the URL (segment presets included):
        the consultant's segments and the user's own and shared saved ones.
        An unknown ``segment`` raises FilterError: it is never ignored."""
        state = crm()
        spec = _filters_from_args(d)
        segment = request.args.get("segment")
        segments = {
            n: s.label.get(locale()) if s.label else n
            for n, s in state.registry.segments.items()
            if s.document == d.name
            # a segment by a field hidden from the user would tell its values
            and all(access.path_readable(state.registry, principal(), d.name, p) for p in s.filter)
        }
        for own in _saved(d):
            segments[own.name] = own.label
        chosen: dict[str, Any] = {}
        if segment:
            found = segments_api.find(state.models, db_session(), segment, principal(), d.name)
            if found is None or found.name not in segments:
                raise FilterError(
                    gettext("`segment`: %(document)s has no segment `%(name)s`",
                            document=d.label.get(locale()), name=fetch.clean(segment, 50))
                )  # fmt: skip
            chosen = dict(found.filter)
            spec = {**chosen, **spec}
        card = _json_filter()
        if card:
            spec = conjoin(conjoin(chosen, card), _filters_from_args(d))
        order = fetch.clean(request.args.get("order"), 100) or None
        if order and not sortable(d, order.lstrip("-")):
            order = None
        search = fetch.clean(request.args.get("q"), 200).strip() or None
        return spec, search, order, segments

    def _chip(self, d: DocType) -> dict[str, Any] | None:
        """The ``?filter=`` a dashboard card linked with: what it says, and the
        list without it."""
        try:
            spec = _json_filter()
        except FilterError:
            return None
        if not spec:
            return None
        rest = {k: v for k, v in request.args.items() if k not in ("filter", "offset")}
        return {
            "text": " · ".join(describe_filter(d, spec)),
            "raw": request.args.get("filter"),
            "without": url_for(self.view_name + ".list") + (f"?{urlencode(rest)}" if rest else ""),
        }

    @expose("/")
    @login_required
    def list(self) -> Any:
        d = self.d
        _require("read", d)
        state = crm()
        offset = _offset()
        columns = list_columns(d)
        error = None
        base_where, drill = _drill(d)
        try:
            spec, search, order, segments = self._list_query(d)
        except FilterError as exc:  # the query string itself is wrong (`filter=`, `segment=`)
            spec, search, order, segments = _filters_from_args(d), None, None, {}
            error = str(exc)
        try:
            if error:
                raise FilterError(error)
            page = lists.page(
                state.models, db_session(), d.name, filter=spec or None, search=search,
                order=order, offset=offset, limit=PAGE_SIZE, columns=columns,
                user_id=principal().user_id, base_where=base_where, principal=principal(),
            )  # fmt: skip
        except FilterError as exc:
            db_session().rollback()
            error = str(exc)
            page = lists.Page([], 0, False, None, tuple(columns), offset, PAGE_SIZE)
        filter_fields = [_filter_field(d, n) for n in (d.list.filters if d.list else ())]
        picked = {f.name: spec[f.name] for f in filter_fields if f.type == "ref" and f.name in spec}
        count_text = f"{page.count:,}".replace(",", "\u00a0") + ("+" if page.count_capped else "")
        args = {k: v for k, v in request.args.items() if k != "offset"}
        html = self.render_template(
            "crm/list.html", d=d, page=page, count_text=count_text, error=error,
            has_more=page.count_capped or offset + PAGE_SIZE < page.count, columns=columns,
            cells=formatting.list_cells(d, page.rows, columns), segments=segments,
            segment=request.args.get("segment"), spec=spec, offset=offset, page_size=PAGE_SIZE,
            order=order or (d.list.order if d.list else "-created_at"), view=self.view_name,
            filter_fields=filter_fields, refs=lookup.ref_labels(d, picked) if picked else {},
            sortable=lambda c: sortable(d, c), args=args, chip=self._chip(d), drill=drill,
            can_create=access.allowed(state.registry, principal(), d.name, "create"), **_labels(),
            saved=_saved_segments(d), save_args=_save_args(d),
        )  # fmt: skip
        return (html, 400) if error else html

    @expose("/segments/save", methods=["POST"])
    @login_required
    def save_segment(self) -> Any:
        """Save the list's filter (its ``f_`` filters and its segment, given
        in the query string as the list page has them) as the user's segment."""
        d = self.d
        _require("read", d)
        try:
            spec, _, _, _ = self._list_query(d)
            found = segments_api.save(
                crm().models, db_session(), principal(), d.name, request.form.get("label", ""),
                spec, shared=request.form.get("shared") == "on",
            )  # fmt: skip
            db_session().commit()
        except (FilterError, segments_api.SegmentError) as exc:
            db_session().rollback()
            flash(str(exc), "danger")
            back = url_for(f"{self.view_name}.list") + "?" + urlencode(_save_args(d))
            return redirect(back)
        flash(gettext("Segment “%(name)s” saved", name=found.label), "info")
        return redirect(url_for(f"{self.view_name}.list", segment=found.name))

    @expose("/segments/<name>", methods=["POST"])
    @login_required
    def change_segment(self, name: str) -> Any:
        """Rename, share, unshare or delete a saved segment (``action``)."""
        d = self.d
        _require("read", d)
        action = request.form.get("action", "")
        if action not in ("rename", "share", "unshare", "delete"):
            abort(400)
        try:
            if segments_api.find(crm().models, db_session(), name, principal(), d.name) is None:
                abort(404)
            segments_api.change(
                crm().models, db_session(), principal(), name,
                label=request.form.get("label") if action == "rename" else None,
                shared={"share": True, "unshare": False}.get(action), delete=action == "delete",
            )  # fmt: skip
            db_session().commit()
        except segments_api.SegmentError as exc:
            db_session().rollback()
            flash(str(exc), "danger")
            return redirect(url_for(f"{self.view_name}.list", segment=name))
        if action == "delete":
            flash(gettext("Segment deleted"), "info")
            return redirect(url_for(f"{self.view_name}.list"))
        return redirect(url_for(f"{self.view_name}.list", segment=name))

    @expose("/export.csv")
    @login_required
    def export(self) -> Any:
        """The list as CSV: the same filters, search and access rules, every
        matching row, read a page at a time."""
        d = self.d
        _require("read", d)
        try:
            spec, search, order, _ = self._list_query(d)
        except FilterError as exc:
            return Response(str(exc), status=400, mimetype="text/plain")
        state = crm()
        base_where, _drilled = _drill(d)
        rows = transfer.list_rows(
            state.models, db_session(), d.name, principal(), filter=spec, search=search,
            order=order, where=base_where,
        )  # fmt: skip
        try:
            header = next(rows)
            first = next(rows, None)
        except FilterError as exc:
            db_session().rollback()
            return Response(str(exc), status=400, mimetype="text/plain")

        def generate() -> Iterator[bytes]:
            yield "\ufeff".encode()  # spreadsheets then read the file as UTF-8
            head = [header, *([first] if first is not None else [])]
            for chunk, _ in transfer.csv_chunks(itertools.chain(head, rows)):
                yield chunk

        response = Response(stream_with_context(generate()), mimetype="text/csv")
        response.headers["Content-Disposition"] = f'attachment; filename="{d.resource}.csv"'
        return response

    # -- record ----------------------------------------------------------------

    def _get(self, obj_id: int, action: str = "read") -> Any:
        obj = fetch.fetch(self.d.name, obj_id, action)
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
        full = state.registry.documents[d.name]  # for the engine's and plugins' own work
        # a state that locks the record (a final one, by default) offers no edit
        allows = forms.state_allows(d, obj)
        return self.render_template(
            "crm/show.html", d=d, obj=obj, sections=form_fields(d), values=formatting.display_values(d, obj),
            links=formatting.ref_links(d, obj), rows=formatting.shown_rows(d, obj), view=self.view_name,
            moves=writes.transition_moves(d, obj), stage_note=writes.stage_note(d, obj), history=formatting.history(d, obj),
            audit=formatting.audit_line(d, obj), timeline=formatting.timeline(full, obj, _arg_offset("tl")),
            plugin_sections=formatting.record_sections(full, obj),
            related=related.related_lists(d, obj), actions=related.record_actions(d, obj),
            can_update=allows != () and access.may_touch(state.models, principal(), d.name, "update", obj),
            can_delete=allows is None and access.may_touch(state.models, principal(), d.name, "delete", obj),
            merge_info=merge.record_info(d, obj), **_labels(),
        )  # fmt: skip

    # -- add and edit ------------------------------------------------------------

    def _form(
        self, obj: Any, values: dict[str, Any], errors: dict[str, str], title: str, action: str
    ) -> Any:
        d = self.d
        sections = form_fields(d)
        shown = {f.name for _, fields in sections for f in fields}
        defaults = forms.row_defaults(d)
        extra = [(fetch.row_doc(d, d.fields[n]), row) for n, row in defaults.items()]
        return self.render_template(
            "crm/form.html", d=d, obj=obj, sections=sections, values=values, errors=errors,
            unplaced=unplaced(errors, shown, d), title=title, action=action, view=self.view_name,
            refs=lookup.ref_labels(d, values, extra), locked=forms.locked_fields(d, obj),
            row_defaults=defaults, computes=forms.computes(d),
            duplicates=g.get("crm_duplicates") or {}, **_labels(),
        )  # fmt: skip

    @expose("/add", methods=["GET", "POST"])
    @login_required
    def add(self) -> Any:
        d = self.d
        _require("create", d)
        title = d.label.get(locale())
        action = url_for(f"{self.view_name}.add")
        if request.method == "GET":
            # a link may prefill the form: the calendar plans on the day clicked
            prefill = forms.form_values(d, request.args) if request.args else {}
            prefill = forms.seen_refs(d, prefill)  # a record the user may not read stays out
            values = {
                **forms.initial_values(d),
                **{k: v for k, v in prefill.items() if v not in (None, False, [])},
            }
            return self._form(None, values, {}, title, action)
        values = {**forms.form_values(d, request.form), **forms.refused_values(d, request.form)}
        _stop_at_duplicates()
        obj, errors = writes.create(d, values)
        if errors:
            return self._form(None, values, errors, title, action), _status(errors)
        if not access.may_touch(crm().models, principal(), d.name, "read", obj):
            # saved for someone else, whose records this user does not see
            flash(f"{d.label.get(locale())} #{obj.id}: ✓", "info")
            return redirect(url_for(f"{self.view_name}.list"))
        return redirect(url_for(f"{self.view_name}.show", obj_id=obj.id))

    @expose("/compute", methods=["POST"])
    @login_required
    def compute(self) -> Any:
        """The computed fields for the values a form holds, worked out by the
        same expressions a save uses (nothing is written): the form shows
        totals while the user types. ``_id`` names the record an edit form edits."""
        d = self.d
        ident = request.form.get("_id", type=int)
        _require("create" if ident is None else "update", d)
        obj = self._get(ident, "update") if ident is not None else None
        values = forms.form_values(d, request.form, obj=obj)
        try:
            plan = fetch.documents().plan(d, obj, values, lookups=False)
        finally:
            db_session().rollback()
        show = _labels()["input_value"]
        out: dict[str, Any] = {}
        for f in d.fields.values():
            if f.compute and f.type != "table":
                out[f.name] = show(f, plan.values.get(f.name))
            elif f.type == "table" and any(c.compute for c in f.fields.values()):
                planned = plan.values.get(f.name) or []
                for (i, _), row in zip(forms.indexed_rows(f, request.form), planned, strict=False):
                    for c in f.fields.values():
                        if c.compute:
                            out[f"{f.name}-{i}-{c.name}"] = show(c, row.get(c.name))
        return jsonify({"values": out})

    @expose("/<int:obj_id>/edit", methods=["GET", "POST"])
    @login_required
    def edit(self, obj_id: int) -> Any:
        d = self.d
        _require("update", d)
        obj = self._get(obj_id, "update")
        title = formatting.title(d, obj)
        action = url_for(f"{self.view_name}.edit", obj_id=obj_id)
        if request.method == "GET":
            return self._form(obj, forms.current_values(d, obj), {}, title, action)
        values = {
            **forms.form_values(d, request.form, obj=obj),
            **forms.refused_values(d, request.form, obj),
        }
        version = request.form.get("_version", type=int)
        if version is None:
            errors = {"_version": gettext("The form did not say which version of the record it edits; reload it")}  # fmt: skip
            return self._form(obj, values, errors, title, action), 409
        _stop_at_duplicates()
        saved, errors = writes.update(d, obj, values, version)
        if errors:
            values["_version"] = version
            status = 409 if "_version" in errors else _status(errors)
            return self._form(obj, values, errors, title, action), status
        return redirect(url_for(f"{self.view_name}.show", obj_id=saved.id))

    @expose("/<int:obj_id>/delete", methods=["POST"])
    @login_required
    def delete(self, obj_id: int) -> Any:
        d = self.d
        _require("delete", d)
        obj = self._get(obj_id, "delete")
        error = writes.delete(d, obj, request.form.get("_version", type=int))
        if error:
            flash(error, "danger")
            return redirect(url_for(f"{self.view_name}.show", obj_id=obj_id))
        flash(
            gettext("%(document)s #%(id)s deleted", document=d.label.get(locale()), id=obj_id),
            "info",
        )
        return redirect(url_for(f"{self.view_name}.list"))

    # -- transitions ---------------------------------------------------------------

    @expose("/<int:obj_id>/transition/<target>", methods=["GET", "POST"])
    @login_required
    def transition(self, obj_id: int, target: str) -> Any:
        """The step into another state: asks for the target's required fields
        and next documents, says why it is refused; posting it does the move."""
        d = self.d
        _require("update", d)
        obj = self._get(obj_id, "update")
        if d.statuses is None or target not in d.statuses.states:
            abort(404)
        state = d.statuses.states[target]
        registry = crm().registry
        next_doc = registry.documents[state.require_next.document] if state.require_next else None
        version = (
            request.form.get("_version", type=int) if request.method == "POST" else obj.version
        )
        if request.method == "POST":
            fields = forms.form_values(d, request.form, only=state.require)
            nexts = forms.next_values(d, state, request.form)
            reasons, errors = writes.transition(d, obj, target, fields, nexts, version)
            if not reasons and not errors:
                flash(f"→ {state.label.get(locale())}", "success")
                return redirect(url_for(f"{self.view_name}.show", obj_id=obj_id))
            values: dict[str, Any] = {**forms.current_values(d, obj), **fields}
            next_rows = nexts or ([{}] if next_doc else [])
            blocked = []
        else:
            reasons, errors, values = [], {}, forms.current_values(d, obj)
            blocked = writes.refusals(d, obj, target)
            next_rows = (
                [{**forms.initial_values(next_doc), **forms.next_prefill(d, state, obj)}]
                if next_doc
                else []
            )
        extra = [(next_doc, row) for row in next_rows] if next_doc else []
        require = [d.fields[n] for n in state.require if n in d.fields and forms.settable(d.fields[n], d)]  # fmt: skip
        next_fields = forms.next_fields(d, state)
        shown = {f.name for f in require}
        shown |= {f"next.{i}" for i in range(len(next_rows))}
        shown |= {f"next.{i}.{f.name}" for i in range(len(next_rows)) for f in next_fields}
        # `next` has its own alert; a next row's field without an input (its
        # link, filled in from this record) is said above the form
        hidden = unplaced({k: v for k, v in errors.items() if k != "next"}, shown)
        reasons = [*reasons, *(r for r in hidden if r not in reasons)]
        return self.render_template(
            "crm/transition.html", d=d, obj=obj, target=state, reasons=reasons or blocked,
            blocked=bool(blocked), errors=errors, values=values, version=version,
            next_rows=next_rows, view=self.view_name, title=formatting.title(d, obj),
            require=require, next_doc=next_doc, next_fields=next_fields,
            refs=lookup.ref_labels(d, values, extra), **_labels(),
        ), 409 if "_version" in errors else 422 if reasons or errors else 200  # fmt: skip

    # -- ref picker ----------------------------------------------------------------

    @expose("/lookup")
    @login_required
    def lookup(self) -> Any:
        """Records the typed text finds, for ref pickers (select2's format); a
        constrained ref's picker sends ``for`` and the values it depends on."""
        d = self.d
        if not access.allowed(crm().registry, principal(), d.name, "read"):
            return jsonify({"results": []})
        where = lookup.constraint(d, request.args)
        return jsonify({"results": lookup.lookup(d, request.args.get("q", ""), 20, where)})


def _drill(d: DocType) -> tuple[Any, dict[str, str] | None]:
    """The list's rows: those the user may read, narrowed to a report cell's
    records by ``?drill=`` (with the banner saying so); a 400 for a bad token."""
    from engine.reports.views import Refused, drilled

    base = access.where(crm().models, principal(), d.name, "read")
    try:
        where, banner = drilled(d.name, principal())
    except Refused as exc:
        abort(exc.status, exc.message)
    return (base if where is None else sa.and_(base, where)), banner


def _arg_offset(name: str) -> int:
    try:
        return min(max(0, int(request.args.get(name, 0))), 100_000)
    except ValueError:
        return 0


class MySalesView(BaseView):
    """ "My sales": the user's own funnel, the first kanban they may read, with
    tabs for the others; a head of sales switches managers and departments there."""

    route_base = "/my_sales"
    default_view = "index"

    @expose("/")
    @login_required
    def index(self) -> Any:
        d = first_board()
        if d is None:
            abort(404)
        me, registry = principal(), crm().registry
        if not d.owner:
            return redirect(f"/{d.resource}/kanban")
        if access.rule(registry, me, d.name, "read") is not True:
            return redirect(f"/{d.resource}/kanban?owner={me.user_id}")
        # who may read everyone's records (a head of sales) opens on the team:
        # every manager of their department, or the whole board without one
        department = _department_of(me.user_id)
        return redirect(
            f"/{d.resource}/kanban" + (f"?department={department}" if department else "")
        )


def _department_of(user_id: int | None) -> int | None:
    """The user's department, when users have one."""
    f = crm().registry.documents[USER].fields.get("department")
    if user_id is None or f is None or f.type != "ref":
        return None
    users = crm().models.table(USER)
    value = (
        db_session()
        .execute(sa.select(users.c[f.column]).where(users.c.id == user_id))
        .scalar_one_or_none()
    )
    return value if isinstance(value, int) else None


def first_board() -> DocType | None:
    """The first type with a kanban the user may read: what "My sales" opens
    (and whether the menu shows it at all)."""
    registry = crm().registry
    for d in registry.documents.values():
        if "kanban" in d.views and access.allowed(registry, principal(), d.name, "read"):
            return d
    return None


class UserLookupView(BaseView):
    """Users for ref pickers (``manager``, ``assignee``): active ones whose
    login, first or last name starts with what was typed."""

    route_base = "/crm_users"

    @expose("/lookup")
    @login_required
    def lookup(self) -> Any:
        users = crm().registry.documents[USER]
        where = lookup.constraint(users, request.args)
        return jsonify({"results": lookup.lookup_users(request.args.get("q", ""), 20, where)})


def register_views(appbuilder: Any, state: Any) -> None:
    registry = state.registry
    appbuilder.add_view_no_menu(UserLookupView())
    appbuilder.add_view_no_menu(merge.MergeView())
    category_of = _categories(registry)
    if any("kanban" in d.views for d in registry.documents.values()):
        appbuilder.add_view_no_menu(MySalesView())
        sales, sales_label = "crm:sales", lazy_gettext("Sales")
        appbuilder.add_link(
            "crm:my_sales", href="/my_sales/", label=menu_label(lazy_gettext("My sales")),
            category=sales, category_label=menu_label(sales_label),
            cond=lambda: first_board() is not None,
        )  # fmt: skip
    for d in registry.documents.values():
        if d.builtin:
            continue
        view = type(
            f"{d.name}View", (DocumentView,), {"doctype": d.name, "route_base": f"/{d.resource}"}
        )
        appbuilder.add_view_no_menu(view())
        category, label = category_of(d)
        appbuilder.add_link(
            d.name, href=f"/{d.resource}/", label=menu_label(d.label),
            category=category, category_label=menu_label(label),
        )  # fmt: skip


def _as_typed(text: str) -> str:
    return str(escape(text)).replace("%", "%%")


class MenuLabel(str):
    """A menu item's text in the reader's language, asked for each time the
    navbar shows it; as a plain string it is the text at start-up."""

    _text: Callable[[], str]

    def __new__(cls, text: Callable[[], str]) -> MenuLabel:
        self = super().__new__(cls, _as_typed(text()))
        self._text = text
        return self

    def __html__(self) -> str:
        return _as_typed(self._text()) if has_request_context() else str.__str__(self)

    def __str__(self) -> str:
        return self.__html__()


def menu_label(text: Any) -> str:
    """A label as Flask-AppBuilder's navbar wants it: the navbar passes it
    through gettext, which trusts its result as markup and formats it with
    ``%``, so the text is escaped here (and ``%`` doubled) to come out as typed.
    A metadata ``Label`` or a ``lazy_gettext("...")`` follows the reader's
    language; plain text stays as typed."""
    if isinstance(text, Label):
        label = text
        return MenuLabel(lambda: label.get(locale() if has_request_context() else None))
    if not isinstance(text, str):  # a lazy_gettext: translated when shown
        lazy = text
        return MenuLabel(lambda: str(lazy))
    return _as_typed(text)


def menu_group(d: DocType) -> tuple[str, str]:
    """The navigation group a type is listed under, as Flask-AppBuilder's
    ``category`` and ``category_label``: a plugin's page that belongs with
    those types goes in the same group."""
    category, label = _categories(None)(d)
    return category, menu_label(label)


def _categories(registry: Any) -> Any:
    """Group the menu: a type's own ``menu`` group, else documents with
    statuses under Sales and the rest under Directory."""

    def category(d: DocType) -> tuple[str, Any]:
        if d.menu is not None:
            return f"crm:group:{d.menu.texts.get('en') or d.menu}", d.menu
        if d.statuses is not None:
            return "crm:sales", lazy_gettext("Sales")
        return "crm:directory", lazy_gettext("Directory")

    return category
