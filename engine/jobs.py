"""The job runner: a transactional outbox (docs/jobs.md).

Anything that leaves the system (an email, an SMS, a webhook) or takes long
(an import) is queued with :func:`enqueue` as a row of ``crm_outbox``, in the
same transaction as the change that asks for it: a rolled back change queues
nothing. A :class:`Runner` later claims due rows with a lease, runs the job's
handler (from the ``crm_jobs`` hook) in a transaction of its own that also
marks the row done, and retries a failure with growing backoff until the
job's attempts are spent (``dead``).

The runner guarantees *at least once*: a worker killed after the handler's
effect left the system but before its transaction committed leaves a lease
that runs out, and the job runs again with the same idempotency key. That the
outside world sees it once is the provider's part: the key goes along (the
email's ``Message-ID``, the SMS's client reference) so that the provider can
drop the repeat.

Claiming is safe with any number of workers: ``SELECT ... FOR UPDATE SKIP
LOCKED`` on PostgreSQL, a conditional UPDATE whose row count says who won
elsewhere (SQLite). While a job runs, a heartbeat thread renews its lease, so
only a worker that died or stalled loses it; a worker that lost it finds out
at the job's next ``ctx.report`` (or ``ctx.checkpoint``) and, at the latest,
in the transaction that would mark the job done, which then rolls back. Each
attempt has a time budget: past it, the job is stopped there and is dead.
Celery, later, runs the same handlers behind this interface.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import sessionmaker

from engine.clock import now as current_time
from engine.errors import did_you_mean
from engine.models import job_tables

log = logging.getLogger("crm.jobs")

#: the tables' shape for statements; every config's metadata has the same two
OUTBOX, SCHEDULE = job_tables(sa.MetaData())
PENDING, RUNNING, DONE, DEAD = "pending", "running", "done", "dead"
DEFAULT_MAX_ATTEMPTS = 8
DEFAULT_INTERVAL = 5.0
DEFAULT_LEASE = 300
#: seconds one attempt of a job may run before it is stopped (``jobs.budget``)
DEFAULT_BUDGET = 1800
#: the heartbeat renews a running job's lease every lease / HEARTBEATS seconds
HEARTBEATS = 4
BACKOFF_BASE = 10.0  # seconds before the first retry
BACKOFF_CAP = 3600.0  # never more than an hour between attempts
KEY_LENGTH = 200
ERROR_LENGTH = 500
#: progress is written to the database at most this often per job (seconds)
PROGRESS_EVERY = 0.5


class JobError(Exception):
    """A failure whose message is for the person reading the job's row, as
    is: ``raise JobError("no enabled plugin delivers email")``. With
    ``retry=False`` the job is ``dead`` at once (a payload that can never
    work); anything else a handler raises is retried."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


class OverBudget(JobError):
    """Raised by ``ctx.report`` and ``ctx.checkpoint`` once an attempt has run
    longer than its time budget: the job is failed for good (``dead``) with
    this message, and what it wrote is rolled back."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry=False)


class LeaseLost(Exception):
    """Raised by ``ctx.report`` and ``ctx.checkpoint`` in a runner whose lease
    on the job is gone (it stalled, and another runner took the job over):
    this attempt stops, and nothing it wrote is kept. Let it propagate."""


# --- queueing ----------------------------------------------------------------


def enqueue(
    session: Any,
    job: str,
    payload: Mapping[str, Any],
    *,
    key: str | None = None,
    run_after: dt.datetime | None = None,
    max_attempts: int | None = None,
) -> int | None:
    """Queue ``job`` with ``payload`` (JSON) in the caller's transaction,
    without committing: it runs once that transaction commits, never if it
    rolls back.

    ``key`` is the idempotency key: a key already queued (or done) adds
    nothing and returns None, so queueing the same thing twice is harmless.
    Without one a random key is made. ``run_after`` delays the first attempt
    (an aware datetime; a naive one is taken as UTC). ``max_attempts``
    overrides the handler's and the config's limit for this job. Returns the
    new row's id."""
    key = key if key is not None else uuid.uuid4().hex
    if not key or len(key) > KEY_LENGTH:
        raise ValueError(f"a job's key must be 1 to {KEY_LENGTH} characters, not {len(key)}")
    now = current_time()
    values = {
        "job": job,
        "key": key,
        "payload": json.dumps(payload, ensure_ascii=False),
        "state": PENDING,
        "attempts": 0,
        "max_attempts": max_attempts,
        "run_after": _utc(run_after) if run_after is not None else now,
        "created_at": now,
    }
    stmt = _insert_new(session, OUTBOX, values, OUTBOX.c.key)
    if stmt is not None:
        new_id = session.execute(stmt.returning(OUTBOX.c.id)).scalar_one_or_none()
        return None if new_id is None else int(new_id)
    # other databases: look first (a concurrent twin still fails on the unique index)
    if session.execute(sa.select(OUTBOX.c.id).where(OUTBOX.c.key == key)).first():
        return None
    return int(
        session.execute(OUTBOX.insert().values(**values).returning(OUTBOX.c.id)).scalar_one()
    )


def _insert_new(session: Any, table: sa.Table, values: dict[str, Any], unique: Any) -> Any:
    """``INSERT ... ON CONFLICT (unique) DO NOTHING`` on PostgreSQL and
    SQLite (the same upsert family as ``Documents.increment``); None elsewhere."""
    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        return None
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(table).values(**values).on_conflict_do_nothing(index_elements=[unique])


def status(session: Any, job_id: int) -> dict[str, Any]:
    """Where a job stands, for a page that polls it: ``state`` (pending,
    running, done, dead), ``attempts`` started so far, progress (``done``,
    ``total``, ``message``) as the job reported it, the last ``error`` of a
    job still to be retried or dead, and the handler's ``result``. KeyError
    for an id that is not in the outbox."""
    row = session.execute(
        sa.select(
            OUTBOX.c.state, OUTBOX.c.attempts, OUTBOX.c.done, OUTBOX.c.total,
            OUTBOX.c.message, OUTBOX.c.last_error, OUTBOX.c.result,
        ).where(OUTBOX.c.id == job_id)
    ).one_or_none()  # fmt: skip
    if row is None:
        raise KeyError(f"there is no job #{job_id}")
    out = {
        "state": row.state,
        "attempts": row.attempts,
        "done": row.done,
        "total": row.total,
        "message": row.message,
        "error": row.last_error,
        "result": json.loads(row.result) if row.result is not None else None,
    }
    if row.state == RUNNING:
        # newer than the database when the job's own transaction holds
        # SQLite's write lock and it runs in this process (the in-process runner)
        out.update(_LIVE.get((_db_name(session.get_bind()), job_id), {}))
    return out


# --- running -----------------------------------------------------------------


@dataclass
class JobContext:
    """What a handler gets besides its payload. ``session`` is in the job's
    own transaction: what the handler writes commits together with marking
    the job done, or not at all. ``attempt`` counts from 1."""

    session: Any
    models: Any
    pm: Any
    registry: Any
    key: str
    attempt: int
    job_id: int
    _runner: Runner | None = field(default=None, repr=False, compare=False)

    def now(self) -> dt.datetime:
        """The runner's time (a test moves it), in UTC; the real time outside a
        runner. A handler that compares with due dates asks here."""
        return self._runner.clock() if self._runner is not None else current_time()

    def report(self, done: int, total: int | None = None, message: str | None = None) -> None:
        """Progress for a page that polls :func:`status`: written out of band
        (a connection of its own, committed at once) while the job's
        transaction is still open. Reporting also renews the job's lease and
        is a :meth:`checkpoint`. Outside a runner it does nothing."""
        if self._runner is not None:
            self._runner.progress(self.job_id, done, total, message)

    def checkpoint(self) -> None:
        """Raise :class:`OverBudget` once this attempt has run longer than its
        time budget, and :class:`LeaseLost` once another runner has taken the
        job over; do nothing otherwise. A long loop that does not report calls
        it now and then, so that it can be stopped there."""
        if self._runner is not None:
            self._runner.checkpoint(self.job_id)


def backoff(attempt: int, rand: Callable[[], float] = random.random) -> dt.timedelta:
    """How long to wait after failed attempt ``attempt`` (1, 2, ...): 10 s,
    20 s, 40 s ... up to an hour, each less up to a quarter at random so
    that jobs that failed together do not retry together. Every wait is
    longer than the one before until the cap."""
    seconds = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(attempt - 1, 20))
    return dt.timedelta(seconds=seconds * (0.75 + 0.25 * rand()))


@dataclass
class _Claim:
    id: int
    job: str
    key: str
    payload: str
    attempts: int
    max_attempts: int | None
    last_error: str | None


@dataclass
class _Attempt:
    """One attempt this runner is running: when its budget ends, and what the
    heartbeat found out (the lease went to another runner; the budget ran out)."""

    claim: _Claim
    deadline: dt.datetime
    over_budget: str
    lost: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)


def budget_text(seconds: float) -> str:
    """``90`` → ``90 s``, ``1800`` → ``30 min``, ``7200`` → ``2 h``."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


class Runner:
    """Claims due jobs and runs them; one per worker process or thread.

    ``engine_or_sessionmaker`` is the database's engine or a sessionmaker
    bound to it; ``worker`` names this runner in ``locked_by`` (default:
    host, process and a random suffix); ``lease_seconds`` is how long a
    claimed job is this runner's alone before another may take it over,
    renewed by a heartbeat thread every ``heartbeat_seconds`` (a quarter of
    the lease by default, at most a minute) and by ``ctx.report``;
    ``budget_seconds`` is how long one attempt may run (default: the
    config's ``jobs.budget``; a handler's ``budget`` attribute wins);
    ``clock`` returns the current aware time (tests move it instead of
    sleeping)."""

    def __init__(
        self,
        models: Any,
        engine_or_sessionmaker: Any,
        pm: Any,
        *,
        worker: str | None = None,
        lease_seconds: float = DEFAULT_LEASE,
        heartbeat_seconds: float | None = None,
        budget_seconds: float | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.models = models
        self.registry = models.registry
        self.pm = pm
        if isinstance(engine_or_sessionmaker, sa.Engine):
            self.engine = engine_or_sessionmaker
            self.sessions = sessionmaker(bind=self.engine)
        else:
            self.sessions = engine_or_sessionmaker
            self.engine = self.sessions.kw["bind"]
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease = dt.timedelta(seconds=lease_seconds)
        self.heartbeat = (
            heartbeat_seconds
            if heartbeat_seconds is not None
            else min(60.0, max(0.05, lease_seconds / HEARTBEATS))
        )
        self._clock = clock or current_time
        settings = getattr(self.registry, "jobs", {})
        self.max_attempts = int(settings.get("max_attempts", DEFAULT_MAX_ATTEMPTS))
        self.budget = float(
            budget_seconds if budget_seconds is not None else
            settings.get("budget", DEFAULT_BUDGET)
        )  # fmt: skip
        #: set to stop after the job that runs now (SIGTERM, ``InProcessRunner.stop``)
        self.stopping = threading.Event()
        self.handlers: dict[str, Callable[..., Any]] = {}
        for contributed in pm.hook.crm_jobs():
            for name, handler in (contributed or {}).items():
                self.handlers.setdefault(name, handler)
        self.schedules: dict[str, float] = {}
        for contributed in pm.hook.crm_schedules():
            for name, every in contributed or []:
                if name not in self.handlers:
                    log.warning("the schedule of `%s` is ignored: no enabled plugin runs it", name)
                    continue
                self.schedules.setdefault(name, every)
        # the engine's own periodic jobs, by what the configuration declares
        from engine.reports.abc_xyz import schedules as abc_xyz_schedules

        for name, every in abc_xyz_schedules(self.registry):
            if name in self.handlers:
                self.schedules.setdefault(name, every)
        self._postgres = self.engine.dialect.name == "postgresql"
        self._db = _db_name(self.engine)
        self._side: sa.Engine | None = None
        self._written: dict[int, float] = {}
        #: job id → the attempt this runner runs now (its budget, its heartbeat's findings)
        self._attempts: dict[int, _Attempt] = {}

    def clock(self) -> dt.datetime:
        """Now, in UTC (the injected clock's time when there is one)."""
        return _utc(self._clock())

    # -- the loop ---------------------------------------------------------------

    def run_due(self, limit: int = 100) -> int:
        """Claim due jobs one at a time and run each; return how many ran."""
        ran = 0
        while ran < limit and not self.stopping.is_set():
            claim = self._claim()
            if claim is None:
                break
            self._run(claim)
            ran += 1
        return ran

    def drain(self, max_rounds: int = 50) -> int:
        """Run jobs until none is due (those that failed wait for their retry)."""
        total = 0
        for _ in range(max_rounds):
            ran = self.run_due()
            total += ran
            if ran == 0:
                break
        return total

    def run_forever(self, interval: float = DEFAULT_INTERVAL) -> None:
        """Schedules and due jobs until :attr:`stopping` is set, waiting
        ``interval`` seconds whenever nothing was due. A failing database is
        logged and tried again, never the end of the loop."""
        while not self.stopping.is_set():
            try:
                self.run_schedules()
                ran = self.run_due()
            except Exception as exc:
                log.error("the job runner failed, trying again in %ss: %s", interval, one_line(exc))
                ran = 0
            if ran == 0:
                self.stopping.wait(interval)

    # -- claiming ---------------------------------------------------------------

    def _claim(self) -> _Claim | None:
        """Take one due job: an abandoned lease first (its worker died), then
        the pending job due longest. The claim is committed before the job
        runs, so the lease outlives a crash of this worker."""
        now = self.clock()
        until = now + self.lease
        t = OUTBOX
        columns = (t.c.id, t.c.job, t.c.key, t.c.payload, t.c.attempts, t.c.max_attempts,
                   t.c.last_error, t.c.locked_by)  # fmt: skip
        with self.engine.begin() as conn:
            for state in (RUNNING, PENDING):
                # a running row keeps its lease's end in run_after as well, so
                # both are one range scan of the (state, run_after) index
                query = (
                    sa.select(*columns)
                    .where(t.c.state == state, t.c.run_after <= now)
                    .order_by(t.c.run_after, t.c.id)
                )
                if self._postgres:
                    query = query.limit(1).with_for_update(skip_locked=True)
                else:  # the conditional UPDATE below decides who wins a row
                    query = query.limit(8)
                for row in conn.execute(query).all():
                    # compare and set: the row is still as read (the same state
                    # and holder, its lease still over) or another runner won it
                    won = conn.execute(
                        t.update()
                        .where(
                            t.c.id == row.id,
                            t.c.state == state,
                            t.c.locked_by.is_not_distinct_from(row.locked_by),
                            t.c.run_after <= now,
                        )
                        .values(
                            state=RUNNING,
                            attempts=t.c.attempts + 1,
                            locked_by=self.worker,
                            locked_until=until,
                            run_after=until,
                        )
                    ).rowcount
                    if won == 1:
                        error = row.last_error
                        if state == RUNNING:
                            error = f"attempt {row.attempts} never finished: its worker stopped"
                        return _Claim(row.id, row.job, row.key, row.payload, row.attempts + 1,
                                      row.max_attempts, error)  # fmt: skip
        return None

    # -- running ----------------------------------------------------------------

    def _run(self, c: _Claim) -> None:
        handler = self.handlers.get(c.job)
        if handler is None:
            known = did_you_mean(c.job, self.handlers)
            self._failed(c, f"unknown job `{c.job}`{known}: no enabled plugin runs it", dead=True)
            return
        limit = c.max_attempts or getattr(handler, "max_attempts", None) or self.max_attempts
        if c.attempts > limit:  # the worker running its last attempt died
            why = f"; {c.last_error}" if c.last_error else ""
            self._failed(c, f"gave up after {limit} attempts{why}", dead=True)
            return
        try:
            payload = json.loads(c.payload)
        except ValueError as exc:
            self._failed(c, f"the payload is not JSON: {exc}", dead=True)
            return
        own_budget = getattr(handler, "budget", None)
        budget = float(own_budget or self.budget)
        where = "the job's own budget" if own_budget else "`jobs: {budget}` in config.yaml"
        attempt = _Attempt(
            c,
            deadline=self.clock() + dt.timedelta(seconds=budget),
            over_budget=(
                f"stopped: it ran longer than its time budget of {budget_text(budget)} ({where})"
            ),
        )
        self._attempts[c.id] = attempt
        beat = threading.Thread(
            target=self._heartbeat, args=(attempt,), name=f"crm-job-{c.id}-heartbeat", daemon=True
        )
        beat.start()
        log.info("running %s #%s (attempt %s)", c.job, c.id, c.attempts)
        try:
            with self.sessions() as session:
                sa.event.listen(session, "before_commit", self._commit_guard(attempt))
                ctx = JobContext(session, self.models, self.pm, self.registry, c.key, c.attempts,
                                 c.id, _runner=self)  # fmt: skip
                try:
                    result = handler(ctx, payload)
                    # no renewal from now on: the heartbeat must not race "done"
                    _stop(attempt, beat)
                    # a handler that swallowed the checkpoint's exception is still stopped
                    self._check(attempt)
                    finish = (
                        OUTBOX.update()
                        .where(*self._mine(c))
                        .values(
                            state=DONE,
                            result=None if result is None else json.dumps(result, default=str),
                            finished_at=self.clock(),
                            locked_by=None,
                            locked_until=None,
                            last_error=None,
                        )
                    )
                    # whether the job is still this runner's is asked in the very
                    # transaction that commits the handler's writes
                    marked = cast(sa.CursorResult[Any], session.execute(finish)).rowcount
                    if marked != 1:
                        raise LeaseLost(f"job #{c.id} is not this runner's any more")
                    session.info[_FINISHING] = True
                    session.commit()
                except LeaseLost:
                    _stop(attempt, beat)
                    # another runner took the job over after this lease ran out:
                    # it decides; nothing this attempt wrote is kept
                    session.rollback()
                    log.warning("%s #%s: another runner took it over; this attempt's work is "
                                "rolled back", c.job, c.id)  # fmt: skip
                    return
                except Exception as exc:
                    _stop(attempt, beat)
                    session.rollback()
                    # the operator's log has the traceback; the row gets one line
                    log.warning("%s #%s failed (attempt %s): %s", c.job, c.id, c.attempts,
                                one_line(exc), exc_info=not isinstance(exc, JobError))  # fmt: skip
                    final = isinstance(exc, JobError) and not exc.retry
                    self._failed(c, one_line(exc), dead=final or c.attempts >= limit)
                    return
            log.info("done %s #%s", c.job, c.id)
        finally:
            _stop(attempt, beat)
            self._attempts.pop(c.id, None)
            _LIVE.pop((self._db, c.id), None)
            self._written.pop(c.id, None)

    def _commit_guard(self, attempt: _Attempt) -> Callable[[Any], None]:
        """A handler that commits on its own (it should leave that to the
        runner) commits only while the job is still this runner's: the lease
        is renewed in the very transaction that commits, which on PostgreSQL
        also keeps any other runner from taking the row until it has."""

        def guard(session: Any) -> None:
            if session.info.get(_FINISHING):
                return
            self._check(attempt)
            until = self.clock() + self.lease
            renew = (
                OUTBOX.update()
                .where(*self._mine(attempt.claim))
                .values(locked_until=until, run_after=until)
            )
            if cast(sa.CursorResult[Any], session.execute(renew)).rowcount != 1:
                attempt.lost.set()
                self._check(attempt)

        return guard

    def checkpoint(self, job_id: int) -> None:
        """``JobContext.checkpoint``: raise if the attempt that runs ``job_id``
        here lost its lease or ran past its budget."""
        attempt = self._attempts.get(job_id)
        if attempt is not None:
            self._check(attempt)

    def _check(self, attempt: _Attempt) -> None:
        if attempt.lost.is_set():
            raise LeaseLost(f"job #{attempt.claim.id} was taken over by another runner")
        if self.clock() >= attempt.deadline:
            raise OverBudget(attempt.over_budget)

    # -- the heartbeat ------------------------------------------------------------

    def _heartbeat(self, attempt: _Attempt) -> None:
        """Renew the lease every :attr:`heartbeat` seconds while the handler
        runs, whether it reports or not, so that no other runner takes over a
        job that is still being worked on. Stops when the lease is found
        gone; once the budget is spent it marks the job dead instead (the
        handler's commit then fails, and a handler that never reports is
        failed all the same)."""
        while not attempt.stop.wait(self.heartbeat):
            try:
                if not self._beat(attempt):
                    return
            except Exception as exc:  # the database is away: try at the next beat
                log.warning("the heartbeat of job #%s failed: %s", attempt.claim.id,
                            one_line(exc))  # fmt: skip

    def _beat(self, attempt: _Attempt) -> bool:
        """One heartbeat; False once there is nothing left to renew."""
        c = attempt.claim
        now = self.clock()
        if now >= attempt.deadline:
            values: dict[str, Any] = {
                "state": DEAD, "last_error": attempt.over_budget[:ERROR_LENGTH],
                "run_after": now, "finished_at": now, "locked_by": None, "locked_until": None,
            }  # fmt: skip
        else:
            until = now + self.lease
            values = {"locked_until": until, "run_after": until}
        changed = self._write_aside(OUTBOX.update().where(*self._mine(c)).values(**values))
        if changed is None:  # SQLite: the job holds the write lock, so nobody can take it now
            changed = self._owned(c.id)
        if changed is None:
            return True
        if changed == 0:
            attempt.lost.set()
            log.warning("%s #%s: the lease is gone (another runner took the job over)",
                        c.job, c.id)  # fmt: skip
            return False
        if now >= attempt.deadline:
            log.warning("%s #%s is dead: %s", c.job, c.id, attempt.over_budget)
            return False
        return True

    def _write_aside(self, stmt: Any) -> int | None:
        """Run ``stmt`` on a connection of its own, committed at once; the rows
        it changed, or None when SQLite's write lock is held (by the job's own
        transaction: the statement is not waited for)."""
        try:
            with self._side_engine().begin() as conn:
                return int(conn.execute(stmt).rowcount)
        except sa.exc.OperationalError as exc:
            if self._postgres or "locked" not in str(exc):
                raise
            log.debug("not written while the database is locked: %s", one_line(exc))
            return None

    def _mine(self, c: _Claim) -> tuple[Any, ...]:
        return OUTBOX.c.id == c.id, OUTBOX.c.state == RUNNING, OUTBOX.c.locked_by == self.worker

    def _failed(self, c: _Claim, error: str, dead: bool) -> None:
        now = self.clock()
        values: dict[str, Any] = {
            "last_error": error[:ERROR_LENGTH],
            "locked_by": None,
            "locked_until": None,
        }
        if dead:
            values |= {"state": DEAD, "run_after": now, "finished_at": now}
            log.warning("%s #%s is dead: %s", c.job, c.id, error)
        else:
            values |= {"state": PENDING, "run_after": now + backoff(c.attempts)}
        with self.engine.begin() as conn:
            conn.execute(OUTBOX.update().where(*self._mine(c)).values(**values))

    # -- progress ---------------------------------------------------------------

    def progress(self, job_id: int, done: int, total: int | None, message: str | None) -> None:
        """``JobContext.report``: a :meth:`checkpoint`, then the progress is
        remembered in this process at once and written to the row (committed
        on a connection of its own) at most every PROGRESS_EVERY seconds, the
        lease renewed with it. On SQLite a job that has written holds the
        database's one write lock until it commits; the row is then left as
        it was and only this process (the in-process runner, serving the
        pages too) sees the progress."""
        self.checkpoint(job_id)
        _LIVE[(self._db, job_id)] = {"done": done, "total": total, "message": message}
        last = self._written.get(job_id)
        if last is not None and time.monotonic() - last < PROGRESS_EVERY and done != total:
            return
        self._written[job_id] = time.monotonic()
        until = self.clock() + self.lease
        stmt = (
            OUTBOX.update()
            .where(OUTBOX.c.id == job_id, OUTBOX.c.state == RUNNING,
                   OUTBOX.c.locked_by == self.worker)
            .values(done=done, total=total, message=message, locked_until=until, run_after=until)
        )  # fmt: skip
        changed = self._write_aside(stmt)
        if changed is None:  # SQLite, locked by the job itself: was it taken over before?
            changed = self._owned(job_id)
        if changed == 0 and job_id in self._attempts:
            self._attempts[job_id].lost.set()
            self.checkpoint(job_id)

    def _owned(self, job_id: int) -> int | None:
        """1 when the job's row is still this runner's, 0 when it is not, None
        when that cannot be read now (read aside, like the writes)."""
        query = sa.select(sa.func.count()).where(
            OUTBOX.c.id == job_id, OUTBOX.c.state == RUNNING, OUTBOX.c.locked_by == self.worker
        )
        try:
            with self._side_engine().connect() as conn:
                return int(conn.execute(query).scalar_one())
        except sa.exc.OperationalError as exc:
            if self._postgres or "locked" not in str(exc):
                raise
            return None

    def _side_engine(self) -> sa.Engine:
        """PostgreSQL: the runner's own pool. SQLite: a connection that never
        waits for the write lock (the job's own transaction may hold it)."""
        if self._postgres or self.engine.dialect.name != "sqlite":
            return self.engine
        if self._side is None:
            self._side = sa.create_engine(
                self.engine.url, connect_args={"timeout": 0}, poolclass=sa.pool.NullPool
            )
        return self._side

    # -- periodic jobs ------------------------------------------------------------

    def run_schedules(self) -> int:
        """Queue every periodic job (``crm_schedules``) whose time has come,
        once however many workers ask: the first to move the schedule's
        ``next_run`` on queues the job, with a key naming the slot. A worker
        that was down for several periods runs a missed job once."""
        queued = 0
        for name, every in self.schedules.items():
            now = self.clock()
            with self.sessions() as session:
                seen = self._next_run(session, name, now)
                if seen > now:
                    continue
                period = dt.timedelta(seconds=every)
                periods = (now - seen) // period + 1
                advance = (
                    SCHEDULE.update()
                    .where(SCHEDULE.c.name == name, SCHEDULE.c.next_run <= now)
                    .values(next_run=seen + periods * period)
                )
                moved = cast(sa.CursorResult[Any], session.execute(advance)).rowcount
                if moved == 1:
                    slot = seen.strftime("%Y-%m-%dT%H:%M:%S")
                    if enqueue(session, name, {}, key=f"schedule:{name}:{slot}") is not None:
                        queued += 1
                session.commit()
        return queued

    def _next_run(self, session: Any, name: str, now: dt.datetime) -> dt.datetime:
        """The schedule's next run; a schedule seen for the first time is due now."""
        table = SCHEDULE
        query = sa.select(table.c.next_run).where(table.c.name == name)
        seen = session.execute(query).scalar_one_or_none()
        if seen is None:
            values = {"name": name, "next_run": now}
            stmt = _insert_new(session, table, values, table.c.name)
            session.execute(stmt if stmt is not None else table.insert().values(**values))
            seen = session.execute(query).scalar_one()
        return _utc(seen)


# --- the in-process runner ---------------------------------------------------


class InProcessRunner:
    """A daemon thread that runs a :class:`Runner` inside the web process
    (``crm run``), inside the app's context."""

    def __init__(self, app: Any, runner: Runner, interval: float) -> None:
        self.app = app
        self.runner = runner
        self.interval = interval
        self.thread = threading.Thread(target=self._serve, name="crm-jobs", daemon=True)

    def _serve(self) -> None:
        with self.app.app_context():
            self.runner.run_forever(self.interval)

    def start(self) -> InProcessRunner:
        self.thread.start()
        return self

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop after the job that runs now, and wait for it (up to ``timeout``)."""
        self.runner.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout)


def runner_for(app: Any, worker: str | None = None) -> Runner:
    """A runner for an app's configuration and database, with the config's
    ``jobs:`` settings. Call it inside the app's context."""
    crm = app.extensions["crm"]
    settings = crm.registry.jobs
    return Runner(
        crm.models, crm.db.engine, crm.pm, worker=worker,
        lease_seconds=settings.get("lease", DEFAULT_LEASE),
        budget_seconds=settings.get("budget", DEFAULT_BUDGET),
    )  # fmt: skip


def interval_of(registry: Any) -> float:
    """Seconds an idle runner waits before it looks again (``jobs.interval``)."""
    return float(registry.jobs.get("interval", DEFAULT_INTERVAL))


def start_in_process(app: Any) -> InProcessRunner:
    """Start running the app's jobs in a daemon thread; ``stop()`` it to end.
    Kept as ``app.extensions["crm.jobs"]``."""
    with app.app_context():
        runner = runner_for(app)
    started = InProcessRunner(app, runner, interval_of(runner.registry)).start()
    app.extensions["crm.jobs"] = started
    return started


# --- the engine's own jobs ---------------------------------------------------


def message_id(key: str) -> str:
    """The ``Message-ID`` of the email queued with ``key``: ``<KEY@crm>``,
    with any character a Message-ID may not hold written as ``=XX``."""
    safe = "".join(
        ch if ch.isascii() and (ch.isalnum() or ch in "-_+") else
        "".join(f"={b:02X}" for b in ch.encode())
        for ch in key
    )  # fmt: skip
    return f"<{safe}@crm>"


def _required(payload: Mapping[str, Any], *names: str) -> None:
    missing = [n for n in names if not payload.get(n)]
    if missing:
        raise JobError(f"the payload has no {', '.join(missing)}", retry=False)


def send_email(ctx: JobContext, payload: Mapping[str, Any]) -> Any:
    """``crm.email``: ``{to, subject, text, html?}`` → ``crm_send_email``.
    ``to`` is an address or a list of them. The provider's message id is
    the job's result."""
    _required(payload, "to")
    message = EmailMessage()
    message["From"] = ctx.registry.settings.get("mail_from") or "crm@localhost"
    to = payload["to"]
    message["To"] = to if isinstance(to, str) else ", ".join(to)
    message["Subject"] = payload.get("subject") or ""
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id(ctx.key)
    message.set_content(payload.get("text") or "")
    if payload.get("html"):
        message.add_alternative(payload["html"], subtype="html")
    sent = ctx.pm.hook.crm_send_email(message=message, settings=ctx.registry.plugins)
    if sent is None:
        raise JobError("no enabled plugin delivers email")
    return sent


def send_sms(ctx: JobContext, payload: Mapping[str, Any]) -> Any:
    """``crm.sms``: ``{to, text}`` → ``crm_send_sms`` with the job's key."""
    _required(payload, "to", "text")
    sent = ctx.pm.hook.crm_send_sms(
        to=payload["to"], text=payload["text"], settings=ctx.registry.plugins, key=ctx.key
    )
    if sent is None:
        raise JobError("no enabled plugin delivers SMS")
    return sent


CORE_JOBS: dict[str, Callable[..., Any]] = {"crm.email": send_email, "crm.sms": send_sms}


# --- helpers -----------------------------------------------------------------

#: set in a job's session while the runner commits it with "done"
_FINISHING = "crm.jobs.finishing"

#: (database, job id) → the latest progress a job running in this process reported
_LIVE: dict[tuple[str, int], dict[str, Any]] = {}


def _stop(attempt: _Attempt, beat: threading.Thread) -> None:
    """Stop an attempt's heartbeat and wait for the beat in flight."""
    attempt.stop.set()
    beat.join()


def _db_name(bind: Any) -> str:
    engine = getattr(bind, "engine", bind)
    return str(engine.url.render_as_string(hide_password=True))


def _utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands datetimes back naive; everything here is UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def one_line(exc: BaseException) -> str:
    """An error for a job's row: one line, no traceback; the exception's
    class unless it is a :class:`JobError` meant to be read as is."""
    text = " ".join(str(exc).split())
    if isinstance(exc, JobError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
