"""The report pages (``/reports/``, ``/reports/<name>``: the parameters, the
chart, the table, drill-down links, CSV, XLSX and a printable version) and
their REST twins (``/api/v1/reports/``, ``/api/v1/reports/<name>``).

Every path answers a problem the way its reader expects: a form error on the
page (400), a JSON error over REST (400); a report the user may not see is a
403, an unknown one (or one of a kind not served here) a 404; never a 500.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from flask import Response, abort, current_app, jsonify, request
from flask_appbuilder import BaseView, expose
from flask_login import login_required

from engine import clock
from engine.access import Principal
from engine.i18n import gettext, lazy_gettext
from engine.registry import USER, Report
from engine.reports import Context, Kind, Params, ReportError, Result, charts, service
from engine.reports.common import DEPARTMENT_FIELD
from engine.transfer.export import csv_file
from engine.web.api import api_principal
from engine.web.base import crm, db_session, json_error, locale, principal
from engine.web.formatting import company_tz


class Refused(Exception):
    """A request the report cannot answer: the status and the reader's message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _context(me: Principal) -> Context:
    state = crm()
    return Context(state.models, db_session(), me, company_tz(), clock.now())


def _report(name: str, me: Principal) -> tuple[Report, Kind]:
    state = crm()
    report = state.registry.reports.get(name)
    if report is None:
        raise Refused(404, gettext("There is no report `%(name)s`", name=name[:100]))
    k = service.kinds_of(state.registry, state.pm).get(report.type)
    if k is None:
        raise Refused(
            404,
            gettext(
                "The report `%(name)s` is of the type `%(type)s`, which this installation "
                "does not serve",
                name=name, type=report.type,
            ),
        )  # fmt: skip
    if not service.may_see(state.registry, me, report):
        raise Refused(403, gettext("Your roles may not see the report `%(name)s`", name=name))
    return report, k


def _params(report: Report, k: Kind) -> Params:
    try:
        return service.parse(crm().registry, report, k, request.args, clock.today(company_tz()))
    except ReportError as exc:
        raise Refused(400, str(exc)) from None


def _run(ctx: Context, report: Report, params: Params) -> Result:
    try:
        return service.run(ctx, crm().pm, report, params)
    except ReportError as exc:
        db_session().rollback()
        raise Refused(400, str(exc)) from None


def _caption(result: Result, row: int, key: str) -> str:
    cells = result.total if row == -1 else result.rows[row]
    first = result.columns[0].key
    label = str((cells or {}).get(first) or "") if row != -1 else gettext("Total")
    column = next((c.label for c in result.columns if c.key == key), key)
    return f"{label} · {column}" if label else str(column)


def drill_urls(
    report: Report, k: Kind, params: Params, result: Result
) -> dict[tuple[int, str], str]:
    """The list URL of every drillable cell (signed tokens: a user cannot make one up)."""
    registry, secret = crm().registry, current_app.config["SECRET_KEY"]
    period = f"{params.start.isoformat()} – {params.end.isoformat()}"
    urls: dict[tuple[int, str], str] = {}
    for (row, key), cell in result.drill.items():
        d = registry.documents.get(k.drill_document(registry, report, cell))
        if d is None:
            continue
        caption = f"{_caption(result, row, key)} ({period})"
        token = service.drill_token(secret, report.name, params, cell, caption)
        urls[(row, key)] = f"/{d.resource}/?{urlencode({'drill': token})}"
    return urls


def _chart_links(report: Report, k: Kind, params: Params, result: Result) -> Any:
    """The chart with its tokens turned into list URLs."""
    if result.chart is None:
        return None
    registry, secret = crm().registry, current_app.config["SECRET_KEY"]
    links: list[str | None] = []
    for i, cell in enumerate(result.chart.links):
        d = registry.documents.get(k.drill_document(registry, report, cell)) if cell else None
        if d is None or cell is None:
            links.append(None)
            continue
        label = result.chart.labels[i] if i < len(result.chart.labels) else ""
        caption = f"{label} ({params.start.isoformat()} – {params.end.isoformat()})"
        token = service.drill_token(secret, report.name, params, cell, caption)
        links.append(f"/{d.resource}/?{urlencode({'drill': token})}")
    return dataclasses.replace(result.chart, links=links)


def _choices(report: Report) -> dict[str, Any]:
    """What the parameter form offers: managers, departments, kinds, segments."""
    state = crm()
    registry = state.registry
    users = state.models.table(USER)
    session = db_session()
    managers = [
        (r.id, f"{r.first_name or ''} {r.last_name or ''}".strip() or r.username)
        for r in session.execute(
            sa.select(users.c.id, users.c.first_name, users.c.last_name, users.c.username)
            .where(users.c.active.is_(True))
            .order_by(users.c.first_name, users.c.last_name, users.c.id)
            .limit(500)
        )
    ]
    departments: list[tuple[int, str]] = []
    f = registry.documents[USER].fields.get(DEPARTMENT_FIELD)
    if f is not None and f.type == "ref" and f.to in registry.documents:
        target = registry.documents[f.to]
        name = target.fields.get("name")
        if name is not None and name.stored:
            table = state.models.table(target.name)
            departments = [
                (r.id, str(r.name))
                for r in session.execute(
                    sa.select(table.c.id, table.c[name.column].label("name"))
                    .order_by(table.c[name.column])
                    .limit(500)
                )
            ]
    d = registry.documents[report.document]
    kind_field = d.fields.get("kind")
    kinds = [
        (value, label.get(locale()))
        for value, label in (kind_field.values.items() if kind_field is not None else ())
        if value in service.kind_values(registry, report)
    ]
    segments = [
        (s.name, s.label.get(locale()) if s.label else s.name)
        for s in registry.segments.values()
        if s.document == report.document
    ]
    return {"managers": managers, "departments": departments, "kinds": kinds, "segments": segments}


def _presets() -> list[tuple[str, Any, tuple[str, str]]]:
    today = clock.today(company_tz())
    names = {
        "month": lazy_gettext("This month"),
        "last_month": lazy_gettext("Last month"),
        "quarter": lazy_gettext("This quarter"),
        "year": lazy_gettext("This year"),
    }
    out = []
    for key in service.PRESETS:
        start, end = service.preset(key, today)
        out.append((key, names[key], (start.isoformat(), end.isoformat())))
    return out


class ReportsView(BaseView):
    """The reports a user may see, and each report's page and files."""

    route_base = "/reports"
    default_view = "index"

    @expose("/")
    @login_required
    def index(self) -> Any:
        state = crm()
        me = principal()
        groups: dict[str, list[tuple[Report, str]]] = {}
        for r in service.visible(state.registry, state.pm, me):
            d = state.registry.documents[r.document]
            groups.setdefault(d.label.get(locale()), []).append(
                (r, service.title(state.registry, r, locale()))
            )
        return self.render_template("crm/reports/index.html", groups=sorted(groups.items()))

    def _answer(self, name: str) -> tuple[Report, Kind, Params | None, Result | None, str | None]:
        me = principal()
        try:
            report, k = _report(name, me)
        except Refused as exc:
            abort(exc.status, exc.message)
        try:
            params = _params(report, k)
            return report, k, params, _run(_context(me), report, params), None
        except Refused as exc:
            return report, k, None, None, exc.message

    @expose("/<name>")
    @login_required
    def show(self, name: str) -> Any:
        state = crm()
        report, k, params, result, error = self._answer(name)
        today = clock.today(company_tz())
        shown = params or Params(*service.month_of(today))
        args = {key: v for key, v in request.args.items() if key != "print"}
        urls = drill_urls(report, k, params, result) if params and result else {}
        chart = _chart_links(report, k, params, result) if params and result else None
        template = (
            "crm/reports/print.html" if request.args.get("print") else "crm/reports/report.html"
        )
        html = self.render_template(
            template, report=report, kind=k, title=service.title(state.registry, report, locale()),
            params=shown, result=result, error=error, urls=urls,
            chart=charts.svg(chart) if chart is not None else None, args=args,
            query=urlencode(args), presets=_presets(), options=k.parameters,
            choices=_choices(report), fmt=charts.number, now=clock.now(),
            document=state.registry.documents[report.document],
        )  # fmt: skip
        return (html, 400) if error else html

    def _file(self, name: str) -> tuple[Report, Params, Result]:
        report, _k, params, result, error = self._answer(name)
        if error or params is None or result is None:
            abort(400, error)
        return report, params, result

    @expose("/<name>/csv")
    @login_required
    def csv(self, name: str) -> Any:
        report, params, result = self._file(name)
        response = Response(b"".join(csv_file(service.table_rows(result))), mimetype="text/csv")
        file = f"{report.name}-{params.start.isoformat()}-{params.end.isoformat()}.csv"
        response.headers["Content-Disposition"] = f'attachment; filename="{file}"'
        return response

    @expose("/<name>/xlsx")
    @login_required
    def xlsx(self, name: str) -> Any:
        report, params, result = self._file(name)
        title = service.title(crm().registry, report, locale())
        response = Response(
            service.xlsx_file(result, title),
            mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        )
        file = f"{report.name}-{params.start.isoformat()}-{params.end.isoformat()}.xlsx"
        response.headers["Content-Disposition"] = f'attachment; filename="{file}"'
        return response


def report_json(report: Report, k: Kind, params: Params, result: Result) -> dict[str, Any]:
    """The JSON of a report: what the page shows, numbers as numbers, drill-downs as URLs."""
    urls = drill_urls(report, k, params, result)
    chart = _chart_links(report, k, params, result)

    def cells(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
        if row is None:
            return None
        return {c.key: service.plain(row.get(c.key)) for c in result.columns}

    return {
        "name": report.name,
        "type": report.type,
        "document": report.document,
        "label": service.title(crm().registry, report, locale()),
        "params": service.query_args(params),
        "columns": [service.column_json(c) for c in result.columns],
        "rows": [cells(r) for r in result.rows],
        "total": cells(result.total),
        "chart": None
        if chart is None
        else {
            "kind": chart.kind,
            "labels": list(chart.labels),
            "series": [{"label": s.label, "values": list(s.values)} for s in chart.series],
            "format": chart.format,
            "links": list(chart.links),
        },
        "drill": [
            {"row": row, "column": key, "url": url} for (row, key), url in sorted(urls.items())
        ],
        "notes": list(result.notes),
    }


class ReportsApi(BaseView):
    """``GET /api/v1/reports/`` and ``GET /api/v1/reports/<name>``: a session or a JWT."""

    route_base = "/api/v1/reports"

    @staticmethod
    def _who() -> Principal | Response:
        me = api_principal()
        if me is None:
            return json_error(
                401, gettext("Log in first: a session cookie or an Authorization: Bearer token")
            )
        return me

    @expose("/", methods=["GET"])
    def reports(self) -> Any:
        me = self._who()
        if isinstance(me, Response):
            return me
        state = crm()
        return jsonify(
            result=[
                {
                    "name": r.name,
                    "type": r.type,
                    "document": r.document,
                    "label": service.title(state.registry, r, locale()),
                    "url": f"/api/v1/reports/{r.name}",
                }
                for r in service.visible(state.registry, state.pm, me)
            ]
        )

    @expose("/<name>", methods=["GET"])
    def report(self, name: str) -> Any:
        me = self._who()
        if isinstance(me, Response):
            return me
        try:
            report, k = _report(name, me)
            params = _params(report, k)
            result = _run(_context(me), report, params)
        except Refused as exc:
            return json_error(exc.status, exc.message)
        return jsonify(report_json(report, k, params, result))


def may_open_reports() -> bool:
    state = crm()
    return bool(service.visible(state.registry, state.pm, principal()))


def register(appbuilder: Any, state: Any) -> None:
    from engine.web.views import menu_label

    appbuilder.add_view_no_menu(ReportsView())
    appbuilder.add_view_no_menu(ReportsApi())
    if state.registry.reports:
        appbuilder.add_link(
            "crm:reports", href="/reports/", label=menu_label(lazy_gettext("All reports")),
            category="crm:reports", category_label=menu_label(lazy_gettext("Reports")),
            cond=may_open_reports,
        )  # fmt: skip


def drilled(
    doctype: str, me: Principal
) -> tuple[sa.ColumnElement[bool] | None, dict[str, str] | None]:
    """The list's ``?drill=``: the condition narrowing the list to a report
    cell's records and the banner that says so (None, None without one).
    Raises Refused(400) for a token that is not ours or not of this list."""
    token = request.args.get("drill")
    if not token:
        return None, None
    state = crm()
    try:
        drill = service.read_drill(current_app.config["SECRET_KEY"], token)
        report, where = service.drill_where(_context(me), state.pm, drill, doctype)
    except ReportError as exc:
        db_session().rollback()
        raise Refused(400, str(exc)) from None
    back = f"/reports/{report.name}?{urlencode(service.query_args(drill.params))}"
    rest = {k: v for k, v in request.args.items() if k not in ("drill", "offset")}
    banner = {
        "report": report.name,
        "title": service.title(state.registry, report, locale()),
        "caption": drill.caption,
        "back": back,
        "clear": f"{request.path}?{urlencode(rest)}" if rest else request.path,
    }
    return where, banner
