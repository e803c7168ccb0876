"""Report kinds from the status history (see engine/reports/__init__.py):
the funnel. Each is one SQL statement over the type's status history joined
to its table under :func:`engine.reports.common.narrowing`.

The funnel (``type: funnel``), for the period's days:

- its steps are the type's states in :func:`engine.statuses.stage_order`
  for the request's deal kind, without the final states whose outcome is
  ``lost`` or ``cancelled``: those are shown apart, below the funnel;
- a record *reached* a step when, in the period, it entered that step or any
  later one (a deal moved straight from New to Proposal has passed
  Qualification): the funnel narrows step by step, and the first step counts
  every record that moved (or was created) in the period;
- a record is *lost* (cancelled, ...) when it entered such a state in the
  period; it also counts at every step it reached before;
- ``amount`` (an option: a number field of the type) is summed over the
  same records, at its value now;
- *now* is how many of the records counted in the period's funnel stand in
  the step (or the lost state) today.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any, ClassVar

import sqlalchemy as sa

from engine.errors import Problem
from engine.i18n import gettext
from engine.registry import DocType, Registry, Report
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
from engine.statuses import stage_order

#: final states with these outcomes are shown apart from the funnel's steps
OFF_OUTCOMES = frozenset({"lost", "cancelled"})
NUMERIC = frozenset({"integer", "decimal", "money", "number", "float", "percent"})


def _at(report: Report, key: str) -> Any:
    from engine.checks import _at as at

    return at(report.options, report.loc, key)


def amount_problem(registry: Registry, report: Report) -> Iterator[Problem]:
    """``amount`` must be a number field stored on the report's own type."""
    name = report.options.get("amount")
    d = registry.documents.get(report.document)
    if name is None or d is None:
        return
    f = d.fields.get(str(name)) if isinstance(name, str) else None
    if f is None or f.type not in NUMERIC:
        yield Problem(
            _at(report, "amount"),
            f"the report `{report.name}`, `amount`: it must be a number field of "
            f"{report.document} (not a field of another type)",
        )


def steps_of(d: DocType, kind_name: str | None) -> tuple[list[str], list[str]]:
    """The funnel's steps and the states shown apart (lost, cancelled), in order."""
    assert d.statuses is not None
    states = d.statuses.states
    order = stage_order(d, kind_name)
    off = [s for s in order if states[s].final and (states[s].outcome or "") in OFF_OUTCOMES]
    return [s for s in order if s not in off], off


def _sql_case(column: Any, states: list[str], base: int = 0) -> Any:
    return sa.case({s: i + base for i, s in enumerate(states)}, value=column, else_=-1)


@kind
class Funnel(Kind):
    name = "funnel"
    options: ClassVar[Mapping[str, str]] = {
        "amount": "a number field of the type summed per step (the deal's amount, the order's total)",
    }

    def check(self, registry: Registry, report: Report) -> Iterator[Problem]:
        d = registry.documents.get(report.document)
        if d is not None and d.statuses is None:
            yield Problem(
                _at(report, "document"),
                f"the report `{report.name}`: a funnel needs a type with statuses, "
                f"{report.document} has none",
            )
        yield from amount_problem(registry, report)

    # -- the statement ----------------------------------------------------------------

    def _reached(self, ctx: Context, report: Report, params: Params) -> sa.Subquery:
        """Per record that moved in the period: the furthest step it entered
        (-1: none) and, per state shown apart, whether it entered it."""
        d = common.doctype(ctx, report)
        steps, off = steps_of(d, params.kind)
        hist = common.history(ctx, report)
        low, high = common.period(ctx, params)
        columns: list[Any] = [
            hist.c.doc_id,
            sa.func.max(_sql_case(hist.c.to_state, steps)).label("reach"),
        ]
        columns += [
            sa.func.max(sa.case((hist.c.to_state == s, 1), else_=0)).label(f"off{i}")
            for i, s in enumerate(off)
        ]
        return (
            sa.select(*columns)
            .where(hist.c.at >= low, hist.c.at < high, hist.c.to_state.in_(steps + off))
            .group_by(hist.c.doc_id)
            .subquery("reached")
        )

    def _source(self, ctx: Context, report: Report, params: Params) -> tuple[Any, sa.Table, Any]:
        table = ctx.models.table(report.document)
        reached = self._reached(ctx, report, params)
        joined = reached.join(table, table.c.id == reached.c.doc_id)
        return reached, table, joined

    def run(self, ctx: Context, report: Report, params: Params) -> Result:
        d = common.doctype(ctx, report)
        steps, off = steps_of(d, params.kind)
        if not steps:
            raise ReportError(gettext("this type has no stages for a funnel"))
        where = common.narrowing(ctx, report, params)
        reached, table, joined = self._source(ctx, report, params)
        status = table.c[d.fields[d.statuses.field].column]  # type: ignore[union-attr]
        amount_name = report.options.get("amount")
        amount = table.c[d.fields[amount_name].column] if amount_name else sa.literal(0)
        offs = [reached.c[f"off{i}"] for i in range(len(off))]
        stmt = (
            sa.select(
                reached.c.reach, *offs, status.label("now"),
                sa.func.count().label("n"), sa.func.sum(amount).label("amount"),
            )
            .select_from(joined)
            .where(where)
            .group_by(reached.c.reach, *offs, status)
        )  # fmt: skip
        # the few groups (steps × lost flags × states) are added up here
        reached_n = [0] * len(steps)
        reached_sum = [Decimal(0)] * len(steps)
        off_n = [0] * len(off)
        off_sum = [Decimal(0)] * len(off)
        now_n: dict[str, int] = {}
        now_sum: dict[str, Decimal] = {}
        total_n, total_sum = 0, Decimal(0)
        for r in ctx.session.execute(stmt):
            n, value = int(r.n), Decimal(r.amount or 0)
            total_n += n
            total_sum += value
            for i in range(int(r.reach) + 1):  # reached the furthest step and every one before
                reached_n[i] += n
                reached_sum[i] += value
            for i in range(len(off)):
                if r[1 + i]:
                    off_n[i] += n
                    off_sum[i] += value
            now_n[r.now] = now_n.get(r.now, 0) + n
            now_sum[r.now] = now_sum.get(r.now, Decimal(0)) + value
        states = d.statuses.states  # type: ignore[union-attr]
        with_amount = bool(amount_name)
        columns = [
            Column("stage", gettext("Stage")),
            Column("reached", gettext("Reached"), "count"),
        ]
        if with_amount:
            columns.append(Column("amount", gettext("Amount"), "money"))
        columns += [
            Column("conversion", gettext("Of the first stage"), "percent"),
            Column("now", gettext("Stand there now"), "count"),
        ]
        rows: list[dict[str, Any]] = []
        result = Result(columns, rows)
        first = reached_n[0] if steps else 0
        for i, s in enumerate(steps):
            row: dict[str, Any] = {
                "stage": ctx.text(states[s].label),
                "state": s,
                "reached": reached_n[i],
                "conversion": round(100 * reached_n[i] / first, 1) if first else None,
                "now": now_n.get(s, 0),
            }
            if with_amount:
                row["amount"] = reached_sum[i]
            rows.append(row)
            result.drill[(i, "reached")] = f"reached:{s}"
            result.drill[(i, "now")] = f"now:{s}"
            if with_amount:
                result.drill[(i, "amount")] = f"reached:{s}"
        for i, s in enumerate(off):
            k = len(rows)
            row = {
                "stage": ctx.text(states[s].label),
                "state": s,
                "apart": True,
                "reached": off_n[i],
                "conversion": round(100 * off_n[i] / first, 1) if first else None,
                "now": now_n.get(s, 0),
            }
            if with_amount:
                row["amount"] = off_sum[i]
            rows.append(row)
            result.drill[(k, "reached")] = f"off:{s}"
            result.drill[(k, "now")] = f"now:{s}"
            if with_amount:
                result.drill[(k, "amount")] = f"off:{s}"
        result.total = {"stage": gettext("In the period"), "reached": total_n, "now": total_n}
        if with_amount:
            result.total["amount"] = total_sum
        result.drill[(-1, "reached")] = "all"
        result.drill[(-1, "now")] = "all"
        if with_amount:
            result.drill[(-1, "amount")] = "all"
        result.chart = Chart(
            "funnel",
            [ctx.text(states[s].label) for s in steps],
            [Series(gettext("Reached"), [float(v) for v in reached_n])],
            "count",
            links=[f"reached:{s}" for s in steps],
        )
        if off:
            result.notes.append(
                gettext(
                    "A record counts at every stage up to the furthest one it entered in the "
                    "period; lost and cancelled ones are shown apart, below the funnel."
                )
            )
        return result

    def drill(
        self, ctx: Context, report: Report, params: Params, cell: str
    ) -> tuple[str, sa.Select[Any]]:
        d = common.doctype(ctx, report)
        steps, off = steps_of(d, params.kind)
        what, _, state = cell.partition(":")
        reached, table, joined = self._source(ctx, report, params)
        status = table.c[d.fields[d.statuses.field].column]  # type: ignore[union-attr]
        stmt = sa.select(reached.c.doc_id).select_from(joined)
        stmt = stmt.where(common.narrowing(ctx, report, params))
        if what == "all" and not state:
            pass
        elif what == "reached" and state in steps:
            stmt = stmt.where(reached.c.reach >= steps.index(state))
        elif what == "off" and state in off:
            stmt = stmt.where(reached.c[f"off{off.index(state)}"] == 1)
        elif what == "now" and state in steps + off:
            stmt = stmt.where(status == state)
        else:
            raise ReportError(gettext("this cell has no list"))
        return d.name, stmt


# --- conversion, compared funnels, time in stage, plan and fact ---
# conversion, by_manager, by_department and stage_time live in
# engine/reports/history_kinds.py, plan_fact in engine/reports/plans.py
# (load_kinds() imports both).
