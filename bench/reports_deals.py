"""The deal report kinds against hand-written SQL, in one run.

``python -m bench --reports-deals [--quick] [--rows N] [--db URL]``: N deals
of the base layer (1 M; 10 k with ``--quick``) of 30 managers in 5
departments over the last 400 days, each with its status history (created,
then stage after stage, some won, some lost with a reason in many
spellings), N/5 customers and N/2 interactions with them. Each kind
(forecast, won_lost, loss_reasons, stale, sources, table) runs as a head of
sales and as a manager would, timed interleaved and warm, keeping medians:

- *report*: the whole ``Kind.run`` (building the statement, running it,
  rows and totals out) in an open session, as a request makes it;
- *hand SQL*: the same aggregation written by hand, through the DB-API
  driver.

*ratio* = report / hand SQL; the target is ≤ 2. Before any timing the two
must agree on the figures, and the report must send exactly one statement.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from engine.access import Principal
from engine.loader import load
from engine.models import Models, build
from engine.registry import USER
from engine.reports import Context, Params, load_kinds

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "crm_bench_reports_deals"
ROWS = 1_000_000
QUICK_ROWS = 10_000
USERS = 30
DEPARTMENTS = 5
SPAN_DAYS = 400
TARGET = 2.0
TZ = ZoneInfo("Europe/Moscow")
OPEN = ("new", "qualification", "proposal", "contract")
SOURCES = ("website", "referral", "exhibition", "cold_call", "other")
REASONS = ("Дорого", " дорого ", "ДОРОГО", "Ушли к конкуренту", "ушли к конкуренту",
           "Price", "price ", "Нет бюджета", "")  # fmt: skip
CONFIG = """
name: Bench
locale: en
timezone: Europe/Moscow
layers: [base]
"""
#: reports besides the base layer's: the table kind and the forecast by a stage map
REPORTS = """
reports:
  deals_table: {type: table, document: Deal, by: [manager.department, source],
                measures: [count, {sum: amount}, {avg: probability}], date: created_at}
  forecast_map: {type: forecast, document: Deal, amount: amount,
                 probabilities: {new: 5, qualification: 20, proposal: 50}, probability: probability}
  won_lost_week: {type: won_lost, document: Deal, amount: amount, group: week}
"""


@dataclass
class World:
    """What was generated, kept in Python when asked (the tests' oracle)."""

    now: dt.datetime
    users: list[int]
    departments: dict[int, int | None]
    deals: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    customers: list[dict[str, Any]] = field(default_factory=list)
    interactions: list[dict[str, Any]] = field(default_factory=list)


def models_for(folder: Path) -> Models:
    """The base layer plus :data:`REPORTS`, from a config written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(CONFIG, encoding="utf-8")
    (folder / "reports.yaml").write_text(REPORTS, encoding="utf-8")
    return build(load(folder, env={}))


def fill(
    models: Models,
    engine: sa.Engine,
    deals: int,
    now: dt.datetime,
    seed: int = 1,
    keep: bool = False,
) -> World:
    """Users, departments, customers, deals with their history and
    interactions, by Core bulk inserts; ``keep`` keeps the rows in the World."""
    models.metadata.create_all(engine)
    rng = random.Random(seed)
    users_t, depts = models.table(USER), models.table("Department")
    deal_t, cust_t = models.table("Deal"), models.table("Customer")
    inter_t = models.table("Interaction")
    hist_t = models.metadata.tables[models.registry.documents["Deal"].history_table]
    start = now - dt.timedelta(days=SPAN_DAYS)
    world = World(now, [], {})
    with engine.begin() as conn:
        conn.execute(depts.insert(), [
            {"id": i, "name": f"Отдел {i}", "version": 1, "created_at": start}
            for i in range(1, DEPARTMENTS + 1)
        ])  # fmt: skip
        rows = []
        for i in range(USERS):
            dept = None if i % 10 == 9 else i % DEPARTMENTS + 1
            rows.append({"username": f"rep.{i:03d}", "first_name": f"Rep{i}", "last_name": "",
                         "email": f"rep{i}@example.com", "active": True, "department_id": dept})  # fmt: skip
        conn.execute(users_t.insert(), rows)
        world.users = list(conn.execute(
            sa.select(users_t.c.id).where(users_t.c.username.like("rep.%")).order_by(users_t.c.id)
        ).scalars())  # fmt: skip
        world.departments = {
            uid: (None if i % 10 == 9 else i % DEPARTMENTS + 1) for i, uid in enumerate(world.users)
        }
        for table in (deal_t, hist_t, inter_t):
            for ix in table.indexes:
                ix.drop(conn)

        def owner() -> int:
            return world.users[int(len(world.users) * rng.random() ** 1.5)]

        customers = max(deals // 5, 10)
        batch: list[dict[str, Any]] = []
        for cid in range(1, customers + 1):
            created = start + dt.timedelta(days=SPAN_DAYS * rng.random())
            row = {
                "id": cid, "version": 1, "created_at": created, "updated_at": created,
                "name": f"Клиент {cid}", "kind": "company",
                "source": rng.choice(SOURCES) if rng.random() < 0.9 else None,
                "manager_id": owner(),
            }  # fmt: skip
            batch.append(row)
            if keep:
                world.customers.append(row)
            if len(batch) >= 10_000:
                conn.execute(cust_t.insert(), batch)
                batch = []
        if batch:
            conn.execute(cust_t.insert(), batch)
        deal_rows: list[dict[str, Any]] = []
        hist_rows: list[dict[str, Any]] = []
        hid = 0
        for did in range(1, deals + 1):
            created = start + dt.timedelta(days=SPAN_DAYS * rng.random() ** 0.8)
            steps = [(None, "new", created)]
            at = created
            for target in ("qualification", "proposal", "contract", "won"):
                if rng.random() < 0.18:
                    target = "lost"
                elif target != "won" and rng.random() < 0.3:
                    break  # stays where it is
                at += dt.timedelta(days=rng.lognormvariate(math.log(6), 1.0))
                if at >= now:
                    break
                steps.append((steps[-1][1], target, at))
                if target in ("won", "lost"):
                    break
            stage = steps[-1][1]
            touched = steps[-1][2]
            if rng.random() < 0.3:  # edited later without a change of stage
                touched = min(now, touched + dt.timedelta(days=rng.lognormvariate(math.log(5), 1)))
            amount = round(math.exp(rng.gauss(math.log(150_000), 1.0)), 2)
            deal = {
                "id": did, "version": 1, "created_at": created, "updated_at": touched,
                "number": f"D-{did:07d}", "customer_id": rng.randint(1, customers),
                "kind": rng.choice(("typical", "manual", "simple")),
                "amount": amount if rng.random() < 0.95 else None,
                "probability": rng.choice((10, 20, 40, 60, 80, None)),
                "manager_id": owner(),
                "source": rng.choice(SOURCES) if rng.random() < 0.9 else None,
                "planned_close": (
                    (now + dt.timedelta(days=rng.randint(-40, 150))).astimezone(TZ).date()
                    if rng.random() < 0.8 else None
                ),
                "loss_reason": rng.choice(REASONS) if stage == "lost" else None,
                "stage": stage,
            }  # fmt: skip
            deal_rows.append(deal)
            for source, target, moment in steps:
                hid += 1
                hist_rows.append({"id": hid, "doc_id": did, "field": "stage", "from_state": source,
                                  "to_state": target, "at": moment, "by_id": deal["manager_id"]})  # fmt: skip
            if len(deal_rows) >= 10_000:
                conn.execute(deal_t.insert(), deal_rows)
                conn.execute(hist_t.insert(), hist_rows)
                if keep:
                    world.deals += deal_rows
                    world.history += hist_rows
                deal_rows, hist_rows = [], []
        if deal_rows:
            conn.execute(deal_t.insert(), deal_rows)
            conn.execute(hist_t.insert(), hist_rows)
            if keep:
                world.deals += deal_rows
                world.history += hist_rows
        batch = []
        for iid in range(1, deals // 2 + 1):
            planned = now - dt.timedelta(days=SPAN_DAYS * rng.random() ** 2) + dt.timedelta(days=20)
            row = {
                "id": iid, "version": 1, "created_at": planned - dt.timedelta(days=3),
                "kind": "call", "subject": f"Звонок {iid}", "planned_at": planned,
                "duration": 30, "customer_id": rng.randint(1, customers), "manager_id": owner(),
                "status": "done" if planned < now else "planned",
            }  # fmt: skip
            batch.append(row)
            if keep:
                world.interactions.append(row)
            if len(batch) >= 10_000:
                conn.execute(inter_t.insert(), batch)
                batch = []
        if batch:
            conn.execute(inter_t.insert(), batch)
        for table in (deal_t, hist_t, inter_t):
            for ix in table.indexes:
                ix.create(conn)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    return world


def context(
    models: Models, session: Session, principal: Principal | None, now: dt.datetime
) -> Context:
    return Context(models=models, session=session, principal=principal, tz=TZ, now=now)


# -- the hand-written queries ----------------------------------------------------------------------


def _at(engine: sa.Engine, moment: dt.datetime) -> str:
    if engine.dialect.name == "sqlite":
        return f"'{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S.%f}'"
    return f"'{moment.astimezone(dt.UTC).isoformat()}'"


def _month_case(engine: sa.Engine, column: str, params: Params) -> str:
    from engine.reports.deals import buckets

    cuts = buckets(params, "month")
    whens = " ".join(
        f"WHEN {column} < {_at(engine, dt.datetime.combine(c.after, dt.time(), TZ))} THEN {i}"
        for i, c in enumerate(cuts[:-1])
    )
    return f"CASE {whens} ELSE {len(cuts) - 1} END"


def hand_sql(
    engine: sa.Engine, name: str, params: Params, now: dt.datetime, owner: int | None
) -> str:
    """Each report as a person would write it for this database."""
    own = f" AND d.manager_id = {owner}" if owner is not None else ""
    low = _at(engine, dt.datetime.combine(params.start, dt.time(), TZ))
    high = _at(engine, dt.datetime.combine(params.end + dt.timedelta(days=1), dt.time(), TZ))
    last_entry = (
        "h.doc_id = d.id AND h.to_state = d.stage AND NOT EXISTS (SELECT 1 FROM deal__history l "
        "WHERE l.doc_id = h.doc_id AND (l.at > h.at OR (l.at = h.at AND l.id > h.id)))"
    )
    if name == "deal_forecast":
        return (
            "SELECT d.stage, count(*), sum(coalesce(d.amount, 0)), "
            "sum(coalesce(d.amount, 0) * coalesce(d.probability, 0)) FROM deal d "
            f"WHERE d.stage IN ('new', 'qualification', 'proposal', 'contract'){own} "
            f"AND (d.planned_close IS NULL OR d.planned_close BETWEEN '{params.start}' AND '{params.end}') "
            "GROUP BY d.stage"
        )
    if name == "deals_won_lost":
        return (
            f"SELECT {_month_case(engine, 'h.at', params)} AS b, d.stage = 'won', count(*), "
            "sum(coalesce(d.amount, 0)) FROM deal d JOIN deal__history h ON "
            f"{last_entry} WHERE d.stage IN ('won', 'lost') AND h.at >= {low} AND h.at < {high}{own} "
            "GROUP BY 1, 2"
        )
    if name == "deal_loss_reasons":
        return (
            "SELECT coalesce(lower(trim(d.loss_reason)), ''), count(*), sum(coalesce(d.amount, 0)) "
            f"FROM deal d JOIN deal__history h ON {last_entry} WHERE d.stage = 'lost' "
            f"AND h.at >= {low} AND h.at < {high}{own} GROUP BY 1"
        )
    if name == "stale_deals":
        # the same answer as the report: the 500 longest idle with their last
        # activity, and every owner's count (one row per owner at least)
        cutoff = _at(engine, now - dt.timedelta(days=14))
        greatest = "max" if engine.dialect.name == "sqlite" else "greatest"
        changed = "coalesce(d.updated_at, d.created_at)"
        return (
            "SELECT * FROM (SELECT s.*, row_number() OVER (ORDER BY s.last, s.id) AS rn, "
            "row_number() OVER (PARTITION BY s.manager_id ORDER BY s.id) AS orn, "
            "count(*) OVER (PARTITION BY s.manager_id) AS owned FROM (SELECT d.id, d.number, "
            f"d.manager_id, d.stage, d.amount, {greatest}({changed}, "
            f"coalesce((SELECT max(h.at) FROM deal__history h WHERE h.doc_id = d.id), {changed}), "
            "coalesce((SELECT max(i.planned_at) FROM interaction i WHERE i.customer_id = d.customer_id), "
            f"{changed})) AS last FROM deal d "
            "WHERE d.stage IN ('new', 'qualification', 'proposal', 'contract') "
            f"AND {changed} < {cutoff}{own} "
            f"AND NOT EXISTS (SELECT 1 FROM deal__history h WHERE h.doc_id = d.id AND h.at >= {cutoff}) "
            "AND NOT EXISTS (SELECT 1 FROM interaction i WHERE i.customer_id = d.customer_id "
            f"AND i.planned_at >= {cutoff})) s) t WHERE t.rn <= 500 OR t.orn = 1"
        )
    if name == "deal_sources":
        return (
            "SELECT d.source, count(*), sum(coalesce(d.amount, 0)), "
            "sum(CASE WHEN d.stage = 'won' THEN 1 ELSE 0 END) FROM deal d "
            f"WHERE d.created_at >= {low} AND d.created_at < {high}{own} GROUP BY d.source"
        )
    if name == "customer_sources":
        deal_own = f" AND x.manager_id = {owner}" if owner is not None else ""
        return (
            "SELECT d.source, count(*), sum(CASE WHEN EXISTS (SELECT 1 FROM deal x WHERE "
            f"x.customer_id = d.id AND x.stage = 'won'{deal_own}) THEN 1 ELSE 0 END) FROM customer d "
            f"WHERE d.created_at >= {low} AND d.created_at < {high}{own} GROUP BY d.source"
        )
    if name == "deals_table":
        return (
            "SELECT u.department_id, d.source, count(*), sum(d.amount), avg(d.probability) FROM deal d "
            f"LEFT JOIN ab_user u ON u.id = d.manager_id WHERE d.created_at >= {low} "
            f"AND d.created_at < {high}{own} GROUP BY u.department_id, d.source"
        )
    raise KeyError(name)


REPORT_NAMES = (
    "deal_forecast", "deals_won_lost", "deal_loss_reasons", "stale_deals", "deal_sources",
    "customer_sources", "deals_table",
)  # fmt: skip


def _counts_of(name: str, result: Any) -> int:
    """The report's total count, as the hand query's is summed."""
    total = result.total or {}
    if name == "deals_won_lost":
        return int(total["won"]) + int(total["lost"])
    if name == "stale_deals":
        return int(total["record"])
    return int(total["count"])


def _hand_count(name: str, rows: list[Any]) -> int:
    if name == "stale_deals":  # each owner's count, on the owner's first row
        return sum(int(r[-1]) for r in rows if int(r[-2]) == 1)
    index = {"deals_won_lost": 2, "deal_forecast": 1, "stale_deals": 1, "deals_table": 2}.get(
        name, 1
    )
    return sum(int(r[index] or 0) for r in rows)


@dataclass
class Figure:
    name: str
    who: str
    report: float
    hand: float
    count: int

    @property
    def ratio(self) -> float:
        return self.report / self.hand


def run(rows: int, url: str | None, quick: bool) -> tuple[str, list[Figure]]:
    import tempfile

    from bench.suite import database_name, fresh_database, medians, raw_fetch

    load_kinds()
    from engine.reports import KINDS

    now = dt.datetime(2026, 1, 15, 12, tzinfo=dt.UTC)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="crm-bench-rd-") as folder:
        models = models_for(Path(folder) / "config")
        with fresh_database(url, rows, SCHEMA) as engine:
            started = time.perf_counter()
            world = fill(models, engine, rows, now)
            print(f"loaded {rows:,} deals in {time.perf_counter() - started:.0f} s")
            database = database_name(engine)
            end = now.astimezone(TZ).date()
            params = Params(start=end.replace(day=1) - dt.timedelta(days=150), end=end)
            params = Params(start=params.start.replace(day=1), end=end)
            people = {
                "head": Principal(world.users[-1], "head", frozenset({"sales_head"})),
                "manager": Principal(world.users[0], "rep", frozenset({"manager"})),
            }
            with Session(engine) as session:
                dbapi = session.connection().connection.dbapi_connection
                for name in REPORT_NAMES:
                    report = models.registry.reports[name]
                    kind = KINDS[report.type]
                    for who, principal in people.items():
                        ctx = context(models, session, principal, now)
                        owner = principal.user_id if who == "manager" else None
                        sql = hand_sql(engine, name, params, now, owner)
                        statements: list[str] = []

                        def count(*args: Any, statements: list[str] = statements) -> None:
                            statements.append(args[2])

                        sa.event.listen(engine, "before_cursor_execute", count)
                        result = kind.run(ctx, report, params)
                        sa.event.remove(engine, "before_cursor_execute", count)
                        if len(statements) != 1:
                            raise AssertionError(f"{name}: {len(statements)} statements")
                        hand_rows = raw_fetch(dbapi, sql)
                        got, want = _counts_of(name, result), _hand_count(name, hand_rows)
                        if got != want:
                            raise AssertionError(f"{name} ({who}): report {got} ≠ hand SQL {want}")
                        fns: dict[str, Callable[[], object]] = {
                            "report": lambda kind=kind, ctx=ctx, report=report: kind.run(
                                ctx, report, params
                            ),
                            "hand": lambda sql=sql: raw_fetch(dbapi, sql),
                        }
                        times, _ = medians(fns, 3 if quick else 7, 0.2 if quick else 2.0, warmup=1)
                        figures.append(Figure(name, who, times["report"], times["hand"], got))
    return database, figures


def report(database: str, rows: int, figures: list[Figure]) -> list[str]:
    """Print the table; the targets missed at 100 k deals and above."""
    print(f"\nDeal reports on {database}, {rows:,} deals (medians, ms); target ≤ {TARGET}x")
    print(f"{'report':<20}{'who':<9}{'count':>10}{'report':>10}{'hand SQL':>10}{'ratio':>8}")
    missed = []
    for f in figures:
        print(
            f"{f.name:<20}{f.who:<9}{f.count:>10,}{f.report:>10.1f}{f.hand:>10.1f}{f.ratio:>8.2f}"
        )
        if rows >= 100_000 and f.ratio > TARGET:
            missed.append(f"{f.name} ({f.who}) {f.ratio:.2f}x")
    return missed
