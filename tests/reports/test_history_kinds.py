"""Conversion, the funnel by manager and by department, time in stage and
plan/fact: their numbers equal an independent computation in Python over a
generated set of deals moved through their stages at known moments; a
manager counts only his own deals; the parameters narrow; every count cell's
drill-down lists exactly the records counted; on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from flask_appbuilder import Model
from flask_appbuilder.security.sqla.models import Role, User
from sqlalchemy.orm import Session

from engine import clock, migrate
from engine.access import Principal
from engine.configuration import load_configuration
from engine.errors import MetadataError
from engine.models import Models, build
from engine.registry import Report
from engine.reports import KINDS, Context, Params, Result, load_kinds

TZ = ZoneInfo("Europe/Moscow")
CONFIG = "name: Test sales\nlocale: en\ntimezone: Europe/Moscow\nlayers: [base]\n"
CHAIN = ["new", "qualification", "proposal", "contract", "won"]
OPEN = CHAIN[:-1]
RANK = {s: i for i, s in enumerate(CHAIN, 1)}
DEALS = 160


@dataclass
class Deal:
    id: int
    owner: int | None
    kind: str
    amount: Decimal
    moves: list[tuple[str, dt.datetime]]  # (state entered, when), in order


@dataclass
class World:
    models: Models
    engine: sa.Engine
    users: dict[str, int]
    departments: dict[str, int]
    deals: list[Deal]
    plans: list[dict[str, Any]]
    now: dt.datetime
    period: tuple[dt.date, dt.date]
    sessions: list[Session] = field(default_factory=list)

    def dept_of(self, uid: int | None) -> int | None:
        for name, dept in (("anna", "Sales"), ("head", "Sales"), ("boris", "Support")):
            if uid == self.users[name]:
                return self.departments[dept]
        return None


def utc(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), TZ).astimezone(dt.UTC)


def generate(rng: random.Random, now: dt.datetime, owners: list[int | None]) -> list[Deal]:
    """Deals created over the last 120 days, each moving forward (skipping a
    stage now and then, stepping back sometimes) until won, lost or now."""
    deals = []
    for i in range(1, DEALS + 1):
        at = now - dt.timedelta(days=120) + dt.timedelta(minutes=rng.randint(0, 118 * 24 * 60))
        moves = [("new", at)]
        state = "new"
        while True:
            at = at + dt.timedelta(minutes=rng.randint(60, 20 * 24 * 60))
            if at >= now:
                break
            roll = rng.random()
            if roll < 0.12:
                state = "lost"
            elif roll < 0.2 and RANK[state] > 1:
                state = CHAIN[RANK[state] - 2]  # back one stage
            else:
                state = CHAIN[min(RANK[state] + (2 if roll > 0.9 else 1), len(CHAIN)) - 1]
            moves.append((state, at))
            if state in ("won", "lost"):
                break
        deals.append(
            Deal(i, rng.choice(owners), rng.choice(["typical", "manual", "simple"]),
                 Decimal(rng.randint(1, 500) * 1000), moves)
        )  # fmt: skip
    return deals


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    (tmp_path / "config.yaml").write_text(CONFIG, encoding="utf-8")
    configuration = load_configuration(tmp_path, env={"CRM_DATABASE_URL": db_url})
    models = build(configuration.registry, dict(configuration.field_types))
    engine = sa.create_engine(db_url)
    Model.metadata.create_all(engine)
    migrate.apply(models, engine, migrate.plan(models, engine))
    # the company's clock: now, whatever day the tests run on (moved or not)
    now = clock.now().replace(microsecond=0)
    today = now.astimezone(TZ).date()
    users: dict[str, int] = {}
    departments: dict[str, int] = {}
    with engine.begin() as conn:
        for name in ("Sales", "Support"):
            departments[name] = conn.execute(
                models.table("Department").insert().values(name=name, version=1, created_at=now)
            ).inserted_primary_key[0]
        roles = {r: conn.execute(Role.__table__.insert().values(name=r).returning(Role.__table__.c.id)).scalar_one()
                 for r in ("manager", "sales_head")}  # fmt: skip
        for name, role, dept in (("anna", "manager", "Sales"), ("boris", "manager", "Support"),
                                 ("carl", "manager", None), ("head", "sales_head", "Sales")):  # fmt: skip
            uid = conn.execute(
                User.__table__.insert()
                .values(username=name, first_name=name.title(), last_name="", email=f"{name}@x.example",
                        active=True)
                .returning(User.__table__.c.id)
            ).scalar_one()  # fmt: skip
            people = models.table("User")  # the department is an attribute the migration added
            conn.execute(people.update().where(people.c.id == uid)
                         .values(department_id=departments[dept] if dept else None))  # fmt: skip
            conn.execute(
                Model.metadata.tables["ab_user_role"]
                .insert()
                .values(user_id=uid, role_id=roles[role])
            )
            users[name] = int(uid)
        customer = conn.execute(
            models.table("Customer").insert().values(name="ООО Ромашка", version=1, created_at=now)
        ).inserted_primary_key[0]
        owners = [users["anna"], users["boris"], users["carl"], users["head"], None]
        deals = generate(random.Random(14), now, owners)
        conn.execute(models.table("Deal").insert(), [
            {"id": d.id, "customer_id": customer, "manager_id": d.owner, "kind": d.kind, "amount": d.amount,
             "stage": d.moves[-1][0], "version": 1, "created_at": d.moves[0][1]}
            for d in deals
        ])  # fmt: skip
        history = models.metadata.tables[configuration.registry.documents["Deal"].history_table]
        conn.execute(history.insert(), [
            {"doc_id": d.id, "field": "stage", "from_state": d.moves[k - 1][0] if k else None,
             "to_state": state, "at": at}
            for d in deals for k, (state, at) in enumerate(d.moves)
        ])  # fmt: skip
        month = today.replace(day=1)
        end = (month + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
        before = (month - dt.timedelta(days=1)).replace(day=1)
        plans = [
            {"period_start": month, "period_end": end, "manager_id": users["anna"], "amount": Decimal(900_000), "count": 3},
            {"period_start": month, "period_end": end, "manager_id": users["boris"], "amount": Decimal(700_000), "count": 2},
            {"period_start": month, "period_end": end, "department_id": departments["Sales"], "amount": Decimal(2_000_000), "count": 6},
            {"period_start": before, "period_end": month - dt.timedelta(days=1), "manager_id": users["anna"],
             "amount": Decimal(800_000), "count": 4},
        ]  # fmt: skip
        for p in plans:
            p["id"] = conn.execute(
                models.table("SalesPlan").insert().values(version=1, created_at=now, **p)
            ).inserted_primary_key[0]
    w = World(models, engine, users, departments, deals, plans, now,
              (today - dt.timedelta(days=45), today))  # fmt: skip
    yield w
    for s in w.sessions:
        s.close()
    models.dispose()
    engine.dispose()


# -- running a report as someone ----------------------------------------------------------------


def principal(w: World, name: str) -> Principal:
    return Principal(
        w.users[name], name, frozenset({"sales_head" if name == "head" else "manager"})
    )


def report_of(w: World, name: str) -> Report:
    load_kinds()
    return w.models.registry.reports[name]  # type: ignore[no-any-return]


@dataclass
class Ran:
    result: Result
    ctx: Context
    report: Report
    params: Params

    def drill(self, token: str) -> list[int]:
        doctype, select = KINDS[self.report.type].drill(self.ctx, self.report, self.params, token)
        assert doctype == "Deal"
        return list(self.ctx.session.execute(select).scalars())


def run(w: World, name: str, who: str = "head", **narrow: Any) -> Ran:
    session = Session(w.engine)
    w.sessions.append(session)
    ctx = Context(w.models, session, principal(w, who), TZ, w.now)
    params = Params(*w.period, **narrow)
    r = report_of(w, name)
    return Ran(KINDS[r.type].run(ctx, r, params), ctx, r, params)


def assert_drills_match(ran: Ran) -> None:
    """Every drillable cell lists exactly as many distinct records as it shows."""
    assert ran.result.drill
    for (row, key), token in ran.result.drill.items():
        cells = ran.result.total if row == -1 else ran.result.rows[row]
        assert cells is not None
        ids = ran.drill(token)
        assert len(ids) == len(set(ids)) == cells[key], (row, key, token)


def visible(w: World, who: str = "head", manager: str | None = None, department: str | None = None,
            kind: str | None = None) -> list[Deal]:  # fmt: skip
    deals = w.deals
    if who != "head":
        deals = [d for d in deals if d.owner == w.users[who]]
    if manager:
        deals = [d for d in deals if d.owner == w.users[manager]]
    if department:
        deals = [
            d
            for d in deals
            if d.owner is not None and w.dept_of(d.owner) == w.departments[department]
        ]
    if kind:
        deals = [d for d in deals if d.kind == kind]
    return deals


def bounds(w: World) -> tuple[dt.datetime, dt.datetime]:
    return utc(w.period[0]), utc(w.period[1] + dt.timedelta(days=1))


# -- the independent computations ---------------------------------------------------------------


def conversion(
    w: World, deals: list[Deal]
) -> tuple[dict[str, tuple[int, int, int]], tuple[int, int]]:
    low, high = bounds(w)
    rows = {}
    for s in CHAIN:
        entered = went = won = 0
        for d in deals:
            hits = [k for k, (state, at) in enumerate(d.moves) if state == s and low <= at < high]
            if not hits:
                continue
            entered += 1
            later = [RANK.get(state, 0) for state, _ in d.moves[hits[0] + 1 :]]
            went += any(r > RANK[s] for r in later)
            won += "won" in [state for state, _ in d.moves[hits[0] + 1 :]]
        rows[s] = (entered, went, won)
    cohort = [d for d in deals if any(state in CHAIN and low <= at < high for state, at in d.moves)]
    won_overall = [d for d in cohort if d.moves[-1][0] == "won"]
    return rows, (len(cohort), len(won_overall))


def test_conversion_equals_the_independent_count(world: World) -> None:
    ran = run(world, "deal_conversion")
    expected, (cohort, won) = conversion(world, visible(world))
    got = {
        s: (r["entered"], r["went"], r["won"]) for s, r in zip(CHAIN, ran.result.rows, strict=True)
    }
    assert got == {s: v if s != "won" else (v[0], None, None) for s, v in expected.items()}
    assert [r["stage"] for r in ran.result.rows] == [
        "New",
        "Qualification",
        "Proposal",
        "Contract",
        "Won",
    ]
    assert ran.result.total is not None
    assert (ran.result.total["entered"], ran.result.total["won"]) == (cohort, won)
    first = ran.result.rows[0]
    assert first["went_pct"] == round(first["went"] * 100 / first["entered"], 1)
    assert sum(v[0] for v in expected.values()) > 50  # the data set exercises the report
    assert_drills_match(ran)


def test_a_manager_converts_only_his_own_deals_and_parameters_narrow(world: World) -> None:
    for who, narrow, deals in (
        ("anna", {}, visible(world, "anna")),
        ("head", {"manager": world.users["boris"]}, visible(world, manager="boris")),
        ("head", {"department": world.departments["Sales"]}, visible(world, department="Sales")),
        ("head", {"kind": "simple"}, visible(world, kind="simple")),
    ):
        ran = run(world, "deal_conversion", who, **narrow)
        expected, overall = conversion(world, deals)
        assert [r["entered"] for r in ran.result.rows] == [expected[s][0] for s in CHAIN], (
            who,
            narrow,
        )
        assert ran.result.total is not None
        assert (ran.result.total["entered"], ran.result.total["won"]) == overall
        assert_drills_match(ran)


def compared(w: World, deals: list[Deal], key: Any) -> dict[Any, dict[str, Any]]:
    low, high = bounds(w)
    groups: dict[Any, dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    for d in deals:
        entered = {state for state, at in d.moves if low <= at < high}
        g = groups[key(d)]
        for s in CHAIN:
            g[f"stage:{s}"] += s in entered
        g["lost"] += "lost" in entered
        g["won_amount"] += d.amount if "won" in entered else 0
    return {
        k: dict(v) for k, v in groups.items() if any(v[f"stage:{s}"] or v["lost"] for s in CHAIN)
    }


def test_by_manager_and_by_department_side_by_side(world: World) -> None:
    w = world
    names = {w.users[n]: n.title() for n in ("anna", "boris", "carl", "head")}
    ran = run(w, "deals_by_manager")
    expected = compared(w, visible(w), lambda d: names.get(d.owner, "(no manager)"))
    got = {
        r["name"]: {k: v for k, v in r.items() if k not in ("name", "win_rate")}
        for r in ran.result.rows
    }
    assert got == expected
    assert [r["name"] for r in ran.result.rows][-1] == "(no manager)"
    for r in ran.result.rows:
        won, lost = r["stage:won"], r["lost"]
        assert r["win_rate"] == (round(won * 100 / (won + lost), 1) if won + lost else None)
    assert ran.result.total is not None and ran.result.total["stage:new"] == sum(
        r["stage:new"] for r in ran.result.rows
    )
    assert ran.result.chart is not None and ran.result.chart.kind == "bar"
    assert len(ran.result.chart.series) == len(CHAIN)
    assert_drills_match(ran)

    depts = {w.departments["Sales"]: "Sales", w.departments["Support"]: "Support"}
    ran = run(w, "deals_by_department")
    expected = compared(w, visible(w), lambda d: depts.get(w.dept_of(d.owner), "(no department)"))  # type: ignore[arg-type]
    got = {
        r["name"]: {k: v for k, v in r.items() if k not in ("name", "win_rate")}
        for r in ran.result.rows
    }
    assert got == expected
    assert set(got) == {"Sales", "Support", "(no department)"}
    assert_drills_match(ran)

    # a manager sees one row: his own
    ran = run(w, "deals_by_manager", "boris")
    assert [r["name"] for r in ran.result.rows] == ["Boris"]
    assert_drills_match(ran)


def stage_time(
    w: World, deals: list[Deal]
) -> dict[str, tuple[int, float | None, int, float | None]]:
    low, high = bounds(w)
    until = min(w.now, high)
    stays: dict[str, list[float]] = defaultdict(list)
    left: dict[str, set[int]] = defaultdict(set)
    open_days: dict[str, list[float]] = defaultdict(list)
    still: dict[str, set[int]] = defaultdict(set)
    for d in deals:
        moves = [(s, at) for s, at in d.moves if at < high]
        for k, (s, at) in enumerate(moves):
            if s not in OPEN:
                continue
            if k + 1 < len(moves):
                end = moves[k + 1][1]
                if end >= low:
                    stays[s].append((end - at).total_seconds() / 86400)
                    left[s].add(d.id)
            elif at < until:
                open_days[s].append((until - at).total_seconds() / 86400)
                still[s].add(d.id)

    def avg(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    return {s: (len(left[s]), avg(stays[s]), len(still[s]), avg(open_days[s])) for s in OPEN}


def test_time_in_stage_ended_stays_and_open_ones_apart(world: World) -> None:
    for who, narrow, deals in (
        ("head", {}, visible(world)),
        ("carl", {}, visible(world, "carl")),
        (
            "head",
            {"department": world.departments["Support"]},
            visible(world, department="Support"),
        ),
    ):
        ran = run(world, "deal_stage_time", who, **narrow)
        expected = stage_time(world, deals)
        assert [r["stage"] for r in ran.result.rows] == [
            "New",
            "Qualification",
            "Proposal",
            "Contract",
        ]
        for s, r in zip(OPEN, ran.result.rows, strict=True):
            n, days, still, so_far = expected[s]
            assert (r["left"], r["open"]) == (n, still), s
            assert r["days"] == (pytest.approx(days, abs=0.006) if days is not None else None)
            assert r["open_days"] == (
                pytest.approx(so_far, abs=0.006) if so_far is not None else None
            )
        assert_drills_match(ran)
    assert sum(expected[s][0] for s in OPEN) > 5


def test_time_in_stage_of_a_past_period_counts_open_stays_to_its_end(world: World) -> None:
    """A period that ended before now: a stay still open then is counted to the period's end."""
    w = world
    start = w.period[0] - dt.timedelta(days=40)
    end = w.period[0] - dt.timedelta(days=10)
    w.period = (start, end)
    ran = run(w, "deal_stage_time")
    expected = stage_time(w, visible(w))
    for s, r in zip(OPEN, ran.result.rows, strict=True):
        assert (r["left"], r["open"]) == expected[s][::2]
    assert_drills_match(ran)


def plan_facts(w: World, deals: list[Deal]) -> dict[int, tuple[int, Decimal]]:
    out = {}
    for p in w.plans:
        low, high = utc(p["period_start"]), utc(p["period_end"] + dt.timedelta(days=1))
        won = [
            d for d in deals
            if any(s == "won" and low <= at < high for s, at in d.moves)
            and d.owner is not None
            and (d.owner == p.get("manager_id") if p.get("manager_id") else w.dept_of(d.owner) == p["department_id"])
        ]  # fmt: skip
        out[p["id"]] = (len(won), sum((d.amount for d in won), Decimal(0)))
    return out


def test_plan_and_fact_with_the_forecast(world: World) -> None:
    w = world
    today = w.now.astimezone(TZ).date()
    w.period = (today.replace(day=1), today)  # this month: the three current plans
    ran = run(w, "sales_plan")
    facts = plan_facts(w, visible(w))
    current = [p for p in w.plans if p["period_start"] == today.replace(day=1)]
    assert len(ran.result.rows) == len(current) == 3
    # the managers' plans first (by name), then the department's
    assert [(r["manager"], r["department"]) for r in ran.result.rows] == [
        ("Anna", ""), ("Boris", ""), ("", "Sales"),
    ]  # fmt: skip
    for r, p in zip(ran.result.rows, current, strict=True):
        n, amount = facts[p["id"]]
        assert (r["count"], r["fact"], r["plan"]) == (n, amount, p["amount"])
        days = (p["period_end"] - p["period_start"]).days + 1
        elapsed = (today - p["period_start"]).days + 1
        assert r["forecast"] == round(amount * days / elapsed, 2)
        assert r["done"] == round(float(amount) * 100 / float(p["amount"]), 1)
    assert sum(facts[p["id"]][0] for p in current) > 0
    # the totals row adds up the managers' plans
    assert ran.result.total is not None
    assert ran.result.total["plan"] == Decimal(1_600_000)
    assert ran.result.total["count"] == facts[current[0]["id"]][0] + facts[current[1]["id"]][0]
    assert_drills_match(ran)

    # both months: last month's plan is done, its forecast is its fact
    w.period = (w.plans[3]["period_start"], today)
    ran = run(w, "sales_plan")
    assert len(ran.result.rows) == 4
    last = ran.result.rows[0]
    assert (last["count"], last["fact"]) == facts[w.plans[3]["id"]]
    assert last["forecast"] == last["fact"]
    assert_drills_match(ran)

    # a manager sees every plan but counts only his own deals
    ran = run(w, "sales_plan", "anna")
    mine = plan_facts(w, visible(w, "anna"))
    assert [r["count"] for r in ran.result.rows] == [
        mine[p["id"]][0] for p in w.plans[3:] + w.plans[:3]
    ]
    assert ran.result.rows[2]["count"] == 0  # Boris's plan: none of Anna's deals
    assert_drills_match(ran)

    # narrowed to a manager: his plans only
    ran = run(w, "sales_plan", manager=w.users["boris"])
    assert [r["manager"] for r in ran.result.rows] == ["Boris"]
    assert_drills_match(ran)


def test_the_checks_point_at_the_option(make_config: Any) -> None:
    from engine.loader import load

    folder = make_config(
        {"r.yaml": """\
            reports:
              bad_conversion: {type: conversion, document: Deal, stages: [new, nowhere]}
              bad_won: {type: by_manager, document: Deal, won: proposal, amount: customer}
              bad_plan: {type: plan_fact, document: Deal, plan: Customer}
            """},
        config=CONFIG,
    )  # fmt: skip
    with pytest.raises(MetadataError) as caught:  # crm check runs each kind's own check
        load(folder, env={})
    problems = [p.replace(str(folder) + "/", "") for p in str(caught.value).splitlines()]
    assert problems[0].startswith("r.yaml:2:") and "has no state `nowhere`" in problems[0]
    assert any(
        p.startswith("r.yaml:3:") and "`proposal` is not a final state" in p for p in problems
    )
    assert any(p.startswith("r.yaml:3:") and "`amount`: `customer` must be a stored number" in p
               for p in problems)  # fmt: skip
    assert any(p.startswith("r.yaml:4:") and "`plan_start`: Customer has no stored date field" in p
               for p in problems)  # fmt: skip
    # the base layer's own reports are fine
    base = load(make_config(config=CONFIG), env={})
    for r in base.reports.values():
        if r.type in ("conversion", "by_manager", "by_department", "stage_time", "plan_fact"):
            assert list(KINDS[r.type].check(base, r)) == [], r.name
