"""Report kinds: deals (see engine/reports/__init__.py).

- ``forecast``: the weighted pipeline of the open records, per stage (and per
  month of the planned close with ``date:``);
- ``won_lost``: won and lost per period bucket, by when each record entered
  its final state;
- ``loss_reasons``: the records lost in the period by their reason;
- ``stale``: open records with no change and no interaction for N days;
- ``sources``: records by their source, with the share that converted;
- ``table``: a grouped table of any fields and measures.

Each is one SQL statement under :func:`engine.reports.common.narrowing`;
every count cell has a drill token whose :meth:`Kind.drill` selects exactly
the records counted in it. What each counts is in docs/reports.md.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar

import sqlalchemy as sa

from engine.errors import Loc, Problem
from engine.filters import label_column, user_name
from engine.i18n import gettext, lazy_gettext
from engine.registry import USER, DocType, Field, Registry, Report
from engine.reports import (
    Chart,
    Column,
    Context,
    Kind,
    Params,
    ReportError,
    Result,
    Series,
    kind,
)
from engine.reports.common import doctype, history, narrowing, owner_column, period
from engine.statuses import stage_order

#: outcomes (``State.outcome``) a won_lost / loss_reasons / sources report
#: counts as won and as lost when the report names no states: an order that
#: was closed (``done``) is a sale, a cancelled one a loss
WON_OUTCOMES = ("won", "done")
LOST_OUTCOMES = ("lost", "cancelled")
GROUPS = ("week", "month", "quarter")
#: the most period buckets one report draws (a week over seven years)
MAX_BUCKETS = 366
MEASURES = ("count", "sum", "avg", "min", "max")
NUMERIC = ("integer", "decimal", "money")
SYSTEM_DATES = ("created_at", "updated_at")


# -- options: reading and checking ----------------------------------------------------------------


def _loc(report: Report, *keys: Any, item: Any = None) -> Loc:
    """Where an option (or its item) was written, for ``crm check``."""
    from engine.checks import _at

    return _at(report.options, report.loc, *keys, item=item)


def _field_path_problem(registry: Registry, d: DocType, path: str) -> str | None:
    from engine.checks import field_path_problem

    return field_path_problem(registry, d, path)


def _option(report: Report, params: Params | None, key: str, default: Any = None) -> Any:
    """An option's value: the request's (``params.extra``) over the report's."""
    if params is not None and key in params.extra:
        return params.extra[key]
    return report.options.get(key, default)


def _whole(value: Any, key: str, low: int = 1, high: int = 100_000) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ReportError(f"`{key}` must be a whole number") from None
    if isinstance(value, bool) or not low <= number <= high:
        raise ReportError(f"`{key}` must be a whole number from {low} to {high}")
    return number


def _field(d: DocType, name: str) -> Field | None:
    f = d.fields.get(name)
    return f if f is not None and f.stored else None


def _column(ctx: Context, d: DocType, name: str) -> sa.ColumnElement[Any]:
    table = ctx.models.table(d.name)
    if name in SYSTEM_DATES or name == "id":
        return table.c[name]
    f = _field(d, name)
    if f is None:
        raise ReportError(f"{d.name} has no field `{name}`")
    return table.c[f.column]


def _amount(ctx: Context, report: Report) -> sa.ColumnElement[Any] | None:
    name = report.options.get("amount")
    if not name:
        return None
    return sa.func.coalesce(_column(ctx, doctype(ctx, report), name), 0)


def _number(value: Any) -> float:
    if value is None:
        return 0.0
    return round(float(value), 2) if isinstance(value, (Decimal, float)) else float(value)


def _states_of(d: DocType, report: Report, key: str, outcomes: Sequence[str]) -> list[str]:
    """The final states ``key`` (``won``/``lost``) names, or those of ``outcomes``."""
    assert d.statuses is not None
    named = report.options.get(key)
    if named is not None:
        return [str(s) for s in ([named] if isinstance(named, str) else named)]
    return [n for n, s in d.statuses.states.items() if s.final and s.outcome in outcomes]


def _check_amount(registry: Registry, report: Report) -> Iterator[Problem]:
    d = registry.documents.get(report.document)
    name = report.options.get("amount")
    if d is None or not isinstance(name, str) or "." in name:
        if isinstance(name, str) and "." in name:
            yield Problem(_loc(report, "amount"), f"the report `{report.name}`, `amount`: "
                          "a field of the record itself, not a dotted path")  # fmt: skip
        return
    f = _field(d, name)
    if f is not None and f.type not in NUMERIC:
        yield Problem(
            _loc(report, "amount"),
            f"the report `{report.name}`, `amount`: `{name}` is a {f.type}, not a number",
        )


def _check_statuses(registry: Registry, report: Report) -> Iterator[Problem]:
    d = registry.documents.get(report.document)
    if d is not None and d.statuses is None:
        yield Problem(
            _loc(report, "document"),
            f"the report `{report.name}` of type `{report.type}` needs a type with statuses; "
            f"{d.name} has none",
        )


def _check_state_lists(
    registry: Registry, report: Report, keys: Sequence[str], outcomes: Mapping[str, Sequence[str]]
) -> Iterator[Problem]:
    d = registry.documents.get(report.document)
    if d is None or d.statuses is None:
        return
    for key in keys:
        named = report.options.get(key)
        if named is None:
            if not _states_of(d, report, key, outcomes[key]):
                yield Problem(
                    _loc(report, "document"),
                    f"the report `{report.name}`: {d.name} has no final state with outcome "
                    f"{' or '.join(outcomes[key])}; name them: `{key}: [state, ...]`",
                )
            continue
        names = [named] if isinstance(named, str) else named
        if not isinstance(names, list) or not names:
            yield Problem(_loc(report, key), f"the report `{report.name}`, `{key}`: "
                          "a state or a list of states")  # fmt: skip
            continue
        for name in names:
            state = d.statuses.states.get(str(name))
            if state is None or not state.final:
                yield Problem(
                    _loc(report, key, item=name),
                    f"the report `{report.name}`, `{key}`: `{name}` is not a final state of "
                    f"{d.name}",
                )


def _check_whole(report: Report, key: str, low: int, high: int) -> Iterator[Problem]:
    value = report.options.get(key)
    if value is None:
        return
    try:
        _whole(value, key, low, high)
    except ReportError as exc:
        yield Problem(_loc(report, key), f"the report `{report.name}`: {exc}")


def _check_group(report: Report) -> Iterator[Problem]:
    value = report.options.get("group")
    if value is not None and value not in GROUPS:
        yield Problem(
            _loc(report, "group"),
            f"the report `{report.name}`, `group`: `{value}` is not one of {', '.join(GROUPS)}",
        )


# -- period buckets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    label: str
    first: dt.date  # included
    after: dt.date  # excluded


def buckets(params: Params, group: str) -> list[Bucket]:
    """The period cut into weeks (Monday first), months or quarters, the
    first and the last clipped to the period."""
    if group not in GROUPS:
        raise ReportError(f"`group` must be one of {', '.join(GROUPS)}")
    out: list[Bucket] = []
    day, end = params.start, params.end + dt.timedelta(days=1)
    while day < end:
        if group == "week":
            start = day - dt.timedelta(days=day.weekday())
            nxt = start + dt.timedelta(days=7)
            year, week, _ = start.isocalendar()
            label = f"{year}-W{week:02d}"
        else:
            months = 1 if group == "month" else 3
            first_month = day.month - (day.month - 1) % months
            nxt_index = day.year * 12 + first_month - 1 + months
            nxt = dt.date(nxt_index // 12, nxt_index % 12 + 1, 1)
            label = (
                f"{day.year}-{day.month:02d}"
                if group == "month"
                else f"{day.year} Q{(first_month - 1) // 3 + 1}"
            )
        out.append(Bucket(label, day, min(nxt, end)))
        day = min(nxt, end)
        if len(out) > MAX_BUCKETS:
            raise ReportError(f"the period is too long for `group: {group}`")
    return out


def _instant(ctx: Context, day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), ctx.tz).astimezone(dt.UTC)


def _bucket_case(
    ctx: Context, column: Any, cuts: Sequence[Bucket], dates: bool = False
) -> sa.ColumnElement[Any]:
    """The bucket's index of a datetime (or, with ``dates``, a date) column
    already within the period, in the company's time zone."""
    bounds = [b.after if dates else _instant(ctx, b.after) for b in cuts]
    if len(cuts) == 1:
        return sa.literal(0)
    return sa.case(
        *[(column < bound, i) for i, bound in enumerate(bounds[:-1])], else_=len(cuts) - 1
    )


def _in_buckets(ctx: Context, column: Any, cuts: Sequence[Bucket], index: int | None) -> Any:
    if index is None:
        return sa.and_(
            column >= _instant(ctx, cuts[0].first), column < _instant(ctx, cuts[-1].after)
        )
    if not 0 <= index < len(cuts):
        raise ReportError("no such period")
    return sa.and_(
        column >= _instant(ctx, cuts[index].first), column < _instant(ctx, cuts[index].after)
    )


def _state_label(ctx: Context, d: DocType, state: str | None) -> str:
    assert d.statuses is not None
    s = d.statuses.states.get(state or "")
    return s.label.get(ctx.registry.locale) if s is not None else str(state or "")


def _token(**parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _parse(cell: str) -> dict[str, Any]:
    try:
        parts = json.loads(cell)
    except ValueError:
        raise ReportError("this cell has no list") from None
    if not isinstance(parts, dict):
        raise ReportError("this cell has no list")
    return parts


def _ids(ctx: Context, report: Report, where: Sequence[Any]) -> tuple[str, sa.Select[Any]]:
    table = ctx.models.table(report.document)
    return report.document, sa.select(table.c.id).where(*where)


# -- forecast -------------------------------------------------------------------------------------


@kind
class Forecast(Kind):
    """The weighted pipeline of the records open now (not in a final state).

    A record's probability is its stage's in ``probabilities`` when that map
    names the stage (the company's policy wins), else the record's own
    ``probability`` field, else 0. With ``date:`` the records are grouped by
    the month of that date: the months of the period, plus a row for those
    with no date; records planned outside the period are not counted."""

    name = "forecast"
    options: ClassVar[Mapping[str, str]] = {
        "amount": "the amount field summed and weighted",
        "probabilities": "stage → percent of the amount expected (wins over the record's field)",
        "probability": "a field of the record holding its percent (0..100), for stages "
        "`probabilities` does not name",
        "date": "a date field (the planned close): rows per month of the period, plus no date",
    }

    def check(self, registry: Registry, report: Report) -> Iterator[Problem]:
        yield from _check_statuses(registry, report)
        yield from _check_amount(registry, report)
        d = registry.documents.get(report.document)
        if d is None or d.statuses is None:
            return
        probs = report.options.get("probabilities")
        field = report.options.get("probability")
        if probs is None and field is None:
            yield Problem(
                report.loc,
                f"the report `{report.name}`: say where a stage's probability comes from: "
                "`probabilities: {stage: percent}` or `probability: FIELD`",
            )
        if probs is not None:
            if not isinstance(probs, Mapping):
                yield Problem(_loc(report, "probabilities"), f"the report `{report.name}`, "
                              "`probabilities`: a map of stage → percent")  # fmt: skip
            else:
                for stage, percent in probs.items():
                    state = d.statuses.states.get(str(stage))
                    if state is None or state.final:
                        yield Problem(
                            _loc(report, "probabilities", stage),
                            f"the report `{report.name}`, `probabilities`: `{stage}` is not an "
                            f"open state of {d.name}",
                        )
                    elif (
                        isinstance(percent, bool)
                        or not isinstance(percent, (int, float))
                        or not 0 <= percent <= 100
                    ):
                        yield Problem(
                            _loc(report, "probabilities", stage),
                            f"the report `{report.name}`, `probabilities`: `{stage}` takes a "
                            "percent from 0 to 100",
                        )
        if field is not None:
            f = _field(d, str(field))
            if f is None or f.type not in NUMERIC:
                yield Problem(
                    _loc(report, "probability"),
                    f"the report `{report.name}`, `probability`: {d.name} has no number field "
                    f"`{field}`",
                )
        date = report.options.get("date")
        if date is not None:
            f = _field(d, str(date))
            if f is not None and f.type != "date":  # an unknown field: the engine's check says so
                yield Problem(
                    _loc(report, "date"),
                    f"the report `{report.name}`, `date`: {d.name} has no date field `{date}`",
                )

    # the pieces every statement shares
    def _frame(
        self, ctx: Context, report: Report, params: Params
    ) -> tuple[DocType, sa.Table, Any, list[Bucket] | None, Any, list[Any]]:
        d = doctype(ctx, report)
        assert d.statuses is not None
        table = ctx.models.table(d.name)
        stage = table.c[d.statuses.field]
        open_states = [n for n in stage_order(d, params.kind) if not d.statuses.states[n].final]
        where: list[Any] = [stage.in_(open_states), narrowing(ctx, report, params)]
        cuts: list[Bucket] | None = None
        bucket: Any = None
        date = report.options.get("date")
        if date:
            column = _column(ctx, d, date)
            cuts = buckets(params, "month")
            where.append(
                sa.or_(column.is_(None), sa.and_(column >= params.start, column <= params.end))
            )
            bucket = sa.case(
                (column.is_(None), -1), else_=_bucket_case(ctx, column, cuts, dates=True)
            )
        return d, table, stage, cuts, bucket, where

    def _probability(self, ctx: Context, report: Report, d: DocType, stage: Any) -> Any:
        probs = report.options.get("probabilities") or {}
        field = report.options.get("probability")
        other: Any = sa.func.coalesce(_column(ctx, d, field), 0) if field else sa.literal(0)
        if not probs:
            return other
        return sa.case(*[(stage == s, float(p)) for s, p in probs.items()], else_=other)

    def run(self, ctx: Context, report: Report, params: Params) -> Result:
        d, _table, stage, cuts, bucket, where = self._frame(ctx, report, params)
        amount = _amount(ctx, report)
        if amount is None:
            amount = sa.literal(0)
        weighted = sa.func.sum(amount * self._probability(ctx, report, d, stage))
        keys: list[Any] = ([bucket.label("bucket")] if bucket is not None else []) + [stage]
        stmt = (
            sa.select(*keys, sa.func.count().label("n"), sa.func.sum(amount).label("amount"),
                      weighted.label("weighted"))
            .where(*where)
            .group_by(*keys)
        )  # fmt: skip
        found = {
            ((int(r.bucket) if cuts is not None else None), r[len(keys) - 1]): r
            for r in ctx.session.execute(stmt)
        }
        order = stage_order(d, params.kind)
        columns: list[Column] = []
        if cuts is not None:
            columns.append(Column("month", gettext("Planned close"), "text"))
        columns += [
            Column("stage", gettext("Stage"), "text"),
            Column("count", gettext("Count"), "count"),
            Column("amount", gettext("Amount"), "money"),
            Column("probability", gettext("Probability"), "percent"),
            Column("weighted", gettext("Weighted amount"), "money"),
        ]
        result = Result(columns=columns, rows=[])
        groups: list[tuple[int | None, str | None]] = (
            [(i, c.label) for i, c in enumerate(cuts)] + [(-1, gettext("No date"))]
            if cuts is not None
            else [(None, None)]
        )
        totals = {"count": 0, "amount": 0.0, "weighted": 0.0}
        by_group: list[float] = []
        for index, label in groups:
            group_weighted = 0.0
            for s in order:
                r = found.get((index, s))
                if r is None:
                    continue
                money, weight = _number(r.amount), _number(r.weighted) / 100
                row: dict[str, Any] = {
                    "stage": _state_label(ctx, d, s),
                    "count": int(r.n),
                    "amount": money,
                    "probability": round(100 * weight / money, 1) if money else None,
                    "weighted": round(weight, 2),
                }
                if cuts is not None:
                    row["month"] = label
                result.drill[(len(result.rows), "count")] = _token(b=index, s=s)
                result.rows.append(row)
                totals["count"] += int(r.n)
                totals["amount"] += money
                totals["weighted"] += weight
                group_weighted += weight
            by_group.append(round(group_weighted, 2))
        result.total = {
            "stage": gettext("Total"),
            "count": totals["count"],
            "amount": round(totals["amount"], 2),
            "probability": round(100 * totals["weighted"] / totals["amount"], 1)
            if totals["amount"]
            else None,
            "weighted": round(totals["weighted"], 2),
        }
        result.drill[(-1, "count")] = _token()
        if cuts is not None:
            result.chart = Chart(
                "column",
                [label or "" for _, label in groups],
                [Series(gettext("Weighted amount"), by_group)],
                "money",
                [_token(b=index) for index, _ in groups],
            )
        else:
            stages = [r["stage"] for r in result.rows]
            result.chart = Chart(
                "bar",
                stages,
                [
                    Series(gettext("Amount"), [r["amount"] for r in result.rows]),
                    Series(gettext("Weighted amount"), [r["weighted"] for r in result.rows]),
                ],
                "money",
                [result.drill[(i, "count")] for i in range(len(result.rows))],
            )
        return result

    def drill(
        self, ctx: Context, report: Report, params: Params, cell: str
    ) -> tuple[str, sa.Select[Any]]:
        parts = _parse(cell)
        _d, _table, stage, _cuts, bucket, where = self._frame(ctx, report, params)
        if parts.get("s") is not None:
            where.append(stage == str(parts["s"]))
        if parts.get("b") is not None:
            if bucket is None:
                raise ReportError("this cell has no list")
            where.append(bucket == int(parts["b"]))
        return _ids(ctx, report, where)


# -- won and lost ---------------------------------------------------------------------------------


def _closed(
    ctx: Context, report: Report, params: Params, states: Sequence[str]
) -> tuple[sa.Table, Any, list[Any]]:
    """Records now in one of ``states`` that entered it (their last change
    of state) within the period: the table, the moment they entered it, and
    the conditions. A record reopened and closed again counts once, when
    it was closed last."""
    d = doctype(ctx, report)
    assert d.statuses is not None
    table, hist = ctx.models.table(d.name), history(ctx, report)
    stage = table.c[d.statuses.field]
    later = hist.alias("later")
    low, high = period(ctx, params)
    where = [
        stage.in_(list(states)),
        hist.c.doc_id == table.c.id,
        hist.c.to_state == stage,
        hist.c.at >= low,
        hist.c.at < high,
        ~sa.exists().where(
            later.c.doc_id == hist.c.doc_id,
            sa.or_(
                later.c.at > hist.c.at, sa.and_(later.c.at == hist.c.at, later.c.id > hist.c.id)
            ),
        ),
        narrowing(ctx, report, params),
    ]
    return table, hist.c.at, where


@kind
class WonLost(Kind):
    """Records won and lost per week, month or quarter of the period, by when
    they entered their final state (the status history). Won: the final
    states of outcome ``won`` (``done`` for orders); lost: ``lost`` and
    ``cancelled``; ``won:``/``lost:`` name the states instead."""

    name = "won_lost"
    parameters: ClassVar[Mapping[str, Any]] = {
        "group": lazy_gettext("Group by: week, month or quarter")
    }
    options: ClassVar[Mapping[str, str]] = {
        "amount": "the amount field summed",
        "group": "week, month (default) or quarter; a request's `group=` overrides it",
        "won": "the final states counted as won (default: outcome won or done)",
        "lost": "the final states counted as lost (default: outcome lost or cancelled)",
    }

    def check(self, registry: Registry, report: Report) -> Iterator[Problem]:
        yield from _check_statuses(registry, report)
        yield from _check_amount(registry, report)
        yield from _check_group(report)
        yield from _check_state_lists(
            registry, report, ("won", "lost"), {"won": WON_OUTCOMES, "lost": LOST_OUTCOMES}
        )

    def _frame(self, ctx: Context, report: Report, params: Params) -> Any:
        d = doctype(ctx, report)
        won = _states_of(d, report, "won", WON_OUTCOMES)
        lost = _states_of(d, report, "lost", LOST_OUTCOMES)
        cuts = buckets(params, str(_option(report, params, "group", "month")))
        table, at, where = _closed(ctx, report, params, won + lost)
        assert d.statuses is not None
        return (
            d,
            won,
            lost,
            cuts,
            table,
            table.c[d.statuses.field],
            _bucket_case(ctx, at, cuts),
            where,
        )

    def run(self, ctx: Context, report: Report, params: Params) -> Result:
        _d, won, _lost, cuts, _table, stage, bucket, where = self._frame(ctx, report, params)
        amount = _amount(ctx, report)
        is_won = stage.in_(won)
        keys = [bucket.label("bucket"), is_won.label("won")]
        stmt = sa.select(
            *keys,
            sa.func.count().label("n"),
            sa.func.sum(amount if amount is not None else sa.literal(0)).label("amount"),
        ).where(*where).group_by(*keys)  # fmt: skip
        found = {(int(r.bucket), bool(r.won)): r for r in ctx.session.execute(stmt)}
        columns = [
            Column("period", gettext("Period"), "text"),
            Column("won", gettext("Won"), "count"),
            Column("won_amount", gettext("Won amount"), "money"),
            Column("lost", gettext("Lost"), "count"),
            Column("lost_amount", gettext("Lost amount"), "money"),
            Column("win_rate", gettext("Win rate"), "percent"),
        ]
        if amount is None:
            columns = [c for c in columns if not c.key.endswith("_amount")]
        result = Result(columns=columns, rows=[])
        total = {"won": 0, "won_amount": 0.0, "lost": 0, "lost_amount": 0.0}
        for i, cut in enumerate(cuts):
            row: dict[str, Any] = {"period": cut.label}
            for outcome, flag in (("won", True), ("lost", False)):
                r = found.get((i, flag))
                row[outcome] = int(r.n) if r else 0
                row[f"{outcome}_amount"] = _number(r.amount) if r else 0.0
                total[outcome] += row[outcome]
                total[f"{outcome}_amount"] += row[f"{outcome}_amount"]
                result.drill[(i, outcome)] = _token(b=i, o=outcome)
            row["win_rate"] = _rate(row["won"], row["won"] + row["lost"])
            result.rows.append(row)
        result.total = {
            "period": gettext("Total"),
            **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in total.items()},
            "win_rate": _rate(total["won"], total["won"] + total["lost"]),
        }
        result.drill[(-1, "won")] = _token(o="won")
        result.drill[(-1, "lost")] = _token(o="lost")
        if amount is None:
            for row in [*result.rows, result.total]:
                del row["won_amount"], row["lost_amount"]
        result.chart = Chart(
            "column",
            [c.label for c in cuts],
            [
                Series(gettext("Won"), [r["won"] for r in result.rows]),
                Series(gettext("Lost"), [r["lost"] for r in result.rows]),
            ],
            "count",
            [_token(b=i) for i in range(len(cuts))],
        )
        return result

    def drill(
        self, ctx: Context, report: Report, params: Params, cell: str
    ) -> tuple[str, sa.Select[Any]]:
        parts = _parse(cell)
        _d, won, lost, cuts, _table, stage, bucket, where = self._frame(ctx, report, params)
        if parts.get("o") in ("won", "lost"):
            where.append(stage.in_(won if parts["o"] == "won" else lost))
        if parts.get("b") is not None:
            if not 0 <= int(parts["b"]) < len(cuts):
                raise ReportError("no such period")
            where.append(bucket == int(parts["b"]))
        return _ids(ctx, report, where)


def _rate(part: float, whole: float) -> float | None:
    return round(100 * part / whole, 1) if whole else None


# -- loss reasons ---------------------------------------------------------------------------------


@kind
class LossReasons(Kind):
    """The records lost in the period (as ``won_lost`` counts them) by their
    reason: a text reason grouped by its trimmed, case-folded text (shown as
    one of its spellings), an enum by its values; no reason is a row too."""

    name = "loss_reasons"
    options: ClassVar[Mapping[str, str]] = {
        "amount": "the amount field summed",
        "reason": "the reason field: text (grouped by its normalized text) or enum "
        "(default loss_reason)",
        "lost": "the final states counted as lost (default: outcome lost or cancelled)",
    }

    def check(self, registry: Registry, report: Report) -> Iterator[Problem]:
        yield from _check_statuses(registry, report)
        yield from _check_amount(registry, report)
        yield from _check_state_lists(registry, report, ("lost",), {"lost": LOST_OUTCOMES})
        d = registry.documents.get(report.document)
        if d is None:
            return
        name = str(report.options.get("reason", "loss_reason"))
        f = _field(d, name)
        if f is None or f.type not in ("text", "string", "enum"):
            yield Problem(
                _loc(report, "reason") if "reason" in report.options else report.loc,
                f"the report `{report.name}`, `reason`: {d.name} has no text or enum field "
                f"`{name}`",
            )

    def _frame(self, ctx: Context, report: Report, params: Params) -> Any:
        d = doctype(ctx, report)
        f = _field(d, str(report.options.get("reason", "loss_reason")))
        if f is None:
            raise ReportError(f"{d.name} has no loss reason")
        table, _, where = _closed(ctx, report, params, _states_of(d, report, "lost", LOST_OUTCOMES))
        column = table.c[f.column]
        if f.type == "enum":
            key: Any = sa.func.coalesce(column, "")
        else:
            key = sa.func.coalesce(sa.func.lower(sa.func.trim(column)), "")
        return d, f, column, key, where

    def run(self, ctx: Context, report: Report, params: Params) -> Result:
        _d, f, column, key, where = self._frame(ctx, report, params)
        amount = _amount(ctx, report)
        stmt = (
            sa.select(
                key.label("key"),
                sa.func.min(sa.func.trim(column)).label("shown"),
                sa.func.count().label("n"),
                sa.func.sum(amount if amount is not None else sa.literal(0)).label("amount"),
            )
            .where(*where)
            .group_by(key)
            .order_by(sa.func.count().desc(), key)
        )
        found = list(ctx.session.execute(stmt))
        total = sum(int(r.n) for r in found)
        columns = [
            Column("reason", gettext("Reason"), "text"),
            Column("count", gettext("Count"), "count"),
            Column("amount", gettext("Amount"), "money"),
            Column("share", gettext("Share"), "percent"),
        ]
        if amount is None:
            columns.pop(2)
        result = Result(columns=columns, rows=[])
        for r in found:
            if not r.key:
                label = gettext("Not given")
            elif f.type == "enum":
                value = f.values.get(r.key)
                label = value.get(ctx.registry.locale) if value is not None else str(r.key)
            else:
                label = str(r.shown)
            row = {"reason": label, "count": int(r.n), "share": _rate(int(r.n), total)}
            if amount is not None:
                row["amount"] = _number(r.amount)
            result.drill[(len(result.rows), "count")] = _token(r=r.key)
            result.rows.append(row)
        result.total = {
            "reason": gettext("Total"),
            "count": total,
            "share": 100.0 if total else None,
        }
        if amount is not None:
            result.total["amount"] = round(sum(r["amount"] for r in result.rows), 2)
        result.drill[(-1, "count")] = _token()
        result.chart = Chart(
            "bar",
            [r["reason"] for r in result.rows],
            [Series(gettext("Count"), [r["count"] for r in result.rows])],
            "count",
            [result.drill[(i, "count")] for i in range(len(result.rows))],
        )
        return result

    def drill(
        self, ctx: Context, report: Report, params: Params, cell: str
    ) -> tuple[str, sa.Select[Any]]:
        parts = _parse(cell)
        _d, _f, _column, key, where = self._frame(ctx, report, params)
        if "r" in parts:
            where.append(key == str(parts["r"]))
        return _ids(ctx, report, where)


# -- stale ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Activity:
    """What counts as an interaction with a record: records of ``doctype``
    whose ref ``link`` points to it (``own`` None) or to the same record as
    the report type's ref ``own`` (an interaction with the deal's customer),
    at ``date``."""

    doctype: DocType
    link: Field
    own: Field | None
    date: str


def activity(registry: Registry, report: Report) -> Activity | str | None:
    """The report's ``activity`` (``Type.ref``), the default one (a type
    named Interaction with a ref to the record or to its ref's target), or
    why it cannot be: a message."""
    d = registry.documents[report.document]
    named = report.options.get("activity")
    if named is None:
        candidates = ["Interaction"] if "Interaction" in registry.documents else []
        link_name = None
    else:
        type_name, _, link_name = str(named).partition(".")
        if type_name not in registry.documents:
            return f"there is no type `{type_name}`"
        candidates = [type_name]
    for name in candidates:
        other = registry.documents[name]
        refs = [
            f for f in other.fields.values()
            if f.type == "ref" and not f.system
            and (f.name == link_name if link_name else f.to != USER)
        ]  # fmt: skip
        if link_name and not refs:
            return f"`{name}` has no ref `{link_name}`"
        chosen: tuple[Field, Field | None] | None = None
        for f in refs:
            if f.to == d.name:
                chosen = (f, None)
                break
        if chosen is None:
            for f in refs:
                own = d.fields.get(f.name)
                if own is not None and own.type == "ref" and own.to == f.to:
                    chosen = (f, own)
                    break
        if chosen is None:
            for f in refs:
                mine = [o for o in d.fields.values() if o.type == "ref" and o.to == f.to]
                if mine:
                    chosen = (f, mine[0])
                    break
        if chosen is None:
            if named is None:
                return None
            return f"`{named}` refers neither to {d.name} nor to what {d.name} refers to"
        date = report.options.get("activity_date")
        if date is None:
            date = (
                other.list.order_field
                if other.list is not None
                and (other.fields.get(other.list.order_field) or Field("", "")).type
                in ("date", "datetime")
                else "created_at"
            )
        date = str(date)
        if date not in SYSTEM_DATES:
            df = other.fields.get(date)
            if df is None or df.type not in ("date", "datetime"):
                return f"`{name}` has no date or datetime field `{date}`"
        return Activity(other, chosen[0], chosen[1], date)
    return None


@kind
class Stale(Kind):
    """Open records with no change and no interaction for ``days`` days:
    not updated, no change of state, and no interaction (``activity``)
    dated within the last ``days`` days (an interaction planned ahead
    counts as contact). Listed oldest first (at most ``limit``) with the
    owner, the stage, the amount, the days idle; the chart counts every
    stale record per owner."""

    name = "stale"
    parameters: ClassVar[Mapping[str, Any]] = {"days": lazy_gettext("Idle for, days")}
    options: ClassVar[Mapping[str, str]] = {
        "amount": "the amount field shown",
        "days": "days without a change or an interaction (default 14); a request's `days=` "
        "overrides it",
        "activity": "Type.ref whose records are the interactions (default: Interaction, by its "
        "ref to the record or to the record's customer)",
        "activity_date": "the interaction's date field (default: its list's order date)",
        "limit": "the most records listed (default 500); the counts take all",
    }

    def check(self, registry: Registry, report: Report) -> Iterator[Problem]:
        yield from _check_statuses(registry, report)
        yield from _check_amount(registry, report)
        yield from _check_whole(report, "days", 1, 3650)
        yield from _check_whole(report, "limit", 1, 100_000)
        if report.document in registry.documents:
            found = activity(registry, report)
            if isinstance(found, str):
                yield Problem(
                    _loc(report, "activity" if "activity" in report.options else "activity_date"),
                    f"the report `{report.name}`, `activity`: {found}",
                )

    def _frame(self, ctx: Context, report: Report, params: Params) -> Any:
        d = doctype(ctx, report)
        assert d.statuses is not None
        days = _whole(_option(report, params, "days", 14), "days", 1, 3650)
        cutoff = ctx.now - dt.timedelta(days=days)
        table, hist = ctx.models.table(d.name), history(ctx, report)
        stage = table.c[d.statuses.field]
        changed = sa.func.coalesce(table.c.updated_at, table.c.created_at)
        open_states = [n for n in stage_order(d, params.kind) if not d.statuses.states[n].final]
        where: list[Any] = [
            stage.in_(open_states),
            changed < cutoff,
            ~sa.exists().where(hist.c.doc_id == table.c.id, hist.c.at >= cutoff),
            narrowing(ctx, report, params),
        ]
        lasts: list[Any] = [
            sa.select(sa.func.max(hist.c.at)).where(hist.c.doc_id == table.c.id).scalar_subquery()
        ]
        act = activity(ctx.registry, report)
        if isinstance(act, str):
            raise ReportError(act)
        if act is not None:
            other = ctx.models.table(act.doctype.name)
            pointing = other.c[act.link.column] == (
                table.c.id if act.own is None else table.c[act.own.column]
            )
            date = other.c[
                act.date if act.date in SYSTEM_DATES else act.doctype.fields[act.date].column
            ]
            since: Any = cutoff
            if act.date not in SYSTEM_DATES and act.doctype.fields[act.date].type == "date":
                since = cutoff.astimezone(ctx.tz).date()
            where.append(~sa.exists().where(pointing, date >= since))
            lasts.append(sa.select(sa.func.max(date)).where(pointing).scalar_subquery())
        return d, table, stage, changed, lasts, where, days

    def run(self, ctx: Context, report: Report, params: Params) -> Result:
        d, table, stage, changed, lasts, where, _days = self._frame(ctx, report, params)
        limit = _whole(_option(report, params, "limit", 500), "limit", 1, 100_000)
        owner = owner_column(ctx, report)
        owner_key: Any = owner if owner is not None else sa.literal(None, sa.Integer)
        amount = _amount(ctx, report)
        title = label_column(d, table)
        kind_of_time = sa.DateTime(timezone=True)
        candidates = [changed, *[sa.func.coalesce(last, changed) for last in lasts]]
        last_at: Any = (
            sa.func.max(*candidates, type_=kind_of_time)
            if ctx.dialect == "sqlite"
            else sa.func.greatest(*candidates, type_=kind_of_time)
        )
        inner = (
            sa.select(
                table.c.id,
                (title if title is not None else table.c.id).label("title"),
                owner_key.label("owner"),
                stage.label("stage"),
                (amount if amount is not None else sa.literal(0)).label("amount"),
                last_at.label("last"),
                sa.func.row_number().over(order_by=(last_at, table.c.id)).label("rn"),
                sa.func.row_number().over(partition_by=owner_key, order_by=table.c.id).label("orn"),
                sa.func.count().over(partition_by=owner_key).label("owned"),
            )
            .where(*where)
            .subquery("stale")
        )
        users = ctx.models.table(USER)
        stmt = (
            sa.select(inner, user_name(users).label("owner_name"))
            .outerjoin(users, users.c.id == inner.c.owner)
            .where(sa.or_(inner.c.rn <= limit, inner.c.orn == 1))
            .order_by(inner.c.rn)
        )
        found = list(ctx.session.execute(stmt))
        columns = [
            Column("record", str(d.label.get(ctx.registry.locale)), "text"),
            Column("owner", gettext("Manager"), "text"),
            Column("stage", gettext("Stage"), "text"),
            Column("amount", gettext("Amount"), "money"),
            Column("last", gettext("Last activity"), "date"),
            Column("days", gettext("Days idle"), "days"),
        ]
        if amount is None:
            columns.pop(3)
        result = Result(columns=columns, rows=[])
        owners: dict[Any, tuple[str, int]] = {}
        for r in found:
            owners[r.owner] = (r.owner_name or gettext("No manager"), int(r.owned))
            if r.rn > limit:
                continue
            last = _utc(r.last)
            row = {
                "id": r.id,
                "record": str(r.title),
                "owner": r.owner_name or gettext("No manager"),
                "stage": _state_label(ctx, d, r.stage),
                "last": last.astimezone(ctx.tz).date(),
                "days": (ctx.now - last).days,
            }
            if amount is not None:
                row["amount"] = _number(r.amount)
            result.rows.append(row)
        count = sum(n for _, n in owners.values())
        if count > limit:
            result.notes.append(
                gettext(
                    "The %(limit)s longest idle of %(count)s are listed.", limit=limit, count=count
                )
            )
        # the totals row: how many are stale (the list may show fewer)
        result.total = {"record": count}
        result.drill[(-1, "record")] = _token()
        ranked = sorted(owners.items(), key=lambda item: (-item[1][1], item[1][0]))
        result.chart = Chart(
            "bar",
            [name for _, (name, _) in ranked],
            [Series(gettext("Stale"), [n for _, (_, n) in ranked])],
            "count",
            [_token(o=key) for key, _ in ranked],
        )
        return result

    def drill(
        self, ctx: Context, report: Report, params: Params, cell: str
    ) -> tuple[str, sa.Select[Any]]:
        parts = _parse(cell)
        _d, _table, _stage, _changed, _lasts, where, _days = self._frame(ctx, report, params)
        if "o" in parts:
            owner = owner_column(ctx, report)
            if owner is None:
                raise ReportError("this cell has no list")
            where.append(owner.is_(None) if parts["o"] is None else owner == int(parts["o"]))
        return _ids(ctx, report, where)


def _utc(value: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if not isinstance(value, dt.datetime):  # a date field of the interactions
        value = dt.datetime.combine(value, dt.time(), dt.UTC)
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


# -- sources --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conversion:
    """How a record of the report's type converts: into a won state of its
    own (``target`` None) or by a won record of ``target`` whose ref
    ``link`` points to it."""

    won: tuple[str, ...]
    target: DocType | None = None
    link: Field | None = None


def conversion(registry: Registry, report: Report) -> Conversion | str:
    d = registry.documents[report.document]
    named = report.options.get("converts_to")
    if named is None and d.statuses is not None:
        won = _states_of(d, report, "won", WON_OUTCOMES)
        return Conversion(tuple(won)) if won else f"{d.name} has no won state; name them: `won:`"
    if named is None:
        return f"{d.name} has no statuses: say which type it converts to, `converts_to: Deal`"
    type_name, _, link_name = str(named).partition(".")
    target = registry.documents.get(type_name)
    if target is None or target.statuses is None:
        return f"`{type_name}` is not a type with statuses"
    refs = [
        f for f in target.fields.values()
        if f.type == "ref" and f.to == d.name and (not link_name or f.name == link_name)
    ]  # fmt: skip
    if not refs:
        return f"`{type_name}` has no ref to {d.name}" + (
            f" named `{link_name}`" if link_name else ""
        )
    won = [n for n, s in target.statuses.states.items() if s.final and s.outcome in WON_OUTCOMES]
    if not won:
        return f"`{type_name}` has no final state of outcome won"
    return Conversion(tuple(won), target, refs[0])


@kind
class Sources(Kind):
    """Records created in the period by their source (``by``: an enum or a
    ref), with the share that converted: records now in a won state, or,
    for a type without statuses (customers), those with at least one won
    record of ``converts_to`` (a Deal) that the reader may read."""

    name = "sources"
    options: ClassVar[Mapping[str, str]] = {
        "by": "the source field: an enum or a ref of the record",
        "amount": "the amount field summed",
        "won": "the final states counted as converted (default: outcome won or done)",
        "converts_to": "for a type without statuses: Type or Type.ref whose won records "
        "convert it (customers: `Deal`)",
    }

    def check(self, registry: Registry, report: Report) -> Iterator[Problem]:
        yield from _check_amount(registry, report)
        d = registry.documents.get(report.document)
        if d is None:
            return
        by = report.options.get("by")
        f = _field(d, str(by)) if isinstance(by, str) else None
        if f is None or f.type not in ("enum", "ref"):
            yield Problem(
                _loc(report, "by") if by is not None else report.loc,
                f"the report `{report.name}`, `by`: name an enum or ref field of {d.name}",
            )
        found = conversion(registry, report)
        if isinstance(found, str):
            yield Problem(
                _loc(report, "converts_to") if "converts_to" in report.options else report.loc,
                f"the report `{report.name}`: {found}",
            )
        if d.statuses is not None and "won" in report.options:
            yield from _check_state_lists(registry, report, ("won",), {"won": WON_OUTCOMES})

    def _frame(self, ctx: Context, report: Report, params: Params) -> Any:
        d = doctype(ctx, report)
        table = ctx.models.table(d.name)
        by = _option(report, params, "by")
        f = _field(d, str(by)) if by else None
        if f is None or f.type not in ("enum", "ref"):
            raise ReportError(f"`by` must be an enum or ref field of {d.name}")
        conv = conversion(ctx.registry, report)
        if isinstance(conv, str):
            raise ReportError(conv)
        if conv.target is None:
            assert d.statuses is not None
            won: Any = table.c[d.statuses.field].in_(conv.won)
        else:
            assert conv.target.statuses is not None and conv.link is not None
            other = ctx.models.table(conv.target.name)
            won = sa.exists().where(
                other.c[conv.link.column] == table.c.id,
                other.c[conv.target.statuses.field].in_(conv.won),
                ctx.readable(conv.target.name),
            )
        low, high = period(ctx, params)
        where = [
            table.c.created_at >= low,
            table.c.created_at < high,
            narrowing(ctx, report, params),
        ]
        return d, table, f, table.c[f.column], won, where

    def run(self, ctx: Context, report: Report, params: Params) -> Result:
        _d, table, f, key, won, where = self._frame(ctx, report, params)
        amount = _amount(ctx, report)
        money = amount if amount is not None else sa.literal(0)
        won_flag = sa.case((won, 1), else_=0)
        label: Any = sa.literal(None, sa.String)
        select_from: Any = table
        if f.type == "ref":
            target_doc = ctx.registry.documents[f.to or USER]
            target = ctx.models.table(target_doc.name).alias("source")
            shown = label_column(target_doc, target)
            if shown is not None:
                label = sa.func.min(shown)
                select_from = table.outerjoin(target, target.c.id == key)
        stmt = (
            sa.select(
                key.label("key"),
                label.label("shown"),
                sa.func.count().label("n"),
                sa.func.sum(money).label("amount"),
                sa.func.sum(won_flag).label("won"),
                sa.func.sum(sa.case((won, money), else_=0)).label("won_amount"),
            )
            .select_from(select_from)
            .where(*where)
            .group_by(key)
        )
        found = {r.key: r for r in ctx.session.execute(stmt)}
        keys: list[Any] = list(f.values) if f.type == "enum" else []
        keys += sorted((k for k in found if k not in keys and k is not None), key=str)
        if None in found:
            keys.append(None)
        total_n = sum(int(r.n) for r in found.values())
        columns = [
            Column("source", str(f.label.get(ctx.registry.locale) or f.name), "text"),
            Column("count", gettext("Count"), "count"),
            Column("share", gettext("Share"), "percent"),
            Column("amount", gettext("Amount"), "money"),
            Column("won", gettext("Converted"), "count"),
            Column("conversion", gettext("Conversion"), "percent"),
            Column("won_amount", gettext("Won amount"), "money"),
        ]
        if amount is None:
            columns = [c for c in columns if c.key not in ("amount", "won_amount")]
        result = Result(columns=columns, rows=[])
        totals = {"count": 0, "amount": 0.0, "won": 0, "won_amount": 0.0}
        for k in keys:
            r = found.get(k)
            if r is None and f.type != "enum":
                continue
            if k is None:
                text = gettext("Not given")
            elif f.type == "enum":
                text = f.values[k].get(ctx.registry.locale) if k in f.values else str(k)
            else:
                text = str(r.shown if r is not None and r.shown is not None else k)
            n, w = (int(r.n), int(r.won or 0)) if r is not None else (0, 0)
            row: dict[str, Any] = {
                "source": text,
                "count": n,
                "share": _rate(n, total_n),
                "won": w,
                "conversion": _rate(w, n),
            }
            if amount is not None:
                row["amount"] = _number(r.amount) if r is not None else 0.0
                row["won_amount"] = _number(r.won_amount) if r is not None else 0.0
            for key_name in totals:
                totals[key_name] += row.get(key_name, 0)
            index = len(result.rows)
            result.drill[(index, "count")] = _token(v=k)
            result.drill[(index, "won")] = _token(v=k, w=1)
            result.rows.append(row)
        result.total = {
            "source": gettext("Total"),
            "count": totals["count"],
            "share": 100.0 if totals["count"] else None,
            "won": totals["won"],
            "conversion": _rate(int(totals["won"]), int(totals["count"])),
        }
        if amount is not None:
            result.total["amount"] = round(totals["amount"], 2)
            result.total["won_amount"] = round(totals["won_amount"], 2)
        result.drill[(-1, "count")] = _token()
        result.drill[(-1, "won")] = _token(w=1)
        result.chart = Chart(
            "bar",
            [r["source"] for r in result.rows],
            [
                Series(gettext("Count"), [r["count"] for r in result.rows]),
                Series(gettext("Converted"), [r["won"] for r in result.rows]),
            ],
            "count",
            [result.drill[(i, "count")] for i in range(len(result.rows))],
        )
        return result

    def drill(
        self, ctx: Context, report: Report, params: Params, cell: str
    ) -> tuple[str, sa.Select[Any]]:
        parts = _parse(cell)
        _d, _table, f, key, won, where = self._frame(ctx, report, params)
        if "v" in parts:
            v = parts["v"]
            if f.type == "ref" and v is not None:
                v = int(v)
            where.append(key.is_(None) if v is None else key == v)
        if parts.get("w"):
            where.append(won)
        return _ids(ctx, report, where)


# -- table ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measure:
    op: str
    path: str | None  # None: count

    @property
    def key(self) -> str:
        return self.op if self.path is None else f"{self.op}_{self.path.replace('.', '_')}"


def measure(item: Any) -> Measure | str:
    """One item of ``measures``, or why it is not one: a message."""
    if item == "count":
        return Measure("count", None)
    if isinstance(item, Mapping) and len(item) == 1:
        op, path = next(iter(item.items()))
        if op not in MEASURES[1:] or not isinstance(path, str):
            return f"`{op}` is not one of {', '.join(MEASURES[1:])} of a field"
        return Measure(str(op), path)
    return f"`{item}`: write count or {{sum: FIELD}} (avg, min, max)"


def measures(report: Report) -> list[Measure] | str:
    """The report's ``measures`` (default ``[count]``), or the first reason they are not."""
    raw = report.options.get("measures", ["count"])
    if not isinstance(raw, list) or not raw:
        return "a list: count, {sum: FIELD}, {avg: FIELD}, {min: FIELD}, {max: FIELD}"
    out: list[Measure] = []
    for item in raw:
        found = measure(item)
        if isinstance(found, str):
            return found
        out.append(found)
    return out


def _path(registry: Registry, d: DocType, path: str) -> list[tuple[DocType, Field]] | str:
    """The types and fields along a dotted path, or why it does not resolve."""
    out: list[tuple[DocType, Field]] = []
    current = d
    parts = path.split(".")
    for i, part in enumerate(parts):
        f = current.fields.get(part)
        if f is None or not f.stored:
            return f"`{current.name}` has no field `{part}`"
        out.append((current, f))
        if i < len(parts) - 1:
            if f.type != "ref" or (f.to or USER) not in registry.documents:
                return f"`{current.name}.{part}` is not a reference"
            current = registry.documents[f.to or USER]
    return out


class _Joins:
    """Outer joins along dotted paths from the report's table (each ref once)."""

    def __init__(self, ctx: Context, table: sa.Table) -> None:
        self.ctx, self.base = ctx, table
        self.source: Any = table
        self.aliases: dict[str, Any] = {"": table}

    def column(self, chain: list[tuple[DocType, Field]]) -> tuple[Any, Field, Any]:
        """The column at the end of a path, its field, and the table it lies in."""
        prefix = ""
        current = self.base
        for _, f in chain[:-1]:
            name = f"{prefix}.{f.name}" if prefix else f.name
            if name not in self.aliases:
                target = self.ctx.models.table(f.to or USER).alias(f"j{len(self.aliases)}")
                self.source = self.source.outerjoin(target, target.c.id == current.c[f.column])
                self.aliases[name] = target
            current, prefix = self.aliases[name], name
        last = chain[-1][1]
        return current.c[last.column], last, current

    def target(self, key: str, f: Field, column: Any) -> Any:
        """The table a ref column points to (for its label), joined once."""
        name = f"@{key}"
        if name not in self.aliases:
            target = self.ctx.models.table(f.to or USER).alias(f"j{len(self.aliases)}")
            self.source = self.source.outerjoin(target, target.c.id == column)
            self.aliases[name] = target
        return self.aliases[name]


@kind
class Table(Kind):
    """A grouped table: rows per distinct value of the ``by`` fields (dotted
    paths through refs allowed), with the ``measures``; with ``date:`` the
    period narrows by that date (else every record counts)."""

    name = "table"
    options: ClassVar[Mapping[str, str]] = {
        "by": "a field or a list of fields to group by (dotted: manager.department)",
        "measures": "a list of count, {sum: FIELD}, {avg: FIELD}, {min: FIELD}, {max: FIELD} "
        "(default [count])",
        "date": "a date or datetime field the period narrows by (without it, all records)",
    }

    def check(self, registry: Registry, report: Report) -> Iterator[Problem]:
        d = registry.documents.get(report.document)
        if d is None:
            return
        by = report.options.get("by")
        names = [by] if isinstance(by, str) else by if isinstance(by, list) else []
        if not names:
            yield Problem(report.loc, f"the report `{report.name}`: say what to group by: "
                          "`by: FIELD` or `by: [FIELD, ...]`")  # fmt: skip
        for name in names:
            # reports_valid says where `by` does not resolve; a table field resolves but
            # holds rows, not a value to group by
            if _field_path_problem(registry, d, str(name)) is None:
                chain = _path(registry, d, str(name))
                if isinstance(chain, str):
                    yield Problem(_loc(report, "by", item=name),
                                  f"the report `{report.name}`, `by`: {chain}")  # fmt: skip
        raw = report.options.get("measures", ["count"])
        if not isinstance(raw, list) or not raw:
            yield Problem(_loc(report, "measures"),
                          f"the report `{report.name}`, `measures`: {measures(report)}")  # fmt: skip
            raw = []
        for item in raw:
            m = measure(item)
            where = _loc(report, "measures", item=item)
            if isinstance(m, str):
                yield Problem(where, f"the report `{report.name}`, `measures`: {m}")
                continue
            if m.path is None:
                continue
            chain = _path(registry, d, m.path)
            if isinstance(chain, str):
                yield Problem(where, f"the report `{report.name}`, `measures`: {chain}")
            elif chain[-1][1].type not in NUMERIC and m.op in ("sum", "avg"):
                yield Problem(
                    where, f"the report `{report.name}`, `measures`: `{m.path}` is not a number"
                )
        date = report.options.get("date")
        if date is not None and date not in SYSTEM_DATES:
            f = _field(d, str(date))
            # an unknown field: the engine's own check of `date` says so
            if f is not None and f.type not in ("date", "datetime"):
                yield Problem(_loc(report, "date"), f"the report `{report.name}`, `date`: "
                              f"{d.name} has no date field `{date}`")  # fmt: skip

    def _frame(self, ctx: Context, report: Report, params: Params) -> Any:
        d = doctype(ctx, report)
        table = ctx.models.table(d.name)
        by = _option(report, params, "by")
        if isinstance(by, str):
            by = [p.strip() for p in by.split(",") if p.strip()]
        if not by:
            raise ReportError("say what to group by")
        joins = _Joins(ctx, table)
        keys: list[tuple[str, Any, Field]] = []
        for path in by:
            chain = _path(ctx.registry, d, str(path))
            if isinstance(chain, str):
                raise ReportError(chain)
            column, f, _ = joins.column(chain)
            keys.append((str(path), column, f))
        where: list[Any] = [narrowing(ctx, report, params)]
        date = report.options.get("date")
        if date:
            column = _column(ctx, d, str(date))
            date_field = _field(d, str(date))
            if date_field is not None and date_field.type == "date":
                where += [column >= params.start, column <= params.end]
            else:
                low, high = period(ctx, params)
                where += [column >= low, column < high]
        return d, table, joins, keys, where

    def run(self, ctx: Context, report: Report, params: Params) -> Result:
        d, _table, joins, keys, where = self._frame(ctx, report, params)
        found_measures = measures(report)
        if isinstance(found_measures, str):
            raise ReportError(found_measures)
        values: list[Any] = []
        for m in found_measures:
            if m.path is None:
                values.append(sa.func.count().label(m.key))
                continue
            chain = _path(ctx.registry, d, m.path)
            if isinstance(chain, str):
                raise ReportError(chain)
            column, _, _ = joins.column(chain)
            values.append(getattr(sa.func, m.op)(column).label(m.key))
        shown: list[Any] = []
        for i, (path, column, f) in enumerate(keys):
            if f.type == "ref":
                target_doc = ctx.registry.documents[f.to or USER]
                label = label_column(target_doc, joins.target(path, f, column))
                shown.append(sa.func.min(label).label(f"shown{i}") if label is not None else None)
            else:
                shown.append(None)
        group = [column.label(f"key{i}") for i, (_, column, _) in enumerate(keys)]
        stmt = (
            sa.select(*group, *[s for s in shown if s is not None], *values)
            .select_from(joins.source)
            .where(*where)
            .group_by(*[column for _, column, _ in keys])
            .order_by(*[column for _, column, _ in keys])
        )
        columns = [
            Column(f"key{i}", _path_label(ctx, d, path), "text")
            for i, (path, _, _) in enumerate(keys)
        ]
        for m in found_measures:
            if m.path is None:
                columns.append(Column(m.key, gettext("Count"), "count"))
                continue
            chain = _path(ctx.registry, d, m.path)
            assert not isinstance(chain, str)
            f = chain[-1][1]
            fmt = (
                "money"
                if f.type == "money"
                else "date"
                if f.type in ("date", "datetime")
                else "number"
            )
            op = {"sum": gettext("Sum"), "avg": gettext("Average"), "min": gettext("Minimum"),
                  "max": gettext("Maximum")}[m.op]  # fmt: skip
            columns.append(Column(m.key, f"{op}: {_path_label(ctx, d, m.path)}", fmt))  # type: ignore[arg-type]
        result = Result(columns=columns, rows=[])
        count_key = next((m.key for m in found_measures if m.path is None), None)
        total_count = 0
        for found_row in ctx.session.execute(stmt):
            r = found_row._mapping
            row: dict[str, Any] = {}
            raw = []
            for i, (_, _, f) in enumerate(keys):
                value = r[f"key{i}"]
                raw.append(
                    value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else value
                )
                if value is None:
                    row[f"key{i}"] = gettext("Not given")
                elif f.type == "enum":
                    row[f"key{i}"] = (
                        f.values[value].get(ctx.registry.locale)
                        if value in f.values
                        else str(value)
                    )
                elif f.type == "ref" and shown[i] is not None:
                    row[f"key{i}"] = str(r[f"shown{i}"] if r[f"shown{i}"] is not None else value)
                elif f.type == "boolean":
                    row[f"key{i}"] = gettext("Yes") if value else gettext("No")
                else:
                    row[f"key{i}"] = value
            for m in found_measures:
                value = r[m.key]
                row[m.key] = (
                    int(value)
                    if m.path is None
                    else (_number(value) if isinstance(value, (int, float, Decimal)) else value)
                )
            if count_key is not None:
                total_count += row[count_key]
                result.drill[(len(result.rows), count_key)] = _token(k=raw)
            result.rows.append(row)
        if count_key is not None:
            result.total = {"key0": gettext("Total"), count_key: total_count}
            for m in found_measures:
                if m.op == "sum":
                    result.total[m.key] = round(sum(r[m.key] or 0 for r in result.rows), 2)
            result.drill[(-1, count_key)] = _token()
        if len(keys) == 1 and result.rows:
            first = found_measures[0]
            result.chart = Chart(
                "bar",
                [str(r["key0"]) for r in result.rows],
                [Series(columns[1].label, [r[first.key] for r in result.rows])],
                "count" if first.path is None else "number",
                [result.drill.get((i, count_key or "")) for i in range(len(result.rows))],
            )
        return result

    def drill(
        self, ctx: Context, report: Report, params: Params, cell: str
    ) -> tuple[str, sa.Select[Any]]:
        parts = _parse(cell)
        d, table, joins, keys, where = self._frame(ctx, report, params)
        raw = parts.get("k")
        if raw is not None:
            if not isinstance(raw, list) or len(raw) != len(keys):
                raise ReportError("this cell has no list")
            for value, (_, column, f) in zip(raw, keys, strict=True):
                if value is None:
                    where.append(column.is_(None))
                elif f.type == "date":
                    where.append(column == dt.date.fromisoformat(value))
                elif f.type == "datetime":
                    where.append(column == dt.datetime.fromisoformat(value))
                else:
                    where.append(column == value)
        return d.name, sa.select(table.c.id).select_from(joins.source).where(*where)


def _path_label(ctx: Context, d: DocType, path: str) -> str:
    chain = _path(ctx.registry, d, path)
    if isinstance(chain, str):
        return path
    return " / ".join(f.label.get(ctx.registry.locale) or f.name for _, f in chain)
