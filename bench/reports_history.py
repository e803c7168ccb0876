"""The history reports (conversion, the funnel by manager and by department,
time in stage, plan and fact) against hand-written SQL, in one run.

``python -m bench --reports-history [--quick] [--rows N] [--db URL]``: N deals
of ``configs/demo`` (1 M; 20 k with ``--quick``) created over two years, each
moved through its stages (a few skip one, some are lost, the recent ones are
on their way), about 3.5 history rows a deal; 40 managers in 6 departments
and a monthly plan for each manager and department. Each report is timed as a
head of sales runs it (the whole ``Kind.run``: building the statements, running
them, reading the rows) against the same figures computed by SQL a person
would write for this schema, through the bare DB-API driver, interleaved and
warm (medians). Before timing, both must agree.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bench.generate import BATCH, Generator
from bench.suite import database_name, fresh_database, medians, raw_fetch
from engine.access import Principal
from engine.loader import load
from engine.models import Models, build
from engine.reports import KINDS, Context, Params, load_kinds

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "demo"
SCHEMA = "crm_bench_reports_history"
ROWS = 1_000_000
QUICK_ROWS = 20_000
TARGET = 2.0
MANAGERS = 40
DEPARTMENTS = ("Москва", "СПб", "Регионы", "Ключевые", "Онлайн", "Опт")
NOW = dt.datetime(2026, 1, 20, 12, 0, tzinfo=dt.UTC)
TZ = ZoneInfo("Europe/Moscow")
SPAN = dt.timedelta(days=2 * 365)
CHAIN = ("new", "qualification", "proposal", "contract", "won")
PERIOD = (dt.date(2025, 12, 1), dt.date(2025, 12, 31))
REPORTS = (
    "deal_conversion",
    "deals_by_manager",
    "deals_by_department",
    "deal_stage_time",
    "sales_plan",
)


@dataclass
class Figures:
    report: str
    engine_ms: float
    hand_ms: float
    reps: int

    @property
    def ratio(self) -> float:
        return self.engine_ms / self.hand_ms


def fill(models: Models, engine: sa.Engine, rows: int, seed: int = 14) -> int:
    """Departments, managers, ``rows`` deals with their history, monthly plans; the head's id."""
    models.metadata.drop_all(engine)
    models.metadata.create_all(engine)
    rng = random.Random(seed)
    deal, users, departments = (
        models.table("Deal"),
        models.table("User"),
        models.table("Department"),
    )
    hist = models.metadata.tables[models.registry.documents["Deal"].history_table]
    customers, plans = models.table("Customer"), models.table("SalesPlan")
    start = NOW - SPAN
    with engine.begin() as conn:
        for ix in (*deal.indexes, *hist.indexes):
            ix.drop(conn)
        conn.execute(departments.insert(), [
            {"id": i, "name": n, "version": 1, "created_at": start} for i, n in enumerate(DEPARTMENTS, 1)
        ])  # fmt: skip
        ids = Generator(models, seed=seed).users(conn, MANAGERS + 1, prefix="sales")
        head, managers = ids[0], ids[1:]
        conn.execute(
            users.update().where(users.c.id == sa.bindparam("uid")).values(department_id=sa.bindparam("dept")),
            [{"uid": u, "dept": None if i % 13 == 12 else i % len(DEPARTMENTS) + 1} for i, u in enumerate(managers)],
        )  # fmt: skip
        conn.execute(
            customers.insert().values(id=1, name="ООО Ромашка", version=1, created_at=start)
        )
        hid = 0
        for first in range(1, rows + 1, BATCH):
            deals: list[dict[str, Any]] = []
            moves: list[dict[str, Any]] = []
            for i in range(first, min(first + BATCH, rows + 1)):
                at = start + dt.timedelta(seconds=rng.randrange(int(SPAN.total_seconds())))
                state, k = "new", 0
                path = [("new", at)]
                while state not in ("won", "lost"):
                    at += dt.timedelta(hours=rng.lognormvariate(4.0, 1.0))
                    if at >= NOW:
                        break
                    roll = rng.random()
                    k = -1 if roll < 0.15 else min(k + (2 if roll > 0.93 else 1), 4)
                    state = "lost" if k < 0 else CHAIN[k]
                    path.append((state, at))
                deals.append({"id": i, "customer_id": 1, "manager_id": rng.choice(managers),
                              "kind": rng.choice(("typical", "manual", "simple")), "stage": state,
                              "amount": Decimal(rng.randint(10, 3000) * 1000), "version": 1,
                              "created_at": path[0][1]})  # fmt: skip
                for n, (s, when) in enumerate(path):
                    hid += 1
                    moves.append({"id": hid, "doc_id": i, "field": "stage", "to_state": s, "at": when,
                                  "from_state": path[n - 1][0] if n else None})  # fmt: skip
            conn.execute(deal.insert(), deals)
            conn.execute(hist.insert(), moves)
        month = dt.date(2024, 2, 1)
        plan_rows = []
        while month <= dt.date(2026, 1, 1):
            end = (month + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
            for who in managers:
                plan_rows.append({"period_start": month, "period_end": end, "manager_id": who, "department_id": None,
                                  "amount": Decimal(rng.randint(20, 60) * 100_000), "count": 10})  # fmt: skip
            for dept in range(1, len(DEPARTMENTS) + 1):
                plan_rows.append({"period_start": month, "period_end": end, "department_id": dept, "manager_id": None,
                                  "amount": Decimal(rng.randint(80, 200) * 100_000), "count": 40})  # fmt: skip
            month = end + dt.timedelta(days=1)
        conn.execute(plans.insert(), [{**p, "version": 1, "created_at": start} for p in plan_rows])
        for ix in (*deal.indexes, *hist.indexes):
            ix.create(conn)
        conn.exec_driver_sql("ANALYZE")
    return head


def _lit(engine: sa.Engine, moment: dt.datetime) -> str:
    if engine.dialect.name == "sqlite":
        return f"'{moment.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=' ')}'"
    return f"'{moment.isoformat()}'::timestamptz"


def hand_sql(engine: sa.Engine) -> dict[str, str]:
    """The reports as a person writes them for this schema (a head reads every deal)."""
    sqlite = engine.dialect.name == "sqlite"
    low = _lit(engine, dt.datetime.combine(PERIOD[0], dt.time(), TZ))
    high = _lit(engine, dt.datetime.combine(PERIOD[1] + dt.timedelta(days=1), dt.time(), TZ))
    until = high
    rank = (
        "CASE h.to_state "
        + " ".join(f"WHEN '{s}' THEN {i}" for i, s in enumerate(CHAIN, 1))
        + " END"
    )
    chain = ", ".join(f"'{s}'" for s in CHAIN)

    def days(a: str, b: str) -> str:
        return (
            f"(julianday({a}) - julianday({b}))"
            if sqlite
            else f"(date_part('epoch', {a} - {b}) / 86400.0)"
        )

    flags = ", ".join(
        f"max(CASE WHEN h.to_state = '{s}' THEN 1 ELSE 0 END) AS s_{s}" for s in CHAIN
    )
    sums = ", ".join(f"sum(s_{s})" for s in CHAIN)
    compared = (
        f"SELECT g, {sums}, sum(lost), sum(CASE WHEN s_won = 1 THEN amount END), {{name}} FROM ("
        f"SELECT h.doc_id, {{group}} AS g, d.amount, {flags}, "
        "max(CASE WHEN h.to_state = 'lost' THEN 1 ELSE 0 END) AS lost "
        "FROM deal__history h JOIN deal d ON d.id = h.doc_id {join} "
        f"WHERE h.at >= {low} AND h.at < {high} AND h.to_state IN ({chain}, 'lost') "
        "GROUP BY h.doc_id, {group}, d.amount) x {names} GROUP BY g{extra}"
    )
    local = (
        (lambda c: f"datetime({c}, '-3 hours')")
        if sqlite
        else (lambda c: f"({c}::timestamp AT TIME ZONE 'Europe/Moscow')")
    )
    day_after = (lambda c: f"date({c}, '+1 day')") if sqlite else (lambda c: f"({c} + 1)")
    return {
        "deal_conversion": (
            f"WITH e AS (SELECT h.doc_id, h.to_state, h.at, {rank} AS r, max({rank}) OVER (PARTITION BY "
            "h.doc_id ORDER BY h.at DESC, h.id DESC ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS later "
            f"FROM deal__history h WHERE h.at >= {low} AND h.to_state IN ({chain})), "
            "s AS (SELECT doc_id, to_state, max(CASE WHEN later > r THEN 1 ELSE 0 END) AS went, "
            f"max(CASE WHEN later >= 5 THEN 1 ELSE 0 END) AS won FROM e WHERE at < {high} "
            "GROUP BY doc_id, to_state) "
            "SELECT to_state, count(*), sum(went), sum(won) FROM s GROUP BY to_state UNION ALL "
            "SELECT NULL, count(*), NULL, sum(w) FROM (SELECT doc_id, "
            f"max(CASE WHEN r >= 5 OR later >= 5 THEN 1 ELSE 0 END) AS w FROM e WHERE at < {high} "
            "GROUP BY doc_id) x"
        ),
        "deals_by_manager": compared.format(
            group="d.manager_id",
            join="",
            names="LEFT JOIN ab_user u ON u.id = x.g",
            name="u.first_name, u.last_name, u.username",
            extra=", u.first_name, u.last_name, u.username",
        ),
        "deals_by_department": compared.format(
            group="u.department_id",
            join="LEFT JOIN ab_user u ON u.id = d.manager_id",
            names="LEFT JOIN department dp ON dp.id = x.g",
            name="dp.name",
            extra=", dp.name",
        ),
        "deal_stage_time": (
            "WITH s AS (SELECT doc_id, to_state, at, lead(at) OVER (PARTITION BY doc_id ORDER BY at, id) "
            f"AS left_at FROM deal__history WHERE at < {high}) "
            f"SELECT to_state, count(DISTINCT CASE WHEN left_at >= {low} THEN doc_id END), "
            f"avg(CASE WHEN left_at >= {low} THEN {days('left_at', 'at')} END), "
            f"count(DISTINCT CASE WHEN left_at IS NULL AND at < {until} THEN doc_id END), "
            f"avg(CASE WHEN left_at IS NULL AND at < {until} THEN {days(until, 'at')} END) "
            "FROM s WHERE to_state IN ('new', 'qualification', 'proposal', 'contract') GROUP BY to_state"
        ),
        "sales_plan": (
            "WITH w AS (SELECT h.doc_id, h.at, d.manager_id, u.department_id, d.amount FROM deal__history h "
            "JOIN deal d ON d.id = h.doc_id LEFT JOIN ab_user u ON u.id = d.manager_id "
            f"WHERE h.to_state = 'won' AND h.at >= {low} AND h.at < {high}) "
            "SELECT p.id, p.period_start, p.amount, count(w.doc_id), sum(w.amount) FROM sales_plan p "
            f"LEFT JOIN w ON w.at >= {local('p.period_start')} AND w.at < {local(day_after('p.period_end'))} "
            "AND (w.manager_id = p.manager_id OR (p.manager_id IS NULL AND w.department_id = p.department_id)) "
            f"WHERE p.period_start <= '{PERIOD[1]}' AND p.period_end >= '{PERIOD[0]}' "
            "GROUP BY p.id, p.period_start, p.amount"
        ),
    }


def run(rows: int, url: str | None = None, quick: bool = False) -> tuple[str, list[Figures]]:
    load_kinds()
    models = build(load(CONFIG, env={}))
    figures: list[Figures] = []
    try:
        with fresh_database(url, rows, SCHEMA) as engine:
            started = time.perf_counter()
            head = fill(models, engine, rows)
            print(f"{rows:,} deals loaded in {time.perf_counter() - started:.0f} s")
            database = database_name(engine)
            hand = hand_sql(engine)
            who = Principal(head, "sales.001", frozenset({"sales_head"}))
            with Session(engine) as session, engine.connect() as conn:
                dbapi = conn.connection.dbapi_connection
                ctx = Context(models, session, who, TZ, NOW)
                params = Params(*PERIOD)
                for name in REPORTS:
                    report = models.registry.reports[name]
                    kind = KINDS[report.type]
                    result = kind.run(ctx, report, params)
                    got = raw_fetch(dbapi, hand[name])
                    _agree(name, result, got)
                    fns: dict[str, Callable[[], object]] = {
                        "engine": lambda k=kind, r=report: k.run(ctx, r, params),
                        "hand": lambda sql=hand[name]: raw_fetch(dbapi, sql),
                    }
                    ms, reps = medians(fns, 3 if quick else 7, 0.5 if quick else 5.0, warmup=1)
                    figures.append(Figures(name, ms["engine"], ms["hand"], reps))
                    session.rollback()
    finally:
        models.dispose()
    return database, figures


def _agree(name: str, result: Any, hand: list[Any]) -> None:
    """The report and the hand-written SQL count the same records."""
    if name == "deal_conversion":
        mine = [*sorted(r["entered"] for r in result.rows if r["entered"]), result.total["entered"]]
        theirs = sorted(int(r[1]) for r in hand if r[0] is not None) + [
            int(r[1]) for r in hand if r[0] is None
        ]
    elif name in ("deals_by_manager", "deals_by_department"):
        mine = sorted(r["stage:new"] for r in result.rows)
        theirs = sorted(int(r[1]) for r in hand)
    elif name == "deal_stage_time":
        mine = sorted(r["left"] for r in result.rows if r["left"])
        theirs = sorted(int(r[1]) for r in hand if r[1])
    else:
        mine = sorted(r["count"] for r in result.rows)
        theirs = sorted(int(r[3]) for r in hand)
    assert mine == theirs, (
        f"{name}: the report and the hand-written SQL disagree: {mine} != {theirs}"
    )


def report(database: str, rows: int, figures: list[Figures]) -> list[str]:
    print(f"\nHistory reports against hand-written SQL on {database}, {rows:,} deals, "
          f"December 2025, a head of sales (medians, ms); target ≤ {TARGET}x")  # fmt: skip
    missed = []
    for f in figures:
        print(
            f"{f.report:<22}{f.engine_ms:10.1f} ms{f.hand_ms:10.1f} ms{f.ratio:7.2f}x  ({f.reps} reps)"
        )
        if f.ratio > TARGET and rows >= ROWS:
            missed.append(f"{f.report} {f.ratio:.2f}x")
    return missed
