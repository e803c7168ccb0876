"""Report kinds from the status history: ``conversion``, ``by_manager``,
``by_department`` and ``stage_time`` (see engine/reports/__init__.py and
docs/reports.md).

Every kind here reads the status history (``common.history``): a record
*entered* a state when a history row says so, the first row (the initial
state) written when it was created. Counts are of distinct records, under
``common.narrowing`` (read rule, report filter, manager, department, kind,
segment); each count cell's drill-down selects exactly the counted ids.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import sqlalchemy as sa

from engine.errors import Problem
from engine.i18n import gettext
from engine.registry import USER, DocType, Registry, Report
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

NUMERIC = ("integer", "decimal", "money", "float", "number", "percent")

STAGE_OPTIONS = {
    "stages": "the states forming the funnel, in order (default: the type's stages "
    "for the deal kind, then its won states)",
    "won": "the final states that count as won (default: those with `outcome: won`)",
}


def won_states(d: DocType, report: Report) -> list[str]:
    """The states a record is won in: the ``won`` option, else ``outcome: won``."""
    named = report.options.get("won")
    if named:
        return [str(s) for s in ([named] if isinstance(named, str) else named)]
    assert d.statuses is not None
    return [s.name for s in d.statuses.states.values() if s.final and s.outcome == "won"]


def lost_states(d: DocType, report: Report) -> list[str]:
    """The final states that are not won."""
    assert d.statuses is not None
    won = set(won_states(d, report))
    return [s.name for s in d.statuses.states.values() if s.final and s.name not in won]


def chain(d: DocType, report: Report, params: Params) -> list[str]:
    """The funnel's stages in order: the ``stages`` option, else the type's
    open stages for the deal kind (``stage_order``) followed by its won states."""
    named = report.options.get("stages")
    if named:
        return [str(s) for s in named]
    assert d.statuses is not None
    won = won_states(d, report)
    states = d.statuses.states
    open_ = [s for s in stage_order(d, params.kind) if s in states and not states[s].final]
    return open_ + [s for s in won if s not in open_]


def state_label(ctx: Context, d: DocType, state: str) -> str:
    assert d.statuses is not None
    s = d.statuses.states.get(state)
    return s.label.get(ctx.registry.locale) if s is not None else state


def days_between(later: Any, earlier: Any, dialect: str) -> Any:
    """``later - earlier`` in days (SQLite keeps datetimes as text; PostgreSQL
    subtracts into an interval whose seconds ``date_part`` gives as a double)."""
    if dialect == "sqlite":
        return sa.func.julianday(later) - sa.func.julianday(earlier)
    return sa.func.date_part("epoch", later - earlier, type_=sa.Float) / 86400.0


def moment(value: dt.datetime) -> Any:
    """A datetime as a typed bound value (stored the way the history's ``at`` is)."""
    return sa.literal(value, sa.DateTime(timezone=True))


def pct(part: float | int | None, whole: float | int | None) -> float | None:
    if part is None or not whole:
        return None
    return round(float(part) * 100.0 / float(whole), 1)


def amount_column(ctx: Context, report: Report) -> sa.ColumnElement[Any] | None:
    name = report.options.get("amount")
    if not name:
        return None
    d = common.doctype(ctx, report)
    return ctx.models.table(d.name).c[d.fields[name].column]


def _at(report: Report, *keys: str) -> Any:
    from engine.checks import _at as at

    return at(report.options, report.loc, *keys)


def check_states(registry: Registry, report: Report) -> Iterator[Problem]:
    """``stages`` and ``won`` name states of the report's type; ``amount`` a number of it."""
    d = registry.documents.get(report.document)
    if d is None:
        return
    if d.statuses is None:
        yield Problem(
            _at(report, "document"),
            f"the report `{report.name}` needs a status history: {d.name} has no statuses",
        )
        return
    states = d.statuses.states
    for key in ("stages", "won"):
        value = report.options.get(key)
        if value is None:
            continue
        names = [value] if key == "won" and isinstance(value, str) else value
        if not isinstance(names, list) or not names or not all(isinstance(s, str) for s in names):
            yield Problem(
                _at(report, key), f"the report `{report.name}`, `{key}`: a list of states"
            )
            continue
        for s in names:
            if s not in states:
                yield Problem(
                    _at(report, key),
                    f"the report `{report.name}`, `{key}`: {d.name} has no state `{s}`; "
                    f"states are {', '.join(states)}",
                )
            elif key == "won" and not states[s].final:
                yield Problem(
                    _at(report, key),
                    f"the report `{report.name}`, `won`: `{s}` is not a final state",
                )
    amount = report.options.get("amount")
    if isinstance(amount, str) and amount in d.fields:
        f = d.fields[amount]
        if not f.stored or f.type not in NUMERIC:
            yield Problem(
                _at(report, "amount"),
                f"the report `{report.name}`, `amount`: `{amount}` must be a stored number "
                f"field of {d.name}",
            )
    elif isinstance(amount, str) and "." in amount:
        yield Problem(
            _at(report, "amount"),
            f"the report `{report.name}`, `amount`: a field of {d.name} itself, not a path",
        )


def _everything(condition: sa.ColumnElement[bool]) -> bool:
    """The condition lets every row through (a head's read rule, no parameters)."""
    inner = getattr(condition, "element", condition)
    return isinstance(inner, sa.sql.elements.True_)


def _entries(
    ctx: Context, report: Report, params: Params, *columns: Any, records: bool = True
) -> sa.Select[Any]:
    """History rows of the records that count, joined to their records
    (unless nothing narrows them and ``records=False``: no column of theirs is read)."""
    h = common.history(ctx, report)
    t = ctx.models.table(common.doctype(ctx, report).name)
    condition = common.narrowing(ctx, report, params)
    if not records and _everything(condition):
        return sa.select(*columns).select_from(h)
    return sa.select(*columns).select_from(h.join(t, t.c.id == h.c.doc_id)).where(condition)


# -- conversion ----------------------------------------------------------------------------------


@kind
class Conversion(Kind):
    """Stage to stage: of the records that entered a stage in the period, how
    many went on to a later stage of the funnel (then or afterwards), and how
    many were won; the totals row: of the records that entered any stage in
    the period, how many were won."""

    name = "conversion"
    options = STAGE_OPTIONS

    def check(self, registry: Registry, report: Report) -> Iterator[Problem]:
        return check_states(registry, report)

    def _inner(self, ctx: Context, report: Report, params: Params) -> Any:
        d = common.doctype(ctx, report)
        h = common.history(ctx, report)
        stages = chain(d, report, params)
        won = set(won_states(d, report))
        low, _ = common.period(ctx, params)
        rank = sa.case({s: i for i, s in enumerate(stages, 1)}, value=h.c.to_state)
        later = sa.func.max(rank).over(
            partition_by=h.c.doc_id, order_by=(h.c.at.desc(), h.c.id.desc()), rows=(None, -1)
        )
        first_won = min([i for i, s in enumerate(stages, 1) if s in won] or [len(stages) + 1])
        inner = (
            _entries(
                ctx,
                report,
                params,
                h.c.doc_id,
                h.c.to_state,
                h.c.at,
                rank.label("r"),
                later.label("later"),
                records=False,
            )
            .where(h.c.at >= low, h.c.to_state.in_(stages))
            .subquery("entries")
        )
        return inner, stages, first_won

    def _cells(self, ctx: Context, report: Report, params: Params) -> Any:
        inner, stages, first_won = self._inner(ctx, report, params)
        _, high = common.period(ctx, params)
        flag = lambda cond: sa.func.max(sa.case((cond, 1), else_=0))  # noqa: E731
        per_stage = (
            sa.select(
                inner.c.doc_id,
                inner.c.to_state,
                flag(inner.c.later > inner.c.r).label("went"),
                flag(inner.c.later >= first_won).label("won"),
            )
            .where(inner.c.at < high)
            .group_by(inner.c.doc_id, inner.c.to_state)
            .subquery("per_stage")
        )
        per_doc = (
            sa.select(
                inner.c.doc_id,
                flag(sa.or_(inner.c.r >= first_won, inner.c.later >= first_won)).label("won"),
            )
            .where(inner.c.at < high)
            .group_by(inner.c.doc_id)
            .subquery("per_doc")
        )
        return per_stage, per_doc, stages, first_won

    def run(self, ctx: Context, report: Report, params: Params) -> Result:
        d = common.doctype(ctx, report)
        per_stage, per_doc, stages, first_won = self._cells(ctx, report, params)
        key = sa.cast(per_stage.c.to_state, sa.String).label("stage")
        statement = sa.union_all(
            sa.select(
                key,
                sa.func.count().label("entered"),
                sa.func.sum(per_stage.c.went).label("went"),
                sa.func.sum(per_stage.c.won).label("won"),
            ).group_by(per_stage.c.to_state),
            sa.select(
                sa.cast(sa.null(), sa.String).label("stage"),
                sa.func.count(),
                sa.cast(sa.null(), sa.Integer),
                sa.func.sum(per_doc.c.won),
            ),
        )
        found = {r.stage: r for r in ctx.session.execute(statement)}
        columns = [
            Column("stage", gettext("Stage")),
            Column("entered", gettext("Entered"), "count"),
            Column("went", gettext("Moved on"), "count"),
            Column("went_pct", gettext("Moved on, %"), "percent"),
            Column("won", gettext("Won later"), "count"),
            Column("won_pct", gettext("Won, %"), "percent"),
        ]
        result = Result(columns, [])
        for i, s in enumerate(stages):
            r = found.get(s)
            entered = int(r.entered) if r else 0
            last = i + 1 >= first_won
            went = None if last else int(r.went or 0) if r else 0
            won = None if last else int(r.won or 0) if r else 0
            result.rows.append(
                {
                    "stage": state_label(ctx, d, s),
                    "entered": entered,
                    "went": went,
                    "went_pct": pct(went, entered),
                    "won": won,
                    "won_pct": pct(won, entered),
                }
            )
            result.drill[(i, "entered")] = f"entered:{s}"
            if not last:
                result.drill[(i, "went")] = f"went:{s}"
                result.drill[(i, "won")] = f"won:{s}"
        overall = found.get(None)
        entered = int(overall[1]) if overall else 0
        won = int(overall[3] or 0) if overall else 0
        result.total = {
            "stage": gettext("Overall"),
            "entered": entered,
            "went": None,
            "went_pct": None,
            "won": won,
            "won_pct": pct(won, entered),
        }
        result.drill[(-1, "entered")] = "entered:*"
        result.drill[(-1, "won")] = "won:*"
        shown = [i for i in range(len(stages)) if i + 1 < first_won]
        result.chart = Chart(
            "bar",
            [result.rows[i]["stage"] for i in shown],
            [Series(gettext("Moved on, %"), [result.rows[i]["went_pct"] for i in shown])],
            "percent",
            [f"went:{stages[i]}" for i in shown],
        )
        return result

    def drill(
        self, ctx: Context, report: Report, params: Params, cell: str
    ) -> tuple[str, sa.Select[Any]]:
        per_stage, per_doc, stages, _ = self._cells(ctx, report, params)
        what, _, state = cell.partition(":")
        if what not in ("entered", "went", "won") or (state != "*" and state not in stages):
            raise ReportError(f"no such cell: {cell}")
        d = common.doctype(ctx, report).name
        if state == "*":
            if what == "went":
                raise ReportError(f"no such cell: {cell}")
            q = sa.select(per_doc.c.doc_id)
            return d, q.where(per_doc.c.won == 1) if what == "won" else q
        q = sa.select(per_stage.c.doc_id).where(per_stage.c.to_state == state)
        if what != "entered":
            q = q.where(per_stage.c[what] == 1)
        return d, q


# -- the funnel compared between managers and departments -----------------------------------------

NONE = "-"  # the drill token of "no manager" / "no department"
TOTAL = "*"


class Compared(Kind):
    """The funnel side by side: a row per manager (the type's owner) or per
    department (the owner's ``User.department``), a column per stage (how many
    records entered it in the period), the lost, the amount won and the win
    rate (won / (won + lost) among those closed in the period)."""

    options: ClassVar[Mapping[str, str]] = {
        **STAGE_OPTIONS,
        "amount": "the amount field summed over the won records",
    }
    by: str = "manager"

    def check(self, registry: Registry, report: Report) -> Iterator[Problem]:
        yield from check_states(registry, report)
        d = registry.documents.get(report.document)
        if d is not None and not d.owner:
            yield Problem(
                _at(report, "type"),
                f"the report `{report.name}` compares owners: {d.name} has no `owner:`",
            )
        if self.by == "department":
            f = registry.documents[USER].fields.get(common.DEPARTMENT_FIELD)
            if f is None or f.type != "ref" or not f.stored:
                yield Problem(
                    _at(report, "type"),
                    f"the report `{report.name}` needs the users' `department` reference",
                )

    def _per_doc(self, ctx: Context, report: Report, params: Params) -> Any:
        """One row per counted record: its group and a flag per stage entered in the period."""
        d = common.doctype(ctx, report)
        h = common.history(ctx, report)
        owner = common.owner_column(ctx, report)
        if owner is None:
            raise ReportError(f"{d.name} has no owner")
        stages = chain(d, report, params)
        won, lost = won_states(d, report), lost_states(d, report)
        low, high = common.period(ctx, params)
        amount = amount_column(ctx, report)
        group: Any = owner
        q = _entries(ctx, report, params)
        if self.by == "department":
            users = ctx.models.table(USER)
            dept = users.c[ctx.registry.documents[USER].fields[common.DEPARTMENT_FIELD].column]
            q = q.join(users, users.c.id == owner, isouter=True)
            group = dept

        def flag(states: list[str]) -> Any:
            return sa.func.max(sa.case((h.c.to_state.in_(states), 1), else_=0))

        cols: list[Any] = [h.c.doc_id, group.label("grp")]
        cols += [flag([s]).label(f"s{i}") for i, s in enumerate(stages)]
        cols += [flag(won).label("won"), flag(lost).label("lost")]
        keys: list[Any] = [h.c.doc_id, group]
        if amount is not None:
            cols.append(amount.label("amount"))
            keys.append(amount)
        per_doc = (
            q.with_only_columns(*cols)
            .where(h.c.at >= low, h.c.at < high, h.c.to_state.in_([*stages, *won, *lost]))
            .group_by(*keys)
            .subquery("per_doc")
        )
        return per_doc, stages, amount is not None

    def _names(self, ctx: Context, grp: Any) -> tuple[Any, list[Any]]:
        """A LEFT JOIN target naming the groups, and the name's columns."""
        if self.by == "manager":
            users = ctx.models.table(USER)
            return users, [users.c.first_name, users.c.last_name, users.c.username]
        f = ctx.registry.documents[USER].fields[common.DEPARTMENT_FIELD]
        target = ctx.registry.documents[f.to or ""]
        table = ctx.models.table(target.name)
        name = target.fields.get("name")
        return table, [table.c[name.column] if name is not None and name.stored else table.c.id]

    def run(self, ctx: Context, report: Report, params: Params) -> Result:
        d = common.doctype(ctx, report)
        per_doc, stages, has_amount = self._per_doc(ctx, report, params)
        figures: list[Any] = [sa.func.sum(per_doc.c[f"s{i}"]) for i in range(len(stages))]
        figures += [sa.func.sum(per_doc.c.won), sa.func.sum(per_doc.c.lost)]
        if has_amount:
            figures.append(sa.func.sum(sa.case((per_doc.c.won == 1, per_doc.c.amount))))
        agg = (
            sa.select(per_doc.c.grp, *[f.label(f"f{i}") for i, f in enumerate(figures)])
            .group_by(per_doc.c.grp)
            .subquery("agg")
        )
        table, name_cols = self._names(ctx, agg.c.grp)
        statement = sa.select(agg, *name_cols).select_from(
            agg.join(table, table.c.id == agg.c.grp, isouter=True)
        )
        rows = ctx.session.execute(statement).all()

        def name(r: Any) -> str:
            if r.grp is None:
                return (
                    gettext("(no manager)") if self.by == "manager" else gettext("(no department)")
                )
            parts = [str(getattr(r, c.name) or "") for c in name_cols]
            if self.by == "manager":
                full = f"{parts[0]} {parts[1]}".strip()
                return full or parts[2]
            return parts[0]

        rows = sorted(rows, key=lambda r: (r.grp is None, name(r).casefold()))
        n = len(stages)
        columns = [
            Column("name", gettext("Manager") if self.by == "manager" else gettext("Department"))
        ]
        columns += [Column(f"stage:{s}", state_label(ctx, d, s), "count") for s in stages]
        columns += [Column("lost", gettext("Lost"), "count")]
        if has_amount:
            columns.append(Column("won_amount", gettext("Amount won"), "money"))
        columns.append(Column("win_rate", gettext("Win rate, %"), "percent"))
        counts = [f"stage:{s}" for s in stages] + ["won", "lost"]
        result = Result(columns, [])
        totals: dict[str, Any] = {k: 0 for k in counts}
        totals["won_amount"] = 0
        for i, r in enumerate(rows):
            row: dict[str, Any] = {"name": name(r)}
            values = [int(getattr(r, f"f{j}") or 0) for j in range(n + 2)]
            for k, v in zip(counts, values, strict=True):
                row[k] = v
                totals[k] += v
            row["win_rate"] = pct(row["won"], row["won"] + row["lost"])
            if has_amount:
                row["won_amount"] = getattr(r, f"f{n + 2}") or 0
                totals["won_amount"] += row["won_amount"]
            token = NONE if r.grp is None else str(r.grp)
            for k in counts:
                if k != "won":
                    result.drill[(i, k)] = f"{token}|{k}"
            del row["won"]
            result.rows.append(row)
        totals["name"] = gettext("Total")
        totals["win_rate"] = pct(totals["won"], totals["won"] + totals["lost"])
        del totals["won"]
        if not has_amount:
            del totals["won_amount"]
        result.total = totals
        for k in counts:
            if k != "won":
                result.drill[(-1, k)] = f"{TOTAL}|{k}"
        result.chart = Chart(
            "bar",
            [row["name"] for row in result.rows],
            [
                Series(state_label(ctx, d, s), [row[f"stage:{s}"] for row in result.rows])
                for s in stages
            ],
            "count",
        )
        return result

    def drill(
        self, ctx: Context, report: Report, params: Params, cell: str
    ) -> tuple[str, sa.Select[Any]]:
        per_doc, stages, _ = self._per_doc(ctx, report, params)
        token, _, key = cell.partition("|")
        if key == "lost":
            column = per_doc.c.lost
        elif key.startswith("stage:") and key[6:] in stages:
            column = per_doc.c[f"s{stages.index(key[6:])}"]
        else:
            raise ReportError(f"no such cell: {cell}")
        q = sa.select(per_doc.c.doc_id).where(column == 1)
        if token == NONE:
            q = q.where(per_doc.c.grp.is_(None))
        elif token != TOTAL:
            if not token.isdigit():
                raise ReportError(f"no such cell: {cell}")
            q = q.where(per_doc.c.grp == int(token))
        return common.doctype(ctx, report).name, q


@kind
class ByManager(Compared):
    name = "by_manager"
    by = "manager"


@kind
class ByDepartment(Compared):
    name = "by_department"
    by = "department"


# -- time in stage -------------------------------------------------------------------------------


@kind
class StageTime(Kind):
    """The average time in each open stage, in days. A *stay* runs from the
    history row entering a stage to the record's next history row. Stays that
    ended in the period are averaged; stays still open at the end of the
    period (or now, if earlier) are shown apart, counted up to that moment.
    Each count is of distinct records; the average is over stays."""

    name = "stage_time"
    options: ClassVar[Mapping[str, str]] = {"stages": STAGE_OPTIONS["stages"]}

    def check(self, registry: Registry, report: Report) -> Iterator[Problem]:
        return check_states(registry, report)

    def _stays(self, ctx: Context, report: Report, params: Params) -> Any:
        d = common.doctype(ctx, report)
        h = common.history(ctx, report)
        assert d.statuses is not None
        states = d.statuses.states
        stages = [s for s in chain(d, report, params) if s in states and not states[s].final]
        _, high = common.period(ctx, params)
        left = sa.func.lead(h.c.at).over(partition_by=h.c.doc_id, order_by=(h.c.at, h.c.id))
        # rows from the period's end on are left out: a stay they would end is open then
        stays = (
            _entries(
                ctx,
                report,
                params,
                h.c.doc_id,
                h.c.to_state,
                h.c.at,
                left.label("left_at"),
                records=False,
            )
            .where(h.c.at < high)
            .subquery("stays")
        )
        return stays, stages

    def run(self, ctx: Context, report: Report, params: Params) -> Result:
        d = common.doctype(ctx, report)
        stays, stages = self._stays(ctx, report, params)
        low, high = common.period(ctx, params)
        until = moment(min(ctx.now, high))
        ended = stays.c.left_at >= low
        open_ = sa.and_(stays.c.left_at.is_(None), stays.c.at < until)
        days = days_between(stays.c.left_at, stays.c.at, ctx.dialect)
        so_far = days_between(until, stays.c.at, ctx.dialect)
        statement = (
            sa.select(
                stays.c.to_state,
                sa.func.count(sa.distinct(sa.case((ended, stays.c.doc_id)))).label("ended"),
                sa.func.avg(sa.case((ended, days))).label("ended_days"),
                sa.func.count(sa.distinct(sa.case((open_, stays.c.doc_id)))).label("open"),
                sa.func.avg(sa.case((open_, so_far))).label("open_days"),
            )
            .where(stays.c.to_state.in_(stages))
            .group_by(stays.c.to_state)
        )
        found = {r.to_state: r for r in ctx.session.execute(statement)}
        columns = [
            Column("stage", gettext("Stage")),
            Column("left", gettext("Left the stage"), "count"),
            Column("days", gettext("Average days"), "days"),
            Column("open", gettext("Still in the stage"), "count"),
            Column("open_days", gettext("Days so far, average"), "days"),
        ]
        result = Result(columns, [])

        def avg(v: Any) -> float | None:
            return None if v is None else round(float(v), 2)

        for i, s in enumerate(stages):
            r = found.get(s)
            result.rows.append(
                {
                    "stage": state_label(ctx, d, s),
                    "left": int(r.ended) if r else 0,
                    "days": avg(r.ended_days) if r else None,
                    "open": int(r.open) if r else 0,
                    "open_days": avg(r.open_days) if r else None,
                }
            )
            result.drill[(i, "left")] = f"left:{s}"
            result.drill[(i, "open")] = f"open:{s}"
        result.notes.append(
            gettext(
                "A stay in a stage ends with the record's next change of state. Stays "
                "still open at the end of the period are counted up to then and shown apart."
            )
        )
        result.chart = Chart(
            "bar",
            [row["stage"] for row in result.rows],
            [
                Series(gettext("Average days"), [row["days"] for row in result.rows]),
                Series(gettext("Days so far, average"), [row["open_days"] for row in result.rows]),
            ],
            "days",
        )
        return result

    def drill(
        self, ctx: Context, report: Report, params: Params, cell: str
    ) -> tuple[str, sa.Select[Any]]:
        stays, stages = self._stays(ctx, report, params)
        what, _, state = cell.partition(":")
        if what not in ("left", "open") or state not in stages:
            raise ReportError(f"no such cell: {cell}")
        low, high = common.period(ctx, params)
        cond = (
            stays.c.left_at >= low
            if what == "left"
            else sa.and_(stays.c.left_at.is_(None), stays.c.at < moment(min(ctx.now, high)))
        )
        q = sa.select(stays.c.doc_id).where(stays.c.to_state == state, cond).distinct()
        return common.doctype(ctx, report).name, q
