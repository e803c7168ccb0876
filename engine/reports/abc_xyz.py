"""ABC/XYZ classification of customers, and its 3×3 matrix report (docs/reports.md).

A report of type ``abc_xyz`` names where revenue comes from: the records of
``document`` (customer orders, or deals) that count, their ``subject`` (the
ref to the customer), ``amount`` and ``date``, over the last ``period``
months. From it

- :func:`classify` (the nightly job ``crm.abc_xyz``, :func:`abc_xyz_job`)
  writes the classes back to the subject type's ``abc_class``, ``xyz_class``,
  ``abc_revenue``, ``xyz_cv`` and ``abc_xyz_at`` fields and a history row
  (``AbcXyzChange``) per customer whose classes changed, in a fixed few SQL
  statements whatever the number of customers;
- :class:`AbcXyz` draws the matrix from the stored classes (what segments
  and mailings use), or computes it live when the report does not store.

ABC: customers by revenue, largest first; a customer is A when the customers
ranked above it bring less than ``a`` % of the total, B when less than ``b`` %,
C otherwise (so the customer that crosses 80 % is still A, and a single
customer with 90 % of the revenue is A). XYZ: the coefficient of variation
of the customer's monthly revenue over the period's months, a month without
revenue counting as zero: X up to ``x`` %, Y up to ``y`` %, Z above. A
customer without revenue in the period has no classes.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa

from engine.errors import Problem
from engine.filters import compile_filter
from engine.i18n import gettext
from engine.registry import DocType, Registry, Report
from engine.reports import Chart, Column, Context, Kind, Params, ReportError, Result, Series, kind

#: the job that recomputes the stored classes (queued hourly; it works once a night)
JOB = "crm.abc_xyz"
#: how often the runner asks the job whether the night's run is due, in seconds
EVERY = 3600
#: the subject type's fields the classification writes
STORED = ("abc_class", "xyz_class", "abc_revenue", "xyz_cv", "abc_xyz_at")
#: the history of class changes
HISTORY = "AbcXyzChange"
ABC = ("A", "B", "C")
XYZ = ("X", "Y", "Z")
DEFAULT_THRESHOLDS = {"a": 80.0, "b": 95.0, "x": 10.0, "y": 25.0}
DEFAULT_MONTHS = 12
DEFAULT_AT = dt.time(3, 0)
#: the outcomes of the states whose records count when `states` is not given
COUNTED_OUTCOMES = ("won", "done")


@dataclass(frozen=True)
class Plan:
    """A report's options, read and checked once."""

    report: Report
    doctype: DocType
    subject: str
    amount: str
    date: str | None
    states: tuple[str, ...] | None
    months: int
    thresholds: Mapping[str, float]
    at: dt.time
    store: bool

    @property
    def target(self) -> str:
        """The subject's type: the customers."""
        return str(self.doctype.fields[self.subject].to)


def _months(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str) and re.fullmatch(r"\d{1,3}m", value.strip()):
        n = int(value.strip()[:-1])
    else:
        return None
    return n if 2 <= n <= 120 else None


def _time(value: Any) -> dt.time | None:
    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", value.strip())
    if m is None or int(m[1]) > 23 or int(m[2]) > 59:
        return None
    return dt.time(int(m[1]), int(m[2]))


def _problems(registry: Registry, report: Report) -> Iterator[tuple[str, str]]:
    """(option, message) for every value of the report's options that cannot work."""
    d = registry.documents.get(report.document)
    if d is None:
        return  # the engine's own check says so
    o = report.options
    subject = o.get("subject")
    f = d.fields.get(subject) if isinstance(subject, str) else None
    if subject is None:
        yield "subject", "is required: the ref to the customer the revenue belongs to"
    elif f is None or f.type != "ref" or not f.stored:
        yield "subject", f"must be a ref field of {d.name}"
    amount = o.get("amount")
    a = d.fields.get(amount) if isinstance(amount, str) else None
    if amount is None:
        yield "amount", "is required: the field of the revenue"
    elif a is None or a.type not in ("money", "decimal", "integer") or not a.stored:
        yield "amount", f"must be a number field of {d.name} (money, decimal or integer)"
    date = o.get("date")
    if date is not None:
        f2 = d.fields.get(date) if isinstance(date, str) else None
        if f2 is None or f2.type not in ("date", "datetime") or not f2.stored:
            yield "date", f"must be a date or datetime field of {d.name}"
    elif d.statuses is None:
        yield "date", f"is required: {d.name} has no statuses whose history could date it"
    states = o.get("states")
    if states is not None:
        if d.statuses is None:
            yield "states", f"{d.name} has no statuses"
        elif not isinstance(states, list) or not states:
            yield "states", "must be a list of states"
        else:
            for s in states:
                if s not in d.statuses.states:
                    yield "states", f"`{s}` is not a state of {d.name}"
    elif d.statuses is not None and not any(
        s.outcome in COUNTED_OUTCOMES for s in d.statuses.states.values()
    ):
        yield "states", f"is required: no state of {d.name} has the outcome won or done"
    if "period" in o and _months(o["period"]) is None:
        yield "period", "must be a number of months from 2 to 120, written `12m`"
    t = o.get("thresholds", {})
    if not isinstance(t, Mapping):
        yield "thresholds", "must be a map {a: 80, b: 95, x: 10, y: 25}"
    else:
        for key in t:
            if key not in DEFAULT_THRESHOLDS:
                yield "thresholds", f"has an unknown key `{key}`; the keys are a, b, x, y"
        values = {**DEFAULT_THRESHOLDS, **{k: v for k, v in t.items() if k in DEFAULT_THRESHOLDS}}
        if not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1000
            for v in values.values()
        ):
            yield "thresholds", "must be numbers of percent above 0"
        elif not (values["a"] < values["b"] <= 100 and values["x"] < values["y"]):
            yield "thresholds", "must be a < b ≤ 100 and x < y"
    if "at" in o and _time(o["at"]) is None:
        yield "at", "must be a time of day, written `03:00`"
    store = o.get("store")
    if store is not None and not isinstance(store, bool):
        yield "store", "must be true or false"
    elif store and f is not None and f.type == "ref":
        target = registry.documents.get(str(f.to))
        missing = [n for n in STORED if target is None or n not in target.fields]
        if missing:
            yield "store", f"{f.to} has no field {', '.join(missing)} to store the classes in"


def plan(registry: Registry, report: Report) -> Plan:
    """The report's options, with their defaults (checked by ``crm check``)."""
    d = registry.documents[report.document]
    o = report.options
    states = o.get("states")
    if states is None and d.statuses is not None:
        states = [n for n, s in d.statuses.states.items() if s.outcome in COUNTED_OUTCOMES]
    subject = str(o["subject"])
    target = registry.documents.get(str(d.fields[subject].to))
    store = o.get("store")
    if store is None:
        store = target is not None and all(n in target.fields for n in STORED)
    return Plan(
        report=report,
        doctype=d,
        subject=subject,
        amount=str(o["amount"]),
        date=o.get("date"),
        states=tuple(states) if states is not None else None,
        months=_months(o.get("period", DEFAULT_MONTHS)) or DEFAULT_MONTHS,
        thresholds={
            **DEFAULT_THRESHOLDS,
            **{k: float(v) for k, v in (o.get("thresholds") or {}).items()},
        },
        at=_time(o.get("at", "")) or DEFAULT_AT,
        store=bool(store),
    )


def storing(registry: Registry) -> list[Plan]:
    """The abc_xyz reports that store their classes, first per subject type."""
    out: dict[str, Plan] = {}
    for r in registry.reports.values():
        if r.type != AbcXyz.name or r.document not in registry.documents:
            continue
        if any(True for _ in _problems(registry, r)):
            continue
        p = plan(registry, r)
        if p.store:
            out.setdefault(p.target, p)
    return list(out.values())


def schedules(registry: Registry) -> list[tuple[str, int]]:
    """The engine's periodic jobs this configuration needs (``Runner``)."""
    return [(JOB, EVERY)] if storing(registry) else []


# --- the months of the period ---------------------------------------------------------


def add_months(day: dt.date, n: int) -> dt.date:
    """``day`` moved by ``n`` months, clipped to the month's last day."""
    index = day.year * 12 + day.month - 1 + n
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return dt.date(year, month + 1, min(day.day, last))


def month_bounds(today: dt.date, months: int) -> list[dt.date]:
    """The ``months + 1`` first days of the period's months, the last one
    tomorrow: months as long as calendar months, the last ending today."""
    end = today + dt.timedelta(days=1)
    return [add_months(end, k - months) for k in range(months + 1)]


def period_text(bounds: list[dt.date]) -> str:
    return f"{bounds[0].isoformat()} – {(bounds[-1] - dt.timedelta(days=1)).isoformat()}"


def company_tz(registry: Registry) -> dt.tzinfo:
    try:
        return ZoneInfo(str(registry.settings.get("timezone") or "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC


# --- the classification in SQL --------------------------------------------------------


def _sqrt(session: Any) -> None:
    """SQLite built without its math functions has no sqrt(): lend Python's."""
    if session.get_bind().dialect.name != "sqlite":
        return
    raw = session.connection().connection.dbapi_connection
    try:
        raw.execute("SELECT sqrt(4.0)")
    except Exception:
        raw.create_function("sqrt", 1, lambda v: math.sqrt(v) if v is not None and v >= 0 else None)


def classes(models: Any, p: Plan, bounds: list[dt.date], tz: dt.tzinfo) -> sa.Select[Any]:
    """One SELECT of ``(c, revenue, cv, abc, xyz)``: every customer with revenue
    in the period, its classes and the coefficient of variation in percent.
    Monthly sums per customer, then the cumulative share by a window
    function and the variance as avg(x²) − avg(x)² (no stddev in SQLite),
    months without revenue counted as zero."""
    d = p.doctype
    table = models.table(d.name)
    subject = table.c[d.fields[p.subject].column]
    amount = table.c[d.fields[p.amount].column]
    where: list[sa.ColumnElement[bool]] = [subject.is_not(None), amount.is_not(None)]
    source: Any = table
    if p.date is not None:
        f = d.fields[p.date]
        when: sa.ColumnElement[Any] = table.c[f.column]
        edges: list[Any] = (
            list(bounds)
            if f.type == "date"
            else [dt.datetime.combine(b, dt.time(), tz).astimezone(dt.UTC) for b in bounds]
        )
    else:
        # the moment the record last entered a counted state
        assert d.statuses is not None and p.states is not None
        h = models.metadata.tables[d.history_table]
        entered = (
            sa.select(h.c.doc_id, sa.func.max(h.c.at).label("at"))
            .where(h.c.to_state.in_(p.states))
            .group_by(h.c.doc_id)
            .subquery("entered")
        )
        source = table.join(entered, entered.c.doc_id == table.c.id)
        when = entered.c.at
        edges = [dt.datetime.combine(b, dt.time(), tz).astimezone(dt.UTC) for b in bounds]
    if d.statuses is not None and p.states is not None:
        where.append(table.c[d.statuses.field].in_(p.states))
    if p.report.options.get("filter"):
        where.append(compile_filter(models, d.name, p.report.options["filter"]))
    where += [when >= edges[0], when < edges[-1]]
    month = sa.case(*[(when < edges[k + 1], k) for k in range(p.months - 1)], else_=p.months - 1)
    monthly = (
        sa.select(subject.label("c"), month.label("m"), sa.func.sum(amount).label("s"))
        .select_from(source)
        .where(*where)
        .group_by(subject, month)
        .cte("abc_monthly")
    )
    s = sa.cast(monthly.c.s, sa.Float)
    per = (
        sa.select(
            monthly.c.c,
            sa.func.sum(monthly.c.s).label("revenue"),
            (sa.func.sum(s) / p.months).label("mean"),
            (sa.func.sum(s * s) / p.months).label("square"),
        )
        .group_by(monthly.c.c)
        .having(sa.func.sum(monthly.c.s) > 0)
        .cte("abc_customers")
    )
    ranked = sa.select(
        per.c.c,
        per.c.revenue,
        per.c.mean,
        per.c.square,
        (
            sa.func.sum(per.c.revenue).over(
                order_by=(per.c.revenue.desc(), per.c.c), rows=(None, 0)
            )
            - per.c.revenue
        ).label("above"),
        sa.func.sum(per.c.revenue).over().label("total"),
    ).cte("abc_ranked")
    variance = ranked.c.square - ranked.c.mean * ranked.c.mean
    cv = (100.0 * sa.func.sqrt(sa.case((variance > 0, variance), else_=0.0)) / ranked.c.mean).label(
        "cv"
    )
    t = p.thresholds
    abc = sa.case(
        (ranked.c.above * 100 < t["a"] * ranked.c.total, "A"),
        (ranked.c.above * 100 < t["b"] * ranked.c.total, "B"),
        else_="C",
    )
    inner = sa.select(ranked.c.c, ranked.c.revenue, cv, abc.label("abc")).subquery("abc_cv")
    xyz = sa.case((inner.c.cv <= t["x"], "X"), (inner.c.cv <= t["y"], "Y"), else_="Z")
    return sa.select(inner.c.c, inner.c.revenue, inner.c.cv, inner.c.abc, xyz.label("xyz"))


def classify(session: Any, models: Any, p: Plan, now: dt.datetime) -> dict[str, Any]:
    """Recompute and store the classes of every customer of ``p``'s subject
    type, with a history row for each whose classes changed: one INSERT …
    SELECT into a temporary table, one INSERT … SELECT of history, one UPDATE
    … FROM and one UPDATE of the unclassified, in the caller's transaction."""
    _sqrt(session)
    registry = models.registry
    tz = company_tz(registry)
    bounds = month_bounds(now.astimezone(tz).date(), p.months)
    target = registry.documents[p.target]
    cust = models.table(target.name)
    col = {n: cust.c[target.fields[n].column] for n in STORED}
    run = sa.Table(
        "crm_abc_xyz_run", sa.MetaData(),
        sa.Column("c", sa.Integer, primary_key=True),
        sa.Column("revenue", sa.Numeric(18, 2)),
        sa.Column("cv", sa.Numeric(12, 2)),
        sa.Column("abc", sa.String(1)),
        sa.Column("xyz", sa.String(1)),
        prefixes=["TEMPORARY"],
    )  # fmt: skip
    conn = session.connection()
    run.drop(conn, checkfirst=True)
    run.create(conn)  # a rollback drops it with the rest
    found = classes(models, p, bounds, tz).subquery()
    session.execute(
        run.insert().from_select(
            ["c", "revenue", "cv", "abc", "xyz"],
            sa.select(found.c.c, found.c.revenue, sa.func.round(sa.cast(found.c.cv, sa.Numeric(18, 6)), 2),
                      found.c.abc, found.c.xyz),
        )
    )  # fmt: skip
    if session.get_bind().dialect.name == "postgresql":
        quoted = session.get_bind().dialect.identifier_preparer.format_table(run)
        session.execute(sa.text(f"ANALYZE {quoted}"))  # its size, for the joins below
    changed = 0
    if HISTORY in registry.documents:
        hd = registry.documents[HISTORY]
        hist = models.table(HISTORY)
        hc = {n: hist.c[f.column] for n, f in hd.fields.items() if f.stored}
        values = {
            "customer": cust.c.id,
            "at": sa.literal(now, sa.DateTime(timezone=True)),
            "from_abc": col["abc_class"],
            "to_abc": run.c.abc,
            "from_xyz": col["xyz_class"],
            "to_xyz": run.c.xyz,
            "period": sa.literal(period_text(bounds)),
        }
        if target.owner and "manager" in hc:
            values["manager"] = cust.c[target.fields[target.owner].column]
        values = {k: v for k, v in values.items() if k in hc}
        pick = (
            sa.select(
                *[v.label(k) for k, v in values.items()],
                sa.literal(now, sa.DateTime(timezone=True)).label("created_at"),
            )
            .select_from(cust.outerjoin(run, run.c.c == cust.c.id))
            .where(
                sa.or_(
                    col["abc_class"].is_distinct_from(run.c.abc),
                    col["xyz_class"].is_distinct_from(run.c.xyz),
                )
            )
        )
        result = session.execute(
            hist.insert().from_select([hc[k].name for k in values] + ["created_at"], pick)
        )
        changed = max(result.rowcount or 0, 0)
    session.execute(
        cust.update()
        .where(cust.c.id == run.c.c)
        .values({
            col["abc_class"]: run.c.abc, col["xyz_class"]: run.c.xyz,
            col["abc_revenue"]: run.c.revenue, col["xyz_cv"]: run.c.cv,
            col["abc_xyz_at"]: now, cust.c.updated_at: cust.c.updated_at,
        })
    )  # fmt: skip
    session.execute(
        cust.update()
        .where(cust.c.id.not_in(sa.select(run.c.c)))
        .values({
            col["abc_class"]: None, col["xyz_class"]: None,
            col["abc_revenue"]: None, col["xyz_cv"]: None, col["abc_xyz_at"]: now,
            cust.c.updated_at: cust.c.updated_at,  # not an edit: no onupdate
        })
    )  # fmt: skip
    classified = session.execute(sa.select(sa.func.count()).select_from(run)).scalar_one()
    run.drop(conn)
    return {"report": p.report.name, "classified": classified, "changed": changed}


def due(session: Any, models: Any, p: Plan, now: dt.datetime) -> bool:
    """Whether tonight's run has not been made yet: the last run (the latest
    ``abc_xyz_at``) is before the last ``at`` on the company's clock."""
    tz = company_tz(models.registry)
    local = now.astimezone(tz)
    slot = dt.datetime.combine(local.date(), p.at, tz)
    if local < slot:
        slot -= dt.timedelta(days=1)
    target = models.registry.documents[p.target]
    column = models.table(target.name).c[target.fields["abc_xyz_at"].column]
    last = session.execute(sa.select(sa.func.max(column))).scalar_one()
    if last is None:
        return True
    if last.tzinfo is None:
        last = last.replace(tzinfo=dt.UTC)
    return bool(last < slot.astimezone(dt.UTC))


def abc_xyz_job(ctx: Any, payload: Mapping[str, Any]) -> Any:
    """``crm.abc_xyz``: recompute the stored classes of every storing report
    whose night has come (``{"force": true}``: now; ``{"report": NAME}``: that one)."""
    now = ctx.now()
    done = []
    for p in storing(ctx.registry):
        if payload.get("report") not in (None, p.report.name):
            continue
        if payload.get("force") or due(ctx.session, ctx.models, p, now):
            done.append(classify(ctx.session, ctx.models, p, now))
    return done


abc_xyz_job.budget = 3600  # type: ignore[attr-defined]


# --- the matrix -----------------------------------------------------------------------


def _cells() -> list[tuple[str, str]]:
    return [(a, x) for a in ABC for x in XYZ]


@kind
class AbcXyz(Kind):
    name = "abc_xyz"
    options: ClassVar[Mapping[str, str]] = {
        "subject": "The ref to the customer the revenue belongs to (`customer`).",
        "amount": "The field of the revenue (`total` of an order, `amount` of a deal).",
        "date": (
            "The date or datetime field that dates the revenue; without it, the moment "
            "the record entered a counted state (from the status history)."
        ),
        "states": (
            "The states whose records count (`[confirmed, shipped, closed]`); "
            "default: those with the outcome won or done."
        ),
        "period": "How many months back from today count, `12m` (the default) up to `120m`.",
        "thresholds": "Percent bounds `{a: 80, b: 95, x: 10, y: 25}` (the defaults).",
        "at": "The time of the nightly recalculation on the company's clock, `03:00` (default).",
        "store": (
            "Whether the job writes the classes to the customers' fields (the default when "
            "they have them); otherwise the matrix is computed live."
        ),
    }

    def check(self, registry: Registry, report: Report) -> Iterator[Problem]:
        from engine.checks import _at

        for key, message in _problems(registry, report):
            yield Problem(
                _at(report.options, report.loc, key),
                f"the report `{report.name}`, `{key}`: {message}",
            )
        if report.document in registry.documents and not any(
            True for _ in _problems(registry, report)
        ):
            p = plan(registry, report)
            if p.store:
                for other in storing(registry):
                    if other.target == p.target and other.report.name != report.name:
                        yield Problem(
                            _at(report.options, report.loc, "type"),
                            f"the report `{report.name}`: the report `{other.report.name}` "
                            f"already stores the classes of {p.target}; set `store: false`",
                        )

    def _allowed(self, ctx: Context, p: Plan, params: Params) -> sa.ColumnElement[bool]:
        """Which customers the principal may count: their read rule and the
        request's manager, department and segment (of the customers)."""
        from engine.reports.common import narrowing

        target = Report(p.report.name, p.report.type, p.target, {}, p.report.loc)
        return narrowing(ctx, target, replace(params, kind=None))

    def _source(self, ctx: Context, p: Plan) -> tuple[Any, Any, Any, Any]:
        """(customer id, abc, xyz, revenue) columns, and the FROM they come from."""
        cust = ctx.models.table(p.target)
        target = ctx.registry.documents[p.target]
        if p.store:
            c = {n: cust.c[target.fields[n].column] for n in STORED}
            return cust.c.id, c["abc_class"], c["xyz_class"], c["abc_revenue"]
        _sqrt(ctx.session)
        bounds = month_bounds(ctx.now.astimezone(ctx.tz).date(), p.months)
        live = classes(ctx.models, p, bounds, ctx.tz).subquery("live")
        return live.c.c, live.c.abc, live.c.xyz, live.c.revenue

    def _base(self, ctx: Context, p: Plan, params: Params) -> sa.Select[Any]:
        """The classified customers the principal may count: ``(id, abc, xyz, revenue)``."""
        cust = ctx.models.table(p.target)
        allowed = self._allowed(ctx, p, params)
        cid, abc, xyz, revenue = self._source(ctx, p)
        rows = sa.select(cust.c.id.label("id"), abc.label("abc"), xyz.label("xyz"),
                         revenue.label("revenue"))  # fmt: skip
        if p.store:
            rows = rows.where(allowed, abc.is_not(None))
        else:
            rows = rows.join_from(cust, cid.table, cid == cust.c.id).where(allowed)
        return rows

    def run(self, ctx: Context, report: Report, params: Params) -> Result:
        from engine.access import field_rights

        p = plan(ctx.registry, report)
        rows = self._base(ctx, p, params)
        base = rows.subquery("classified")
        got = ctx.session.execute(
            sa.select(base.c.abc, base.c.xyz, sa.func.count(), sa.func.sum(base.c.revenue))
            .group_by(base.c.abc, base.c.xyz)
        ).all()  # fmt: skip
        cells = {(a, x): (int(n), float(s or 0)) for a, x, n, s in got}
        money = "abc_revenue" not in field_rights(ctx.registry, ctx.principal, p.target).hidden
        columns = [Column("abc", gettext("Class"))]
        for x in XYZ:
            columns.append(Column(f"{x}_count", gettext("%(cls)s: customers", cls=x), "count"))
            if money:
                columns.append(Column(f"{x}_revenue", gettext("%(cls)s: revenue", cls=x), "money"))
        columns.append(Column("count", gettext("Customers"), "count"))
        if money:
            columns.append(Column("revenue", gettext("Revenue"), "money"))
            columns.append(Column("share", gettext("Share of revenue"), "percent"))
        grand = sum(s for _, s in cells.values())
        result = Result(columns=columns, rows=[])
        for i, a in enumerate(ABC):
            row: dict[str, Any] = {"abc": a}
            for x in XYZ:
                n, s = cells.get((a, x), (0, 0.0))
                row[f"{x}_count"] = n
                if money:
                    row[f"{x}_revenue"] = s
                if n:
                    result.drill[(i, f"{x}_count")] = f"{a}{x}"
            row["count"] = sum(cells.get((a, x), (0, 0.0))[0] for x in XYZ)
            if money:
                row["revenue"] = sum(cells.get((a, x), (0, 0.0))[1] for x in XYZ)
                row["share"] = 100.0 * row["revenue"] / grand if grand else 0.0
            if row["count"]:
                result.drill[(i, "count")] = a
            result.rows.append(row)
        total: dict[str, Any] = {"abc": gettext("Total")}
        for x in XYZ:
            total[f"{x}_count"] = sum(cells.get((a, x), (0, 0.0))[0] for a in ABC)
            if money:
                total[f"{x}_revenue"] = sum(cells.get((a, x), (0, 0.0))[1] for a in ABC)
            if total[f"{x}_count"]:
                result.drill[(-1, f"{x}_count")] = x
        total["count"] = sum(n for n, _ in cells.values())
        if money:
            total["revenue"] = grand
            total["share"] = 100.0 if grand else 0.0
        if total["count"]:
            result.drill[(-1, "count")] = "all"
        result.total = total
        labels = [f"{a}{x}" for a, x in _cells()]
        result.chart = Chart(
            "bar",
            labels,
            [Series(gettext("Customers"), [cells.get(c, (0, 0.0))[0] for c in _cells()])],
            "count",
            links=[f"{a}{x}" if cells.get((a, x), (0, 0))[0] else None for a, x in _cells()],
        )
        if p.store:
            last = self._last_run(ctx, p)
            result.notes.append(
                gettext("Classes as of %(at)s; recalculated every night.", at=last)
                if last
                else gettext("The classes have not been calculated yet.")
            )
        else:
            bounds = month_bounds(ctx.now.astimezone(ctx.tz).date(), p.months)
            result.notes.append(
                gettext("Computed now over %(period)s.", period=period_text(bounds))
            )
        return result

    def _last_run(self, ctx: Context, p: Plan) -> str | None:
        target = ctx.registry.documents[p.target]
        column = ctx.models.table(p.target).c[target.fields["abc_xyz_at"].column]
        last = ctx.session.execute(sa.select(sa.func.max(column))).scalar_one()
        if last is None:
            return None
        if last.tzinfo is None:
            last = last.replace(tzinfo=dt.UTC)
        return str(last.astimezone(ctx.tz).strftime("%Y-%m-%d %H:%M"))

    def drill_document(self, registry: Registry, report: Report, cell: str) -> str:
        """A cell counts customers (the type ``subject`` refers to), not orders."""
        return plan(registry, report).target

    def drill(
        self, ctx: Context, report: Report, params: Params, cell: str
    ) -> tuple[str, sa.Select[Any]]:
        p = plan(ctx.registry, report)
        rows = self._base(ctx, p, params)
        base = rows.subquery("classified")
        query = sa.select(base.c.id)
        if cell == "all":
            pass
        elif len(cell) == 2 and cell[0] in ABC and cell[1] in XYZ:
            query = query.where(base.c.abc == cell[0], base.c.xyz == cell[1])
        elif cell in ABC:
            query = query.where(base.c.abc == cell)
        elif cell in XYZ:
            query = query.where(base.c.xyz == cell)
        else:
            raise ReportError(gettext("this cell has no list"))
        return p.target, query
