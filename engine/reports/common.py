"""What every report kind narrows and measures by, written once so that a
parameter means the same records in every report, its drill-down and its
dashboard card.

- :func:`narrowing`: the principal's read rule, the report's own ``filter``,
  and the request's manager, department, deal kind and segment, as one SQL
  condition on the report type's table;
- :func:`period`: the period's days on the company's clock as a half-open
  UTC range, for datetime columns (``at`` of a status history,
  ``created_at``); :func:`period_days` for date columns;
- :func:`history`: the type's status history table (who, when, from, to).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from engine.filters import FilterError, compile_filter
from engine.registry import USER, DocType, Report
from engine.reports import Context, Params, ReportError
from engine.segments import find as find_segment

#: the field of a type that holds its deal kind, when it has one
KIND_FIELD = "kind"
#: the user's field that holds their department (the base layer's)
DEPARTMENT_FIELD = "department"


def doctype(ctx: Context, report: Report) -> DocType:
    return ctx.registry.documents[report.document]


def owner_column(ctx: Context, report: Report) -> sa.ColumnElement[Any] | None:
    """The column of the type's owner (``owner:``), or None: a type without
    an owner cannot be narrowed by manager or department."""
    d = doctype(ctx, report)
    if not d.owner:
        return None
    return ctx.models.table(d.name).c[d.fields[d.owner].column]


def department_users(ctx: Context, department: int) -> sa.Select[Any]:
    """The ids of the users of a department (the base layer's User.department)."""
    users = ctx.models.table(USER)
    f = ctx.registry.documents[USER].fields.get(DEPARTMENT_FIELD)
    if f is None or not f.stored:
        raise ReportError("users have no department here")
    return sa.select(users.c.id).where(users.c[f.column] == department)


def narrowing(ctx: Context, report: Report, params: Params) -> sa.ColumnElement[bool]:
    """Which records of the report's type count: readable by the principal,
    matching the report's ``filter`` and the request's manager, department,
    kind and segment. Raises ReportError for a parameter the type cannot take."""
    d = doctype(ctx, report)
    table = ctx.models.table(d.name)
    user_id = ctx.principal.user_id if ctx.principal else None
    parts: list[sa.ColumnElement[bool]] = [ctx.readable(d.name)]
    try:
        if report.options.get("filter"):
            parts.append(
                compile_filter(
                    ctx.models, d.name, report.options["filter"], user_id, principal=ctx.principal
                )
            )
        if params.segment:
            segment = find_segment(ctx.models, ctx.session, params.segment, ctx.principal, d.name)
            if segment is None:
                raise ReportError(f"there is no segment `{params.segment}` of {d.name}")
            parts.append(
                compile_filter(ctx.models, d.name, segment.filter, user_id, principal=ctx.principal)
            )
    except FilterError as exc:
        raise ReportError(str(exc)) from None
    owner = owner_column(ctx, report)
    if params.manager is not None or params.department is not None:
        if owner is None:
            raise ReportError(f"{d.name} has no owner to narrow by")
        if params.manager is not None:
            parts.append(owner == params.manager)
        if params.department is not None:
            parts.append(owner.in_(department_users(ctx, params.department)))
    if params.kind is not None:
        f = d.fields.get(KIND_FIELD)
        if f is None or not f.stored:
            raise ReportError(f"{d.name} has no kind")
        parts.append(table.c[f.column] == params.kind)
    return sa.and_(*parts)


def period(ctx: Context, params: Params) -> tuple[dt.datetime, dt.datetime]:
    """The period's days on the company's clock as a half-open UTC range [low, high)."""
    low = dt.datetime.combine(params.start, dt.time(), ctx.tz).astimezone(dt.UTC)
    high = dt.datetime.combine(params.end + dt.timedelta(days=1), dt.time(), ctx.tz)
    return low, high.astimezone(dt.UTC)


def period_days(params: Params) -> tuple[dt.date, dt.date]:
    """The period for a date column: both ends included."""
    return params.start, params.end


def history(ctx: Context, report: Report) -> sa.Table:
    """The status history of the report's type: ``doc_id``, ``at``, ``by_id``,
    ``field``, ``from_state``, ``to_state`` (indexed by (doc_id, at) and (to_state, at))."""
    d = doctype(ctx, report)
    if d.statuses is None:
        raise ReportError(f"{d.name} has no statuses")
    return ctx.models.metadata.tables[d.history_table]
