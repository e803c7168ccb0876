"""The deal report kinds (forecast, won_lost, loss_reasons, stale, sources,
table) on a generated data set: every figure equals the same figure
computed here in Python from the generated rows, a manager's report counts
only their own records, and every drillable cell lists exactly the records
it counts."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from bench import reports_deals as rd
from engine import clock
from engine.access import Principal
from engine.errors import MetadataError
from engine.loader import load
from engine.models import Models
from engine.reports import Context, Params, ReportError, Result, load_kinds
from engine.reports.deals import buckets

KINDS = load_kinds()
TZ = rd.TZ
OPEN = set(rd.OPEN)


class World:
    def __init__(self, models: Models, session: Session, data: rd.World) -> None:
        self.models, self.session, self.data = models, session, data
        self.head = Principal(data.users[-1], "head", frozenset({"sales_head"}))
        # the busiest manager: owners are skewed towards the first users
        self.rep = Principal(data.users[0], "rep", frozenset({"manager"}))
        today = data.now.astimezone(TZ).date()
        self.params = Params(start=(today - dt.timedelta(days=120)).replace(day=1), end=today)

    def ctx(self, principal: Principal | None) -> Context:
        return rd.context(self.models, self.session, principal, self.data.now)

    def run(self, name: str, principal: Principal | None, params: Params | None = None) -> Result:
        report = self.models.registry.reports[name]
        return KINDS[report.type].run(self.ctx(principal), report, params or self.params)

    def drill(
        self, name: str, principal: Principal | None, cell: str, params: Params | None = None
    ) -> set[int]:
        report = self.models.registry.reports[name]
        doctype, select = KINDS[report.type].drill(
            self.ctx(principal), report, params or self.params, cell
        )
        assert doctype == report.document
        ids = list(self.session.execute(select).scalars())
        assert len(ids) == len(set(ids))
        return set(ids)

    # the oracle's view of the data
    def deals(self, principal: Principal) -> list[dict[str, Any]]:
        mine = principal.user_id if "manager" in principal.roles else None
        return [d for d in self.data.deals if mine is None or d["manager_id"] == mine]

    def closed(
        self, principal: Principal, states: set[str]
    ) -> list[tuple[dict[str, Any], dt.datetime]]:
        """Deals now in ``states`` whose last history entry (into that state) lies in the period."""
        last: dict[int, dict[str, Any]] = {}
        for h in self.data.history:
            seen = last.get(h["doc_id"])
            if seen is None or (h["at"], h["id"]) > (seen["at"], seen["id"]):
                last[h["doc_id"]] = h
        low = dt.datetime.combine(self.params.start, dt.time(), TZ)
        high = dt.datetime.combine(self.params.end + dt.timedelta(days=1), dt.time(), TZ)
        out = []
        for d in self.deals(principal):
            h = last[d["id"]]
            if d["stage"] in states and h["to_state"] == d["stage"] and low <= h["at"] < high:
                out.append((d, h["at"]))
        return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pg_url: str | None) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("deal-kinds")
    models = rd.models_for(folder / "config")
    if pg_url:
        from tests.conftest import _reset_postgres

        _reset_postgres(pg_url)
        url = pg_url
    else:
        url = f"sqlite:///{folder / 'deals.db'}"
    engine = sa.create_engine(url)
    now = clock.now()
    data = rd.fill(models, engine, 1500, now, seed=7, keep=True)
    session = Session(engine)
    yield World(models, session, data)
    session.close()
    models.dispose()
    engine.dispose()


def _money(values: Any) -> float:
    return round(sum(float(v or 0) for v in values), 2)


def _every_cell_drills_to_its_count(
    w: World, name: str, principal: Principal, result: Result
) -> None:
    for (index, key), token in result.drill.items():
        row = result.total if index == -1 else result.rows[index]
        assert row is not None
        ids = w.drill(name, principal, token)
        assert len(ids) == row[key], (name, index, key)
        if "manager" in principal.roles:
            owners = {d["manager_id"] for d in w.data.deals if d["id"] in ids}
            if w.models.registry.reports[name].document == "Deal":
                assert owners <= {principal.user_id}


# -- forecast ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["head", "rep"])
def test_the_forecast_weighs_each_open_deal_by_its_probability_per_month_of_planned_close(
    world: World, who: str
) -> None:
    principal = getattr(world, who)
    result = world.run("deal_forecast", principal)
    cuts = buckets(world.params, "month")
    expected: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for d in world.deals(principal):
        if d["stage"] not in OPEN:
            continue
        close = d["planned_close"]
        if close is None:
            expected[("No date", d["stage"])].append(d)
        elif world.params.start <= close <= world.params.end:
            month = next(c.label for c in cuts if c.first <= close < c.after)
            expected[(month, d["stage"])].append(d)
    got = {(r["month"], r["stage"].lower()): r for r in result.rows}
    assert set(got) == set(expected)
    for key, deals in expected.items():
        row = got[key]
        assert row["count"] == len(deals)
        assert row["amount"] == pytest.approx(_money(d["amount"] for d in deals), abs=0.05)
        weighted = sum(float(d["amount"] or 0) * (d["probability"] or 0) / 100 for d in deals)
        assert row["weighted"] == pytest.approx(weighted, abs=0.05)
    assert result.total is not None
    assert result.total["count"] == sum(len(v) for v in expected.values())
    _every_cell_drills_to_its_count(world, "deal_forecast", principal, result)
    assert result.chart is not None and result.chart.labels[-1] == "No date"


def test_a_stage_probability_map_wins_over_the_deals_own_probability(world: World) -> None:
    result = world.run("forecast_map", world.head)
    policy = {"new": 5, "qualification": 20, "proposal": 50}
    by_stage: dict[str, float] = defaultdict(float)
    for d in world.data.deals:
        if d["stage"] in OPEN:
            percent = policy.get(d["stage"], d["probability"] or 0)
            by_stage[d["stage"]] += float(d["amount"] or 0) * percent / 100
    got = {r["stage"].lower(): r for r in result.rows}
    assert set(got) == set(by_stage)
    for stage, weighted in by_stage.items():
        assert got[stage]["weighted"] == pytest.approx(weighted, abs=0.05)
    assert got["new"]["probability"] == 5.0
    _every_cell_drills_to_its_count(world, "forecast_map", world.head, result)


# -- won and lost -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "group"), [("deals_won_lost", "month"), ("won_lost_week", "week")]
)
@pytest.mark.parametrize("who", ["head", "rep"])
def test_won_and_lost_per_period_by_when_the_deal_was_closed(
    world: World, who: str, name: str, group: str
) -> None:
    principal = getattr(world, who)
    result = world.run(name, principal)
    cuts = buckets(world.params, group)
    counts: Counter[tuple[int, str]] = Counter()
    amounts: dict[tuple[int, str], float] = defaultdict(float)
    for d, at in world.closed(principal, {"won", "lost"}):
        day = at.astimezone(TZ).date()
        index = next(i for i, c in enumerate(cuts) if c.first <= day < c.after)
        counts[(index, d["stage"])] += 1
        amounts[(index, d["stage"])] += float(d["amount"] or 0)
    assert [r["period"] for r in result.rows] == [c.label for c in cuts]
    for i, row in enumerate(result.rows):
        assert row["won"] == counts[(i, "won")]
        assert row["lost"] == counts[(i, "lost")]
        assert row["won_amount"] == pytest.approx(amounts[(i, "won")], abs=0.05)
        whole = counts[(i, "won")] + counts[(i, "lost")]
        assert row["win_rate"] == (round(100 * counts[(i, "won")] / whole, 1) if whole else None)
    assert result.total is not None
    assert result.total["won"] + result.total["lost"] == sum(counts.values()) > 0
    _every_cell_drills_to_its_count(world, name, principal, result)


def test_a_request_regroups_won_and_lost_by_quarter(world: World) -> None:
    params = Params(world.params.start, world.params.end, extra={"group": "quarter"})
    result = world.run("deals_won_lost", world.head, params)
    assert all(" Q" in r["period"] for r in result.rows)
    by_month = world.run("deals_won_lost", world.head)
    assert result.total is not None and by_month.total is not None
    assert (result.total["won"], result.total["lost"]) == (
        by_month.total["won"],
        by_month.total["lost"],
    )
    with pytest.raises(ReportError):
        world.run("deals_won_lost", world.head, Params(world.params.start, world.params.end,
                                                        extra={"group": "fortnight"}))  # fmt: skip


# -- loss reasons -----------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["head", "rep"])
def test_loss_reasons_group_the_lost_deals_by_their_normalized_reason(
    world: World, who: str
) -> None:
    principal = getattr(world, who)
    result = world.run("deal_loss_reasons", principal)
    lost = world.closed(principal, {"lost"})
    expected = Counter((d["loss_reason"] or "").strip(" ").casefold() for d, _ in lost)
    got = {
        r["reason"].strip().casefold() if r["reason"] != "Not given" else "": r["count"]
        for r in result.rows
    }
    assert got == dict(expected)
    # "Дорого", " дорого " and "ДОРОГО" are one reason
    assert sum(1 for r in result.rows if r["reason"].casefold() == "дорого") == (
        1 if expected["дорого"] else 0
    )
    assert result.total is not None and result.total["count"] == len(lost)
    assert sum(r["share"] for r in result.rows) == pytest.approx(100, abs=0.5)
    _every_cell_drills_to_its_count(world, "deal_loss_reasons", principal, result)


# -- stale ------------------------------------------------------------------------------------------


def _stale(w: World, principal: Principal, days: int) -> dict[int, dt.datetime]:
    cutoff = w.data.now - dt.timedelta(days=days)
    last_change: dict[int, dt.datetime] = {}
    for h in w.data.history:
        last_change[h["doc_id"]] = max(last_change.get(h["doc_id"], h["at"]), h["at"])
    contact: dict[int, dt.datetime] = {}
    for i in w.data.interactions:
        c = i["customer_id"]
        contact[c] = max(contact.get(c, i["planned_at"]), i["planned_at"])
    out = {}
    for d in w.deals(principal):
        last = max(
            d["updated_at"], last_change[d["id"]], contact.get(d["customer_id"], d["updated_at"])
        )
        if d["stage"] in OPEN and last < cutoff:
            out[d["id"]] = last
    return out


@pytest.mark.parametrize("who", ["head", "rep"])
@pytest.mark.parametrize("days", [None, 45])
def test_stale_deals_have_no_change_and_no_interaction_for_n_days(
    world: World, who: str, days: int | None
) -> None:
    principal = getattr(world, who)
    params = (
        world.params
        if days is None
        else Params(world.params.start, world.params.end, extra={"days": str(days)})
    )
    result = world.run("stale_deals", principal, params)
    expected = _stale(world, principal, days or 14)
    assert expected
    assert {r["id"] for r in result.rows} == set(expected)
    for row in result.rows:
        assert row["days"] == (world.data.now - expected[row["id"]]).days
    idle = [r["days"] for r in result.rows]
    assert idle == sorted(idle, reverse=True)  # the longest idle first
    assert result.total == {"record": len(expected)}
    owners = Counter(d["manager_id"] for d in world.data.deals if d["id"] in expected)
    assert result.chart is not None
    assert sorted(result.chart.series[0].values, reverse=True) == sorted(
        owners.values(), reverse=True
    )
    for token, n in zip(result.chart.links, result.chart.series[0].values, strict=True):
        assert token is not None
        ids = world.drill("stale_deals", principal, token, params)
        assert len(ids) == n and ids <= set(expected)
    assert world.drill("stale_deals", principal, result.drill[(-1, "record")], params) == set(
        expected
    )


def test_the_stale_list_is_cut_but_counts_every_owner(world: World) -> None:
    params = Params(world.params.start, world.params.end, extra={"limit": "3"})
    result = world.run("stale_deals", world.head, params)
    everything = _stale(world, world.head, 14)
    assert len(result.rows) == 3 and result.total == {"record": len(everything)}
    assert result.chart is not None and sum(result.chart.series[0].values) == len(everything)  # type: ignore[arg-type]
    assert result.notes


# -- sources ----------------------------------------------------------------------------------------


def _created_in_period(w: World, row: dict[str, Any]) -> bool:
    low = dt.datetime.combine(w.params.start, dt.time(), TZ)
    high = dt.datetime.combine(w.params.end + dt.timedelta(days=1), dt.time(), TZ)
    return bool(low <= row["created_at"] < high)


@pytest.mark.parametrize("who", ["head", "rep"])
def test_deal_sources_with_the_share_won(world: World, who: str) -> None:
    principal = getattr(world, who)
    result = world.run("deal_sources", principal)
    deals = [d for d in world.deals(principal) if _created_in_period(world, d)]
    field = world.models.registry.documents["Deal"].fields["source"]
    label = {k: v.get("en") for k, v in field.values.items()}
    got = {r["source"]: (r["count"], r["won"]) for r in result.rows}
    for key in rd.SOURCES:
        mine = [d for d in deals if d["source"] == key]
        assert got[label[key]] == (len(mine), sum(d["stage"] == "won" for d in mine))
    none = [d for d in deals if d["source"] is None]
    if none:
        assert got["Not given"] == (len(none), sum(d["stage"] == "won" for d in none))
    _every_cell_drills_to_its_count(world, "deal_sources", principal, result)


@pytest.mark.parametrize("who", ["head", "rep"])
def test_customer_sources_convert_by_a_won_deal_the_reader_may_read(world: World, who: str) -> None:
    principal = getattr(world, who)
    result = world.run("customer_sources", principal)
    mine = principal.user_id if who == "rep" else None
    customers = [
        c for c in world.data.customers
        if _created_in_period(world, c) and (mine is None or c["manager_id"] == mine)
    ]  # fmt: skip
    won = {d["customer_id"] for d in world.deals(principal) if d["stage"] == "won"}
    assert result.total is not None
    assert result.total["count"] == len(customers)
    assert result.total["won"] == sum(c["id"] in won for c in customers)
    assert result.total["conversion"] == round(100 * result.total["won"] / len(customers), 1)
    _every_cell_drills_to_its_count(world, "customer_sources", principal, result)


# -- table ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["head", "rep"])
def test_a_grouped_table_by_a_dotted_field_with_measures(world: World, who: str) -> None:
    principal = getattr(world, who)
    result = world.run("deals_table", principal)
    groups: dict[tuple[Any, Any], list[dict[str, Any]]] = defaultdict(list)
    for d in world.deals(principal):
        if _created_in_period(world, d):
            groups[(world.data.departments[d["manager_id"]], d["source"])].append(d)
    assert len(result.rows) == len(groups)
    assert result.total is not None and result.total["count"] == sum(
        len(g) for g in groups.values()
    )
    assert sorted(r["count"] for r in result.rows) == sorted(len(g) for g in groups.values())
    assert result.total["sum_amount"] == pytest.approx(
        _money(d["amount"] for g in groups.values() for d in g), abs=0.5
    )
    departments = {r["key0"] for r in result.rows}
    assert departments <= {f"Отдел {i}" for i in range(1, rd.DEPARTMENTS + 1)} | {"Not given"}
    _every_cell_drills_to_its_count(world, "deals_table", principal, result)


# -- checks -----------------------------------------------------------------------------------------


def test_the_base_and_example_reports_pass_their_kinds_checks() -> None:
    root = Path(__file__).resolve().parents[2]
    for config in ("wholesale", "services"):
        registry = load(root / "configs" / config, env={})
        for report in registry.reports.values():
            kind = KINDS.get(report.type)
            if kind is not None and report.type in {
                "forecast",
                "won_lost",
                "loss_reasons",
                "stale",
                "sources",
                "table",
            }:
                assert list(kind.check(registry, report)) == [], report.name
    assert "table" in {
        r.type for r in load(root / "configs" / "wholesale", env={}).reports.values()
    }


BAD = """
reports:
  f1: {type: forecast, document: Deal, amount: amount, probabilities: {won: 50, new: 140}}
  w1: {type: won_lost, document: Deal, group: fortnight, won: [proposal]}
  l1: {type: loss_reasons, document: Deal, reason: amount}
  s1: {type: stale, document: Deal, days: 0, activity: Interaction.subject}
  c1: {type: sources, document: Customer, by: name}
  t1: {type: table, document: Deal, by: source, measures: [count, {sum: source}, {median: amount}]}
"""


def test_bad_options_are_refused_where_they_are_written(make_config: Any) -> None:
    folder = make_config({"bad.yaml": BAD}, config="name: X\nlocale: en\nlayers: [base]\n")
    with pytest.raises(MetadataError) as caught:  # crm check runs each kind's own check
        load(folder, env={})
    lines = str(caught.value).splitlines()
    problems = {
        name: [p for p in lines if f"the report `{name}`" in p]
        for name in ("f1", "w1", "l1", "s1", "c1", "t1")
    }
    assert any("`won` is not an open state" in p for p in problems["f1"])
    assert any("`new` takes a percent" in p for p in problems["f1"])
    assert any("bad.yaml:3:" in p for p in problems["f1"])
    assert any("fortnight" in p for p in problems["w1"]) and any(
        "`proposal` is not a final" in p for p in problems["w1"]
    )
    assert any("no text or enum field `amount`" in p for p in problems["l1"])
    assert any("`days` must be" in p for p in problems["s1"]) and any(
        "no ref `subject`" in p for p in problems["s1"]
    )
    assert any("enum or ref field" in p for p in problems["c1"]) and any(
        "converts_to" in p for p in problems["c1"]
    )
    assert any("`source` is not a number" in p for p in problems["t1"]) and any(
        "median" in p for p in problems["t1"]
    )
    assert all(":" in p.split(" ")[0] for ps in problems.values() for p in ps)
