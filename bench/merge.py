"""The merge benchmark: ``python -m bench --merge [--quick] [--rows N] [--db URL]``.

Two customers of the demo's configuration (the base layer with processes,
mail and telephony: every kind of reference a customer has) each with N
linked records of every kind the issue names — deals, customer orders,
interactions, tasks (by ``doctype`` + ``doc_id``) and contact persons —
1 000 each by default (200 with ``--quick``), among the records of 2 000
other customers (four each, so the indexes have something to skip).

Timed, each several times, the median kept:

- *merge*: ``engine.merge.merge`` through the documents service and the
  commit, as the merge page does it: one transaction that moves every
  reference of every type, archives the duplicate and logs the merge;
- *undo*: ``engine.merge.undo`` and the commit;
- *hand-written SQL*: the same moves written by hand on the same connection,
  one ``UPDATE ... WHERE col = :dup`` per referencing column and the archive
  flag, without the log (the floor of any merge).

Targets: the merge is one transaction under a second, within 3× the
hand-written SQL.
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bench.telephony_lookup import _bulk

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "demo"
ROWS = 1_000
QUICK_ROWS = 200
OTHERS = 2_000
REPEATS = 5
QUICK_REPEATS = 3
TARGET_S = 1.0
TARGET_RATIO = 3.0
SCHEMA = "crm_bench_merge"
#: the linked records per customer: type → how it points at the customer
LINKED = {
    "Deal": "customer_id",
    "CustomerOrder": "customer_id",
    "Interaction": "customer_id",
    "ContactPerson": "customer_id",
    "Task": "doc_id",
}


def fill(models: Any, engine: sa.Engine, rows: int) -> tuple[int, int]:
    """The schema, the two duplicates (ids 1 and 2) and everybody's records."""
    models.metadata.create_all(engine)
    now = dt.datetime.now(dt.UTC)
    customers = models.table("Customer")
    total = OTHERS + 2
    _bulk(engine, customers, ["id", "version", "created_at", "name", "inn"],
          ((i, 1, now, f"Customer {i}", None if i > 2 else "7707083893") for i in range(1, total + 1)))  # fmt: skip
    for doctype, column in LINKED.items():
        table = models.table(doctype)
        extra: dict[str, Any] = {"doctype": "Customer"} if column == "doc_id" else {}
        names = ["version", "created_at", column, *extra]

        def rows_of(column: str = column, extra: dict[str, Any] = extra) -> Any:
            for target in (1, 2):
                for _ in range(rows):
                    yield (1, now, target, *extra.values())
            for target in range(3, total + 1):
                for _ in range(4):
                    yield (1, now, target, *extra.values())

        _bulk(engine, table, names, rows_of())
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            for t in models.metadata.sorted_tables:
                if "id" in t.c and isinstance(t.c.id.type, sa.Integer) and t.c.id.primary_key:
                    # the sequence past the ids written by hand: bound name, Core max()
                    name = engine.dialect.identifier_preparer.format_table(t)
                    top = sa.func.coalesce(sa.select(sa.func.max(t.c.id)).scalar_subquery(), 0)
                    sequence = sa.func.pg_get_serial_sequence(sa.literal(name), "id")
                    conn.execute(sa.select(sa.func.setval(sequence, top + 1, False)))
            conn.execute(sa.text("ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.execute(sa.text("ANALYZE"))
    return 1, 2


def hand_written(models: Any, conn: sa.Connection, survivor: int, dup: int) -> None:
    """The moves of a merge by hand: one UPDATE per referencing column."""
    from engine import merge as merging

    for ref in merging.references(models, "Customer"):
        t = ref.table
        cond = t.c[ref.column] == dup
        if ref.type_column is not None:
            cond = sa.and_(t.c[ref.type_column] == "Customer", cond)
        conn.execute(sa.update(t).where(cond).values({ref.column: survivor}))
    customers = models.table("Customer")
    conn.execute(sa.update(customers).where(customers.c.id == dup).values(merged_into=survivor))


def hand_written_back(
    models: Any, conn: sa.Connection, survivor: int, dup: int, moved: Any
) -> None:
    customers = models.table("Customer")
    for name, column, by_target in moved:
        t = models.metadata.tables[name]
        for ids in by_target.values():
            conn.execute(sa.update(t).where(t.c.id.in_(ids)).values({column: dup}))
    conn.execute(sa.update(customers).where(customers.c.id == dup).values(merged_into=None))


def measure(models: Any, engine: sa.Engine, repeats: int, rows: int) -> dict[str, Any]:
    from engine import merge as merging
    from engine.access import Principal
    from engine.documents import Documents

    survivor, dup = 1, 2
    times: dict[str, list[float]] = {"merge": [], "undo": [], "hand-written SQL": []}
    statements: list[int] = []
    moved_rows = 0
    for _ in range(repeats):
        with Session(engine) as session:
            count = {"n": 0}

            def tally(*_: Any, count: dict[str, int] = count) -> None:
                count["n"] += 1

            sa.event.listen(engine, "before_cursor_execute", tally)
            started = time.perf_counter()
            docs = Documents.for_principal(models, session, Principal.system())
            merge_id = merging.merge(docs, "Customer", survivor, [dup], {"inn": dup})
            session.commit()
            times["merge"].append(time.perf_counter() - started)
            sa.event.remove(engine, "before_cursor_execute", tally)
            statements.append(count["n"])
            found = merging.get(models, session, merge_id)
            assert found is not None
            moved_rows = found.count
            moved = found.moved
            started = time.perf_counter()
            merging.undo(Documents.for_principal(models, session, Principal.system()), merge_id)
            session.commit()
            times["undo"].append(time.perf_counter() - started)
        with engine.connect() as conn:
            started = time.perf_counter()
            with conn.begin():
                hand_written(models, conn, survivor, dup)
            times["hand-written SQL"].append(time.perf_counter() - started)
            with conn.begin():
                hand_written_back(models, conn, survivor, dup, moved)
    return {
        "times": {k: statistics.median(v) for k, v in times.items()},
        "statements": max(statements),
        "moved": moved_rows,
        "rows": rows,
    }


def run(
    rows: int,
    url: str | None = None,
    repeats: int = REPEATS,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    from bench.suite import database_name, fresh_database
    from engine.loader import load
    from engine.models import build

    registry = load(CONFIG, env={})
    models = build(registry)
    try:
        with fresh_database(url, rows, schema=SCHEMA) as engine:
            database = database_name(engine)
            log(f"{dt.datetime.now():%H:%M:%S} filling on {database}")
            fill(models, engine, rows)
            log("  measuring")
            figures = measure(models, engine, repeats, rows)
            figures["database"] = database
    finally:
        models.dispose()
    return figures


def report(f: dict[str, Any]) -> list[str]:
    """Print the figures; the targets missed."""
    t = f["times"]
    print(f"\nMerge of two customers with {f['rows']:,} linked records of each kind "
          f"({', '.join(LINKED)}) on {f['database']}")  # fmt: skip
    print(f"  references moved: {f['moved']:,}; statements of the merge: {f['statements']}")
    floor = t["hand-written SQL"]
    for name in ("merge", "undo", "hand-written SQL"):
        print(
            f"    {name:<18} {t[name] * 1000:9.1f} ms  ×{t[name] / floor:5.2f} the hand-written SQL"
        )
    missed = []
    if t["merge"] >= TARGET_S:
        missed.append(f"merge took {t['merge']:.2f} s (target < {TARGET_S} s)")
    if t["merge"] / floor > TARGET_RATIO:
        missed.append(
            f"merge ×{t['merge'] / floor:.1f} the hand-written SQL (target ≤ {TARGET_RATIO})"
        )
    return missed
