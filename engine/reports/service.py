"""Serving reports: which kinds a configuration has, who may see a report,
the parameters of a request, drill-down tokens and the exported files.

Nothing here knows Flask: the pages and the REST endpoints
(engine/reports/views.py) and the list's ``?drill=`` call these, as do
tests and dashboards.
"""

from __future__ import annotations

import calendar
import datetime as dt
import io
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from itsdangerous import BadSignature, URLSafeSerializer

from engine import access
from engine.access import Principal
from engine.fieldtypes import valid_id
from engine.i18n import gettext
from engine.registry import USER, Registry, Report
from engine.reports import (
    Column,
    Context,
    Kind,
    Params,
    ReportError,
    Result,
    load_kinds,
)
from engine.reports.common import DEPARTMENT_FIELD, KIND_FIELD

#: the dates a report takes: beyond them a time zone's offset overflows
FIRST_DAY, LAST_DAY = dt.date(1900, 1, 1), dt.date(9000, 12, 31)
PRESETS = ("month", "last_month", "quarter", "year")
#: the options a report reads its fields from (a role must see them to see the report)
FIELD_OPTIONS = ("amount", "date", "subject", "by")
_KINDS_KEY = "reports.kinds"
_SALT = "crm-report-drill"


# --- kinds ---------------------------------------------------------------------------------


def plugin_kinds(pm: Any, registry: Registry) -> dict[str, Kind]:
    """The kinds the enabled plugins serve (``crm_report_kinds``)."""
    found: dict[str, Kind] = {}
    if pm is None:
        return found
    for result in pm.hook.crm_report_kinds(registry=registry):
        for k in result or ():
            instance = k() if isinstance(k, type) else k
            found[instance.name] = instance
    return found


def kinds_of(registry: Registry, pm: Any) -> Mapping[str, Kind]:
    """Every kind this configuration serves: the engine's and its plugins'."""
    cached = registry.extensions.get(_KINDS_KEY)
    if cached is None:
        cached = registry.extensions[_KINDS_KEY] = {**load_kinds(), **plugin_kinds(pm, registry)}
    return cached


# --- access -----------------------------------------------------------------------------------


def read_fields(report: Report) -> list[str]:
    """The fields of its type a report reads (its numbers would tell their values)."""
    names: list[str] = []
    for key in FIELD_OPTIONS:
        value = report.options.get(key)
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str):
                names.append(v)
    return names


def may_see(registry: Registry, principal: Principal | None, report: Report) -> bool:
    """A report's ``roles`` (when given) and reading its type and every field it reads."""
    if principal is None:
        return True
    roles = report.options.get("roles")
    if roles and not principal.admin and not set(map(str, roles)) & set(principal.roles):
        return False
    if report.document not in registry.documents:
        return False
    if not access.allowed(registry, principal, report.document, "read"):
        return False
    return all(
        access.path_readable(registry, principal, report.document, name)
        for name in read_fields(report)
    )


def visible(registry: Registry, pm: Any, principal: Principal | None) -> list[Report]:
    """The reports served here that ``principal`` may see, by name."""
    kinds = kinds_of(registry, pm)
    return [
        r
        for name, r in sorted(registry.reports.items())
        if r.type in kinds and may_see(registry, principal, r)
    ]


def title(registry: Registry, report: Report, locale: str | None) -> str:
    label = report.options.get("label")
    if isinstance(label, Mapping):
        return str(label.get(locale or registry.locale) or next(iter(label.values()), report.name))
    return str(label) if label else report.name


# --- parameters ---------------------------------------------------------------------------------


def month_of(day: dt.date) -> tuple[dt.date, dt.date]:
    return day.replace(day=1), day.replace(day=calendar.monthrange(day.year, day.month)[1])


def preset(name: str, today: dt.date) -> tuple[dt.date, dt.date]:
    """The days of a preset period around ``today``."""
    if name == "month":
        return month_of(today)
    if name == "last_month":
        return month_of(today.replace(day=1) - dt.timedelta(days=1))
    if name == "quarter":
        first = today.replace(month=(today.month - 1) // 3 * 3 + 1, day=1)
        return first, month_of(first.replace(month=first.month + 2))[1]
    if name == "year":
        return today.replace(month=1, day=1), today.replace(month=12, day=31)
    raise ReportError(gettext("`period` is one of: %(values)s", values=", ".join(PRESETS)))


def _date(args: Mapping[str, str], name: str, default: dt.date) -> dt.date:
    raw = (args.get(name) or "").strip()
    if not raw:
        return default
    try:
        day = dt.date.fromisoformat(raw)
    except ValueError:
        raise ReportError(
            gettext("`%(name)s` must be a date such as 2026-01-31", name=name)
        ) from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ReportError(
            gettext(
                "`%(name)s` must be between %(first)s and %(last)s",
                name=name, first=FIRST_DAY, last=LAST_DAY,
            )
        )  # fmt: skip
    return day


def _id(args: Mapping[str, str], name: str) -> int | None:
    raw = (args.get(name) or "").strip()
    if not raw:
        return None
    value = valid_id(raw)
    if value is None:
        raise ReportError(gettext("`%(name)s` must be a record number", name=name))
    return value


def kind_values(registry: Registry, report: Report) -> list[str]:
    """The deal kinds of the report's type (its ``kind`` enum), or none."""
    d = registry.documents.get(report.document)
    f = d.fields.get(KIND_FIELD) if d else None
    return list(f.values) if f is not None and f.type == "enum" else []


def parse(
    registry: Registry, report: Report, k: Kind, args: Mapping[str, str], today: dt.date
) -> Params:
    """The parameters of a request (this month unless said otherwise); a
    parameter the report cannot take raises ReportError (a 400)."""
    start, end = month_of(today)
    if args.get("period"):
        start, end = preset(str(args["period"]), today)
    start, end = _date(args, "from", start), _date(args, "to", end)
    if start > end:
        raise ReportError(gettext("`from` must not be after `to`"))
    manager, department = _id(args, "manager"), _id(args, "department")
    if department is not None and DEPARTMENT_FIELD not in registry.documents[USER].fields:
        raise ReportError(gettext("users have no department here"))
    kind = (args.get("kind") or "").strip() or None
    if kind is not None:
        values = kind_values(registry, report)
        if not values:
            raise ReportError(gettext("%(document)s has no kind", document=report.document))
        if kind not in values:
            raise ReportError(gettext("`kind` is one of: %(values)s", values=", ".join(values)))
    segment = (args.get("segment") or "").strip() or None
    if segment is not None:
        s = registry.segments.get(segment)
        if s is None or s.document != report.document:
            raise ReportError(
                gettext(
                    "`segment`: %(document)s has no segment `%(name)s`",
                    document=report.document, name=segment[:50],
                )
            )  # fmt: skip
    extra = {key: str(args[key]) for key in k.parameters if args.get(key) not in (None, "")}
    return Params(start, end, manager, department, kind, segment, extra)


def query_args(params: Params) -> dict[str, str]:
    """The request parameters that give ``params`` again (the page's links)."""
    out = {"from": params.start.isoformat(), "to": params.end.isoformat()}
    for key in ("manager", "department", "kind", "segment"):
        value = getattr(params, key)
        if value is not None:
            out[key] = str(value)
    out.update(params.extra)
    return out


# --- drill-down ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drill:
    """A drill-down token's content: the report, its parameters, the cell, and
    how the list's banner names the cell."""

    report: str
    params: Params
    cell: str
    caption: str


def _serializer(secret: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret, salt=_SALT)


def drill_token(secret: str, report: str, params: Params, cell: str, caption: str) -> str:
    p = asdict(params)
    p["start"], p["end"] = params.start.isoformat(), params.end.isoformat()
    p["extra"] = dict(params.extra)
    return str(_serializer(secret).dumps({"r": report, "p": p, "c": cell, "t": caption}))


def read_drill(secret: str, token: str) -> Drill:
    """A token made by :func:`drill_token`; ReportError for any other text."""
    try:
        data = _serializer(secret).loads(token[:4000])
        p = dict(data["p"])
        p["start"], p["end"] = dt.date.fromisoformat(p["start"]), dt.date.fromisoformat(p["end"])
        return Drill(str(data["r"]), Params(**p), str(data["c"]), str(data["t"]))
    except (BadSignature, KeyError, TypeError, ValueError):
        raise ReportError(gettext("this drill-down link is not valid")) from None


def drill_where(
    ctx: Context, pm: Any, drill: Drill, doctype: str
) -> tuple[Report, sa.ColumnElement[bool]]:
    """The condition a list of ``doctype`` narrows to for a drill-down: its
    records counted in the cell (the read rule applies besides)."""
    registry = ctx.registry
    report = registry.reports.get(drill.report)
    k = kinds_of(registry, pm).get(report.type) if report else None
    if report is None or k is None or not may_see(registry, ctx.principal, report):
        raise ReportError(gettext("this drill-down link is not valid"))
    kind_doctype, ids = k.drill(ctx, report, drill.params, drill.cell)
    if kind_doctype != doctype:
        raise ReportError(gettext("this drill-down link is of another list"))
    table = ctx.models.table(doctype)
    return report, table.c.id.in_(ids.scalar_subquery())


# --- running ------------------------------------------------------------------------------------


def run(ctx: Context, pm: Any, report: Report, params: Params) -> Result:
    k = kinds_of(ctx.registry, pm)[report.type]
    return k.run(ctx, report, params)


def plain(value: Any) -> Any:
    """A cell for JSON and files: numbers stay numbers."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


def table_rows(result: Result) -> list[list[Any]]:
    """The table as rows of cells, the header first and the totals row last."""
    rows: list[list[Any]] = [[c.label for c in result.columns]]
    for row in result.rows:
        rows.append([plain(row.get(c.key)) for c in result.columns])
    if result.total is not None:
        rows.append([plain(result.total.get(c.key)) for c in result.columns])
    return rows


def xlsx_file(result: Result, sheet: str) -> bytes:
    """The table as an XLSX workbook: numbers as numbers, text never a formula."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
    from openpyxl.styles import Font

    wb = Workbook(write_only=True)
    ws = wb.create_sheet(re.sub(r"[\[\]:*?/\\]", " ", sheet)[:31].strip() or "Report")
    rows = table_rows(result)
    for i, row in enumerate(rows):
        cells: list[Any] = []
        for value in row:
            if isinstance(value, str):
                value = ILLEGAL_CHARACTERS_RE.sub("", value)
            c = WriteOnlyCell(ws, value)
            if isinstance(value, str):
                c.data_type = "s"  # text, never a formula
            if i == 0 or (result.total is not None and i == len(rows) - 1):
                c.font = Font(bold=True)
            cells.append(c)
        ws.append(cells)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def column_json(c: Column) -> dict[str, Any]:
    return {"key": c.key, "label": c.label, "format": c.format}
