"""The ABC/XYZ benchmark: ``python -m bench --abc-xyz [--quick] [--rows N] [--db URL]``.

The nightly classification (``engine.reports.abc_xyz.classify``, what the
job ``crm.abc_xyz`` runs) over N customer orders of N / 10 customers (1 M
orders and 100 k customers; 50 k orders with ``--quick``) of the demo's
configuration, the orders spread over the last twelve months with a skew
(a few customers bring most of the revenue), a tenth of them cancelled or
new (they do not count). Against it, the same work written by hand in SQL
on the same connection: the same temporary table of classes, the same
history rows, the same two UPDATEs.

Each contender runs in a transaction that is then rolled back, so every
run starts from the same state (the first run: no classes yet, so a
history row per classified customer), interleaved, three times each
(twice with ``--quick``); the median counts. The classes both compute must
agree customer by customer. Target: the classification within 3× the
hand-written SQL.
"""

from __future__ import annotations

import datetime as dt
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bench.telephony_lookup import CONFIG, _bulk

ROWS = 1_000_000
QUICK_ROWS = 50_000
TARGET = 3.0
SCHEMA = "crm_bench_abc_xyz"
STATES = ("confirmed", "shipped", "closed")


def fill(
    models: Any, engine: sa.Engine, rows: int, today: dt.date, log: Callable[[str], None]
) -> float:
    """``rows`` orders of ``rows // 10`` customers, indexes built after; seconds taken."""
    started = time.perf_counter()
    models.metadata.create_all(engine)
    customers, orders = models.table("Customer"), models.table("CustomerOrder")
    indexes = [ix for t in (customers, orders) for ix in t.indexes]
    with engine.begin() as conn:
        for ix in indexes:
            ix.drop(conn)
    at = dt.datetime.combine(today - dt.timedelta(days=400), dt.time(), dt.UTC)
    n_customers = max(10, rows // 10)
    log(f"  {n_customers:,} customers")
    _bulk(engine, customers, ["id", "name", "manager_id", "version", "created_at"],
          ((n, f"Customer {n}", None, 1, at) for n in range(1, n_customers + 1)))  # fmt: skip
    rng = random.Random(5)
    statuses = (*STATES, *STATES, *STATES, "cancelled")

    def order_rows() -> Any:
        for n in range(1, rows + 1):
            # a skew: customer ids near 1 order far more often
            c = min(n_customers, int(n_customers * rng.random() ** 3) + 1)
            day = today - dt.timedelta(days=rng.randint(0, 380))
            total = round(rng.uniform(500, 50_000) * (1 + (c % 7 == 0) * 4), 2)
            yield (n, f"O-{n:08d}", day, c, total, rng.choice(statuses), 1, at)

    log(f"  {rows:,} orders")
    _bulk(engine, orders, ["id", "number", "date", "customer_id", "total", "status", "version",
                           "created_at"], order_rows())  # fmt: skip
    log("  indexes")
    with engine.begin() as conn:
        for ix in indexes:
            ix.create(conn)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"VACUUM ANALYZE {customers.name}")
            conn.exec_driver_sql(f"VACUUM ANALYZE {orders.name}")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - started


def hand_sql(models: Any, dialect: str, bounds: list[dt.date]) -> list[str]:
    """The classification written by hand: the statements, in order."""
    c, o = models.table("Customer").name, models.table("CustomerOrder").name
    h = models.table("AbcXyzChange").name
    months = len(bounds) - 1
    case = " ".join(f"WHEN date < '{b.isoformat()}' THEN {k}" for k, b in enumerate(bounds[1:-1]))
    states = ", ".join(f"'{s}'" for s in STATES)
    differs = "IS DISTINCT FROM" if dialect == "postgresql" else "IS NOT"
    period = f"{bounds[0].isoformat()} – {(bounds[-1] - dt.timedelta(days=1)).isoformat()}"
    return [
        "DROP TABLE IF EXISTS hand_run",
        "CREATE TEMPORARY TABLE hand_run (c INTEGER PRIMARY KEY, revenue NUMERIC(18, 2), "
        "cv NUMERIC(12, 2), abc VARCHAR(1), xyz VARCHAR(1))",
        f"""WITH monthly AS (
              SELECT customer_id AS c, CASE {case} ELSE {months - 1} END AS m, SUM(total) AS s
              FROM {o}
              WHERE customer_id IS NOT NULL AND total IS NOT NULL AND status IN ({states})
                AND date >= '{bounds[0].isoformat()}' AND date < '{bounds[-1].isoformat()}'
              GROUP BY 1, 2),
            per AS (
              SELECT c, SUM(s) AS revenue, SUM(CAST(s AS FLOAT)) / {months} AS mean,
                     SUM(CAST(s AS FLOAT) * CAST(s AS FLOAT)) / {months} AS sq
              FROM monthly GROUP BY c HAVING SUM(s) > 0),
            ranked AS (
              SELECT c, revenue, mean, sq, SUM(revenue) OVER () AS total,
                     SUM(revenue) OVER (ORDER BY revenue DESC, c ROWS UNBOUNDED PRECEDING) - revenue AS above
              FROM per),
            cv AS (
              SELECT c, revenue, above, total,
                     100.0 * SQRT(CASE WHEN sq - mean * mean > 0 THEN sq - mean * mean ELSE 0 END) / mean AS cv
              FROM ranked)
            INSERT INTO hand_run (c, revenue, cv, abc, xyz)
            SELECT c, revenue, ROUND(CAST(cv AS NUMERIC(18, 6)), 2),
                   CASE WHEN above * 100 < 80 * total THEN 'A' WHEN above * 100 < 95 * total THEN 'B' ELSE 'C' END,
                   CASE WHEN cv <= 10 THEN 'X' WHEN cv <= 25 THEN 'Y' ELSE 'Z' END
            FROM cv""",
        "ANALYZE hand_run" if dialect == "postgresql" else "SELECT 1",
        f"""INSERT INTO {h} (customer_id, at, from_abc, to_abc, from_xyz, to_xyz, period, manager_id, created_at)
            SELECT cu.id, :now, cu.abc_class, r.abc, cu.xyz_class, r.xyz, '{period}', cu.manager_id, :now
            FROM {c} cu LEFT OUTER JOIN hand_run r ON r.c = cu.id
            WHERE cu.abc_class {differs} r.abc OR cu.xyz_class {differs} r.xyz""",
        f"""UPDATE {c} SET abc_class = r.abc, xyz_class = r.xyz, abc_revenue = r.revenue,
                   xyz_cv = r.cv, abc_xyz_at = :now
            FROM hand_run r WHERE {c}.id = r.c""",
        f"""UPDATE {c} SET abc_class = NULL, xyz_class = NULL, abc_revenue = NULL, xyz_cv = NULL,
                   abc_xyz_at = :now
            WHERE id NOT IN (SELECT c FROM hand_run)""",
    ]


def measure(models: Any, engine: sa.Engine, now: dt.datetime, runs: int) -> dict[str, Any]:
    from engine.reports import abc_xyz

    p = next(x for x in abc_xyz.storing(models.registry) if x.report.name == "abc_xyz")
    bounds = abc_xyz.month_bounds(now.date(), p.months)
    statements = hand_sql(models, engine.dialect.name, bounds)
    cust = models.table("Customer")
    snapshot = sa.select(cust.c.id, cust.c.abc_class, cust.c.xyz_class, cust.c.xyz_cv).order_by(
        cust.c.id
    )
    history = sa.select(sa.func.count()).select_from(models.table("AbcXyzChange"))

    def job(session: Session) -> None:
        abc_xyz.classify(session, models, p, now)

    def hand(session: Session) -> None:
        for sql in statements:
            session.execute(sa.text(sql), {"now": now})
        session.execute(sa.text("DROP TABLE hand_run"))

    contenders = {"classification job": job, "hand-written SQL": hand}
    times: dict[str, list[float]] = {k: [] for k in contenders}
    seen: dict[str, Any] = {}
    for _ in range(runs):
        for name, fn in contenders.items():
            with Session(engine) as session:
                t0 = time.perf_counter()
                fn(session)
                session.flush()
                times[name].append(time.perf_counter() - t0)
                seen[name] = (
                    session.execute(snapshot).all(),
                    session.execute(history).scalar_one(),
                )
                session.rollback()
    job_rows, job_history = seen["classification job"]
    hand_rows, hand_history = seen["hand-written SQL"]
    wrong = sum(
        1
        for a, b in zip(job_rows, hand_rows, strict=True)
        if (a[1], a[2]) != (b[1], b[2])
        or (a[3] is not None and abs(float(a[3]) - float(b[3])) > 0.011)
    )
    classes: dict[str, int] = {}
    for r in job_rows:
        if r[1] is not None:
            classes[f"{r[1]}{r[2]}"] = classes.get(f"{r[1]}{r[2]}", 0) + 1
    return {
        "job": statistics.median(times["classification job"]),
        "hand": statistics.median(times["hand-written SQL"]),
        "wrong": wrong + (job_history != hand_history),
        "history": job_history,
        "classes": dict(sorted(classes.items())),
        "runs": runs,
    }


def run(
    rows: int,
    url: str | None = None,
    runs: int | None = None,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    from bench.suite import database_name, fresh_database
    from engine import clock
    from engine.loader import load
    from engine.models import build

    registry = load(CONFIG, env={})
    models = build(registry)
    now = clock.now()
    figures: dict[str, Any] = {"rows": rows, "customers": max(10, rows // 10)}
    try:
        with fresh_database(url, rows, schema=SCHEMA) as engine:
            figures["database"] = database_name(engine)
            log(f"{dt.datetime.now():%H:%M:%S} filling on {figures['database']}")
            tz = registry.settings.get("timezone")
            figures["fill_s"] = fill(models, engine, rows, clock.today(tz), log)
            log(f"  loaded in {figures['fill_s']:.1f} s; measuring")
            figures |= measure(models, engine, now, runs or (3 if rows >= ROWS else 2))
    finally:
        models.dispose()
    return figures


def report(f: dict[str, Any]) -> list[str]:
    """Print the figures; the targets missed."""
    ratio = f["job"] / f["hand"] if f["hand"] else float("inf")
    print(f"\nABC/XYZ classification of {f['customers']:,} customers from {f['rows']:,} orders on "
          f"{f['database']} (median of {f['runs']} runs, each rolled back)")  # fmt: skip
    print(f"  hand-written SQL     {f['hand']:8.2f} s")
    print(f"  classification job   {f['job']:8.2f} s  ×{ratio:.2f} the hand-written SQL")
    print(f"  history rows: {f['history']:,}; classes: {f['classes']}")
    print(f"  disagreements with the hand-written SQL: {f['wrong']}")
    missed = []
    if ratio > TARGET:
        missed.append(f"the classification {ratio:.2f}x the hand-written SQL (target ≤ {TARGET}x)")
    if f["wrong"]:
        missed.append(f"{f['wrong']} customers classified otherwise than by the hand-written SQL")
    return missed
