"""The webhook benchmark: ``python -m bench --webhooks [--quick] [--rows N] [--db URL]``.

Signed call events of the ``cloudpbx`` provider posted to a real multi-worker
server, as a cloud PBX would:

- the app: the base layer with processes, telephony and cloudpbx, migrated
  into a schema of its own (``crm_bench_webhooks``) of the PostgreSQL
  database ``--db`` names (default ``$CRM_PG_URL``, else the local ``test``
  database); 1,000 customers with phone numbers, so that each call's first
  event looks its caller up as in life;
- the server: gunicorn, 4 workers of the ``gthread`` kind (2 threads each).
  A PBX keeps its HTTP connections open, and only the threaded worker keeps a
  connection alive between requests (a ``sync`` worker closes it after every
  answer, so each event would pay a new TCP connection); the threads also let
  a worker take the next event while another waits on PostgreSQL;
- the load: threads in this process, each with one persistent HTTP/1.1
  connection, each posting the ``ringing``, ``answered`` and ``hangup`` of
  one call after another (every event signed anew: timestamp + HMAC-SHA256);
  the calls of different threads at once. Two phases, each stopping at
  3,000 calls (300 with ``--quick``) or after 120 s (12 s), the calls begun
  by then finished:

  *throughput*: 16 connections, as fast as the server answers — the
  sustained events per second (goal ≥ 200/s);
  *latency*: the events paced at the goal's 200/s over 8 connections — the
  p50/p99 latency of each request, as the PBX sees it (goal p99 ≤ 100 ms);

- then the database is counted: one Call per call and one CallEvent per
  event, nothing lost, nothing twice; no request may have failed.

The machine has 2 cores: the server's 4 workers, PostgreSQL and the load
generator share them, which the output says.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

CALLS = 3_000
QUICK_CALLS = 300
LIMIT = 120.0  # seconds at most per phase: the calls begun by then are finished
QUICK_LIMIT = 12.0
EVENTS_TARGET = 200.0  # events per second, sustained
P99_TARGET = 100.0  # ms, at the target rate
WORKERS = 4
THREADS = 2
CONNECTIONS = 16
PACED_CONNECTIONS = 8
SCHEMA = "crm_bench_webhooks"
SECRET = "bench-shared-secret-0123456789abcdef"
CUSTOMERS = 1_000
PATH = "/telephony/cloudpbx/events"
DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _schema_url(url: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{SCHEMA}"


def _reset_schema(url: str) -> None:
    _drop_schema(url, create=True)


def _drop_schema(url: str, create: bool = False) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.schema.DropSchema(SCHEMA, cascade=True, if_exists=True))
        if create:
            conn.execute(sa.schema.CreateSchema(SCHEMA))
    engine.dispose()


def _phone(n: int) -> str:
    return f"+7912{n:07d}"


def prepare(folder: Path, url: str) -> None:
    """A migrated app with users' extensions and customers with phones."""
    from engine.testing import dispose, make_app

    plugins = {
        "processes": {},
        "telephony": {"region": "RU"},
        "cloudpbx": {"url": "http://127.0.0.1:9/api", "secret": "${CLOUDPBX_SECRET}"},
    }
    app = make_app(folder, "{}\n", plugins=plugins, layers=("base",), database=url)
    state = app.extensions["crm"]
    with app.app_context():
        session = state.db.session()
        users = state.models.table("User")
        for n, username in enumerate(("manager", "sales_head", "operator")):
            session.execute(
                users.update().where(users.c.username == username).values(extension=f"10{n + 1}")
            )
        customers = state.models.table("Customer")
        session.execute(
            sa.insert(customers),
            [{"name": f"Customer {n}", "phone": _phone(n), "version": 1} for n in range(CUSTOMERS)],
        )
        session.commit()
    dispose(app)


class Load:
    """Posting signed events over persistent connections; latencies kept."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.sent = 0
        self.calls = 0
        self.lock = threading.Lock()

    def _post(self, conn: http.client.HTTPConnection, event: dict[str, Any]) -> float:
        body = json.dumps(event).encode()
        timestamp = str(int(time.time()))
        mac = hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
        headers = {"Content-Type": "application/json", "X-Timestamp": timestamp,
                   "X-Signature": "sha256=" + mac.hexdigest()}  # fmt: skip
        started = time.perf_counter()
        conn.request("POST", PATH, body=body, headers=headers)
        answer = conn.getresponse()
        data = answer.read()
        took = time.perf_counter() - started
        if answer.status != 200:
            with self.lock:
                self.failures.append(f"{answer.status} {data[:200]!r}")
        return took

    def call(self, conn: http.client.HTTPConnection, name: str, n: int) -> list[float]:
        """One call's three events, in order: their latencies."""
        common = {"call_id": name, "extension": f"10{1 + n % 3}"}
        steps = [
            {"type": "ringing", "direction": "in", "from": _phone(n % (CUSTOMERS * 2))},
            {"type": "answered"},
            {"type": "hangup", "duration": 30 + n % 300},
        ]
        return [self._post(conn, {"event_id": f"{name}:{s['type']}", **common, **s}) for s in steps]

    def run(
        self, prefix: str, calls: int, connections: int, rate: float | None, limit: float
    ) -> float:
        """``calls`` calls over ``connections`` threads, paced at ``rate``
        events/s in all when given, none begun after ``limit`` seconds; the
        wall time."""
        per = [list(range(i, calls, connections)) for i in range(connections)]
        interval = connections / rate if rate else 0.0  # per thread, between events

        def work(numbers: list[int]) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            times: list[float] = []
            made = 0
            due = time.perf_counter() + random.random() * interval
            try:
                for n in numbers:
                    if time.perf_counter() > deadline:
                        break
                    if interval:
                        for lat in self._paced(conn, f"{prefix}-{n}", n, due, interval):
                            times.append(lat)
                        due += 3 * interval
                    else:
                        times += self.call(conn, f"{prefix}-{n}", n)
                    made += 1
            except (OSError, http.client.HTTPException) as exc:
                with self.lock:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
            finally:
                conn.close()
            with self.lock:
                self.latencies += times
                self.sent += len(times)
                self.calls += made

        threads = [threading.Thread(target=work, args=(numbers,)) for numbers in per]
        started = time.perf_counter()
        deadline = started + limit
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - started

    def _paced(
        self, conn: http.client.HTTPConnection, name: str, n: int, due: float, interval: float
    ) -> list[float]:
        common = {"call_id": name, "extension": f"10{1 + n % 3}"}
        steps = [
            {"type": "ringing", "direction": "in", "from": _phone(n % (CUSTOMERS * 2))},
            {"type": "answered"},
            {"type": "hangup", "duration": 30 + n % 300},
        ]
        times = []
        for i, s in enumerate(steps):
            wait = due + i * interval - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            times.append(self._post(conn, {"event_id": f"{name}:{s['type']}", **common, **s}))
        return times


def _cpu_seconds(master: int) -> float:
    """User + system CPU seconds of the server's worker processes so far
    (Linux /proc): the cost of an event, whatever else the machine runs."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except OSError:
        return float("nan")
    for pid in children:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000


def _wait_for(port: int, server: subprocess.Popen[Any], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(
                "gunicorn stopped: " + (server.stderr.read() if server.stderr else "")
            )
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer within a minute")


def run(calls: int, url: str | None = None, limit: float = LIMIT) -> dict[str, Any]:
    base = url or os.environ.get("CRM_PG_URL") or DEFAULT_DB
    if not base.startswith("postgresql"):
        raise SystemExit("the webhook benchmark runs on PostgreSQL: --db postgresql+psycopg://...")
    _reset_schema(base)
    database = _schema_url(base)
    figures: dict[str, Any] = {"calls": calls, "cores": os.cpu_count()}
    env = {**os.environ, "CLOUDPBX_SECRET": SECRET}
    env.pop("CRM_DATABASE_URL", None)
    os.environ["CLOUDPBX_SECRET"] = SECRET
    root = Path(__file__).resolve().parent.parent
    try:
        with tempfile.TemporaryDirectory(prefix="crm-bench-webhooks-") as tmp:
            folder = Path(tmp) / "config"
            prepare(folder, database)
            port = _free_port()
            env["CRM_CONFIG"] = str(folder)
            env["CRM_SECRET_KEY"] = "bench-secret-key-" + "0" * 32
            server = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "engine.wsgi:app", "--bind",
                 f"127.0.0.1:{port}", "--workers", str(WORKERS), "--worker-class", "gthread",
                 "--threads", str(THREADS), "--keep-alive", "30", "--log-level", "warning"],
                env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            try:
                _wait_for(port, server)
                warm = Load(port)  # each worker's first requests load what they need
                warm.run("warm", 4 * WORKERS, CONNECTIONS, None, limit)
                load = Load(port)
                cpu = _cpu_seconds(server.pid)
                wall = load.run("max", calls, CONNECTIONS, None, limit)
                figures["cpu_ms"] = (_cpu_seconds(server.pid) - cpu) / max(1, load.sent) * 1000
                figures["load_avg"] = os.getloadavg()[0]
                figures["events"] = load.sent
                figures["made"] = load.calls
                figures["per_s"] = load.sent / wall
                figures["max_p50"] = _percentile(load.latencies, 50)
                figures["max_p99"] = _percentile(load.latencies, 99)
                paced = Load(port)
                paced_calls = max(60, calls // 3)
                wall = paced.run("paced", paced_calls, PACED_CONNECTIONS, EVENTS_TARGET, limit)
                figures["paced_events"] = paced.sent
                figures["paced_per_s"] = paced.sent / wall
                figures["p50"] = _percentile(paced.latencies, 50)
                figures["p99"] = _percentile(paced.latencies, 99)
                figures["failures"] = warm.failures + load.failures + paced.failures
                expected_calls = warm.calls + load.calls + paced.calls
            finally:
                server.send_signal(signal.SIGTERM)
                try:
                    _, err = server.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    server.kill()
                    _, err = server.communicate()
            if "Traceback" in (err or ""):
                figures["server_error"] = err[-3000:]
            engine = sa.create_engine(database)
            with engine.connect() as conn:
                figures["call_rows"] = conn.execute(sa.text("SELECT count(*) FROM call")).scalar()
                figures["event_rows"] = conn.execute(
                    sa.text("SELECT count(*) FROM call_event")
                ).scalar()
                ended = (
                    "SELECT count(*) FROM call WHERE status = 'answered' "
                    "AND ended_at IS NOT NULL AND duration IS NOT NULL"
                )
                figures["ended"] = conn.execute(sa.text(ended)).scalar()
            engine.dispose()
            figures["expected_calls"] = expected_calls
    finally:
        _drop_schema(base)
    return figures


def report(f: dict[str, Any]) -> list[str]:
    missed = []
    print(f"\nWebhook call events (cloudpbx, signed) under gunicorn: {WORKERS} gthread workers × "
          f"{THREADS} threads, PostgreSQL; {f['cores']} cores shared by the server, PostgreSQL "
          "and the load generator")  # fmt: skip
    print(f"  throughput: {f['events']:,} events ({f['made']:,} calls × ringing/answered/"
          f"hangup) over {CONNECTIONS} persistent connections: {f['per_s']:,.0f} events/s "
          f"(goal ≥ {EVENTS_TARGET:.0f}/s); latency there p50 {f['max_p50']:.0f} ms, "
          f"p99 {f['max_p99']:.0f} ms")  # fmt: skip
    print(f"  server CPU: {f['cpu_ms']:.1f} ms per event (the 4 workers' user+system time, "
          f"PostgreSQL's not counted); the machine's load average during the run: "
          f"{f['load_avg']:.1f}")  # fmt: skip
    print(f"  latency at {EVENTS_TARGET:.0f}/s offered over {PACED_CONNECTIONS} connections: "
          f"{f['paced_events']:,} events at {f['paced_per_s']:,.0f}/s, p50 {f['p50']:.1f} ms, "
          f"p99 {f['p99']:.1f} ms (goal p99 ≤ {P99_TARGET:.0f} ms)")  # fmt: skip
    print(
        f"  nothing lost: {f['call_rows']:,} Call rows for {f['expected_calls']:,} calls, "
        f"{f['event_rows']:,} CallEvent rows for {3 * f['expected_calls']:,} events, "
        f"{f['ended']:,} ended answered with a duration; {len(f['failures'])} failed requests"
    )
    if f.get("server_error"):
        print(f["server_error"], file=sys.stderr)
    for failure in f["failures"][:5]:
        print("  failed: " + failure, file=sys.stderr)
    if f["per_s"] < EVENTS_TARGET:
        missed.append(f"{f['per_s']:.0f} events/s")
    if f["p99"] > P99_TARGET:
        missed.append(f"p99 {f['p99']:.0f} ms at {EVENTS_TARGET:.0f}/s")
    if f["failures"]:
        missed.append(f"{len(f['failures'])} requests failed")
    if f["call_rows"] != f["expected_calls"] or f["event_rows"] != 3 * f["expected_calls"]:
        missed.append("events lost or doubled")
    if f["ended"] != f["expected_calls"]:
        missed.append(f"{f['expected_calls'] - f['ended']} calls did not end answered")
    return missed
