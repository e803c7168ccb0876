"""The deal funnel report against hand-written SQL, in one run.

``python -m bench --reports-funnel [--quick] [--rows N] [--db URL] [--plans]``:
N deals of ``configs/demo`` (1 M; 20 k with ``--quick``) over two years,
each with its status history (created in New, moved on stage by stage,
sometimes past a stage, a share of them lost), 40 managers. Each scenario is
timed two ways, interleaved and warm, keeping medians:

- *report*: the whole ``Funnel.run`` (narrowing, statement, rows, the table
  and chart added up) in an open session, as a request makes it;
- *hand SQL*: the same question written by hand as one literal statement,
  through the DB-API driver.

*ratio* = report / hand SQL; the target is ≤ 2 at 1 M deals. Before any
timing the report and the hand-written query must agree on every figure,
and the report must send exactly one statement.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bench.generate import BATCH, NOW, Generator
from bench.suite import database_name, driver_sql, explain, fresh_database, medians, raw_fetch
from engine.access import Principal
from engine.loader import load
from engine.models import Models, build
from engine.reports import Context, Params, load_kinds

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "demo"
SCHEMA = "crm_bench_funnel"
ROWS = 1_000_000
QUICK_ROWS = 20_000
USERS = 40
SPAN = dt.timedelta(days=2 * 365)
TARGET = 2.0
TARGET_ROWS = 1_000_000
STEPS = ["new", "qualification", "proposal", "contract", "won"]
HEAD_ROLE, MANAGER_ROLE = "sales_head", "manager"


@dataclass(frozen=True)
class Scenario:
    name: str
    start: dt.date
    end: dt.date
    own: bool = False


SCENARIOS = (
    Scenario("Dec 2025, a head", dt.date(2025, 12, 1), dt.date(2025, 12, 31)),
    Scenario("Q4 2025, a head", dt.date(2025, 10, 1), dt.date(2025, 12, 31)),
    Scenario("year 2025, a head", dt.date(2025, 1, 1), dt.date(2025, 12, 31)),
    Scenario("year 2025, a manager", dt.date(2025, 1, 1), dt.date(2025, 12, 31), own=True),
)


@dataclass
class Figures:
    scenario: str
    report: float
    hand_sql: float
    deals: int
    statements: int
    reps: int

    @property
    def ratio(self) -> float:
        return self.report / self.hand_sql


@dataclass
class Results:
    database: str
    rows: int
    history: int
    load_seconds: float
    figures: list[Figures] = field(default_factory=list)
    plans: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class People:
    head: Principal
    manager: Principal


def fill(models: Models, engine: sa.Engine, rows: int, seed: int = 1) -> tuple[People, int]:
    """Users, ``rows`` deals and their status history, by Core bulk inserts;
    the indexes are built after the rows are in."""
    models.metadata.drop_all(engine)
    models.metadata.create_all(engine)
    deals = models.table("Deal")
    hist = models.metadata.tables[models.registry.documents["Deal"].history_table]
    rng = random.Random(seed)
    start = NOW - SPAN
    seconds = SPAN.total_seconds()
    history = 0
    with engine.begin() as conn:
        for ix in [*deals.indexes, *hist.indexes]:
            ix.drop(conn)
        users = Generator(models, seed=seed).users(conn, USERS, prefix="staff")
        hist_id = 0
        for first in range(0, rows, BATCH):
            batch, moves = [], []
            for k in range(first, min(rows, first + BATCH)):
                created = start + dt.timedelta(seconds=seconds * (k + rng.random()) / rows)
                who = users[int(len(users) * rng.random() ** 1.3)]
                at, path = created, [("new", created)]
                for s in STEPS[1 : rng.choice((0, 0, 1, 1, 2, 3, 4)) + 1]:
                    if s != "won" and rng.random() < 0.15:
                        continue
                    at += dt.timedelta(hours=rng.uniform(4, 24 * 20))
                    path.append((s, at))
                if path[-1][0] != "won" and rng.random() < 0.4:
                    at += dt.timedelta(hours=rng.uniform(4, 24 * 20))
                    path.append(("lost", at))
                path = [p for p in path if p[1] < NOW]
                batch.append({
                    "id": k + 1, "version": 1, "created_at": created, "number": f"D-{k + 1:07d}",
                    "stage": path[-1][0], "kind": rng.choice(("typical", "manual", "simple")),
                    "amount": Decimal(rng.choice((0, 5, 12, 40, 150)) * 1000), "manager_id": who,
                })  # fmt: skip
                for i, (s, moment) in enumerate(path):
                    hist_id += 1
                    moves.append({
                        "id": hist_id, "doc_id": k + 1, "field": "stage",
                        "from_state": path[i - 1][0] if i else None, "to_state": s,
                        "at": moment, "by_id": who,
                    })  # fmt: skip
            conn.execute(deals.insert(), batch)
            conn.execute(hist.insert(), moves)
            history += len(moves)
        for ix in [*deals.indexes, *hist.indexes]:
            ix.create(conn)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE")
    return People(
        Principal(users[1], "staff.002", frozenset({HEAD_ROLE})),
        Principal(users[0], "staff.001", frozenset({MANAGER_ROLE})),
    ), history


def _literal(engine: sa.Engine, moment: dt.datetime) -> str:
    if engine.dialect.name == "sqlite":
        return f"'{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S.%f}'"
    return f"'{moment.astimezone(dt.UTC).isoformat()}'"


def hand_sql(engine: sa.Engine, sc: Scenario, people: People) -> str:
    """The funnel as a person would write it: the period's history per deal
    (furthest stage, lost or not), joined to the deals, grouped."""
    low = _literal(engine, dt.datetime.combine(sc.start, dt.time(), dt.UTC))
    high = _literal(engine, dt.datetime.combine(sc.end + dt.timedelta(days=1), dt.time(), dt.UTC))
    reach = " ".join(f"WHEN '{s}' THEN {i}" for i, s in enumerate(STEPS))
    states = ", ".join(f"'{s}'" for s in [*STEPS, "lost"])
    own = f" AND d.manager_id = {people.manager.user_id}" if sc.own else ""
    return f"""SELECT r.reach, r.lost, d.stage, count(*), sum(d.amount)
FROM (SELECT doc_id, max(CASE to_state {reach} ELSE -1 END) AS reach,
             max(CASE WHEN to_state = 'lost' THEN 1 ELSE 0 END) AS lost
      FROM deal__history
      WHERE at >= {low} AND at < {high} AND to_state IN ({states})
      GROUP BY doc_id) r
JOIN deal d ON d.id = r.doc_id{own}
GROUP BY r.reach, r.lost, d.stage"""


def _hand_figures(rows: list[Any]) -> tuple[list[int], int, int]:
    reached = [0] * len(STEPS)
    lost = total = 0
    for reach, is_lost, _stage, n, _amount in rows:
        total += n
        for i in range(int(reach) + 1):
            reached[i] += n
        if is_lost:
            lost += n
    return reached, lost, total


def run(
    rows: int,
    url: str | None = None,
    quick: bool = False,
    show_plans: bool = False,
    log: Callable[[str], None] = print,
) -> Results:
    models = build(load(CONFIG, env={}))
    try:
        with fresh_database(url, rows, schema=SCHEMA) as engine:
            log(f"  generating {rows:,} deals and their history...")
            started = time.perf_counter()
            people, history = fill(models, engine, rows)
            results = Results(database_name(engine), rows, history, time.perf_counter() - started)
            for sc in SCENARIOS:
                results.figures.append(
                    _measure(models, engine, sc, people, quick, results, show_plans)
                )
            return results
    finally:
        models.dispose()


def _measure(
    models: Models, engine: sa.Engine, sc: Scenario, people: People, quick: bool,
    results: Results, show_plans: bool,
) -> Figures:  # fmt: skip
    who = people.manager if sc.own else people.head
    report = models.registry.reports["deal_funnel"]
    funnel = load_kinds()["funnel"]
    session = Session(engine)
    ctx = Context(models, session, who, dt.UTC, NOW)
    params = Params(sc.start, sc.end)

    def run_report() -> Any:
        return funnel.run(ctx, report, params)

    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    hand = hand_sql(engine, sc, people)
    dbapi = engine.raw_connection()
    try:
        sa.event.listen(engine, "before_cursor_execute", record)
        try:
            result = run_report()
        finally:
            sa.event.remove(engine, "before_cursor_execute", record)
        if len(seen) != 1:
            raise RuntimeError(f"{sc.name}: the report sent {len(seen)} statements, not one")
        reached, lost, total = _hand_figures(raw_fetch(dbapi, hand))
        shown = [r["reached"] for r in result.rows[: len(STEPS)]]
        if (
            shown != reached
            or result.rows[-1]["reached"] != lost
            or result.total["reached"] != total
        ):  # type: ignore[index]
            raise RuntimeError(f"{sc.name}: the report and the hand-written query disagree")
        if show_plans:
            from engine.reports import history

            select = history.Funnel()._reached(ctx, report, params)
            results.plans[sc.name] = explain(engine, driver_sql(sa.select(select), engine))
        timed, reps = medians(
            {"report": run_report, "hand_sql": lambda: raw_fetch(dbapi, hand)},
            min_reps=5 if quick else 11,
            min_seconds=0.3 if quick else 1.0,
        )
    finally:
        dbapi.close()
        session.close()
    return Figures(sc.name, timed["report"], timed["hand_sql"], total, len(seen), reps)


def report(results: Results, out: Callable[[str], None] = print) -> list[str]:
    """Print the table; return the targets missed."""
    out(f"\nDeal funnel on {results.database}: {results.rows:,} deals, "
        f"{results.history:,} history rows (medians, ms)")  # fmt: skip
    out(f"  {'scenario':<26}{'report':>10}{'hand SQL':>10}{'ratio':>7}{'deals':>10}  statements")
    for f in results.figures:
        out(f"  {f.scenario:<26}{f.report:10.2f}{f.hand_sql:10.2f}{f.ratio:7.2f}{f.deals:10,}  {f.statements}")  # fmt: skip
    missed: list[str] = []
    if results.rows >= TARGET_ROWS:
        missed = [f"{f.scenario}: ratio {f.ratio:.2f}" for f in results.figures if f.ratio > TARGET]
        out(f"Target at {TARGET_ROWS:,}+ deals: report / hand SQL ≤ {TARGET}: "
            + ("MISSED: " + "; ".join(missed) if missed else "ok"))  # fmt: skip
    for name, plan in results.plans.items():
        out(f"-- plan of {name} (the history part)")
        for line in plan:
            out(f"   {line}")
    out(f"Generating and loading: {results.load_seconds:.1f} s")
    return missed
