"""A job runner in a process of its own, for the tests that kill, stall and
resume runners (tests/test_jobs.py):

    python tests/jobs_process.py CONFIG_FOLDER DATABASE_URL WORKER LEASE_SECONDS

It runs jobs from the database until SIGTERM, with the real clock and the
heartbeat a runner of that lease has. Its one job, ``test.step``, says
``started`` through ``ctx.report``, holds while the file ``payload["release"]``
does not exist (for the attempts listed in ``payload["hold"]``, without
reporting: only the heartbeat renews the lease meanwhile), and writes a Note
``attempt N by WORKER`` in its transaction, before the hold when
``payload["write_first"]``, after it otherwise.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from engine.hookspecs import hookimpl
from engine.jobs import JobContext, Runner
from engine.loader import load
from engine.models import build
from engine.plugins import make_plugin_manager


class Step:
    def __init__(self, worker: str) -> None:
        self.worker = worker

    @hookimpl
    def crm_jobs(self) -> dict[str, Any]:
        return {"test.step": self.step}

    def step(self, ctx: JobContext, payload: dict[str, Any]) -> str:
        note = ctx.models.table("Note").insert()
        text = f"attempt {ctx.attempt} by {self.worker}"
        ctx.report(0, 1, f"started by {self.worker}")
        if payload.get("write_first"):
            ctx.session.execute(note.values(text=text))
            ctx.session.flush()
        if ctx.attempt in payload.get("hold", []):
            release = Path(payload["release"])
            while not release.exists():
                time.sleep(0.02)
        if not payload.get("write_first"):
            ctx.session.execute(note.values(text=text))
        ctx.report(1, 1, f"finished by {self.worker}")
        return text


def main(folder: str, url: str, worker: str, lease: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
    models = build(load(Path(folder), env={}))
    pm, problems = make_plugin_manager(models.registry.plugins)
    assert problems == [], problems
    pm.register(Step(worker), name="test-step")
    engine = sa.create_engine(url)
    runner = Runner(models, engine, pm, worker=worker, lease_seconds=float(lease))
    signal.signal(signal.SIGTERM, lambda signum, frame: runner.stopping.set())
    print("ready", flush=True)
    runner.run_forever(0.05)
    print("stopped", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
