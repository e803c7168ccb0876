"""The caller-lookup benchmark: ``python -m bench --lookup [--quick] [--rows N] [--db URL]``.

Who is calling, when a call rings: the telephony plugin's lookup
(``plugins.telephony.lookup``) finds the records whose phone is the
caller's number, in one ``UNION ALL`` of one equality per phone column.
Here it runs over N customers (a quarter of them with a second phone) and
N contact persons (1 M each; 50 k with ``--quick``) of the demo's
configuration (the base layer with telephony on: ``Customer.phone``,
``Customer.phone2``, ``ContactPerson.phone``), the rows written with bulk
INSERTs (COPY on PostgreSQL), then the indexes built and statistics taken.

Each of a sample of numbers (customers' phones, second phones, contact
persons' phones and numbers nobody has) is looked up, the contenders
interleaved in a shuffled order per number:

- *raw SELECT*: ``SELECT id FROM customer WHERE phone = ?`` on a bare DB-API
  cursor — the floor of any lookup;
- *raw UNION*: the same UNION ALL over the same phone columns, written by
  hand, on the bare cursor;
- *lookup SQL*: ``lookup.statement``'s SQL on the bare cursor (the SQL alone);
- *lookup.find*: the plugin's call as the CRM makes it, through a SQLAlchemy
  session, building its Party results.

Median and p95 per lookup; target: ``lookup.find`` within 2× the raw
SELECT. EXPLAIN of the lookup's statement must show an index for every part
(no scan of a table).
"""

from __future__ import annotations

import datetime as dt
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "demo"
ROWS = 1_000_000
QUICK_ROWS = 50_000
SAMPLES = 2_000
QUICK_SAMPLES = 600
TARGET = 2.0  # lookup.find against the raw indexed SELECT
SCHEMA = "crm_bench_lookup"
CHUNK = 50_000


def customer_phone(n: int) -> str:
    return f"+7495{n:07d}"


def second_phone(n: int) -> str:
    return f"+7499{n:07d}"


def contact_phone(n: int) -> str:
    return f"+7916{n:07d}"


def _bulk(engine: sa.Engine, table: sa.Table, columns: list[str], rows: Any) -> None:
    """Rows (tuples in ``columns`` order) into ``table``: COPY on PostgreSQL,
    an executemany INSERT in chunks elsewhere."""
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            raw.commit()
        finally:
            raw.close()
        return
    insert = sa.insert(table)
    chunk: list[dict[str, Any]] = []
    with engine.begin() as conn:
        for row in rows:
            chunk.append(dict(zip(columns, row, strict=True)))
            if len(chunk) >= CHUNK:
                conn.execute(insert, chunk)
                chunk = []
        if chunk:
            conn.execute(insert, chunk)


def fill(models: Any, engine: sa.Engine, rows: int, log: Callable[[str], None]) -> float:
    """The tables of the config; ``rows`` customers and ``rows`` contact
    persons, indexes built after; seconds taken."""
    started = time.perf_counter()
    models.metadata.create_all(engine)
    customers, contacts = models.table("Customer"), models.table("ContactPerson")
    indexes = [ix for t in (customers, contacts) for ix in t.indexes]
    with engine.begin() as conn:
        for ix in indexes:
            ix.drop(conn)
    at = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    log(f"  {rows:,} customers")
    _bulk(engine, customers, ["id", "name", "phone", "phone2", "version", "created_at"],
          ((n, f"Customer {n}", customer_phone(n), second_phone(n) if n % 4 == 0 else None, 1, at)
           for n in range(1, rows + 1)))  # fmt: skip
    log(f"  {rows:,} contact persons")
    _bulk(engine, contacts, ["id", "customer_id", "name", "phone", "version", "created_at"],
          ((n, n, f"Contact {n}", contact_phone(n), 1, at) for n in range(1, rows + 1)))  # fmt: skip
    log("  indexes")
    with engine.begin() as conn:
        for ix in indexes:
            ix.create(conn)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{customers.name}', 'id'), {rows})"
            )
            conn.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{contacts.name}', 'id'), {rows})"
            )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"VACUUM ANALYZE {customers.name}")
            conn.exec_driver_sql(f"VACUUM ANALYZE {contacts.name}")
    else:
        with engine.begin() as conn:  # as crm migrate does
            conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - started


def sample(rows: int, count: int, seed: int = 13) -> list[tuple[str, str]]:
    """Numbers to look up, each with what it is: 40 % customers' phones, 10 %
    second phones, 30 % contact persons', 20 % nobody's."""
    rng = random.Random(seed)
    out = []
    for k in range(count):
        n = rng.randint(1, rows)
        kind = ("customer", "customer", "customer", "customer", "phone2", "contact", "contact",
                "contact", "nobody", "nobody")[k % 10]  # fmt: skip
        if kind == "phone2":
            n = max(4, n - n % 4)
        number = {
            "customer": customer_phone(n), "phone2": second_phone(n), "contact": contact_phone(n),
            "nobody": f"+7812{n:07d}",
        }[kind]  # fmt: skip
        out.append((kind, number))
    return out


def raw_union_sql(models: Any, mark: str) -> str:
    """The lookup written by hand: the same columns, the same parts."""
    c, p = models.table("Customer").name, models.table("ContactPerson").name
    return (
        f"SELECT 'Customer' AS doctype, id, manager_id AS owner_id, "
        f"CAST(NULL AS VARCHAR) AS parent_type, CAST(NULL AS INTEGER) AS parent_id "
        f"FROM {c} WHERE phone = {mark} UNION ALL SELECT 'Customer', id, manager_id, "
        f"CAST(NULL AS VARCHAR), CAST(NULL AS INTEGER) FROM {c} WHERE phone2 = {mark} "
        f"UNION ALL SELECT 'ContactPerson', id, CAST(NULL AS INTEGER), 'Customer', customer_id FROM {p} "
        f"WHERE phone = {mark} LIMIT 20"
    )


def _explain(engine: sa.Engine, sql: str) -> list[str]:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return [str(r[3]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]
        return [str(r[0]) for r in conn.exec_driver_sql(f"EXPLAIN {sql}")]


def indexed(lines: list[str], tables: list[str], dialect: str) -> bool:
    """Whether a plan reads every one of ``tables`` through an index and scans none."""
    text = "\n".join(lines)
    if dialect == "sqlite":
        scans = any(line.strip().startswith("SCAN") and "INDEX" not in line for line in lines)
        used = sum(1 for line in lines if "USING" in line and "INDEX" in line)
    else:
        scans = "Seq Scan" in text
        used = sum(1 for line in lines if "Index" in line and " on " in line)
    return not scans and used >= len(tables)


def _stats(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return statistics.median(ordered) * 1000, p95 * 1000


def measure(models: Any, engine: sa.Engine, numbers: list[tuple[str, str]]) -> dict[str, Any]:
    """Per-lookup times of the contenders, interleaved; agreement checked."""
    from plugins.telephony import lookup, settings

    own = settings.of(models.registry)
    types = lookup.phone_fields(models.registry, own)
    mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    table = models.table("Customer")
    simple = sa.select(table.c.id).where(table.c.phone == sa.bindparam("n"))
    customers = engine.dialect.identifier_preparer.quote(table.name)
    union = sa.text(raw_union_sql(models, ":n"))
    bare_simple = f"SELECT id FROM {customers} WHERE phone = {mark}"
    compiled = lookup.prepared(models, own).compile(engine)
    bare_lookup = str(compiled)
    constants = dict(compiled.params)
    positions = list(compiled.positiontup or []) if compiled.positional else []

    def bare_args(number: str) -> Any:
        if compiled.positional:
            return [number if k == "number" else constants[k] for k in positions]
        return {**constants, "number": number}

    raw = engine.raw_connection()
    session = Session(engine)
    conn = session.connection()

    def fetch(sql: str, params: Any) -> list[Any]:
        cursor = raw.cursor()
        try:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
        finally:
            cursor.close()

    contenders: dict[str, Callable[[str], Any]] = {
        "raw SELECT": lambda n: conn.execute(simple, {"n": n}).all(),
        "raw UNION": lambda n: conn.execute(union, {"n": n}).all(),
        "lookup.find": lambda n: lookup.find(session, models, own, n),
        "bare SELECT": lambda n: fetch(bare_simple, [n]),
        "bare lookup": lambda n: fetch(bare_lookup, bare_args(n)),
    }
    times: dict[str, list[float]] = {k: [] for k in contenders}
    found_counts: dict[str, int] = {}
    wrong = 0
    try:
        for _kind, number in numbers[:50]:  # warm up
            for fn in contenders.values():
                fn(number)
        order = list(contenders)
        shuffle = random.Random(0).shuffle
        for kind, number in numbers:
            shuffle(order)
            results = {}
            for name in order:
                t0 = time.perf_counter()
                results[name] = contenders[name](number)
                times[name].append(time.perf_counter() - t0)
            found = results["lookup.find"]
            found_counts[kind] = found_counts.get(kind, 0) + len(found)
            hand = sorted((r[0], r[1]) for r in results["raw UNION"])
            bare = sorted((r[0], r[1]) for r in results["bare lookup"])
            if sorted((p.doctype, p.id) for p in found) != hand or bare != hand:
                wrong += 1
    finally:
        session.close()
        raw.close()
    figures: dict[str, Any] = {"wrong": wrong, "found": found_counts}
    for name, values in times.items():
        figures[name] = _stats(values)
    literal = lookup.statement(models, types, "+74950000001")
    sql = str(literal.compile(engine, compile_kwargs={"literal_binds": True}))
    figures["plan"] = _explain(engine, sql)
    parts = [models.table(name).name for name, fields in types.items() for _ in fields]
    figures["indexed"] = indexed(figures["plan"], parts, engine.dialect.name)
    figures["parts"] = len(parts)
    return figures


def _scratch(dbapi: Any, record: Any) -> None:
    dbapi.execute("PRAGMA synchronous = OFF")
    dbapi.execute("PRAGMA journal_mode = MEMORY")


def run(
    rows: int,
    url: str | None = None,
    samples: int | None = None,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    from bench.suite import database_name, fresh_database
    from engine.loader import load
    from engine.models import build

    registry = load(CONFIG, env={})
    models = build(registry)
    figures: dict[str, Any] = {"rows": rows}
    try:
        with fresh_database(url, rows, schema=SCHEMA) as engine:
            if engine.dialect.name == "sqlite":
                # a scratch file: no fsync per statement while it fills (lookups only read)
                sa.event.listen(engine, "connect", _scratch)
            figures["database"] = database_name(engine)
            log(f"{dt.datetime.now():%H:%M:%S} filling on {figures['database']}")
            figures["fill_s"] = fill(models, engine, rows, log)
            log(f"  loaded in {figures['fill_s']:.1f} s; measuring")
            count = samples or (SAMPLES if rows >= ROWS else QUICK_SAMPLES)
            figures |= measure(models, engine, sample(rows, count))
            figures["samples"] = count
    finally:
        models.dispose()
    return figures


def report(f: dict[str, Any]) -> list[str]:
    """Print the figures; the targets missed."""
    print(f"\nCaller lookup over {f['rows']:,} customers + {f['rows']:,} contact persons on "
          f"{f['database']} ({f['samples']:,} numbers, {f['parts']} phone columns; ms per lookup)")  # fmt: skip
    floor = f["raw SELECT"][0]
    print("  through the session's connection (SQLAlchemy, the driver):")
    for name in ("raw SELECT", "raw UNION", "lookup.find"):
        median, p95 = f[name]
        print(
            f"    {name:<12} median {median:7.3f}  p95 {p95:7.3f}  ×{median / floor:5.2f} the raw SELECT"
        )
    print("  on a bare DB-API cursor (the SQL alone, no SQLAlchemy):")
    for name in ("bare SELECT", "bare lookup"):
        median, p95 = f[name]
        print(
            f"    {name:<12} median {median:7.3f}  p95 {p95:7.3f}  ×{median / f['bare SELECT'][0]:5.2f} the bare SELECT"
        )
    print(f"  found: {f['found']}; disagreements with the raw UNION: {f['wrong']}")
    print(f"  plan of the lookup ({'every part indexed' if f['indexed'] else 'NOT all indexed'}):")
    for line in f["plan"]:
        print(f"    {line}")
    missed = []
    ratio = f["lookup.find"][0] / floor if floor else float("inf")
    if ratio > TARGET:
        missed.append(f"lookup.find {ratio:.2f}x the raw SELECT (target ≤ {TARGET}x)")
    if not f["indexed"]:
        missed.append("a part of the lookup scans a table")
    if f["wrong"]:
        missed.append(f"{f['wrong']} lookups disagree with the raw UNION")
    return missed
