"""The import benchmark: ``python -m bench --imports [--quick] [--rows N] [--db URL]``.

N customers of ``configs/wholesale`` (100 k, 10 k with ``--quick``) are
generated, made valid and exported to a CSV file by :func:`engine.transfer.export`
(managers by login). Then, into the same empty table, each twice and keeping the
better time:

- *Core*: SQLAlchemy Core ``executemany`` of the very rows, already normalized,
  in one transaction: the floor of any import;
- *import*: :func:`engine.transfer.import_` of the CSV file: reading it, every
  value normalized and checked by the documents service's rules, the managers
  found by login, the rows written, in one transaction.

*ratio* = import / Core; the issue's target is 5× at 100 k rows. The imported
rows are compared with the Core ones, so a fast but wrong import cannot pass.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bench.generate import Generator
from bench.suite import database_name, fresh_database
from engine.fieldtypes import normalize_phone
from engine.loader import load
from engine.models import Models, build
from engine.transfer import export, import_

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "wholesale"
SCHEMA = "crm_bench_imports"
ROWS = 100_000
QUICK_ROWS = 10_000
TARGET = 5.0
TARGET_ROWS = 100_000
DOCTYPE = "Customer"
#: the columns compared between the Core rows and the imported ones
AUDIT = ("id", "created_at", "created_by_id", "updated_at", "updated_by_id", "version")


@dataclass
class ImportFigures:
    rows: int
    database: str
    export_s: float
    core_s: float
    import_s: float
    file_mb: float

    @property
    def ratio(self) -> float:
        return self.import_s / self.core_s if self.core_s else float("inf")

    @property
    def targeted(self) -> bool:
        return self.rows >= TARGET_ROWS


def _empty(engine: sa.Engine, table: sa.Table) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(f"TRUNCATE {table.name} RESTART IDENTITY CASCADE")
        else:
            conn.execute(table.delete())
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"VACUUM ANALYZE {table.name}")


def _rows(models: Models, engine: sa.Engine, count: int) -> list[dict[str, Any]]:
    """``count`` generated customers, made valid (the generator's phone numbers
    need not exist), as the rows the table holds."""
    table = models.table(DOCTYPE)
    with engine.begin() as conn:
        gen = Generator(models)
        gen.users(conn, 40)
        gen.documents(conn, DOCTYPE, count)
        rows = [dict(r._mapping) for r in conn.execute(sa.select(table).order_by(table.c.id))]
    phones = [c.name for c in table.c if c.name.startswith("phone")]
    for row in rows:
        del row["id"]
        for name in phones:
            if row[name] and normalize_phone(row[name]) is None:
                row[name] = "+7916" + row[name][-7:]
    return rows


def _content(engine: sa.Engine, table: sa.Table) -> list[tuple[Any, ...]]:
    cols = [c for c in table.c if c.name not in AUDIT]
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(*cols).order_by(table.c.id))]


def run(
    rows: int, url: str | None = None, repeat: int = 2, log: Callable[[str], None] = print
) -> ImportFigures:
    models = build(load(CONFIG, env={}))
    try:
        with fresh_database(url, rows, schema=SCHEMA) as engine:
            return _run(models, engine, rows, repeat, log)
    finally:
        models.dispose()


def _run(
    models: Models, engine: sa.Engine, count: int, repeat: int, log: Callable[[str], None]
) -> ImportFigures:
    table = models.table(DOCTYPE)
    models.metadata.create_all(engine)
    log(f"  generating {count:,} customers...")
    rows = _rows(models, engine, count)
    _empty(engine, table)
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
    expected = _content(engine, table)
    with Session(engine) as session:
        started = time.perf_counter()
        out = io.BytesIO()
        export(models, session, DOCTYPE, out)
        export_s = time.perf_counter() - started
    data = out.getvalue()
    core_times, import_times = [], []
    for _ in range(repeat):
        _empty(engine, table)
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(table.insert(), rows)
        core_times.append(time.perf_counter() - started)
        _empty(engine, table)
        started = time.perf_counter()
        with Session(engine) as session:
            result = import_(models, session, DOCTYPE, io.BytesIO(data), "csv")
            session.commit()
        import_times.append(time.perf_counter() - started)
        if not result.ok or result.created != count:
            raise RuntimeError(f"the import failed: {result.errors[:5]}")
        if _content(engine, table) != expected:
            raise RuntimeError("the imported rows differ from the generated ones")
    return ImportFigures(
        rows=count,
        database=database_name(engine),
        export_s=export_s,
        core_s=min(core_times),
        import_s=min(import_times),
        file_mb=len(data) / 1e6,
    )


def report(fig: ImportFigures, out: Callable[[str], None] = print) -> list[str]:
    """Print the figures; return the targets missed."""
    out(f"\nImport benchmark on {fig.database}: {fig.rows:,} customers "
        f"({fig.file_mb:.1f} MB of CSV)")  # fmt: skip
    out(f"  export to CSV          {fig.export_s:8.2f} s  {fig.rows / fig.export_s:10,.0f} rows/s")
    out(f"  Core executemany       {fig.core_s:8.2f} s  {fig.rows / fig.core_s:10,.0f} rows/s")
    out(f"  import, full checks    {fig.import_s:8.2f} s  {fig.rows / fig.import_s:10,.0f} rows/s")
    verdict = "" if not fig.targeted else (" OK" if fig.ratio <= TARGET else " MISSED")
    out(f"  ratio import / Core    {fig.ratio:8.2f}×  (target ≤ {TARGET:g}× at "
        f"{TARGET_ROWS:,} rows){verdict}")  # fmt: skip
    if fig.targeted and fig.ratio > TARGET:
        return [f"import / Core {fig.ratio:.2f}× > {TARGET:g}× at {fig.rows:,} rows"]
    return []
