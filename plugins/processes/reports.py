"""Reports of the processes plugin: executive discipline.

:func:`discipline` answers "who does their tasks on time" for a period with
one GROUP BY over the tasks due in it, whatever their number: the database
counts, Python only divides and adds the totals row. The same rows feed the
page, its CSV and the JSON for dashboards, so the three cannot disagree.

Which tasks count:

- a task belongs to the period (days on the company's clock, both ends
  included) its due time falls in; a task without a due time, to the period
  it was done in, and it is on time: it had no time to miss. An open one
  without a due time is in no period. Both are index range scans (``due``;
  ``done_at``, indexed for this in metadata/processes.yaml);
- only open and done tasks (non-final states and final ones whose outcome is
  ``done``): a cancelled task is nobody's lateness;
- a done task is on time when it was done by its due time; it was done at
  ``done_at`` (a task closed without one, by a bare transition, at its last
  change);
- the on-time share is of the tasks whose fate is known: done, or open past
  their due time; a task still within its time counts for neither side.
"""

from __future__ import annotations

import calendar
import datetime as dt
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from flask import Response, abort, jsonify, request
from flask_appbuilder import BaseView, expose
from sqlalchemy.orm import Session

from engine import api
from engine.api import (
    USER,
    Principal,
    Registry,
    company_tz,
    crm,
    db_session,
    gettext,
    json_error,
    lazy_gettext,
    login_required,
    menu_label,
    principal,
)

TASK = "Task"
DEPARTMENT = "Department"
By = Literal["person", "department"]
BY: tuple[By, ...] = ("person", "department")
TEMPLATES = Path(__file__).parent / "templates"
#: the dates the page accepts: beyond them a time zone's offset overflows
FIRST_DAY, LAST_DAY = dt.date(1900, 1, 1), dt.date(9000, 12, 31)


@dataclass(frozen=True)
class Row:
    """One person's or department's figures; ``key`` is the user's or the
    department's id (None: no department, or the totals row)."""

    key: int | None
    name: str
    department: str
    total: int
    on_time: int
    late: int
    overdue: int
    pending: int
    on_time_pct: float | None
    avg_late_hours: float | None
    avg_hours_to_complete: float | None
    is_total: bool = False


@dataclass
class _Sums:
    """What the database adds up for a group, before the averages."""

    total: int = 0
    on_time: int = 0
    late: int = 0
    overdue: int = 0
    pending: int = 0
    late_hours: float = 0.0
    complete_hours: float = 0.0

    def add(self, other: _Sums) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def row(self, key: int | None, name: str, department: str, is_total: bool = False) -> Row:
        known = self.on_time + self.late + self.overdue
        done = self.on_time + self.late
        return Row(
            key, name, department, self.total, self.on_time, self.late, self.overdue,
            self.pending,
            round(100 * self.on_time / known, 1) if known else None,
            round(self.late_hours / self.late, 1) if self.late else None,
            round(self.complete_hours / done, 1) if done else None,
            is_total,
        )  # fmt: skip


def period_bounds(start: dt.date, end: dt.date, tz: dt.tzinfo) -> tuple[dt.datetime, dt.datetime]:
    """The period's days on the company's clock as a half-open UTC range."""
    if start > end:
        raise ValueError("the period ends before it starts")
    low = dt.datetime.combine(start, dt.time(), tz).astimezone(dt.UTC)
    high = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), tz).astimezone(dt.UTC)
    return low, high


def month_of(day: dt.date) -> tuple[dt.date, dt.date]:
    return day.replace(day=1), day.replace(day=calendar.monthrange(day.year, day.month)[1])


def hours_between(later: Any, earlier: Any, dialect: str) -> Any:
    """``later - earlier`` in hours: SQLite keeps datetimes as text, PostgreSQL
    subtracts them into an interval, whose seconds ``date_part`` gives as a
    double (``extract`` gives a numeric since PostgreSQL 14: twice as slow
    to add up)."""
    if dialect == "sqlite":
        return (sa.func.julianday(later) - sa.func.julianday(earlier)) * 24.0
    return sa.func.date_part("epoch", later - earlier, type_=sa.Float) / 3600.0


def _department_table(models: Any) -> tuple[sa.Table | None, sa.Column[Any] | None]:
    """The departments and the users' column pointing at them, when the config
    has both, as the base layer does (a Department with a `name`)."""
    f = models.registry.documents[USER].fields.get("department")
    if f is None or f.type != "ref" or f.to != DEPARTMENT or not f.stored:
        return None, None
    name = models.registry.documents[DEPARTMENT].fields.get("name")
    if name is None or not name.stored:
        return None, None
    return models.table(DEPARTMENT), models.table(USER).c[f.column]


def discipline_params(
    start: dt.date, end: dt.date, tz: dt.tzinfo, now: dt.datetime
) -> dict[str, dt.datetime]:
    """The values of the statement's parameters: the period and the moment
    that tells overdue from not yet due."""
    low, high = period_bounds(start, end, tz)
    return {"low": low, "high": high, "now": now.astimezone(dt.UTC)}


def discipline_select(models: Any, principal: Principal, by: By, dialect: str) -> sa.Select[Any]:
    """The report's one statement, with the parameters of
    :func:`discipline_params`: per person (with their department) or per
    department, the counts and the sums of hours the averages come from.

    The tasks of the period are two index range scans glued by UNION ALL:
    those due in it, by (status, due), or (assignee, due) for a manager, and
    those without a due time done in it, by (done_at, due), or (assignee,
    due) again. One condition ``due ... OR (due IS NULL AND ...)`` would cost
    SQLite a scan of every task of the statuses."""
    if by not in BY:
        raise ValueError(f"`by` is one of: {', '.join(BY)}")
    d = models.registry.documents[TASK]
    tasks, users = models.table(TASK), models.table(USER)
    states = d.statuses.states
    done_states = [n for n, s in states.items() if s.final and (s.outcome or n) == "done"]
    open_states = [n for n, s in states.items() if not s.final]
    status = tasks.c[d.statuses.field]
    moment = tasks.c.due.type
    low, high = sa.bindparam("low", type_=moment), sa.bindparam("high", type_=moment)
    now = sa.bindparam("now", type_=moment)
    columns = (
        tasks.c[d.fields[d.owner].column].label("assignee_id"),
        status.label("status"),
        tasks.c.due,
        tasks.c.created_at,
        sa.func.coalesce(tasks.c.done_at, tasks.c.updated_at, tasks.c.created_at).label("done_at"),
    )
    done, undue = status.in_(done_states), tasks.c.due.is_(None)
    if dialect == "sqlite" and api.rule(models.registry, principal, TASK, "read") is True:
        # SQLite would walk every task without a due time by (status, due):
        # its statistics average over the due times, blind to the many NULLs,
        # and without statistics it guesses a status rare. The period's range
        # of (done_at, due) is what narrows: the NULL test is made one it
        # cannot look up, and it is told that most tasks are done. (Someone
        # who reads only his own tasks is served best by (assignee, due).)
        done = sa.func.likelihood(done, sa.literal_column("0.9"))
        undue = sa.func.typeof(tasks.c.due) == "null"
    readable = api.where(models, principal, TASK)
    t = sa.union_all(
        sa.select(*columns).where(
            readable, status.in_([*done_states, *open_states]),
            tasks.c.due >= low, tasks.c.due < high,
        ),
        sa.select(*columns).where(
            readable, done, undue, tasks.c.done_at >= low, tasks.c.done_at < high,
        ),
    ).subquery("t")  # fmt: skip

    due, done_at = t.c.due, t.c.done_at
    is_done, is_open = t.c.status.in_(done_states), t.c.status.in_(open_states)
    on_time = sa.and_(is_done, sa.or_(due.is_(None), done_at <= due))
    late = sa.and_(is_done, done_at > due)

    def count(condition: sa.ColumnElement[bool]) -> Any:
        return sa.func.count(sa.case((condition, 1)))

    def hours(condition: sa.ColumnElement[bool], later: Any, earlier: Any) -> Any:
        return sa.func.sum(sa.case((condition, hours_between(later, earlier, dialect))))

    figures = (
        sa.func.count().label("total"),
        count(on_time).label("on_time"),
        count(late).label("late"),
        count(sa.and_(is_open, due < now)).label("overdue"),
        count(sa.and_(is_open, due >= now)).label("pending"),
        hours(late, done_at, due).label("late_hours"),
        hours(is_done, done_at, t.c.created_at).label("complete_hours"),
    )
    departments, user_department = _department_table(models)
    source = t.join(users, users.c.id == t.c.assignee_id)
    group: list[Any] = []
    if by == "person":
        group += [users.c.id, users.c.first_name, users.c.last_name, users.c.username]
    keys = list(group)
    if departments is not None and user_department is not None:
        source = source.outerjoin(departments, departments.c.id == user_department)
        dept_name = departments.c[models.registry.documents[DEPARTMENT].fields["name"].column]
        group += [departments.c.id, dept_name]
        keys += [departments.c.id.label("dept_id"), dept_name.label("dept_name")]
    else:
        keys += [sa.null().label("dept_id"), sa.null().label("dept_name")]
    return sa.select(*keys, *figures).select_from(source).group_by(*group)


#: the key, in ``registry.extensions``, of the built statements per models (their
#: MetaData) and (principal, by, dialect): building one and its cache key costs
#: more than running it for a small team
STATEMENTS = "processes.discipline_statements"
MAX_STATEMENTS = 256


def _statement(models: Any, principal: Principal, by: By, dialect: str) -> sa.Select[Any]:
    per_models: weakref.WeakKeyDictionary[sa.MetaData, dict[tuple[Any, ...], sa.Select[Any]]]
    per_models = models.registry.extensions.setdefault(STATEMENTS, weakref.WeakKeyDictionary())
    built = per_models.setdefault(models.metadata, {})
    key = (principal, by, dialect)
    select = built.get(key)
    if select is None:
        if len(built) >= MAX_STATEMENTS:
            built.clear()
        select = built[key] = discipline_select(models, principal, by, dialect)
    return select


def _person(r: Any) -> str:
    return f"{r.first_name or ''} {r.last_name or ''}".strip() or str(r.username)


def discipline(
    models: Any,
    session: Session,
    principal: Principal,
    start: dt.date,
    end: dt.date,
    by: By = "person",
    tz: dt.tzinfo = dt.UTC,
    now: dt.datetime | None = None,
) -> list[Row]:
    """The executive discipline report: a row per person or department, by
    department and name, then the totals row. Only the tasks the principal
    may read count: a manager sees his own row, a head everyone's."""
    select = _statement(models, principal, by, session.get_bind().dialect.name)
    params = discipline_params(start, end, tz, now or api.clock.now())
    no_department = gettext("(no department)")
    rows: list[tuple[tuple[Any, ...], Row]] = []
    totals = _Sums()
    for r in session.execute(select, params):
        if not r.total:  # no grouping (no departments) and nothing in the period
            continue
        sums = _Sums(r.total, r.on_time, r.late, r.overdue, r.pending,
                     float(r.late_hours or 0), float(r.complete_hours or 0))  # fmt: skip
        totals.add(sums)
        department = str(r.dept_name) if r.dept_name is not None else no_department
        if by == "person":
            name = _person(r)
            row = sums.row(r.id, name, department)
        else:
            name = department
            row = sums.row(r.dept_id, department, "")
        order = (r.dept_name is None, department.casefold(), name.casefold(), row.key or 0)
        rows.append((order, row))
    rows.sort(key=lambda pair: pair[0])
    total = gettext("Total")
    return [row for _, row in rows] + [totals.row(None, total, "", is_total=True)]


# --- the page -------------------------------------------------------------------------------------

COLUMNS: tuple[tuple[str, Any], ...] = (
    ("total", lazy_gettext("Total")),
    ("on_time", lazy_gettext("Done on time")),
    ("late", lazy_gettext("Done late")),
    ("overdue", lazy_gettext("Open, overdue")),
    ("pending", lazy_gettext("Open, not yet due")),
    ("on_time_pct", lazy_gettext("On time, %")),
    ("avg_late_hours", lazy_gettext("Average lateness, h")),
    ("avg_hours_to_complete", lazy_gettext("Average time to complete, h")),
)


def _header(by: By) -> list[str]:
    first = [gettext("Person"), gettext("Department")]
    if by == "department":
        first = first[1:]
    return [*first, *(str(label) for _, label in COLUMNS)]


def _cells(row: Row, by: By) -> list[Any]:
    first = [row.name, row.department] if by == "person" else [row.name]
    return [*first, *(getattr(row, key) for key, _ in COLUMNS)]


class ReportRequestError(ValueError):
    """A period or grouping the report cannot take: 400 with this message."""


def _date(name: str, default: dt.date) -> dt.date:
    raw = (request.args.get(name) or "").strip()
    if not raw:
        return default
    try:
        day = dt.date.fromisoformat(raw)
    except ValueError:
        raise ReportRequestError(
            gettext("`%(name)s` must be a date such as 2026-01-31", name=name)
        ) from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ReportRequestError(
            gettext(
                "`%(name)s` must be between %(first)s and %(last)s",
                name=name,
                first=FIRST_DAY,
                last=LAST_DAY,
            )
        )
    return day


def _query(as_json: bool = False) -> tuple[dt.date, dt.date, By]:
    """The period and grouping asked for: this month by person unless said
    otherwise. A request the report cannot take ends here with a 400."""

    try:
        first, last = month_of(api.clock.today(company_tz()))
        start, end = _date("from", first), _date("to", last)
        if start > end:
            raise ReportRequestError(gettext("`from` must not be after `to`"))
        by = request.args.get("by") or "person"
        if by not in BY:
            raise ReportRequestError(gettext("`by` is one of: %(values)s", values=", ".join(BY)))
    except ReportRequestError as exc:
        message = str(exc)
        if as_json:
            abort(json_error(400, message))
        abort(400, message)  # the app's error page, with this message
    return start, end, by


#: the fields of a task the report counts and times by
REPORTED = ("due", "done_at", "created_at", "updated_at")


def _may_read() -> bool:
    """May the user see the report: read tasks, and every field it counts
    by (a report over a field hidden from them would tell its values)."""
    registry, me = crm().registry, principal()
    if not api.allowed(registry, me, TASK, "read"):
        return False
    rights = api.field_rights(registry, me, TASK)
    return all(rights.readable(name) for name in REPORTED)


def _report(start: dt.date, end: dt.date, by: By) -> list[Row]:

    if not _may_read():
        abort(403)
    return discipline(crm().models, db_session(), principal(), start, end, by, company_tz())


class ProcessesDisciplineView(BaseView):
    """Executive discipline: the page, its CSV and its JSON."""

    route_base = "/processes"
    default_view = "discipline"
    template_folder = str(TEMPLATES)

    @expose("/discipline")
    @login_required
    def discipline(self) -> Any:
        start, end, by = _query()
        rows = _report(start, end, by)
        first, last = month_of(start)
        previous = month_of(first - dt.timedelta(days=1))
        following = month_of(last + dt.timedelta(days=1))
        return self.render_template(
            "processes/discipline.html", rows=rows, start=start, end=end, by=by,
            header=_header(by), cells=lambda row: _cells(row, by), previous=previous,
            following=following, args={"from": start.isoformat(), "to": end.isoformat(), "by": by},
        )  # fmt: skip

    @expose("/discipline.csv")
    @login_required
    def discipline_csv(self) -> Any:
        start, end, by = _query()
        rows = _report(start, end, by)
        cells = [_header(by), *(_cells(row, by) for row in rows)]
        response = Response(b"".join(api.csv_file(cells)), mimetype="text/csv")
        name = f"discipline-{by}-{start.isoformat()}-{end.isoformat()}.csv"
        response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
        return response

    @expose("/discipline.json")
    @login_required
    def discipline_json(self) -> Any:
        start, end, by = _query(as_json=True)
        if not _may_read():
            return json_error(403, gettext("you may not read tasks"))
        *rows, total = _report(start, end, by)
        return jsonify(
            {
                "from": start.isoformat(),
                "to": end.isoformat(),
                "by": by,
                "rows": [_public(r) for r in rows],
                "total": _public(total),
            }
        )


def _public(row: Row) -> dict[str, Any]:
    out = asdict(row)
    del out["is_total"]
    return out


def register(appbuilder: Any, registry: Registry) -> None:
    appbuilder.add_view_no_menu(ProcessesDisciplineView())
    appbuilder.add_link(
        "crm:discipline",
        href="/processes/discipline",
        label=menu_label(lazy_gettext("Executive discipline")),
        category="crm:processes",
        category_label=menu_label(lazy_gettext("Processes")),
        cond=_may_read,
    )
