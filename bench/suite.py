"""The list-page benchmark: the engine's page against hand-written SQL and ORM, 10 k to 1 M rows.

For each size a fresh database is filled from ``configs/wholesale`` and each
scenario is timed four ways, interleaved and warm, keeping medians:

- *engine*: the whole :func:`engine.lists.page` call (build, run, rows out);
- *engine SQL*: the two statements the engine emits, run straight through the
  DB-API driver;
- *hand SQL*: the same page written by hand, through the driver;
- *hand ORM*: the same page written by hand with the SQLAlchemy ORM.

*plan* = engine SQL / hand SQL (is the engine's SQL as good as a person's?);
*overhead* = engine / hand ORM (does the engine cost more than writing it by
hand?). The scaling figure is the engine's page plus capped count at the
largest size over the same at the smallest.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, contains_eager

from bench.generate import generate
from engine import migrate, searchindex
from engine.filters import TEXTUAL
from engine.lists import COUNT_CAP, ListQuery, page
from engine.loader import load
from engine.models import Models, build
from engine.registry import SYSTEM_FIELDS, USER

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "wholesale"
SCHEMA = "crm_bench"
SIZES = (10_000, 100_000, 1_000_000)
LIMIT = 25
#: the issue's targets, checked at TARGET_SIZE (ratios) and largest / smallest size
TARGET_SIZE = 100_000
PLAN_TARGET = 1.5
OVERHEAD_TARGET = 1.5
SCALING_TARGET = 3.0
#: value distributions: ~20 % of orders confirmed, ~20 % of customers in retail
WEIGHTS = {
    "CustomerOrder.status": {"new": 10, "confirmed": 20, "shipped": 15, "closed": 45, "cancelled": 10},
    "Customer.industry": {"retail": 20, "wholesale": 35, "manufacturing": 25, "horeca": 20},
    "Customer.segment": {"A": 15, "B": 35, "C": 50},
    "CustomerOrder.warehouse": {"msk": 70, "spb": 30},
}  # fmt: skip
BIG_TABLES = ("Customer", "CustomerOrder")


@dataclass(frozen=True)
class Scenario:
    name: str
    doctype: str
    filter: Mapping[str, Any]
    extra_columns: tuple[str, ...]
    hand_sql: str
    hand_count: str
    #: the hand-written ORM page: session → rows as dicts
    hand_orm: Callable[[Models, Session], tuple[list[dict[str, Any]], int]]
    #: whether the issue's targets apply (the others are shown for information)
    targeted: bool = True


def _orders_orm(where: Callable[[Any, Any], Any], join_inner: bool = False) -> Callable[..., Any]:
    def run(models: Models, s: Session) -> tuple[list[dict[str, Any]], int]:
        Order, Customer = models.cls("CustomerOrder"), models.cls("Customer")
        join = sa.Select.join if join_inner else sa.Select.outerjoin
        q = join(sa.select(Order), Order.customer)  # type: ignore[attr-defined]
        q = (
            q.outerjoin(Order.manager)  # type: ignore[attr-defined]
            .options(contains_eager(Order.customer), contains_eager(Order.manager))  # type: ignore[attr-defined]
            .where(where(Order, Customer))
            .order_by(Order.date.desc(), Order.id.desc())  # type: ignore[attr-defined]
            .limit(LIMIT)
        )
        rows = [
            {"id": o.id, "number": o.number, "date": o.date,
             "customer": o.customer.name if o.customer else None, "status": o.status,
             "total": o.total, "manager": o.manager.username if o.manager else None,
             "warehouse": o.warehouse}
            for o in s.scalars(q)
        ]  # fmt: skip
        inner = sa.select(Order.id)  # type: ignore[attr-defined]
        if join_inner:
            inner = inner.join(Order.customer)  # type: ignore[attr-defined]
        inner = inner.where(where(Order, Customer)).limit(COUNT_CAP + 1).subquery()
        count = s.scalar(sa.select(sa.func.count()).select_from(inner)) or 0
        return rows, count

    return run


def _customers_orm(models: Models, s: Session) -> tuple[list[dict[str, Any]], int]:
    Customer = models.cls("Customer")
    q = (
        sa.select(Customer)
        .outerjoin(Customer.manager)  # type: ignore[attr-defined]
        .options(contains_eager(Customer.manager))  # type: ignore[attr-defined]
        .where(Customer.industry == "retail")  # type: ignore[attr-defined]
        .order_by(Customer.created_at.desc(), Customer.id.desc())  # type: ignore[attr-defined]
        .limit(LIMIT)
    )
    rows = [
        {"id": c.id, "name": c.name, "inn": c.inn, "phone": c.phone, "segment": c.segment,
         "manager": c.manager.username if c.manager else None, "industry": c.industry,
         "region": c.region}
        for c in s.scalars(q)
    ]  # fmt: skip
    inner = (
        sa.select(Customer.id).where(Customer.industry == "retail").limit(COUNT_CAP + 1).subquery()
    )  # type: ignore[attr-defined]
    return rows, s.scalar(sa.select(sa.func.count()).select_from(inner)) or 0


ORDER_COLUMNS = """o.id, o.number, o.date, o.customer_id, c.name, o.status, o.total,
       o.manager_id, u.username, o.warehouse"""
SCENARIOS = (
    Scenario(
        "orders, status = confirmed",
        "CustomerOrder",
        {"status": "confirmed"},
        ("warehouse",),
        f"""SELECT {ORDER_COLUMNS}
FROM customer_order o
LEFT JOIN customer c ON c.id = o.customer_id
LEFT JOIN ab_user u ON u.id = o.manager_id
WHERE o.status = 'confirmed'
ORDER BY o.date DESC, o.id DESC LIMIT {LIMIT}""",
        f"SELECT count(*) FROM (SELECT 1 FROM customer_order WHERE status = 'confirmed' LIMIT {COUNT_CAP + 1}) t",
        _orders_orm(lambda order, customer: order.status == "confirmed"),
    ),
    Scenario(
        "customers, industry = retail",
        "Customer",
        {"industry": "retail"},
        ("industry", "region"),
        f"""SELECT c.id, c.name, c.inn, c.phone, c.segment, c.manager_id, u.username,
       c.industry, c.region
FROM customer c
LEFT JOIN ab_user u ON u.id = c.manager_id
WHERE c.industry = 'retail'
ORDER BY c.created_at DESC, c.id DESC LIMIT {LIMIT}""",
        f"SELECT count(*) FROM (SELECT 1 FROM customer WHERE industry = 'retail' LIMIT {COUNT_CAP + 1}) t",
        _customers_orm,
    ),
    Scenario(
        "orders, customer.industry = retail",
        "CustomerOrder",
        {"customer.industry": "retail"},
        ("warehouse",),
        f"""SELECT {ORDER_COLUMNS}
FROM customer_order o
JOIN customer c ON c.id = o.customer_id
LEFT JOIN ab_user u ON u.id = o.manager_id
WHERE c.industry = 'retail'
ORDER BY o.date DESC, o.id DESC LIMIT {LIMIT}""",
        f"""SELECT count(*) FROM (SELECT 1 FROM customer_order o JOIN customer c ON c.id = o.customer_id
WHERE c.industry = 'retail' LIMIT {COUNT_CAP + 1}) t""",
        _orders_orm(lambda order, customer: customer.industry == "retail", join_inner=True),
        targeted=False,
    ),
)


@dataclass
class Figures:
    """Medians in milliseconds for one scenario at one size."""

    scenario: str
    size: int
    engine: float
    engine_sql: float
    engine_sql_rows: float
    engine_sql_count: float
    hand_sql: float
    hand_sql_rows: float
    hand_sql_count: float
    hand_orm: float
    count: int
    count_capped: bool
    reps: int
    targeted: bool = True

    @property
    def plan(self) -> float:
        return self.engine_sql / self.hand_sql

    @property
    def overhead(self) -> float:
        return self.engine / self.hand_orm


@dataclass
class Extra:
    name: str
    size: int
    ms: float
    note: str = ""


@dataclass
class Results:
    database: str
    figures: list[Figures] = field(default_factory=list)
    extras: list[Extra] = field(default_factory=list)
    load_seconds: dict[int, float] = field(default_factory=dict)


# -- the database -------------------------------------------------------------


@contextmanager
def fresh_database(url: str | None, size: int, schema: str = SCHEMA) -> Iterator[sa.Engine]:
    """An empty database: a temporary SQLite file, or ``schema`` on PostgreSQL
    (dropped afterwards), or the given SQLite file (tables replaced)."""
    if url is None:
        with tempfile.TemporaryDirectory(prefix="crm-bench-") as folder:
            engine = sa.create_engine(f"sqlite:///{Path(folder) / f'bench-{size}.db'}")
            try:
                yield engine
            finally:
                engine.dispose()
        return
    if url.startswith("postgresql"):
        admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        engine = sa.create_engine(url, connect_args={"options": f"-c search_path={schema}"})
        try:
            yield engine
        finally:
            engine.dispose()
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            admin.dispose()
        return
    engine = sa.create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def fill(
    models: Models,
    engine: sa.Engine,
    size: int,
    log: Callable[[str], None] | None = None,
    doctypes: Sequence[str] = BIG_TABLES,
) -> float:
    """Tables for the config, ``size`` customers and ``size`` orders; seconds taken.

    Indexes of the two big tables are built after the rows are in (several
    times faster than maintaining them row by row), then statistics are
    gathered as autovacuum would on a live PostgreSQL. SQLite's search index
    (FTS5) is likewise built once the rows are in, as ``crm migrate`` does.
    """
    started = time.perf_counter()
    models.metadata.drop_all(engine)
    models.metadata.create_all(engine)
    indexes = [ix for name in BIG_TABLES for ix in models.table(name).indexes]
    with engine.begin() as conn:
        for ix in indexes:
            ix.drop(conn)
        if engine.dialect.name == "sqlite":
            for table in searchindex.fts_columns(models):
                searchindex.drop(conn, table)
        last = [time.perf_counter()]

        def progress(doctype: str, done: int, total: int) -> None:
            if log and (done == total or time.perf_counter() - last[0] > 5):
                last[0] = time.perf_counter()
                log(f"  {doctype}: {done:,} / {total:,}")

        generate(models, conn, [(name, size) for name in doctypes],
                 weights=WEIGHTS, progress=progress)  # fmt: skip
        for ix in indexes:
            ix.create(conn)
        if engine.dialect.name == "sqlite":
            searchindex.sync(models, conn)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            search_indexes(models, conn)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    return time.perf_counter() - started


def search_indexes(models: Models, conn: sa.Connection) -> None:
    """The trigram indexes ``crm migrate`` creates on PostgreSQL for the search."""
    conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    schema = conn.exec_driver_sql(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'pg_trgm'"
    ).scalar_one()
    for tname, column in sorted(migrate.search_columns(models)):
        if tname in {models.table(n).name for n in BIG_TABLES}:
            conn.exec_driver_sql(
                f'CREATE INDEX "{migrate.search_index_name(tname, column)}" ON "{tname}" '
                f'USING gin (lower("{column}") "{schema}".gin_trgm_ops)'
            )


def propose_indexes(models: Models) -> list[sa.Index]:
    """Change the models' indexes the way this benchmark suggests ``engine.models``
    should build them, to show the effect; returns the indexes added.

    - every reference and every field with ``index: true`` (not unique, not an
      audit field) gets the composite (column, list sort column, id) *instead
      of* its one-column index, as list filters and the status have already:
      a list filtered on any of them is then one range scan in page order,
      whatever the share of matching rows, rather than a sort of every
      matching row (SQLite without statistics) or a scan of the sort index
      (a rare value). The composite still serves plain lookups;
    - the existing (filter, sort) composites get ``id`` as a third column, so
      that PostgreSQL needs no sort for the ``id`` tie-break either (SQLite
      has the rowid in every index anyway);
    - every text field in a list's search (any type stored as text, but not
      phones, which their own index serves, nor enums) gets an index on
      ``lower(column)`` (``text_pattern_ops`` on PostgreSQL) for the prefix search.
    """
    added: list[sa.Index] = []
    for d in models.registry.documents.values():
        if d.list is None or d.name == USER:
            continue
        table = models.table(d.name)
        order = d.fields.get(d.list.order_field)
        order_col = order.column if order is not None and order.stored else "created_at"
        wanted = [*d.list.filters, *([d.statuses.field] if d.statuses else [])]
        wanted += [
            f.name for f in d.fields.values() if (f.index and not f.unique) or f.type == "ref"
        ]
        for name in dict.fromkeys(wanted):
            f = d.fields.get(name)
            if f is None or not f.stored or name in SYSTEM_FIELDS or f.column == order_col:
                continue
            if any(
                [c.name for c in ix.columns] == [f.column, order_col, "id"] for ix in table.indexes
            ):
                continue  # engine.models builds it already
            for ix in list(table.indexes):
                if [c.name for c in ix.columns] in ([f.column], [f.column, order_col]):
                    table.indexes.discard(ix)
            cols = (table.c[f.column], table.c[order_col], table.c.id)
            added.append(sa.Index(f"ix_{table.name}_{f.column}_{order_col}_id", *cols))
        for name in d.list.search:
            f = d.fields.get(name)
            if f is None or f.type in ("phone", "enum") or not f.stored:
                continue
            if f.type not in TEXTUAL and not isinstance(table.c[f.column].type, sa.String):
                continue
            label = f"{f.column}_lower"
            added.append(
                sa.Index(
                    f"ix_{table.name}_{label}",
                    sa.func.lower(table.c[f.column]).label(label),
                    postgresql_ops={label: "text_pattern_ops"},
                )
            )
    return added


# -- timing -------------------------------------------------------------------


def medians(
    fns: Mapping[str, Callable[[], object]], min_reps: int, min_seconds: float, warmup: int = 3
) -> tuple[dict[str, float], int]:
    """Median milliseconds of each function, interleaved in a shuffled order so
    that drift and cache effects hit all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns)
    shuffle = random.Random(0).shuffle
    started = time.perf_counter()
    reps = 0
    while reps < min_reps or (time.perf_counter() - started < min_seconds and reps < 1000):
        shuffle(order)
        for key in order:
            fn = fns[key]
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
        reps += 1
    return {k: statistics.median(v) * 1000 for k, v in times.items()}, reps


def driver_sql(select: sa.Select[Any], engine: sa.Engine) -> str:
    """The statement as the engine emits it, values inlined, ready for a bare DB-API cursor."""
    sql = str(select.compile(engine, compile_kwargs={"literal_binds": True}))
    # pyformat drivers (psycopg) double a literal % only when parameters follow
    return sql.replace("%%", "%") if engine.dialect.paramstyle == "pyformat" else sql


def raw_fetch(dbapi: Any, sql: str) -> list[Any]:
    cursor = dbapi.cursor()
    try:
        cursor.execute(sql)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def explain(engine: sa.Engine, sql: str) -> list[str]:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return [str(r[3]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]
        if engine.dialect.name == "postgresql":
            # psycopg reads a lone % (a LIKE pattern's) as a placeholder
            plain = sql.replace("%", "%%")
            return [str(r[0]) for r in conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {plain}")]
    return []


def run_scenario(
    models: Models, engine: sa.Engine, sc: Scenario, size: int, quick: bool
) -> Figures:
    d = models.registry.doc(sc.doctype)
    assert d.list is not None
    columns = (*d.list.columns, *sc.extra_columns)
    query = ListQuery(models, sc.doctype, dialect=engine.dialect.name, filter=sc.filter,
                      columns=columns, limit=LIMIT)  # fmt: skip
    rows_sql, count_sql = driver_sql(query.rows_select, engine), driver_sql(query.count_select, engine)  # fmt: skip

    def engine_call() -> Any:
        with Session(engine) as s:
            return page(models, s, sc.doctype, filter=sc.filter, columns=columns, limit=LIMIT)

    def orm_call() -> Any:
        with Session(engine) as s:
            return sc.hand_orm(models, s)

    dbapi = engine.raw_connection()
    try:
        # the four must show the same page before any of them is timed
        result = engine_call()
        ids = [r["id"] for r in result.rows]
        assert ids == [r[0] for r in raw_fetch(dbapi, sc.hand_sql)], sc.name
        assert ids == [r[0] for r in raw_fetch(dbapi, rows_sql)][:LIMIT], sc.name
        orm_rows, orm_count = orm_call()
        assert ids == [r["id"] for r in orm_rows], sc.name
        assert result.count == min(orm_count, COUNT_CAP), sc.name

        timed, reps = medians(
            {
                "engine": engine_call,
                "engine_rows": lambda: raw_fetch(dbapi, rows_sql),
                "engine_count": lambda: raw_fetch(dbapi, count_sql),
                "hand_rows": lambda: raw_fetch(dbapi, sc.hand_sql),
                "hand_count": lambda: raw_fetch(dbapi, sc.hand_count),
                "orm": orm_call,
            },
            min_reps=7 if quick else 21,
            min_seconds=0.3 if quick else 1.0,
        )
    finally:
        dbapi.close()
    return Figures(
        sc.name, size, timed["engine"],
        timed["engine_rows"] + timed["engine_count"], timed["engine_rows"], timed["engine_count"],
        timed["hand_rows"] + timed["hand_count"], timed["hand_rows"], timed["hand_count"],
        timed["orm"],
        result.count, result.count_capped, reps, sc.targeted,
    )  # fmt: skip


def run_extras(models: Models, engine: sa.Engine, size: int, quick: bool) -> list[Extra]:
    """Deep pages (OFFSET against the keyset cursor) and search, for information."""
    flt = {"status": "confirmed"}
    deep = 9_975

    def orders(**kw: Any) -> Any:
        with Session(engine) as s:
            return page(models, s, "CustomerOrder", filter=flt, **kw)

    out: list[Extra] = []
    first = orders()
    if first.count_capped or first.count > deep + LIMIT:
        cursor = orders(offset=deep - LIMIT).next_cursor
        assert [r["id"] for r in orders(after=cursor).rows] == [
            r["id"] for r in orders(offset=deep).rows
        ]
        timed, _ = medians(
            {"offset": lambda: orders(offset=deep), "keyset": lambda: orders(after=cursor)},
            min_reps=5 if quick else 15,
            min_seconds=0.2 if quick else 0.5,
        )
        out.append(Extra(f"orders page at row {deep:,}: OFFSET", size, timed["offset"]))
        out.append(Extra(f"orders page at row {deep:,}: keyset cursor", size, timed["keyset"]))

    def search() -> Any:
        with Session(engine) as s:
            return page(models, s, "Customer", search="ром")

    timed, _ = medians({"s": search}, min_reps=5 if quick else 11, min_seconds=0.2)
    found = search()
    note = f"{found.count:,}{'+' if found.count_capped else ''} found"
    out.append(Extra("customers, search 'ром' (name, inn, phone, email)", size, timed["s"], note))
    out += search_against_equality(models, engine, size, quick)
    return out


#: a search (a word anywhere in the name, a phone by its digits) may cost this
#: many times an equality filter on the same list, at any size
SEARCH_TARGET = 3.0


def search_against_equality(
    models: Models, engine: sa.Engine, size: int, quick: bool
) -> list[Extra]:
    """The substring search (a word in the middle of the name, ~1 row in 450)
    and a phone written another way than it is stored (one row) against an
    equality filter on the same list, page and capped count each."""

    def customers(**kw: Any) -> Any:
        with Session(engine) as s:
            return page(models, s, "Customer", **kw)

    with engine.connect() as conn:
        table = models.table("Customer")
        stored = conn.execute(
            sa.select(table.c.phone).where(table.c.phone.is_not(None)).order_by(table.c.id).limit(1)
        ).scalar_one()
    # +79123456789 → 8 (912) 345-67-89
    d = stored[2:]
    dialled = f"8 ({d[:3]}) {d[3:6]}-{d[6:8]}-{d[8:]}"
    calls = {
        "anywhere": lambda: customers(search="машка Цен"),
        "phone": lambda: customers(search=dialled),
        "equality": lambda: customers(filter={"industry": "retail"}),
    }
    timed, _ = medians(calls, min_reps=5 if quick else 11, min_seconds=0.2)
    # the index finds what a scan finds: the generated names hold the words as cased here
    with engine.connect() as conn:
        hand = conn.execute(
            sa.select(sa.func.count()).where(table.c.name.like("%машка Цен%"))
        ).scalar_one()
        one = conn.execute(sa.select(sa.func.count()).where(table.c.phone == stored)).scalar_one()
    assert calls["anywhere"]().count == min(hand, COUNT_CAP), "the search missed rows"
    assert calls["phone"]().count == one, "the phone search missed the number"
    out = []
    for key, title in (
        ("anywhere", "customers, search 'машка Цен' anywhere"),
        ("phone", f"customers, search phone '{dialled}'"),
    ):
        found = calls[key]()
        ratio = timed[key] / timed["equality"]
        note = f"{found.count:,}{'+' if found.count_capped else ''} found; {ratio:.2f}x equality"
        out.append(Extra(title, size, timed[key], note))
    out.append(Extra("customers, filter industry = retail", size, timed["equality"]))
    return out


def run_search(
    size: int,
    *,
    url: str | None = None,
    quick: bool = False,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> tuple[str, list[Extra], list[str]]:
    """``python -m bench --search``: ``size`` customers, the searches against the
    equality filter; (database, figures, targets missed)."""
    models = build(load(CONFIG, env={}))
    try:
        with fresh_database(url, size) as engine:
            database = database_name(engine)
            log(f"{dt.datetime.now():%H:%M:%S} filling {size:,} customers")
            seconds = fill(models, engine, size, log, doctypes=("Customer",))
            if engine.dialect.name == "sqlite":
                with engine.begin() as conn:  # as crm migrate does
                    conn.exec_driver_sql("ANALYZE")
            log(f"  loaded in {seconds:.1f} s; measuring")
            extras = search_against_equality(models, engine, size, quick)
            for e in extras:
                log(f"  {e.name}: {e.ms:.2f} ms {e.note}")
            query = ListQuery(models, "Customer", dialect=engine.dialect.name, search="машка Цен")
            for title, sql in (("rows", query.rows_select), ("count", query.count_select)):
                log(f"-- plan of the search 'машка Цен': {title}")
                for line in explain(engine, driver_sql(sql, engine)):
                    log(f"   {line}")
    finally:
        models.dispose()
    equality = extras[-1].ms
    missed = [
        f"{e.name}: {e.ms / equality:.2f}x equality"
        for e in extras[:-1]
        if e.ms / equality > SEARCH_TARGET
    ]
    return database, extras, missed


# -- reporting ----------------------------------------------------------------


def _ms(v: float) -> str:
    return f"{v:8.2f}"


def report(results: Results, out: Callable[[str], None] = print) -> list[str]:
    """Print the tables; return the targets missed."""
    out(f"\nList page benchmark on {results.database} (medians, ms; {LIMIT} rows + count capped at {COUNT_CAP:,})")  # fmt: skip
    out(f"{'rows':>10}  {'scenario':<36}{'engine':>9}{'eng.SQL':>9}{'hand SQL':>9}{'hand ORM':>9}{'plan':>7}{'overhd':>7}  count")  # fmt: skip
    for f in results.figures:
        count = f"{f.count:,}" + ("+" if f.count_capped else "")
        out(f"{f.size:>10,}  {f.scenario:<36}{_ms(f.engine)} {_ms(f.engine_sql)} {_ms(f.hand_sql)} {_ms(f.hand_orm)}"
            f"{f.plan:7.2f}{f.overhead:7.2f}  {count}")  # fmt: skip
    missed: list[str] = []
    sizes = sorted({f.size for f in results.figures})
    by = {(f.scenario, f.size): f for f in results.figures}
    scenarios = list(dict.fromkeys(f.scenario for f in results.figures))
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        out(f"\nScaling of the engine's page + count, {large:,} rows / {small:,} rows:")
        for name in scenarios:
            a, b = by.get((name, small)), by.get((name, large))
            if a is None or b is None:
                continue
            ratio = b.engine / a.engine
            flag = ""
            if a.targeted and large >= 1_000_000 and small <= 10_000:
                flag = "ok" if ratio <= SCALING_TARGET else f"MISSED (target ≤ {SCALING_TARGET})"
                if ratio > SCALING_TARGET:
                    missed.append(f"scaling {name}: {ratio:.2f}")
            out(f"  {name:<36}{ratio:6.2f}×  {flag}")
    checked = [f for f in results.figures if f.size == TARGET_SIZE and f.targeted]
    if checked:
        out(
            f"\nTargets at {TARGET_SIZE:,} rows: plan ≤ {PLAN_TARGET}, overhead ≤ {OVERHEAD_TARGET}"
        )
        for f in checked:
            bad = []
            if f.plan > PLAN_TARGET:
                bad.append(f"plan {f.plan:.2f}")
            if f.overhead > OVERHEAD_TARGET:
                bad.append(f"overhead {f.overhead:.2f}")
            out(f"  {f.scenario:<36}{'MISSED: ' + ', '.join(bad) if bad else 'ok'}")
            missed += [f"{f.scenario}: {b}" for b in bad]
    if results.extras:
        out("\nFor information:")
        for e in results.extras:
            out(f"{e.size:>10,}  {e.name:<52}{_ms(e.ms)} ms  {e.note}")
    if results.load_seconds:
        loads = ", ".join(f"{s:,}: {t:.1f} s" for s, t in sorted(results.load_seconds.items()))
        out(f"\nGenerating and loading (customers + orders, indexes, statistics): {loads}")
    return missed


def database_name(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return f"SQLite {conn.exec_driver_sql('select sqlite_version()').scalar()}"
        if engine.dialect.name == "postgresql":
            version = str(conn.exec_driver_sql("show server_version").scalar())
            return f"PostgreSQL {version.split()[0]}"
    return engine.dialect.name


def run(
    sizes: Sequence[int],
    *,
    url: str | None = None,
    quick: bool = False,
    extras: bool = True,
    show_plans: bool = False,
    proposed: bool = False,
    analyze: bool = False,
    scenarios: Sequence[Scenario] = SCENARIOS,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> Results:
    """Fill and measure each size; ``proposed`` adds :func:`propose_indexes`,
    ``analyze`` gathers SQLite's statistics (PostgreSQL's are always gathered)."""
    models = build(load(CONFIG, env={}))
    if proposed:
        propose_indexes(models)
    results = Results(database="")
    try:
        for size in sizes:
            with fresh_database(url, size) as engine:
                if not results.database:
                    notes = [n for n, on in (("proposed indexes", proposed), ("ANALYZE", analyze)) if on]  # fmt: skip
                    results.database = database_name(engine) + "".join(f", {n}" for n in notes)
                log(f"{dt.datetime.now():%H:%M:%S} filling {size:,} customers and {size:,} orders")
                results.load_seconds[size] = fill(models, engine, size, log)
                if analyze and engine.dialect.name == "sqlite":
                    with engine.begin() as conn:
                        conn.exec_driver_sql("ANALYZE")
                log(f"  loaded in {results.load_seconds[size]:.1f} s; measuring")
                for sc in scenarios:
                    if quick and not sc.targeted:
                        continue
                    results.figures.append(run_scenario(models, engine, sc, size, quick))
                    if show_plans and size == sizes[-1]:
                        _show_plans(models, engine, sc, log)
                if extras:
                    results.extras += run_extras(models, engine, size, quick)
    finally:
        models.dispose()
    return results


def _show_plans(
    models: Models, engine: sa.Engine, sc: Scenario, log: Callable[[str], None]
) -> None:
    d = models.registry.doc(sc.doctype)
    assert d.list is not None
    query = ListQuery(models, sc.doctype, dialect=engine.dialect.name, filter=sc.filter,
                      columns=(*d.list.columns, *sc.extra_columns))  # fmt: skip
    for title, sql in (("rows", query.rows_select), ("count", query.count_select)):
        log(f"-- plan of {sc.name}: {title}")
        for line in explain(engine, driver_sql(sql, engine)):
            log(f"   {line}")


def save(results: Results, path: Path) -> None:
    data = {
        "database": results.database,
        "figures": [asdict(f) | {"plan": f.plan, "overhead": f.overhead} for f in results.figures],
        "extras": [asdict(e) for e in results.extras],
        "load_seconds": results.load_seconds,
    }
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
