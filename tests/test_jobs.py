"""The job runner: what a consultant, a plugin author and the person on call see.

Jobs are queued in the caller's transaction and run by a ``Runner`` against a
real database (SQLite, or the PostgreSQL of CRM_TEST_DATABASE_URL). The
runner's clock is injected, so retries are tested by moving the clock, not by
sleeping. Email goes to a real SMTP server (aiosmtpd) through the sample
outside plugin; the kill test runs `crm worker` as a process and SIGKILLs it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask_appbuilder import Model
from sqlalchemy.orm import Session

from engine import migrate
from engine.app import create_app
from engine.clock import now as utcnow
from engine.hookspecs import hookimpl
from engine.jobs import (
    OUTBOX,
    JobContext,
    JobError,
    Runner,
    enqueue,
    message_id,
    start_in_process,
    status,
)
from engine.models import Models, build
from engine.plugins import make_plugin_manager
from engine.registry import Registry

CONFIG = "name: Romashka LLC\nlocale: en\nlayers: []\n"
NOTES = """
documents:
  Note:
    fields:
      text: {type: string, required: true}
"""


class Clock:
    """The runner's time: starts a second from now and moves only when told."""

    def __init__(self) -> None:
        self.now = utcnow() + dt.timedelta(seconds=1)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


def aware(value: dt.datetime) -> dt.datetime:
    """SQLite hands datetimes back naive; they are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def fragile(ctx: JobContext, payload: dict[str, Any]) -> None:
    raise ConnectionError("the partner's API is down")


fragile.max_attempts = 2  # type: ignore[attr-defined]


class Jobs:
    """A plugin with jobs of every temper; notes each run as (key, attempt)."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        self.seen_during_run: dict[str, Any] = {}
        self.ticked_at: dt.datetime | None = None
        #: called at the start of the first attempt of `test.overtaken`
        self.meanwhile: Callable[[], None] = lambda: None
        #: `test.hold`: set when attempt N holds; attempt N goes on once released
        self.holding: defaultdict[int, threading.Event] = defaultdict(threading.Event)
        self.released: defaultdict[int, threading.Event] = defaultdict(threading.Event)
        #: the attempts of `test.hold` that got past their last report
        self.finished: list[int] = []
        #: `test.budgeted` spends this much of the runner's clock before it reports
        self.spend: Callable[[], None] = lambda: None

    def _note(self, ctx: JobContext) -> None:
        with self.lock:
            self.ran.append((ctx.key, ctx.attempt))

    @hookimpl
    def crm_jobs(self) -> dict[str, Any]:
        return {
            "test.note": self.note,
            "test.fail": self.fail,
            "test.flaky": self.flaky,
            "test.fragile": fragile,
            "test.slow": self.slow,
            "test.progress": self.progress,
            "test.tick": self.tick,
            "test.overtaken": self.overtaken,
            "test.hold": self.hold,
            "test.budgeted": self.budgeted,
        }

    @hookimpl
    def crm_schedules(self) -> list[tuple[str, int]]:
        return [("test.tick", 60)]

    def note(self, ctx: JobContext, payload: dict[str, Any]) -> str:
        """Writes a Note in the job's transaction; fails afterwards if asked to."""
        self._note(ctx)
        ctx.session.execute(ctx.models.table("Note").insert().values(text=payload["text"]))
        if payload.get("then_fail"):
            raise RuntimeError("failed after writing")
        return f"noted {payload['text']}"

    def fail(self, ctx: JobContext, payload: dict[str, Any]) -> None:
        self._note(ctx)
        raise ConnectionError("the SMS gateway is down\n  (second line of detail)")

    def flaky(self, ctx: JobContext, payload: dict[str, Any]) -> dict[str, int]:
        self._note(ctx)
        if ctx.attempt < payload["succeed_on"]:
            raise TimeoutError(f"timed out on attempt {ctx.attempt}")
        return {"attempt": ctx.attempt}

    def slow(self, ctx: JobContext, payload: dict[str, Any]) -> None:
        self._note(ctx)
        time.sleep(0.002)  # long enough for the other runner to want the same row

    def progress(self, ctx: JobContext, payload: dict[str, Any]) -> None:
        """Writes first (on SQLite that holds the write lock), then reports and
        looks at its own status through another connection, as a browser would."""
        ctx.session.execute(ctx.models.table("Note").insert().values(text="imported"))
        ctx.session.flush()
        ctx.report(5, 10, "5 of 10 rows")
        with Session(ctx.session.get_bind()) as browser:
            self.seen_during_run = status(browser, ctx.job_id)

    def tick(self, ctx: JobContext, payload: dict[str, Any]) -> None:
        self._note(ctx)
        self.ticked_at = ctx.now()

    def overtaken(self, ctx: JobContext, payload: dict[str, Any]) -> None:
        """Runs so long the first time that another worker takes it over meanwhile."""
        self._note(ctx)
        if ctx.attempt == 1:
            self.meanwhile()
        ctx.session.execute(ctx.models.table("Note").insert().values(text=f"attempt {ctx.attempt}"))

    def hold(self, ctx: JobContext, payload: dict[str, Any]) -> None:
        """Holds (attempts in ``payload["hold"]``) until the test releases it, like
        a handler stuck reading a file: it does not report meanwhile. Then
        writes a Note and reports, unless ``payload["report"]`` is false."""
        self._note(ctx)
        if payload.get("write_first"):
            self._write(ctx)
        if ctx.attempt in payload.get("hold", []):
            self.holding[ctx.attempt].set()
            assert self.released[ctx.attempt].wait(30), "the test never released the job"
        if not payload.get("write_first"):
            self._write(ctx)
        if payload.get("commit"):  # a handler that commits on its own
            ctx.session.commit()
        if payload.get("report", True):
            ctx.report(1, 1, "written")
        self.finished.append(ctx.attempt)

    @staticmethod
    def _write(ctx: JobContext) -> None:
        note = ctx.models.table("Note").insert().values(text=f"{ctx.key}: attempt {ctx.attempt}")
        ctx.session.execute(note)
        ctx.session.flush()

    def budgeted(self, ctx: JobContext, payload: dict[str, Any]) -> None:
        """Writes, works a while (``spend`` moves the clock), then reports."""
        self._note(ctx)
        self._write(ctx)
        self.spend()
        ctx.report(1, 2, "half way")
        self.finished.append(ctx.attempt)


Jobs.budgeted.budget = 60  # type: ignore[attr-defined]


@dataclass
class World:
    registry: Registry
    models: Models
    engine: sa.Engine
    pm: Any
    jobs: Jobs
    clock: Clock = field(default_factory=Clock)

    def runner(self, **kwargs: Any) -> Runner:
        return Runner(self.models, self.engine, self.pm, clock=self.clock, **kwargs)

    def queue(self, job: str, payload: dict[str, Any] | None = None, **kwargs: Any) -> int | None:
        with Session(self.engine) as session:
            job_id = enqueue(session, job, payload or {}, **kwargs)
            session.commit()
        return job_id

    def status(self, job_id: int) -> dict[str, Any]:
        with Session(self.engine) as session:
            return status(session, job_id)

    def row(self, job_id: int) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(OUTBOX).where(OUTBOX.c.id == job_id)).one()

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())

    def notes(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text("SELECT text FROM note ORDER BY id")).scalars())

    def in_background(self, runner: Runner) -> threading.Thread:
        """``runner.drain()`` in a thread of its own (a runner of another process)."""
        thread = threading.Thread(target=runner.drain, daemon=True)
        thread.start()
        return thread


def eventually(condition: Callable[[], bool], seconds: float = 10) -> bool:
    """Whether ``condition`` comes true within ``seconds`` of real time."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def world(load_config: Callable[..., Registry], db_url: str) -> Iterator[Callable[..., World]]:
    made: list[World] = []

    def make(config: str = CONFIG) -> World:
        registry = load_config({"notes.yaml": NOTES}, config)
        models = build(registry)
        engine = sa.create_engine(db_url)
        Model.metadata.create_all(engine)
        models.metadata.create_all(engine)
        pm, problems = make_plugin_manager(registry.plugins)
        assert problems == []
        jobs = Jobs()
        pm.register(jobs, name="test-jobs")
        w = World(registry, models, engine, pm, jobs)
        made.append(w)
        return w

    yield make
    for w in made:
        w.models.dispose()
        w.engine.dispose()


# --- a real SMTP server and SMS gateway --------------------------------------


def sample_config(smtp_port: int | None = None, sms_url: str | None = None, extra: str = "") -> str:
    settings = {"greeting": "hello"}
    if smtp_port:
        settings |= {"smtp_host": "127.0.0.1", "smtp_port": str(smtp_port)}
    if sms_url:
        settings["sms_url"] = sms_url
    return (
        f"{CONFIG}plugins:\n  sample: {json.dumps(settings)}\n"
        "settings: {mail_from: 'Romashka <crm@romashka.example>'}\n" + extra
    )


# --- queueing in the caller's transaction ------------------------------------


def test_a_rolled_back_change_queues_nothing(world: Callable[..., World]) -> None:
    w = world()
    with Session(w.engine) as session:
        assert enqueue(session, "test.note", {"text": "never"}) is not None
        session.rollback()
    assert w.count("crm_outbox") == 0
    assert w.runner().drain() == 0
    assert w.jobs.ran == []


def test_a_committed_job_is_run_once_with_its_payload(world: Callable[..., World]) -> None:
    w = world()
    job_id = w.queue("test.note", {"text": "call Ivan back"}, key="note:1")
    assert job_id is not None
    assert w.status(job_id)["state"] == "pending"

    assert w.runner().drain() == 1
    assert w.jobs.ran == [("note:1", 1)]
    assert w.status(job_id) == {
        "state": "done", "attempts": 1, "done": None, "total": None, "message": None,
        "error": None, "result": "noted call Ivan back",
    }  # fmt: skip
    assert w.count("note") == 1
    assert w.runner().drain() == 0  # done is done


def test_the_same_key_twice_is_one_row_and_one_run(world: Callable[..., World]) -> None:
    w = world()
    first = w.queue("test.note", {"text": "welcome"}, key="welcome:customer:7")
    with Session(w.engine) as session:  # and twice in one transaction
        assert enqueue(session, "test.note", {"text": "again"}, key="welcome:customer:7") is None
        assert enqueue(session, "test.note", {"text": "again"}, key="welcome:customer:7") is None
        session.commit()
    assert first is not None
    assert w.count("crm_outbox") == 1

    assert w.runner().drain() == 1
    assert w.jobs.ran == [("welcome:customer:7", 1)]
    # a key stays taken once its job is done
    assert w.queue("test.note", {"text": "later"}, key="welcome:customer:7") is None
    assert w.runner().drain() == 0


def test_jobs_without_a_key_get_one_each(world: Callable[..., World]) -> None:
    w = world()
    w.queue("test.note", {"text": "a"})
    w.queue("test.note", {"text": "b"})
    assert w.runner().drain() == 2
    keys = [key for key, _ in w.jobs.ran]
    assert len(set(keys)) == 2


def test_a_job_runs_no_earlier_than_asked(world: Callable[..., World]) -> None:
    w = world()
    job_id = w.queue("test.note", {"text": "remind"}, run_after=w.clock.now + dt.timedelta(hours=1))
    runner = w.runner()
    assert runner.drain() == 0
    w.clock.advance(minutes=59)
    assert runner.drain() == 0
    w.clock.advance(minutes=2)
    assert runner.drain() == 1
    assert job_id is not None and w.status(job_id)["state"] == "done"


# --- the job's transaction ---------------------------------------------------


def test_what_a_failing_job_wrote_is_rolled_back(world: Callable[..., World]) -> None:
    w = world()
    job_id = w.queue("test.note", {"text": "half", "then_fail": True})
    assert job_id is not None
    w.runner().drain()
    assert w.count("note") == 0
    got = w.status(job_id)
    assert (got["state"], got["error"]) == ("pending", "RuntimeError: failed after writing")


# --- retries, backoff, dead jobs ---------------------------------------------


def test_a_failing_job_is_retried_with_growing_backoff_then_dead(
    world: Callable[..., World],
) -> None:
    w = world()
    job_id = w.queue("test.fail")
    assert job_id is not None
    runner = w.runner()
    waits: list[float] = []
    for attempt in range(1, 8):
        assert runner.drain() == 1
        row = w.row(job_id)
        assert (row.state, row.attempts) == ("pending", attempt)
        # one line for the UI, no traceback
        assert row.last_error == "ConnectionError: the SMS gateway is down (second line of detail)"
        wait = (aware(row.run_after) - w.clock.now).total_seconds()
        waits.append(wait)
        assert runner.drain() == 0  # not before its time
        w.clock.advance(seconds=wait - 0.5)
        assert runner.drain() == 0
        w.clock.advance(seconds=1)
    assert runner.drain() == 1  # the 8th attempt, the default limit
    assert waits == sorted(waits) and len(set(waits)) == len(waits)
    assert 7.5 <= waits[0] <= 10
    assert 480 <= waits[6] <= 640  # 10 s · 2⁶, less up to a quarter of jitter
    got = w.status(job_id)
    assert (got["state"], got["attempts"]) == ("dead", 8)
    assert got["error"] == "ConnectionError: the SMS gateway is down (second line of detail)"
    w.clock.advance(days=30)
    assert runner.drain() == 0
    assert len(w.jobs.ran) == 8


def test_backoff_is_capped_at_an_hour(world: Callable[..., World]) -> None:
    w = world()
    job_id = w.queue("test.fail", max_attempts=20)
    assert job_id is not None
    runner = w.runner()
    for _ in range(15):
        runner.drain()
        w.clock.advance(hours=1, seconds=1)
    row = w.row(job_id)
    assert row.attempts == 15 and row.state == "pending"
    wait = aware(row.run_after) - (w.clock.now - dt.timedelta(hours=1, seconds=1))
    assert dt.timedelta(minutes=45) <= wait <= dt.timedelta(hours=1)


def test_a_flaky_job_succeeds_on_a_later_attempt(world: Callable[..., World]) -> None:
    w = world()
    job_id = w.queue("test.flaky", {"succeed_on": 3}, key="flaky")
    assert job_id is not None
    runner = w.runner()
    for _ in range(3):
        runner.drain()
        w.clock.advance(minutes=5)
    assert w.jobs.ran == [("flaky", 1), ("flaky", 2), ("flaky", 3)]
    assert w.status(job_id) == {
        "state": "done", "attempts": 3, "done": None, "total": None, "message": None,
        "error": None, "result": {"attempt": 3},
    }  # fmt: skip


@pytest.mark.parametrize(
    "how, expected_attempts",
    [("handler", 2), ("enqueue", 1), ("config", 3)],
)
def test_the_attempt_limit_is_set_per_job_or_per_config(
    world: Callable[..., World], how: str, expected_attempts: int
) -> None:
    w = world(CONFIG + "jobs: {max_attempts: 3}\n")
    job = "test.fragile" if how == "handler" else "test.fail"
    job_id = w.queue(job, max_attempts=1 if how == "enqueue" else None)
    assert job_id is not None
    runner = w.runner()
    for _ in range(10):
        runner.drain()
        w.clock.advance(hours=2)
    got = w.status(job_id)
    assert (got["state"], got["attempts"]) == ("dead", expected_attempts)


def test_an_unknown_job_is_dead_at_once_with_a_hint(world: Callable[..., World]) -> None:
    w = world()
    job_id = w.queue("test.notes", {"text": "x"})
    assert job_id is not None
    assert w.runner().drain() == 1
    got = w.status(job_id)
    assert (got["state"], got["attempts"]) == ("dead", 1)
    assert got["error"] == (
        "unknown job `test.notes` (did you mean `test.note`?): no enabled plugin runs it"
    )


def test_a_job_error_without_retry_is_dead_at_once(world: Callable[..., World]) -> None:
    w = world()
    job_id = w.queue("crm.email", {"subject": "Hello"})  # no `to`
    assert job_id is not None
    w.runner().drain()
    got = w.status(job_id)
    assert (got["state"], got["attempts"], got["error"]) == (
        "dead", 1, "the payload has no to",
    )  # fmt: skip
    assert str(JobError("x", retry=False)) == "x"


def test_a_job_whose_worker_died_is_taken_over_with_the_same_key(
    world: Callable[..., World],
) -> None:
    w = world(CONFIG + "jobs: {max_attempts: 2}\n")
    job_id = w.queue("test.note", {"text": "once"}, key="note:orphan")
    assert job_id is not None
    dead_worker = w.runner(worker="dead", lease_seconds=60)
    assert dead_worker._claim() is not None  # claimed, then the process died
    survivor = w.runner(worker="survivor", lease_seconds=60)
    assert survivor.drain() == 0  # the lease holds
    w.clock.advance(seconds=61)
    assert survivor.drain() == 1
    assert w.jobs.ran == [("note:orphan", 2)]
    assert w.status(job_id)["state"] == "done"

    # a job whose every attempt dies with its worker ends dead, with the reason
    job_id = w.queue("test.note", {"text": "poison"})
    assert job_id is not None
    for _ in range(2):
        assert w.runner(worker="doomed", lease_seconds=60)._claim() is not None
        w.clock.advance(seconds=61)
    assert survivor.drain() == 1
    got = w.status(job_id)
    assert got["state"] == "dead"
    assert got["error"] == "gave up after 2 attempts; attempt 2 never finished: its worker stopped"


def test_a_worker_whose_lease_ran_out_keeps_nothing_it_wrote(
    world: Callable[..., World],
) -> None:
    w = world()
    job_id = w.queue("test.overtaken", key="long")
    assert job_id is not None
    slow = w.runner(worker="slow", lease_seconds=60)

    def meanwhile() -> None:  # the first attempt outlives its lease: another worker takes over
        w.clock.advance(seconds=61)
        assert w.runner(worker="other", lease_seconds=60)._claim() is not None

    w.jobs.meanwhile = meanwhile
    assert slow.drain() == 1
    assert w.count("note") == 0  # the first attempt could not mark it done: rolled back
    row = w.row(job_id)
    assert (row.state, row.locked_by) == ("running", "other")

    w.clock.advance(seconds=61)  # and `other` died too: a third worker finishes it
    assert w.runner(worker="third").drain() == 1
    assert w.jobs.ran == [("long", 1), ("long", 3)]
    with w.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT text FROM note")).scalars().all() == ["attempt 3"]
    got = w.status(job_id)
    assert (got["state"], got["attempts"]) == ("done", 3)


# --- progress ----------------------------------------------------------------


def test_progress_is_visible_while_the_job_runs(world: Callable[..., World]) -> None:
    w = world()
    job_id = w.queue("test.progress")
    assert job_id is not None
    started = time.monotonic()
    assert w.runner().drain() == 1
    assert time.monotonic() - started < 3  # never waited for its own write lock
    seen = w.jobs.seen_during_run
    assert (seen["state"], seen["done"], seen["total"], seen["message"]) == (
        "running", 5, 10, "5 of 10 rows",
    )  # fmt: skip
    got = w.status(job_id)
    assert got["state"] == "done"
    assert w.count("note") == 1
    with pytest.raises(KeyError):
        w.status(job_id + 1000)


# --- several runners ---------------------------------------------------------


def test_two_runners_at_once_never_run_a_job_twice(world: Callable[..., World]) -> None:
    """On PostgreSQL (CRM_TEST_DATABASE_URL) the runners claim with FOR UPDATE
    SKIP LOCKED; on SQLite with a conditional UPDATE."""
    w = world()
    with Session(w.engine) as session:
        for n in range(60):
            enqueue(session, "test.slow", {}, key=f"slow:{n}")
        session.commit()
    runners = [w.runner(worker=f"worker-{n}") for n in range(2)]
    start = threading.Barrier(2)
    counts: dict[str, int] = {}
    failures: list[BaseException] = []

    def work(runner: Runner) -> None:
        try:
            start.wait()
            counts[runner.worker] = runner.drain()
        except BaseException as exc:  # reported below, not lost in the thread
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(r,)) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    keys = Counter(key for key, _ in w.jobs.ran)
    assert sorted(keys) == sorted(f"slow:{n}" for n in range(60))
    assert set(keys.values()) == {1}
    assert sum(counts.values()) == 60
    with w.engine.connect() as conn:
        states = conn.execute(sa.select(OUTBOX.c.state, OUTBOX.c.attempts).distinct()).all()
    assert states == [("done", 1)]


def test_a_schedule_queues_one_job_per_slot_however_many_runners(
    world: Callable[..., World],
) -> None:
    w = world()
    runners = [w.runner(worker=f"worker-{n}") for n in range(2)]

    def both() -> int:
        start = threading.Barrier(2)
        queued: list[int] = []

        def run(runner: Runner) -> None:
            start.wait()
            queued.append(runner.run_schedules())

        threads = [threading.Thread(target=run, args=(r,)) for r in runners]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(queued)

    assert both() == 1  # a new schedule is due at once
    assert both() == 0
    w.clock.advance(seconds=59)
    assert both() == 0
    w.clock.advance(seconds=2)
    assert both() == 1
    w.clock.advance(minutes=10)  # the workers were down for ten periods: one run
    assert both() == 1
    assert w.count("crm_outbox") == 3
    assert runners[0].drain() == 3
    assert [attempt for _, attempt in w.jobs.ran] == [1, 1, 1]
    assert w.jobs.ticked_at == w.clock.now  # a job's `now` is its runner's clock


# --- leases: the heartbeat, a stalled runner, the time budget ----------------


def test_the_heartbeat_keeps_a_long_jobs_lease_so_no_other_runner_takes_it(
    world: Callable[..., World],
) -> None:
    """The import that ran twice at once: a job that works for several leases
    without reporting keeps its lease, because the runner renews it."""
    w = world()
    job_id = w.queue("test.hold", {"hold": [1], "report": False}, key="import:7")
    assert job_id is not None
    web = w.runner(worker="web", lease_seconds=60, heartbeat_seconds=0.02)
    worker = w.runner(worker="worker", lease_seconds=60)
    working = w.in_background(web)
    assert w.jobs.holding[1].wait(10)

    for _ in range(5):  # five leases pass while the job works
        w.clock.advance(seconds=61)
        eventually(lambda: aware(w.row(job_id).locked_until) > w.clock.now, seconds=5)
        assert worker.drain() == 0
        assert w.row(job_id).locked_by == "web"

    w.jobs.released[1].set()
    working.join(10)
    assert w.jobs.ran == [("import:7", 1)]
    assert w.notes() == ["import:7: attempt 1"]
    got = w.status(job_id)
    assert (got["state"], got["attempts"]) == ("done", 1)


@pytest.mark.parametrize("reports", [True, False], ids=["reports", "silent"])
@pytest.mark.parametrize(
    "write_first", [False, True], ids=["holds-then-writes", "writes-then-holds"]
)
def test_a_stalled_runner_whose_job_was_taken_over_commits_nothing(
    world: Callable[..., World], db_url: str, reports: bool, write_first: bool
) -> None:
    """The first runner stalls inside the handler (its heartbeat with it, as a
    stopped process would), the lease runs out, a second runner takes the job
    over and finishes it; the first then wakes up and must not commit."""
    if write_first and db_url.startswith("sqlite"):
        pytest.skip("SQLite: a job that has written holds the only write lock; nobody takes it")
    w = world()
    payload = {"hold": [1], "report": reports, "write_first": write_first}
    job_id = w.queue("test.hold", payload, key="import:8")
    assert job_id is not None
    stalled = w.runner(worker="stalled", lease_seconds=60, heartbeat_seconds=3600)
    first = w.in_background(stalled)
    assert w.jobs.holding[1].wait(10)

    w.clock.advance(seconds=61)
    assert w.runner(worker="other", lease_seconds=60).drain() == 1
    assert w.notes() == ["import:8: attempt 2"]
    assert w.status(job_id)["state"] == "done"

    w.jobs.released[1].set()  # the stalled runner wakes up
    first.join(10)
    assert not first.is_alive()
    # a reporting job is stopped at its report; a silent one cannot mark the job done
    assert w.jobs.finished == ([2] if reports else [2, 1])
    assert w.notes() == ["import:8: attempt 2"]
    row = w.row(job_id)
    assert (row.state, row.attempts, row.locked_by, row.last_error) == ("done", 2, None, None)
    assert w.jobs.ran == [("import:8", 1), ("import:8", 2)]


def test_a_stalled_job_that_commits_on_its_own_after_a_takeover_commits_nothing(
    world: Callable[..., World],
) -> None:
    w = world()
    job_id = w.queue("test.hold", {"hold": [1], "commit": True}, key="import:12")
    assert job_id is not None
    stalled = w.runner(worker="stalled", lease_seconds=60, heartbeat_seconds=3600)
    first = w.in_background(stalled)
    assert w.jobs.holding[1].wait(10)
    w.clock.advance(seconds=61)
    assert w.runner(worker="other", lease_seconds=60).drain() == 1

    w.jobs.released[1].set()
    first.join(10)
    assert w.jobs.finished == [2]  # the first stopped at its commit
    assert w.notes() == ["import:12: attempt 2"]
    row = w.row(job_id)
    assert (row.state, row.attempts, row.last_error) == ("done", 2, None)


def test_a_job_past_its_budget_is_stopped_at_its_report_and_failed_for_good(
    world: Callable[..., World],
) -> None:
    w = world()
    job_id = w.queue("test.budgeted", key="report:big")  # its handler's budget: 60 s
    assert job_id is not None
    w.jobs.spend = lambda: w.clock.advance(seconds=61)
    runner = w.runner()
    assert runner.drain() == 1
    assert w.jobs.finished == []  # stopped at its report
    assert w.notes() == []  # what it wrote is rolled back
    got = w.status(job_id)
    assert (got["state"], got["attempts"]) == ("dead", 1)
    assert (
        got["error"]
        == "stopped: it ran longer than its time budget of 1 min (the job's own budget)"
    )

    w.clock.advance(days=1)  # not retried
    assert runner.drain() == 0
    assert w.jobs.ran == [("report:big", 1)]

    within = w.queue("test.budgeted", key="report:small")
    w.jobs.spend = lambda: w.clock.advance(seconds=59)
    assert runner.drain() == 1
    assert within is not None and w.status(within)["state"] == "done"


def test_a_silent_job_past_the_configured_budget_is_failed_by_the_heartbeat(
    world: Callable[..., World],
) -> None:
    """A handler that never reports cannot be stopped in the middle; its row is
    failed when the budget runs out (so no other runner starts it again), and
    what it wrote is rolled back when it returns."""
    w = world(CONFIG + "jobs: {budget: 90}\n")
    job_id = w.queue("test.hold", {"hold": [1], "report": False}, key="import:9")
    assert job_id is not None
    web = w.runner(worker="web", lease_seconds=60, heartbeat_seconds=0.02)
    working = w.in_background(web)
    assert w.jobs.holding[1].wait(10)

    w.clock.advance(seconds=91)
    message = (
        "stopped: it ran longer than its time budget of 90 s (`jobs: {budget}` in config.yaml)"
    )
    assert eventually(lambda: w.status(job_id)["state"] == "dead")
    assert w.status(job_id)["error"] == message
    w.clock.advance(seconds=61)
    assert w.runner(worker="other").drain() == 0  # dead: nobody starts it again

    w.jobs.released[1].set()
    working.join(10)
    assert w.notes() == []
    got = w.status(job_id)
    assert (got["state"], got["attempts"], got["error"]) == ("dead", 1, message)


# --- email and SMS through a plugin ------------------------------------------


def test_email_reaches_the_smtp_server_through_the_sample_plugin(
    world: Callable[..., World], smtp: Any, sample_plugin: None
) -> None:
    w = world(sample_config(smtp.port))
    key = "deal:42:won"
    job_id = w.queue(
        "crm.email",
        {"to": "buyer@example.com", "subject": "Your order is on its way",
         "text": "Hello!", "html": "<p>Hello!</p>"},
        key=key,
    )  # fmt: skip
    assert job_id is not None
    assert w.runner().drain() == 1
    assert len(smtp.messages) == 1
    got = smtp.messages[0]
    assert got["To"] == "buyer@example.com"
    assert got["From"] == "Romashka <crm@romashka.example>"
    assert got["Subject"] == "Your order is on its way"
    assert got["Message-ID"] == "<deal=3A42=3Awon@crm>" == message_id(key)
    assert got.get_body(("plain",)).get_content().strip() == "Hello!"  # type: ignore[union-attr]
    assert got.get_body(("html",)).get_content().strip() == "<p>Hello!</p>"  # type: ignore[union-attr]
    assert w.status(job_id)["result"] == "<deal=3A42=3Awon@crm>"


def test_a_random_key_is_the_message_id_as_is(
    world: Callable[..., World], smtp: Any, sample_plugin: None
) -> None:
    w = world(sample_config(smtp.port))
    job_id = w.queue("crm.email", {"to": ["a@example.com", "b@example.com"], "subject": "Hi"})
    assert job_id is not None
    w.runner().drain()
    assert smtp.messages[0]["Message-ID"] == f"<{w.row(job_id).key}@crm>"
    assert smtp.messages[0]["To"] == "a@example.com, b@example.com"


def test_without_an_email_provider_the_job_says_so(
    world: Callable[..., World], sample_plugin: None
) -> None:
    w = world(sample_config(smtp_port=None))  # the sample plugin is on, without a server
    job_id = w.queue("crm.email", {"to": "buyer@example.com", "subject": "Hi", "text": "."})
    assert job_id is not None
    w.runner().drain()
    got = w.status(job_id)
    assert (got["state"], got["error"]) == ("pending", "no enabled plugin delivers email")


def test_sms_reaches_the_gateway_with_the_key(
    world: Callable[..., World], sms: Any, sample_plugin: None
) -> None:
    url = f"http://127.0.0.1:{sms.server_address[1]}/sms"
    w = world(sample_config(sms_url=url))
    job_id = w.queue("crm.sms", {"to": "+74951234567", "text": "Shipped"}, key="order:7:sms")
    assert job_id is not None
    w.runner().drain()
    assert sms.received == [{"to": "+74951234567", "text": "Shipped", "key": "order:7:sms"}]
    assert w.status(job_id)["result"] == "sms-1"

    w2 = world(CONFIG)  # no plugin sends SMS
    job_id = w2.queue("crm.sms", {"to": "+74951234567", "text": "x"})
    assert job_id is not None
    w2.runner().drain()
    assert w2.status(job_id)["error"] == "no enabled plugin delivers SMS"


# --- the in-process runner ---------------------------------------------------


def test_the_in_process_runner_runs_jobs_in_the_background(
    make_config: Callable[..., Path], db_url: str, smtp: Any, sample_plugin: None
) -> None:
    folder = make_config(
        {}, sample_config(smtp.port, extra=f"database: {db_url}\njobs: {{interval: 0.1}}\n")
    )
    app = create_app(folder)
    crm = app.extensions["crm"]
    engine = sa.create_engine(db_url)
    try:
        migrate.apply(crm.models, engine, migrate.plan(crm.models, engine))
        with Session(engine) as session:
            enqueue(session, "crm.email", {"to": "a@example.com", "subject": "Hi"}, key="bg")
            session.commit()
        background = start_in_process(app)
        assert app.extensions["crm.jobs"] is background
        deadline = time.monotonic() + 10
        while not smtp.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        background.stop()
        assert not background.thread.is_alive()
        assert [m["Message-ID"] for m in smtp.messages] == ["<bg@crm>"]
    finally:
        engine.dispose()
        with app.app_context():
            crm.db.engine.dispose()
        crm.models.dispose()


# --- `crm worker`: a real process --------------------------------------------


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CRM_DATABASE_URL", None)
    return env


def crm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True, text=True, env=worker_env(), cwd=cwd, timeout=120, check=False,
    )  # fmt: skip


def email_jobs(folder: Path, count: int) -> list[str]:
    """Migrate the config's database and queue ``count`` emails; their Message-IDs."""
    app = create_app(folder)
    crm_state = app.extensions["crm"]
    engine = sa.create_engine(crm_state.registry.database)
    try:
        migrate.apply(crm_state.models, engine, migrate.plan(crm_state.models, engine))
        with Session(engine) as session:
            for n in range(count):
                payload = {"to": f"customer{n}@example.com", "subject": f"Invoice {n}", "text": "."}
                enqueue(session, "crm.email", payload, key=f"invoice:{n}")
            session.commit()
    finally:
        engine.dispose()
        crm_state.models.dispose()
    return [message_id(f"invoice:{n}") for n in range(count)]


def open_jobs(folder: Path) -> int:
    engine = sa.create_engine(f"sqlite:///{folder / 'instance' / 'jobs.db'}")
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(OUTBOX.c.state.in_(["pending", "running"]))
                ).scalar_one()
            )
    finally:
        engine.dispose()


def worker_config(port: int) -> str:
    return sample_config(
        port, extra="database: sqlite:///instance/jobs.db\njobs: {runner: external, lease: 2}\n"
    )


def test_a_killed_worker_loses_nothing_and_the_provider_delivers_each_email_once(
    make_config: Callable[..., Path], smtp: Any, sample_plugin: None
) -> None:
    smtp.delay = 0.05  # a slow provider: the kill lands mid-delivery
    folder = make_config({}, worker_config(smtp.port))
    expected = email_jobs(folder, 40)
    command = [sys.executable, "-m", "engine.cli", "worker", str(folder), "--interval", "0.1"]

    first = subprocess.Popen(command, env=worker_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while len(smtp.accepted) < 15 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    _, err = first.communicate(timeout=30)
    assert 15 <= len(smtp.accepted) < 40, err

    second = subprocess.Popen(command, env=worker_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while open_jobs(folder) and time.monotonic() < deadline and second.poll() is None:
        time.sleep(0.1)
    second.send_signal(signal.SIGTERM)  # a clean stop
    out, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    assert "stopped" in out
    assert "Traceback" not in err

    assert open_jobs(folder) == 0
    # every email reached the provider, and the provider accepted each once:
    # a repeat (the one in flight when the worker died) came with the same
    # Message-ID and was dropped there
    assert sorted(smtp.accepted) == sorted(expected)
    assert smtp.dropped <= 1
    engine = sa.create_engine(f"sqlite:///{folder / 'instance' / 'jobs.db'}")
    with engine.connect() as conn:
        rows = conn.execute(sa.select(OUTBOX.c.state, OUTBOX.c.attempts, OUTBOX.c.result)).all()
    engine.dispose()
    assert {state for state, _, _ in rows} == {"done"}
    assert sum(attempts for _, attempts, _ in rows) <= 41
    assert sorted(json.loads(result) for _, _, result in rows) == sorted(expected)


def test_worker_once_runs_what_is_due_and_exits(
    make_config: Callable[..., Path], smtp: Any, sample_plugin: None
) -> None:
    folder = make_config({}, worker_config(smtp.port))
    not_migrated = crm("worker", str(folder), "--once")
    assert not_migrated.returncode == 1
    assert not_migrated.stderr.strip() == (
        f"error: the database has no job tables: run `crm migrate {folder}` first"
    )
    expected = email_jobs(folder, 3)
    done = crm("worker", str(folder), "--once")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ran 3 job(s)"
    assert sorted(smtp.accepted) == sorted(expected)
    assert open_jobs(folder) == 0


def test_worker_reports_a_bad_jobs_setting_at_its_line(make_config: Callable[..., Path]) -> None:
    folder = make_config({}, CONFIG + "jobs:\n  runner: externl\n  interval: soon\n")
    result = crm("worker", ".", "--once", cwd=folder)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "config.yaml:5:11: `jobs` of config.yaml: `runner` must be one of in-process, "
        "external, not `externl` (did you mean `external`?)",
        "config.yaml:6:13: `jobs` of config.yaml: `interval` must be a number of seconds",
    ]
    assert "Traceback" not in result.stderr


def test_the_jobs_setting_is_checked(problems_of: Callable[..., list[str]]) -> None:
    assert problems_of(config=CONFIG + "jobs: {runner: external, lease: 0, tries: 3}\n") == [
        "config.yaml:4:33: `jobs` of config.yaml: `lease` must be between 1 and 86400, not 0",
        "config.yaml:4:36: unknown key `tries` in `jobs` of config.yaml",
    ]
    assert problems_of(config=CONFIG + "jobs: {runner: in-process, interval: 0.5}\n") == []
    assert problems_of(config=CONFIG + "jobs: {budget: 0}\n") == [
        "config.yaml:4:16: `jobs` of config.yaml: `budget` must be between 1 and 86400, not 0",
    ]
    assert problems_of(config=CONFIG + "jobs: {budget: 3600}\n") == []


# --- runners in processes of their own: killed, stalled, resumed -------------

JOBS_PROCESS = Path(__file__).resolve().parent / "jobs_process.py"


@dataclass
class RunnerProcess:
    """``tests/jobs_process.py`` running jobs with a real clock and a real lease."""

    name: str
    process: subprocess.Popen[str]
    log: Path

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8")

    def stop(self) -> str:
        """SIGTERM (after SIGCONT, in case it is stopped), wait, and the log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)
        return self.text()


@pytest.fixture
def runner_process(
    make_config: Callable[..., Path], db_url: str, tmp_path: Path
) -> Iterator[Callable[[str], RunnerProcess]]:
    folder = make_config({"notes.yaml": NOTES}, CONFIG)
    started: list[RunnerProcess] = []

    def start(name: str) -> RunnerProcess:
        log = tmp_path / f"{name}.log"
        with open(log, "w", encoding="utf-8") as err:
            process = subprocess.Popen(
                [sys.executable, str(JOBS_PROCESS), str(folder), db_url, name, "3"],
                env=worker_env(), stdout=subprocess.DEVNULL, stderr=err, text=True,
            )  # fmt: skip
        started.append(RunnerProcess(name, process, log))
        return started[-1]

    yield start
    for runner in started:
        if runner.process.poll() is None:
            runner.process.kill()
            runner.process.wait(30)


def test_a_runner_killed_mid_job_is_replaced_by_one_that_finishes_it_once(
    world: Callable[..., World], runner_process: Callable[[str], RunnerProcess], tmp_path: Path
) -> None:
    w = world()
    release = tmp_path / "never"
    payload = {"hold": [1], "release": str(release), "write_first": True}
    job_id = w.queue("test.step", payload, key="import:10")
    assert job_id is not None
    a = runner_process("runner-a")
    assert eventually(lambda: w.row(job_id).message == "started by runner-a", seconds=60), a.text()
    b = runner_process("runner-b")
    time.sleep(4)  # past its lease (3 s): runner-a is alive and keeps the job
    assert (w.row(job_id).locked_by, w.row(job_id).attempts) == ("runner-a", 1)

    a.process.send_signal(signal.SIGKILL)  # mid-job: it has written, not committed
    a.process.wait(30)
    assert eventually(lambda: w.row(job_id).state == "done", seconds=60), b.text()
    assert "Traceback" not in b.stop()
    assert w.notes() == ["attempt 2 by runner-b"]
    row = w.row(job_id)
    assert (row.attempts, json.loads(row.result)) == (2, "attempt 2 by runner-b")


def test_a_stopped_runner_resumed_after_a_takeover_commits_nothing(
    world: Callable[..., World], runner_process: Callable[[str], RunnerProcess], tmp_path: Path
) -> None:
    """SIGSTOP stalls a runner inside the job, heartbeat and all, past its
    lease; another runner takes the job over and finishes it; SIGCONT wakes
    the first, which must find the job is no longer its own."""
    w = world()
    release = tmp_path / "release"
    job_id = w.queue("test.step", {"hold": [1], "release": str(release)}, key="import:11")
    assert job_id is not None
    a = runner_process("runner-a")
    assert eventually(lambda: w.row(job_id).message == "started by runner-a", seconds=60), a.text()
    b = runner_process("runner-b")
    time.sleep(7)  # the job holds for over two leases (3 s): the heartbeat keeps it
    row = w.row(job_id)
    assert (row.state, row.locked_by, row.attempts) == ("running", "runner-a", 1), b.text()

    a.process.send_signal(signal.SIGSTOP)
    assert eventually(lambda: w.row(job_id).state == "done", seconds=60), b.text()
    assert w.notes() == ["attempt 2 by runner-b"]

    release.touch()
    a.process.send_signal(signal.SIGCONT)
    assert eventually(lambda: "took it over" in a.text(), seconds=30), a.text()
    a_log, b_log = a.stop(), b.stop()
    assert "Traceback" not in a_log + b_log
    assert w.notes() == ["attempt 2 by runner-b"]
    row = w.row(job_id)
    assert (row.state, row.attempts, row.locked_by) == ("done", 2, None)
    assert json.loads(row.result) == "attempt 2 by runner-b"
