"""The client base quality check's duplicate search:
``python -m bench --quality [--quick] [--rows N] [--db URL]``.

The demo configuration's ``base_quality`` report (the base layer's) runs its
four duplicate groups — the same INN, the same phone across ``phone``,
``phone2`` and the contact persons' phones, the same email in any case,
similar names — over N customers (and N/10 contact persons), then over 10 N
(100 k and 1 M; 2 k and 20 k with ``--quick``). One customer in a hundred
shares its INN, phone or email with another, one in two hundred has a
similar name (the legal form moved, a letter changed).

Target: the whole duplicate search at 10 N takes at most 12× its time at N
(near-linear: the exact groups are GROUP BY ... HAVING over indexed columns,
similar names are compared within blocks only). Beside it, the exact groups
are timed against the same counts written by hand in SQL, and every count is
checked against the planted duplicates.
"""

from __future__ import annotations

import datetime as dt
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bench.telephony_lookup import _bulk, _scratch

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "demo"
ROWS = 100_000
QUICK_ROWS = 2_000
GROWTH = 10
TARGET = 12.0
SCHEMA = "crm_bench_quality"
EXACT = ("dup_inn", "dup_phone", "dup_email")
GROUPS = (*EXACT, "dup_name")
SYLLABLES = ("ка", "ло", "ми", "ре", "ту", "зо", "ва", "ни", "пе", "гу", "ды", "шо", "бра",
             "стел", "кон", "тор", "мар", "лин", "сев", "ур", "ал", "ден", "ро", "фа")  # fmt: skip
FORMS = ("ООО", "ИП", "АО", "", "", "ООО")


def vocabulary(size: int = 6000, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(3, 4))).capitalize())
    return sorted(words)


def customers(first: int, last: int) -> Iterator[tuple[Any, ...]]:
    """Rows ``first..last``: (id, name, inn, phone, phone2, email, version, created_at)."""
    words = vocabulary()
    at = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    for n in range(first, last + 1):
        rng = random.Random(n)
        name = f"{FORMS[n % len(FORMS)]} {words[rng.randrange(len(words))]} {n}".strip()
        inn, phone, phone2, email = f"{n:010d}", f"+7495{n:07d}", None, f"c{n}@example.org"
        if n % 100 == 1 and n > 1:
            inn = f"{n - 1:010d}"
        if n % 100 == 2 and n > 2:
            phone2 = f"+7495{n - 1:07d}"
        if n % 100 == 3 and n > 3:
            email = f"C{n - 1}@Example.org"
        if n % 200 == 4 and n > 4:
            prev = random.Random(n - 1)
            word = words[prev.randrange(len(words))]
            name = f"{word[:-1]}а {n - 1} {FORMS[(n - 1) % len(FORMS)]}".strip()
        yield (n, name, inn, phone, phone2, email, 1, at)


def planted(rows: int) -> dict[str, int]:
    """Customers in each exact group, as :func:`customers` plants them."""
    pairs = {k: sum(1 for n in range(1, rows + 1) if n % 100 == k and n > k) for k in (1, 2, 3)}
    return {"dup_inn": 2 * pairs[1], "dup_phone": 2 * pairs[2], "dup_email": 2 * pairs[3]}


def fill(models: Any, engine: sa.Engine, first: int, last: int) -> float:
    started = time.perf_counter()
    models.metadata.create_all(engine)
    table, contacts = models.table("Customer"), models.table("ContactPerson")
    indexes = [ix for t in (table, contacts) for ix in t.indexes]
    with engine.begin() as conn:
        for ix in indexes:
            ix.drop(conn)
    _bulk(engine, table, ["id", "name", "inn", "phone", "phone2", "email", "version", "created_at"],
          customers(first, last))  # fmt: skip
    at = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    _bulk(engine, contacts, ["id", "customer_id", "name", "phone", "version", "created_at"],
          ((n, n * 10, "Contact", f"+7916{n:07d}", 1, at)
           for n in range(first // 10 + 1, last // 10 + 1)))  # fmt: skip
    with engine.begin() as conn:
        for ix in indexes:
            ix.create(conn)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"VACUUM ANALYZE {table.name}")
            conn.exec_driver_sql(f"VACUUM ANALYZE {contacts.name}")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - started


def hand_written(models: Any) -> dict[str, str]:
    """The exact groups' counts as one would write them by hand."""
    c, p = models.table("Customer").name, models.table("ContactPerson").name

    def dups(keyed: str) -> str:
        return (f"SELECT count(*) FROM (SELECT DISTINCT id FROM ({keyed}) k WHERE key IN "
                f"(SELECT key FROM ({keyed}) k2 GROUP BY key HAVING count(DISTINCT id) > 1)) d")  # fmt: skip

    phones = (f"SELECT id, phone AS key FROM {c} WHERE phone <> '' UNION ALL "
              f"SELECT id, phone2 FROM {c} WHERE phone2 <> '' UNION ALL "
              f"SELECT customer_id, phone FROM {p} WHERE phone <> ''")  # fmt: skip
    return {
        "dup_inn": f"SELECT count(*) FROM {c} WHERE inn IN "
        f"(SELECT inn FROM {c} WHERE inn <> '' GROUP BY inn HAVING count(*) > 1)",
        "dup_phone": dups(phones),
        "dup_email": dups(
            f"SELECT id, lower(email) AS key FROM {c} WHERE email <> '' UNION ALL "
            f"SELECT customer_id, lower(email) FROM {p} WHERE email <> ''"
        ),
    }


def measure(models: Any, engine: sa.Engine, repeat: int) -> dict[str, Any]:
    from engine.reports import Context, Params
    from engine.reports.quality import Queries

    report = models.registry.reports["base_quality"]
    today = dt.date(2025, 6, 1)
    sql = hand_written(models)
    times: dict[str, list[float]] = {k: [] for k in (*GROUPS, *(f"raw {k}" for k in EXACT))}
    counts: dict[str, int] = {}
    with Session(engine) as session:
        for _ in range(repeat):
            ctx = Context(models, session, None, dt.UTC, dt.datetime(2025, 6, 1, tzinfo=dt.UTC))
            q = Queries(ctx, report, Params(today, today))
            for g in GROUPS:
                t0 = time.perf_counter()
                counts[g] = q.count(g)
                times[g].append(time.perf_counter() - t0)
            for g in EXACT:
                t0 = time.perf_counter()
                counts[f"raw {g}"] = int(session.execute(sa.text(sql[g])).scalar_one())
                times[f"raw {g}"].append(time.perf_counter() - t0)
    out: dict[str, Any] = {k: statistics.median(v) for k, v in times.items()}
    out["search"] = sum(out[g] for g in GROUPS)
    out["counts"] = counts
    return out


def run(
    rows: int,
    url: str | None = None,
    quick: bool = False,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    from bench.suite import database_name, fresh_database
    from engine.loader import load
    from engine.models import build

    models = build(load(CONFIG, env={}))
    figures: dict[str, Any] = {"sizes": []}
    repeat = 3 if quick else 2
    try:
        with fresh_database(url, rows, schema=SCHEMA) as engine:
            if engine.dialect.name == "sqlite":
                sa.event.listen(engine, "connect", _scratch)
            figures["database"] = database_name(engine)
            done = 0
            for size in (rows, rows * GROWTH):
                log(f"{dt.datetime.now():%H:%M:%S} filling {size:,} customers")
                fill(models, engine, done + 1, size)
                done = size
                log("  measuring")
                m = measure(models, engine, repeat)
                m["size"] = size
                m["planted"] = planted(size)
                figures["sizes"].append(m)
    finally:
        models.dispose()
    return figures


def report(f: dict[str, Any]) -> list[str]:
    """Print the figures; the targets missed."""
    small, large = f["sizes"]
    print(f"\nDuplicate search of the quality check on {f['database']} (medians, ms)")
    print(
        f"  {'group':<12}"
        + "".join(f"{m['size']:>14,}" for m in f["sizes"])
        + "     raw SQL at the larger"
    )
    missed = []
    for g in GROUPS:
        line = f"  {g:<12}" + "".join(f"{m[g] * 1000:14.1f}" for m in f["sizes"])
        if g in EXACT:
            line += f"     ×{large[g] / large['raw ' + g]:.2f} of {large['raw ' + g] * 1000:.1f}"
        print(line)
    ratio = large["search"] / small["search"]
    print(f"  {'all four':<12}{small['search'] * 1000:14.1f}{large['search'] * 1000:14.1f}"
          f"     ×{ratio:.2f} for ×{GROWTH} customers (target ≤ {TARGET})")  # fmt: skip
    for m in f["sizes"]:
        c = m["counts"]
        print(f"  {m['size']:,}: found " + ", ".join(f"{g} {c[g]:,}" for g in GROUPS))
        for g in EXACT:
            if c[g] != c[f"raw {g}"] or c[g] != m["planted"][g]:
                missed.append(f"{g} at {m['size']:,}: {c[g]} found, {c['raw ' + g]} by hand, "
                              f"{m['planted'][g]} planted")  # fmt: skip
        if c["dup_name"] < m["size"] // 200 * 2 * 0.9:
            missed.append(f"dup_name at {m['size']:,}: only {c['dup_name']} found")
    if ratio > TARGET:
        missed.append(f"duplicate search ×{ratio:.2f} for ×{GROWTH} customers (target ≤ {TARGET})")
    return missed
