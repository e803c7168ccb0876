"""The executive discipline report against hand-written SQL, in one run.

``python -m bench --discipline [--quick] [--rows N] [--db URL] [--plans]``: N
tasks of ``configs/demo`` (100 k; 10 k with ``--quick``) over two years, 50
users in 8 departments, with the spreads of a real office: each person late
at their own rate, a few tasks without a due time, some cancelled, the open
ones piling up towards the present. Each scenario is then timed three ways,
interleaved and warm, keeping medians:

- *report*: the whole :func:`plugins.processes.reports.discipline` call
  (its statement, run, the rows and the totals out) in an open session, as
  a request makes it;
- *report SQL*: the statement it sends, run straight through the DB-API driver;
- *hand SQL*: the same aggregation written by hand, through the driver.

*plan* = report SQL / hand SQL (is the generated statement as good as a
person's?); *overhead* = report / report SQL (what building the statement and
reading its rows add); *ratio* = report / hand SQL (the report against the
bare query a person would write). Before any timing the three must agree on every figure, and the
report must send exactly one statement.
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

from bench.generate import BATCH, NOW, Generator
from bench.suite import database_name, driver_sql, explain, fresh_database, medians, raw_fetch
from engine.access import Principal
from engine.loader import load
from engine.models import Models, build
from plugins.processes.reports import discipline, discipline_params, discipline_select

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "demo"
SCHEMA = "crm_bench_discipline"
ROWS = 100_000
QUICK_ROWS = 10_000
USERS = 50
DEPARTMENTS = ("Продажи Москва", "Продажи СПб", "Продажи регионы", "Ключевые клиенты",
               "Закупки", "Логистика", "Сервис", "Бухгалтерия")  # fmt: skip
SPAN = dt.timedelta(days=2 * 365)
#: the issue's target, checked at TARGET_ROWS and above
TARGET = 1.5
TARGET_ROWS = 100_000
HEAD_ROLE, MANAGER_ROLE = "sales_head", "manager"


@dataclass(frozen=True)
class Scenario:
    name: str
    start: dt.date
    end: dt.date
    by: str
    #: the busiest manager's own tasks, rather than everyone's as a head sees them
    own: bool = False


LAST_MONTH = (dt.date(2025, 12, 1), dt.date(2025, 12, 31))
SCENARIOS = (
    Scenario("Dec 2025 by person, a head", *LAST_MONTH, "person"),
    Scenario("Dec 2025 by department, a head", *LAST_MONTH, "department"),
    Scenario("Dec 2025 by person, a manager", *LAST_MONTH, "person", own=True),
    Scenario("year 2025 by department, a head", dt.date(2025, 1, 1), dt.date(2025, 12, 31), "department"),
)  # fmt: skip


@dataclass
class Figures:
    """Medians in milliseconds for one scenario."""

    scenario: str
    report: float
    report_sql: float
    hand_sql: float
    groups: int
    tasks: int
    statements: int
    reps: int

    @property
    def plan(self) -> float:
        return self.report_sql / self.hand_sql

    @property
    def overhead(self) -> float:
        return self.report / self.report_sql

    @property
    def ratio(self) -> float:
        return self.report / self.hand_sql


@dataclass
class Results:
    database: str
    rows: int
    load_seconds: float
    figures: list[Figures] = field(default_factory=list)
    plans: dict[str, list[str]] = field(default_factory=dict)


# -- the data -------------------------------------------------------------------------------------


@dataclass
class People:
    head: Principal
    manager: Principal


def _lognormal_hours(rng: random.Random, median: float, sigma: float) -> dt.timedelta:
    return dt.timedelta(hours=rng.lognormvariate(math.log(median), sigma))


def fill(models: Models, engine: sa.Engine, rows: int, seed: int = 1) -> People:
    """Departments, users in them and ``rows`` tasks, by Core bulk inserts; the
    task table's indexes are built after the rows are in."""
    models.metadata.drop_all(engine)
    models.metadata.create_all(engine)
    tasks, users = models.table("Task"), models.table("User")
    departments = models.table("Department")
    rng = random.Random(seed)
    start = NOW - SPAN
    with engine.begin() as conn:
        for ix in tasks.indexes:
            ix.drop(conn)
        conn.execute(departments.insert(), [
            {"id": i, "name": name, "version": 1, "created_at": start}
            for i, name in enumerate(DEPARTMENTS, 1)
        ])  # fmt: skip
        gen = Generator(models, seed=seed)
        user_ids = gen.users(conn, USERS, prefix="staff")
        # every 25th person has no department; the rest are spread over the eight
        placed = {uid: None if i % 25 == 24 else i % len(DEPARTMENTS) + 1
                  for i, uid in enumerate(user_ids)}  # fmt: skip
        conn.execute(
            users.update().where(users.c.id == sa.bindparam("uid")).values(department_id=sa.bindparam("dept")),
            [{"uid": uid, "dept": dept} for uid, dept in placed.items()],
        )  # fmt: skip
        conn.execute(
            departments.update().where(departments.c.id == sa.bindparam("dept")).values(head_id=sa.bindparam("uid")),
            [{"dept": dept, "uid": uid} for uid, dept in reversed(placed.items()) if dept],
        )  # fmt: skip
        # each person is late at their own rate: from 5 % to half their tasks
        lateness = {uid: 0.05 + 0.45 * rng.random() for uid in user_ids}
        seconds = SPAN.total_seconds()
        for first in range(0, rows, BATCH):
            batch = []
            for k in range(first, min(rows, first + BATCH)):
                created = start + dt.timedelta(seconds=seconds * ((k + rng.random()) / rows) ** 0.7)
                who = user_ids[int(len(user_ids) * rng.random() ** 1.4)]
                batch.append(_task(rng, k + 1, created, who, lateness[who]))
            conn.execute(tasks.insert(), batch)
        for ix in tasks.indexes:
            ix.create(conn)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    busiest = user_ids[0]
    return People(
        Principal(user_ids[1], "staff.002", frozenset({HEAD_ROLE})),
        Principal(busiest, "staff.001", frozenset({MANAGER_ROLE})),
    )


def _task(
    rng: random.Random, task_id: int, created: dt.datetime, who: int, late_rate: float
) -> dict[str, Any]:
    """One task: due a day or two after it was set (some in hours, some in
    weeks), done early, done late or still open, as its time and its
    assignee's habits have it."""
    due: dt.datetime | None = None
    if rng.random() >= 0.06:
        due = created + min(_lognormal_hours(rng, 30, 1.0), dt.timedelta(days=60))
    status, done_at = "open", None
    r = rng.random()
    if due is None:
        done_at = created + _lognormal_hours(rng, 20, 1.0)
        if r < 0.85 and done_at < NOW:
            status = "done"
        else:
            done_at = None
    elif r < 0.04:
        status = "cancelled"
    elif due >= NOW:
        if r < 0.3:
            status, done_at = "done", created + (NOW - created) * rng.random()
    elif r >= 0.09:  # the rest of the past-due tasks are still open: overdue
        if rng.random() < late_rate:
            done_at = due + _lognormal_hours(rng, 8, 1.2)
        else:
            done_at = created + (due - created) * rng.uniform(0.2, 1.0)
        if done_at < NOW:
            status = "done"
        else:
            done_at = None
    return {
        "id": task_id, "version": 1, "created_at": created, "created_by_id": who,
        "updated_at": done_at or created, "title": f"Задача {task_id}", "assignee_id": who,
        "due": due, "status": status, "done_at": done_at,
        "outcome": "done" if status == "done" else None,
        "overdue": status == "open" and due is not None and due < NOW,
    }  # fmt: skip


# -- the hand-written query ------------------------------------------------------------------------


def _literal(engine: sa.Engine, moment: dt.datetime) -> str:
    if engine.dialect.name == "sqlite":
        return f"'{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S.%f}'"
    return f"'{moment.astimezone(dt.UTC).isoformat()}'"


def hand_sql(engine: sa.Engine, sc: Scenario, tz: dt.tzinfo, people: People) -> str:
    """The report as a person would write it for this database: the same two
    branches, each condition as it reads (``due IS NULL``), no planner hints."""
    low = _literal(engine, dt.datetime.combine(sc.start, dt.time(), tz))
    high = _literal(engine, dt.datetime.combine(sc.end + dt.timedelta(days=1), dt.time(), tz))
    now = _literal(engine, NOW)
    if engine.dialect.name == "sqlite":

        def hours(a: str, b: str) -> str:
            return f"(julianday({a}) - julianday({b})) * 24.0"
    else:

        def hours(a: str, b: str) -> str:
            return f"extract(epoch FROM {a} - {b}) / 3600.0"

    own = f"assignee_id = {people.manager.user_id} AND " if sc.own else ""
    tasks = f"""SELECT assignee_id, status, due, created_at,
         coalesce(done_at, updated_at, created_at) AS done_at
  FROM task WHERE {own}"""
    keys = "u.id, u.first_name, u.last_name, u.username, d.id, d.name" if sc.by == "person" else "d.id, d.name"  # fmt: skip
    return f"""SELECT {keys},
  count(*),
  count(CASE WHEN t.status = 'done' AND (t.due IS NULL OR t.done_at <= t.due) THEN 1 END),
  count(CASE WHEN t.status = 'done' AND t.done_at > t.due THEN 1 END),
  count(CASE WHEN t.status = 'open' AND t.due < {now} THEN 1 END),
  count(CASE WHEN t.status = 'open' AND t.due >= {now} THEN 1 END),
  sum(CASE WHEN t.status = 'done' AND t.done_at > t.due THEN {hours("t.done_at", "t.due")} END),
  sum(CASE WHEN t.status = 'done' THEN {hours("t.done_at", "t.created_at")} END)
FROM (
  {tasks}status IN ('open', 'done') AND due >= {low} AND due < {high}
  UNION ALL
  {tasks}status = 'done' AND due IS NULL AND done_at >= {low} AND done_at < {high}
) t
JOIN ab_user u ON u.id = t.assignee_id
LEFT JOIN department d ON d.id = u.department_id
GROUP BY {keys}"""


def _hand_figures(rows: list[Any], by: str) -> dict[Any, tuple[Any, ...]]:
    """The hand query's rows as the report shows them: counts, share, averages."""
    width = 6 if by == "person" else 2
    out = {}
    for r in rows:
        total, on_time, late, overdue, pending = r[width : width + 5]
        late_h, done_h = (float(v or 0) for v in r[width + 5 : width + 7])
        known, done = on_time + late + overdue, on_time + late
        out[r[0]] = (
            total, on_time, late, overdue, pending,
            round(100 * on_time / known, 1) if known else None,
            round(late_h / late, 1) if late else None,
            round(done_h / done, 1) if done else None,
        )  # fmt: skip
    return out


# -- the run -------------------------------------------------------------------------------------------


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
            log(f"  generating {rows:,} tasks...")
            started = time.perf_counter()
            people = fill(models, engine, rows)
            if engine.dialect.name == "postgresql":
                sa.event.listen(engine, "checkout", _planned_each_time)
            results = Results(database_name(engine), rows, time.perf_counter() - started)
            tz = ZoneInfo(str(models.registry.settings.get("timezone") or "UTC"))
            for sc in SCENARIOS:
                results.figures.append(_measure(models, engine, sc, tz, people, quick))
                if show_plans:
                    results.plans[sc.name] = explain(engine, _report_sql(models, engine, sc, tz, people))  # fmt: skip
            return results
    finally:
        models.dispose()


def _planned_each_time(dbapi_connection: Any, *_: Any) -> None:
    """psycopg prepares a statement run five times on a connection: the
    literal SQL would then be planned once, the report's (with parameters)
    at each run. A report asked for a new period is planned each time, so
    here every statement is."""
    dbapi_connection.prepare_threshold = None


def _principal(sc: Scenario, people: People) -> Principal:
    return people.manager if sc.own else people.head


def _report_sql(
    models: Models, engine: sa.Engine, sc: Scenario, tz: dt.tzinfo, people: People
) -> str:
    select = discipline_select(models, _principal(sc, people), sc.by, engine.dialect.name)  # type: ignore[arg-type]
    return driver_sql(select.params(discipline_params(sc.start, sc.end, tz, NOW)), engine)


def _measure(
    models: Models, engine: sa.Engine, sc: Scenario, tz: dt.tzinfo, people: People, quick: bool
) -> Figures:
    who = _principal(sc, people)
    # the report runs in an open session, as in a request (whose transaction
    # the page's other statements have begun), and the raw queries in an open
    # transaction of their connection: neither pays for BEGIN and ROLLBACK
    session = Session(engine)

    def report() -> Any:
        return discipline(models, session, who, sc.start, sc.end, sc.by, tz, now=NOW)  # type: ignore[arg-type]

    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    hand, generated = hand_sql(engine, sc, tz, people), _report_sql(models, engine, sc, tz, people)
    dbapi = engine.raw_connection()
    try:
        sa.event.listen(engine, "before_cursor_execute", record)
        try:
            *groups, total = report()
        finally:
            sa.event.remove(engine, "before_cursor_execute", record)
        if len(seen) != 1:
            raise RuntimeError(f"{sc.name}: the report sent {len(seen)} statements, not one")
        # the three must show the same figures before any of them is timed
        expected = _hand_figures(raw_fetch(dbapi, hand), sc.by)
        shown = {
            g.key: (g.total, g.on_time, g.late, g.overdue, g.pending, g.on_time_pct,
                    g.avg_late_hours, g.avg_hours_to_complete)
            for g in groups
        }  # fmt: skip
        if shown != expected or _hand_figures(raw_fetch(dbapi, generated), sc.by) != expected:
            raise RuntimeError(f"{sc.name}: the report and the hand-written query disagree")
        timed, reps = medians(
            {
                "report": report,
                "report_sql": lambda: raw_fetch(dbapi, generated),
                "hand_sql": lambda: raw_fetch(dbapi, hand),
            },
            min_reps=7 if quick else 21,
            min_seconds=0.3 if quick else 1.0,
        )
    finally:
        dbapi.close()
        session.close()
    return Figures(sc.name, timed["report"], timed["report_sql"], timed["hand_sql"],
                   len(groups), total.total, len(seen), reps)  # fmt: skip


def report(results: Results, out: Callable[[str], None] = print) -> list[str]:
    """Print the table; return the targets missed."""
    out(f"\nExecutive discipline report on {results.database}: {results.rows:,} tasks, "
        f"{USERS} users in {len(DEPARTMENTS)} departments (medians, ms)")  # fmt: skip
    out(f"  {'scenario':<34}{'report':>9}{'rep.SQL':>9}{'hand SQL':>9}{'plan':>7}{'overhd':>7}"
        f"{'ratio':>7}{'groups':>8}{'tasks':>8}  statements")  # fmt: skip
    for f in results.figures:
        out(f"  {f.scenario:<34}{f.report:9.2f}{f.report_sql:9.2f}{f.hand_sql:9.2f}{f.plan:7.2f}"
            f"{f.overhead:7.2f}{f.ratio:7.2f}{f.groups:8,}{f.tasks:8,}  {f.statements}")  # fmt: skip
    missed = []
    if results.rows >= TARGET_ROWS:
        missed = [f"{f.scenario}: ratio {f.ratio:.2f}" for f in results.figures if f.ratio > TARGET]
        out(f"Target at {TARGET_ROWS:,}+ tasks: report / hand SQL ≤ {TARGET}: "
            + ("MISSED: " + "; ".join(missed) if missed else "ok"))  # fmt: skip
    for name, plan in results.plans.items():
        out(f"-- plan of {name}")
        for line in plan:
            out(f"   {line}")
    out(f"Generating and loading: {results.load_seconds:.1f} s")
    return missed
