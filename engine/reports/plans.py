"""Report kind ``plan_fact``: sales plans against the amounts won.

A plan (the ``plan:`` type, the base layer's SalesPlan) covers a period of
days on the company's clock and a manager or a department. Its *fact* is the
records of the report's type that entered a won state during the plan's
period, owned by the plan's manager (when it names one) or else by a member
of its department, under the report's narrowing (read rule, filter,
manager, department, kind, segment). % done = fact / plan; the forecast runs
the fact on linearly to the period's end: fact / elapsed days × the period's
days, the elapsed days counted on the company's clock, today included.

Two statements whatever the data size: the plans' distinct periods, then
the plans with their facts and the totals row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any, ClassVar

import sqlalchemy as sa

from engine.errors import Problem
from engine.i18n import gettext
from engine.registry import USER, Registry, Report
from engine.reports import (
    Chart,
    Column,
    Context,
    Kind,
    Params,
    ReportError,
    Result,
    Series,
    common,
    kind,
)
from engine.reports.history_kinds import _at, amount_column, check_states, won_states

#: option → (the plan's field it names by default, the field types it may be)
PLAN_FIELDS = {
    "plan_start": ("period_start", ("date",)),
    "plan_end": ("period_end", ("date",)),
    "plan_manager": ("manager", ("ref",)),
    "plan_department": ("department", ("ref",)),
    "plan_amount": ("amount", ("money", "decimal", "integer", "float")),
    "plan_count": ("count", ("integer",)),
}


def plan_field(report: Report, option: str) -> str:
    return str(report.options.get(option) or PLAN_FIELDS[option][0])


@kind
class PlanFact(Kind):
    name = "plan_fact"
    options: ClassVar[Mapping[str, str]] = {
        "plan": "the plan type (default SalesPlan)",
        "amount": "the amount field of the report's type summed over the won records",
        "won": "the final states that count as won (default: those with `outcome: won`)",
        "plan_start": "the plan's field of the period's first day (default `period_start`)",
        "plan_end": "the plan's field of the period's last day (default `period_end`)",
        "plan_manager": "the plan's field of its manager (default `manager`)",
        "plan_department": "the plan's field of its department (default `department`)",
        "plan_amount": "the plan's field of the amount planned (default `amount`)",
        "plan_count": "the plan's field of the count of records planned (default `count`)",
    }

    def check(self, registry: Registry, report: Report) -> Iterator[Problem]:
        yield from check_states(registry, report)
        d = registry.documents.get(report.document)
        if d is not None and not d.owner:
            yield Problem(
                _at(report, "type"),
                f"the report `{report.name}` compares owners with plans: {d.name} has no `owner:`",
            )
        if d is not None and d.statuses is not None and not won_states(d, report):
            yield Problem(
                _at(report, "type"),
                f"the report `{report.name}`: {d.name} has no won state (`outcome: won`); "
                "name them with `won:`",
            )
        plan = registry.documents.get(str(report.options.get("plan") or "SalesPlan"))
        if plan is None:
            if "plan" not in report.options:
                yield Problem(
                    _at(report, "type"), f"the report `{report.name}` needs `plan:` (a plan type)"
                )
            return  # an unknown `plan:` is reported by the engine's own check
        for option, (_, types) in PLAN_FIELDS.items():
            name = plan_field(report, option)
            f = plan.fields.get(name)
            if f is None or not f.stored or f.type not in types:
                yield Problem(
                    _at(report, option if option in report.options else "plan"),
                    f"the report `{report.name}`, `{option}`: {plan.name} has no stored "
                    f"{' or '.join(types)} field `{name}`",
                )
            elif option == "plan_manager" and f.to != USER:
                yield Problem(
                    _at(report, option if option in report.options else "plan"),
                    f"the report `{report.name}`, `{option}`: `{name}` must refer to User",
                )

    # -- the statements --------------------------------------------------------------------------

    def _plan(self, ctx: Context, report: Report) -> tuple[str, sa.Table, dict[str, Any]]:
        name = str(report.options.get("plan") or "SalesPlan")
        d = ctx.registry.documents.get(name)
        if d is None:
            raise ReportError(f"there is no plan type {name}")
        table = ctx.models.table(name)
        cols = {o: table.c[d.fields[plan_field(report, o)].column] for o in PLAN_FIELDS}
        return name, table, cols

    def _plans_where(self, ctx: Context, report: Report, params: Params) -> Any:
        name, _, c = self._plan(ctx, report)
        parts = [ctx.readable(name), c["plan_start"] <= params.end, c["plan_end"] >= params.start]
        if params.manager is not None:
            parts.append(c["plan_manager"] == params.manager)
        if params.department is not None:
            parts.append(
                sa.or_(
                    c["plan_department"] == params.department,
                    c["plan_manager"].in_(common.department_users(ctx, params.department)),
                )
            )
        return sa.and_(*parts)

    def _facts(self, ctx: Context, report: Report, params: Params) -> Any:
        """(one row per (plan, won record), the plans with their UTC windows), or None without plans."""
        _, table, c = self._plan(ctx, report)
        where = self._plans_where(ctx, report, params)
        periods = ctx.session.execute(
            sa.select(c["plan_start"], c["plan_end"]).where(where).distinct()
        ).all()
        if not periods:
            return None, None
        bounds = []
        for start, end in periods:
            low, high = common.period(ctx, Params(start, end))
            bounds.append((start, end, low, high))
        pv = (
            sa.values(
                sa.column("start", sa.Date),
                sa.column("end", sa.Date),
                sa.column("low", sa.DateTime(timezone=True)),
                sa.column("high", sa.DateTime(timezone=True)),
                name="windows",
            )
            .data(bounds)
            .cte("windows")
        )
        users = ctx.models.table(USER)
        department = users.c[ctx.registry.documents[USER].fields[common.DEPARTMENT_FIELD].column]
        plans = (
            sa.select(
                table.c.id.label("pid"),
                c["plan_manager"].label("manager"),
                c["plan_department"].label("department"),
                pv.c.low,
                pv.c.high,
            )
            .select_from(
                table.join(pv, sa.and_(pv.c.start == c["plan_start"], pv.c.end == c["plan_end"]))
            )
            .where(where)
            .cte("plans")
        )
        d = common.doctype(ctx, report)
        h = common.history(ctx, report)
        t = ctx.models.table(d.name)
        owner = common.owner_column(ctx, report)
        if owner is None:
            raise ReportError(f"{d.name} has no owner")
        amount = amount_column(ctx, report)
        span = (min(b[2] for b in bounds), max(b[3] for b in bounds))
        won = (
            sa.select(
                h.c.doc_id,
                h.c.at,
                owner.label("owner"),
                department.label("department"),
                (amount if amount is not None else sa.literal(0)).label("amount"),
            )
            .select_from(
                h.join(t, t.c.id == h.c.doc_id).join(users, users.c.id == owner, isouter=True)
            )
            .where(
                common.narrowing(ctx, report, params),
                h.c.to_state.in_(won_states(d, report)),
                h.c.at >= span[0],
                h.c.at < span[1],
            )
            .cte("won")
            # computed once, first: PostgreSQL would otherwise inline it and,
            # misjudging the plans' VALUES as one row, join the plans to every
            # record before the history narrows them down
            .prefix_with("MATERIALIZED", dialect="postgresql")
        )
        per = (
            sa.select(plans.c.pid, won.c.doc_id, won.c.amount)
            .select_from(
                plans.join(
                    won,
                    sa.and_(
                        won.c.at >= plans.c.low,
                        won.c.at < plans.c.high,
                        sa.or_(
                            won.c.owner == plans.c.manager,
                            sa.and_(
                                plans.c.manager.is_(None),
                                won.c.department == plans.c.department,
                            ),
                        ),
                    ),
                )
            )
            .group_by(plans.c.pid, won.c.doc_id, won.c.amount)
            .cte("per")
        )
        return per, plans

    def run(self, ctx: Context, report: Report, params: Params) -> Result:
        _, table, c = self._plan(ctx, report)
        per, plans = self._facts(ctx, report, params)
        has_amount = amount_column(ctx, report) is not None
        columns = [
            Column("period", gettext("Period")),
            Column("manager", gettext("Manager")),
            Column("department", gettext("Department")),
            Column("plan", gettext("Target"), "money"),
            Column("fact", gettext("Fact"), "money"),
            Column("done", gettext("Done, %"), "percent"),
            Column("forecast", gettext("Forecast"), "money"),
            Column("forecast_pct", gettext("Forecast, %"), "percent"),
            Column("plan_count", gettext("Planned count"), "count"),
            Column("count", gettext("Won"), "count"),
        ]
        if not has_amount:
            columns = [
                x for x in columns if x.key not in ("fact", "done", "forecast", "forecast_pct")
            ]
        result = Result(columns, [])
        if per is None:
            result.total = None
            return result
        users = ctx.models.table(USER)
        f = ctx.registry.documents[USER].fields[common.DEPARTMENT_FIELD]
        dept_doc = ctx.registry.documents[f.to or ""]
        depts = ctx.models.table(dept_doc.name).alias("plan_department")
        dept_name = (
            depts.c[dept_doc.fields["name"].column] if "name" in dept_doc.fields else depts.c.id
        )
        agg = (
            sa.select(per.c.pid, sa.func.count().label("n"), sa.func.sum(per.c.amount).label("s"))
            .group_by(per.c.pid)
            .subquery("agg")
        )
        # the totals row: the distinct records won in the level's plans (the
        # managers' when there are any, else the departments'), in the same statement
        managers = sa.exists().where(plans.c.manager.is_not(None))
        in_level = sa.select(plans.c.pid).where(
            sa.or_(
                sa.and_(plans.c.manager.is_not(None), managers),
                sa.and_(plans.c.manager.is_(None), ~managers),
            )
        )
        won = (
            sa.select(per.c.doc_id, per.c.amount)
            .where(per.c.pid.in_(in_level))
            .group_by(per.c.doc_id, per.c.amount)
            .subquery("won_in_level")
        )
        totals = sa.select(
            sa.func.count().label("total_n"), sa.func.sum(won.c.amount).label("total_s")
        ).subquery("totals")
        statement = (
            sa.select(
                table.c.id,
                c["plan_start"].label("start"),
                c["plan_end"].label("end"),
                c["plan_manager"].label("manager"),
                c["plan_department"].label("department"),
                c["plan_amount"].label("plan_amount"),
                c["plan_count"].label("plan_count"),
                users.c.first_name,
                users.c.last_name,
                users.c.username,
                dept_name.label("dept_name"),
                agg.c.n,
                agg.c.s,
                totals.c.total_n,
                totals.c.total_s,
            )
            .select_from(
                table.join(totals, sa.true())
                .outerjoin(agg, agg.c.pid == table.c.id)
                .outerjoin(users, users.c.id == c["plan_manager"])
                .outerjoin(depts, depts.c.id == c["plan_department"])
            )
            .where(self._plans_where(ctx, report, params))
            .order_by(
                c["plan_start"], c["plan_end"], c["plan_manager"].is_(None),
                dept_name, users.c.first_name, users.c.last_name, table.c.id,
            )
        )  # fmt: skip
        rows = ctx.session.execute(statement).all()
        today = ctx.now.astimezone(ctx.tz).date()
        managers_level = any(r.manager is not None for r in rows)
        level = [r for r in rows if (r.manager is not None) == managers_level]
        total_n, total_s = (rows[0].total_n, rows[0].total_s) if rows else (0, None)
        for i, r in enumerate(rows):
            who = f"{r.first_name or ''} {r.last_name or ''}".strip() or (r.username or "")
            row = self._figures(r.start, r.end, r.plan_amount, r.plan_count, r.n or 0, r.s, today)
            row.update(
                period=f"{r.start:%d.%m.%Y} – {r.end:%d.%m.%Y}",
                manager=who if r.manager is not None else "",
                department=(r.dept_name or "") if r.department is not None else "",
            )
            result.rows.append(row)
            result.drill[(i, "count")] = f"plan:{r.id}"
        if level:
            start, end = min(r.start for r in level), max(r.end for r in level)
            total = self._figures(
                start, end, sum((r.plan_amount or 0) for r in level),
                sum((r.plan_count or 0) for r in level), total_n, total_s, today,
            )  # fmt: skip
            same_period = len({(r.start, r.end) for r in level}) == 1
            if not same_period:
                total["forecast"] = total["forecast_pct"] = None
            total.update(
                period=gettext("Total"),
                manager=gettext("managers' plans") if managers_level else "",
                department="" if managers_level else gettext("departments' plans"),
            )
            result.total = total
            result.drill[(-1, "count")] = "total"
        if not has_amount:
            for row in [*result.rows, *([result.total] if result.total else [])]:
                for k in ("fact", "done", "forecast", "forecast_pct"):
                    row.pop(k, None)
        labels = [f"{row['manager'] or row['department']} {row['period']}" for row in result.rows]
        key = "fact" if has_amount else "count"
        result.chart = Chart(
            "bar",
            labels,
            [
                Series(
                    gettext("Target"),
                    [_num(row["plan"] if has_amount else row["plan_count"]) for row in result.rows],
                ),
                Series(gettext("Fact"), [_num(row[key]) for row in result.rows]),
            ],
            "money" if has_amount else "count",
        )
        return result

    @staticmethod
    def _figures(
        start: dt.date, end: dt.date, plan: Any, plan_count: Any, n: int, fact: Any, today: dt.date
    ) -> dict[str, Any]:
        fact = fact if fact is not None else Decimal(0)
        days = (end - start).days + 1
        elapsed = min(max((today - start).days + 1, 0), days)
        forecast = None if elapsed == 0 else round(Decimal(fact) * days / elapsed, 2)
        return {
            "plan": plan,
            "fact": fact,
            "done": _pct(fact, plan),
            "forecast": forecast,
            "forecast_pct": _pct(forecast, plan),
            "plan_count": plan_count,
            "count": int(n),
        }

    def drill(
        self, ctx: Context, report: Report, params: Params, cell: str
    ) -> tuple[str, sa.Select[Any]]:
        per, _ = self._facts(ctx, report, params)
        d = common.doctype(ctx, report).name
        if cell == "total":
            if per is None:
                raise ReportError(f"no such cell: {cell}")
            _, table, c = self._plan(ctx, report)
            where = self._plans_where(ctx, report, params)
            managers = sa.select(table.c.id).where(where, c["plan_manager"].is_not(None))
            managers_level = ctx.session.execute(sa.select(sa.exists(managers))).scalar()
            level = sa.select(table.c.id).where(
                where,
                c["plan_manager"].is_not(None) if managers_level else c["plan_manager"].is_(None),
            )
            return d, sa.select(per.c.doc_id).where(per.c.pid.in_(level)).distinct()
        what, _, pid = cell.partition(":")
        if per is None or what != "plan" or not pid.isdigit():
            raise ReportError(f"no such cell: {cell}")
        return d, sa.select(per.c.doc_id).where(per.c.pid == int(pid))


def _pct(part: Any, whole: Any) -> float | None:
    if part is None or not whole:
        return None
    return round(float(part) * 100.0 / float(whole), 1)


def _num(value: Any) -> float | None:
    return None if value is None else float(value)
