"""The mailing benchmark: ``python -m bench --mailing [--quick] [--rows N] [--db URL]``.

N customers (100 k, 10 k with ``--quick``) of the base layer with the mail
plugin on, and a local SMTP sink (aiosmtpd, a handler that only counts):

- *start*: starting a mailing to the segment of all N customers — its
  recipients in one ``INSERT ... SELECT`` (the statements are counted);
  target under a second on SQLite at 100 k;
- *bare loop*: smtplib over one reused connection, N letters each written
  as bytes by an f-string (From, To, Subject, Message-ID, a line of text):
  the floor of any sender; run in a process of its own like the worker,
  before and after the mailing, the better run counting;
- *mailing*: the same N letters as the mailing, sent by ``crm worker`` as a
  process of its own (batches, templates over each record, the unsubscribe
  headers, the marks in the database); throughput counted at the sink from
  its first letter to its last; target at least 0.7× the bare loop. The
  worker's peak memory (its VmHWM, the max RSS) is read before it is
  stopped; target at most 150 MB.
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROWS = 100_000
QUICK_ROWS = 10_000
START_TARGET = 1.0  # seconds, on SQLite at 100 k
RATIO_TARGET = 0.7
MEMORY_TARGET = 150  # MB


class Sink:
    """An SMTP server that takes every letter and only counts it."""

    def __init__(self) -> None:
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.perf_counter()
        with self.lock:
            if not self.count:
                self.first = now
            self.count += 1
            self.last = now
        return "250 OK"

    def reset(self) -> None:
        with self.lock:
            self.count, self.first, self.last = 0, 0.0, 0.0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bare_loop(port: int, rows: int) -> float:
    """Letters per second of a plain smtplib loop over one connection."""
    started = time.perf_counter()
    conn = smtplib.SMTP("127.0.0.1", port)
    for n in range(rows):
        letter = (
            f"From: crm@romashka.example\r\nTo: c{n}@x.ru\r\nSubject: News for Customer {n}\r\n"
            f"Message-ID: <bare.{n}@romashka.example>\r\n\r\nDear Customer {n},\r\nour news.\r\n"
        )
        conn.sendmail("crm@romashka.example", [f"c{n}@x.ru"], letter.encode())
    conn.quit()
    return rows / (time.perf_counter() - started)


def _bare_process(port: int, rows: int, env: dict[str, str]) -> float:
    """The bare loop in a process of its own, as the worker is (the sink
    stays in this one for both)."""
    code = f"from bench.mailing import bare_loop; print(bare_loop({port}, {rows}))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
    return float(done.stdout.strip())


def _worker_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def run(rows: int, url: str | None = None) -> dict[str, Any]:
    from aiosmtpd.controller import Controller

    from engine.testing import dispose, make_app
    from plugins.mail import delivery
    from tests.mail.test_mailing_helpers import make_mailing, system_docs

    sink = Sink()
    port = _free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    figures: dict[str, Any] = {"rows": rows}
    with tempfile.TemporaryDirectory(prefix="crm-bench-mailing-") as tmp:
        folder = Path(tmp) / "config"
        settings = {"smtp": {"host": "127.0.0.1", "port": port},
                    "from": "Romashka <crm@romashka.example>", "batch": 500}  # fmt: skip
        app = make_app(folder, "{}\n", plugins={"processes": {}, "mail": settings},
                       layers=("base",), database=url)  # fmt: skip
        state = app.extensions["crm"]
        figures["database"] = state.registry.database.split(":", 1)[0]
        with app.app_context():
            session = state.db.session
            customers = state.models.table("Customer")
            for at in range(0, rows, 10_000):
                session.execute(
                    sa.insert(customers),
                    [{"name": f"Customer {n}", "email": f"c{n}@x.ru", "segment": "A",
                      "version": 1} for n in range(at, min(rows, at + 10_000))],
                )  # fmt: skip
            docs = system_docs(app, session)
            mailing = make_mailing(docs, filter_="segment: A")
            session.commit()
            seen: list[str] = []

            def listen(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
                seen.append(statement)

            engine = state.db.engine
            sa.event.listen(engine, "before_cursor_execute", listen)
            started = time.perf_counter()
            delivery.start(session, state.models, mailing, now=docs.now(),
                           base_url="https://crm.romashka.example")  # fmt: skip
            session.commit()
            figures["start_s"] = time.perf_counter() - started
            sa.event.remove(engine, "before_cursor_execute", listen)
            figures["start_inserts"] = sum(
                1 for s in seen if s.lstrip().upper().startswith("INSERT INTO MAILING_RECIPIENT")
            )
            figures["start_statements"] = len(seen)
            figures["total"] = int(mailing.total)
        dispose(app)

        env = {k: v for k, v in os.environ.items() if k != "CRM_DATABASE_URL"}
        bare = [_bare_process(port, rows, env)]
        sink.reset()

        config = json.loads((folder / "config.yaml").read_text(encoding="utf-8"))
        config["jobs"] = {"runner": "external"}
        (folder / "config.yaml").write_text(json.dumps(config), encoding="utf-8")
        worker = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "worker", str(folder), "--interval", "0.05"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        db = sa.create_engine(config["database"])
        try:
            deadline = time.monotonic() + 3600
            while time.monotonic() < deadline and worker.poll() is None:
                with db.connect() as conn:
                    status = conn.execute(sa.text("SELECT status FROM mailing")).scalar_one()
                if status == "done":
                    break
                time.sleep(0.5)
            figures["worker_peak_mb"] = _worker_rss_mb(worker.pid)
        finally:
            worker.send_signal(signal.SIGTERM)
            _, err = worker.communicate(timeout=120)
            db.dispose()
        figures["sent"] = sink.count
        span = max(1e-9, sink.last - sink.first)
        figures["mailing_per_s"] = (sink.count - 1) / span if sink.count > 1 else 0.0
        bare.append(_bare_process(port, rows, env))  # again: the better of two runs counts
        figures["bare_runs"] = bare
        figures["bare_per_s"] = max(bare)
        if "Traceback" in err:
            figures["worker_error"] = err[-2000:]
    controller.stop()
    return figures


def report(f: dict[str, Any]) -> list[str]:
    missed = []
    ratio = f["mailing_per_s"] / f["bare_per_s"] if f["bare_per_s"] else 0.0
    print(f"\nMailing to {f['rows']:,} customers on {f['database']}")
    print(f"  start: {f['total']:,} recipients in {f['start_s'] * 1000:.0f} ms, "
          f"{f['start_inserts']} INSERT ... SELECT, {f['start_statements']} statements in all "
          f"(target < {START_TARGET:.0f} s on SQLite)")  # fmt: skip
    runs = ", ".join(f"{r:,.0f}" for r in f["bare_runs"])
    print(f"  bare smtplib loop, one connection: {f['bare_per_s']:,.0f} letters/s "
          f"(the better of {runs}: before and after the mailing)")  # fmt: skip
    print(f"  mailing (crm worker): {f['mailing_per_s']:,.0f} letters/s, {f['sent']:,} sent; "
          f"ratio {ratio:.2f}x (target ≥ {RATIO_TARGET}x)")  # fmt: skip
    print(f"  worker peak memory: {f['worker_peak_mb']:.0f} MB (target ≤ {MEMORY_TARGET} MB)")
    if f.get("worker_error"):
        print(f["worker_error"], file=sys.stderr)
    if f["start_inserts"] != 1:
        missed.append("start is not one statement")
    if f["database"].startswith("sqlite") and f["rows"] >= ROWS and f["start_s"] >= START_TARGET:
        missed.append(f"start took {f['start_s']:.2f} s")
    if ratio < RATIO_TARGET:
        missed.append(f"throughput {ratio:.2f}x the bare loop")
    if f["worker_peak_mb"] > MEMORY_TARGET:
        missed.append(f"worker peak {f['worker_peak_mb']:.0f} MB")
    if f["sent"] != f["rows"]:
        missed.append(f"{f['sent']} letters of {f['rows']}")
    return missed
