"""The operator's desk benchmark: ``python -m bench --desk [--quick] [--rows N] [--db URL]``.

A campaign of N targets (20 k, 1 k with ``--quick``) started over N customers
of the base layer with telephony on; then 20 operators press "Next" at once —
20 threads, each with its own database connection, calling the desk's real
claim (plugins.telephony.campaigns.claim: one UPDATE, ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL) and committing, until the queue is empty.

Asserted: zero double claims (every target claimed exactly once). Reported:
the latency of one "Next" (claim + commit) at the median and the 95th
percentile against a goal of ≤ 50 ms on PostgreSQL, claims per second, and
the floor: one operator alone pressing Next (the first 50 targets). The
threads share one Python process (and its GIL): on a machine with few
cores the crowd's latency is mostly waiting for the CPU, which the floor
shows apart. Runs on SQLite
(a file) for comparison, and on PostgreSQL with ``--db URL`` (a database the
bench may empty).
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

ROWS = 20_000
QUICK_ROWS = 1_000
OPERATORS = 20
P95_TARGET = 50.0  # ms
BASELINE = 50  # claims by one operator alone first


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def run_one(rows: int, url: str, folder: Path) -> dict[str, Any]:
    from engine.api import Documents, Principal
    from engine.testing import dispose, make_app
    from plugins.telephony import campaigns

    app = make_app(folder, "{}\n", plugins={"processes": {}, "telephony": {"region": "RU"},
                                            "simulator": {}},
                   layers=("base",), database=url)  # fmt: skip
    state = app.extensions["crm"]
    figures: dict[str, Any] = {"rows": rows, "database": url.split(":", 1)[0].split("+")[0]}
    with app.app_context():
        session = state.db.session
        customers = state.models.table("Customer")
        for at in range(0, rows, 10_000):
            session.execute(
                sa.insert(customers),
                [{"name": f"Customer {n}", "phone": f"+7495{n:07d}", "segment": "A", "version": 1}
                 for n in range(at, min(rows, at + 10_000))],
            )  # fmt: skip
        users = state.models.table("User")
        sm = state.appbuilder.sm
        operators = [
            int(sm.add_user(f"bench_op{n}", f"Operator {n}", "Bench", f"op{n}@bench.example",
                            [sm.find_role("operator")], "bench-secret").id)
            for n in range(OPERATORS)
        ]  # fmt: skip
        admin = session.execute(sa.select(users.c.id).where(users.c.username == "admin")).scalar()
        docs = Documents(state.models, session, admin, ["Admin"], state.pm, username="admin",
                         trusted=True)  # fmt: skip
        campaign = docs.create("Campaign", {
            "name": "Bench", "doctype": "Customer", "filter": "segment: A",
            "work_from": 0, "work_to": 24, "operators": [{"user": u} for u in operators],
            "results": [{"code": "ok", "label": "OK"}],
        })  # fmt: skip
        session.commit()
        now = docs.now()
        started = time.perf_counter()
        found = campaigns.start(session, state.models, campaign, now=now,
                                principal=Principal(admin, "admin", frozenset({"Admin"})))  # fmt: skip
        session.commit()
        figures["start_ms"] = (time.perf_counter() - started) * 1000
        figures["total"] = found["total"]
        campaign_id = int(campaign.id)
        models = state.models
        engine = state.db.engine

    options = {"timeout": 60} if url.startswith("sqlite") else {}
    pool = sa.create_engine(url, connect_args=options, pool_size=OPERATORS + 2, max_overflow=0) \
        if not url.startswith("sqlite") else sa.create_engine(url, connect_args=options)  # fmt: skip
    latencies: list[float] = []
    claimed: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(OPERATORS)

    def operator(uid: int) -> None:
        mine_ms: list[float] = []
        mine: list[int] = []
        try:
            with Session(pool) as s:
                s.execute(sa.select(1))  # the connection is open before the clock starts
                s.commit()
                barrier.wait()
                while True:
                    t0 = time.perf_counter()
                    got = campaigns.claim(s, models, campaign_id, uid, now)
                    s.commit()
                    mine_ms.append((time.perf_counter() - t0) * 1000)
                    if got is None:
                        break
                    mine.append(got)
        except Exception as exc:
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
        with lock:
            latencies.extend(mine_ms)
            claimed.extend(mine)

    # the floor: one operator alone, BASELINE presses, before the crowd
    alone: list[float] = []
    with Session(pool) as s:
        for _ in range(BASELINE):
            t0 = time.perf_counter()
            got = campaigns.claim(s, models, campaign_id, operators[0], now)
            s.commit()
            alone.append((time.perf_counter() - t0) * 1000)
            if got is not None:
                claimed.append(got)
    figures["alone_ms"] = statistics.median(alone)
    threads = [threading.Thread(target=operator, args=(u,)) for u in operators]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    pool.dispose()
    del engine
    figures.update(
        claims=len(claimed), distinct=len(set(claimed)), errors=errors,
        p50_ms=statistics.median(latencies) if latencies else float("nan"),
        p95_ms=_percentile(latencies, 0.95), max_ms=max(latencies) if latencies else float("nan"),
        per_s=len(claimed) / elapsed if elapsed else 0.0, elapsed_s=elapsed,
    )  # fmt: skip
    with app.app_context():
        t = models.table("CampaignCall")
        figures["left"] = int(
            state.db.session.execute(
                sa.select(sa.func.count()).where(
                    t.c.campaign_id == campaign_id, t.c.status != "claimed"
                )
            ).scalar()
            or 0
        )
    dispose(app)
    return figures


def run(rows: int, url: str | None = None) -> list[dict[str, Any]]:
    """SQLite always; PostgreSQL at ``url`` when given (emptied first)."""
    results = []
    with tempfile.TemporaryDirectory(prefix="crm-bench-desk-") as tmp:
        if url and url.startswith("postgresql"):
            from tests.conftest import _reset_postgres

            _reset_postgres(url)
            results.append(run_one(rows, url, Path(tmp) / "pg"))
        results.append(run_one(rows, f"sqlite:///{Path(tmp) / 'desk.db'}", Path(tmp) / "sqlite"))
    return results


def report(results: list[dict[str, Any]]) -> list[str]:
    missed: list[str] = []
    for f in results:
        print(f"\nOperator's desk: {OPERATORS} operators pressing Next over {f['total']:,} targets "
              f"on {f['database']}")  # fmt: skip
        print(f"  start: {f['total']:,} targets in {f['start_ms']:.0f} ms (one INSERT ... SELECT)")
        print(f"  claims: {f['claims']:,}, distinct {f['distinct']:,}, double claims "
              f"{f['claims'] - f['distinct']}, left unclaimed {f['left']}")  # fmt: skip
        print(f"  Next (claim + commit): median {f['p50_ms']:.1f} ms, p95 {f['p95_ms']:.1f} ms, "
              f"max {f['max_ms']:.1f} ms (goal p95 ≤ {P95_TARGET:.0f} ms); "
              f"{f['per_s']:,.0f} claims/s")  # fmt: skip
        print(f"  one operator alone: median {f['alone_ms']:.1f} ms per Next "
              f"(the first {BASELINE} targets)")  # fmt: skip
        for e in f["errors"]:
            print(f"  error: {e}")
        name = f["database"]
        if f["claims"] != f["distinct"]:
            missed.append(f"{name}: {f['claims'] - f['distinct']} double claims")
        if f["distinct"] != f["total"] or f["left"]:
            missed.append(f"{name}: {f['distinct']} of {f['total']} targets claimed")
        if f["errors"]:
            missed.append(f"{name}: {len(f['errors'])} operators failed")
        if f["p95_ms"] > P95_TARGET and name == "postgresql":  # SQLite: for comparison
            missed.append(f"{name}: p95 {f['p95_ms']:.1f} ms")
    assert all(f["claims"] == f["distinct"] for f in results), "a target was claimed twice"
    return missed
