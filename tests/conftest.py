"""Fixtures that read like a consultant's setup: a config from YAML strings.

The database is SQLite in a temporary folder by default; with
``CRM_TEST_DATABASE_URL`` set (CI sets it to the local PostgreSQL) every
test that asks for ``db_url`` gets that server instead, with an empty schema.
``sample_plugin`` installs the outside plugin of ``tests/plugins/sample_plugin``
through its entry point, once per session; ``smtp`` and ``sms`` are a real
SMTP server and SMS gateway on free local ports for it to deliver to.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.message
import email.policy
import fcntl
import http.server
import importlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import site
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.errors import MetadataError
from engine.loader import load
from engine.registry import Registry

PG_URL = os.environ.get("CRM_TEST_DATABASE_URL")
IN_CI = os.environ.get("CI") == "true"

MINIMAL_CONFIG = "name: Test company\nlocale: en\nlayers: []\n"


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Path]:
    """``make_config({"deal.yaml": "documents: ..."}, config="name: X")`` → the folder.

    The config has no base layer unless the config text asks for it, so a
    test sees only the metadata it writes.
    """
    counter = {"n": 0}

    def make(files: dict[str, str] | None = None, config: str = MINIMAL_CONFIG) -> Path:
        counter["n"] += 1
        folder = tmp_path / f"config{counter['n']}"
        folder.mkdir()
        (folder / "config.yaml").write_text(textwrap.dedent(config), encoding="utf-8")
        for name, text in (files or {}).items():
            (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")
        return folder

    return make


@pytest.fixture
def load_config(make_config: Callable[..., Path]) -> Callable[..., Registry]:
    """Build a config from YAML strings and load it (raises MetadataError)."""

    def build(files: dict[str, str] | None = None, config: str = MINIMAL_CONFIG) -> Registry:
        return load(make_config(files, config), env={})

    return build


@pytest.fixture
def problems_of(make_config: Callable[..., Path]) -> Callable[..., list[str]]:
    """The problems `crm check` would print for a config, with paths relative to it."""

    def run(
        files: dict[str, str] | None = None,
        config: str = MINIMAL_CONFIG,
        env: dict[str, str] | None = None,
    ) -> list[str]:
        folder = make_config(files, config)
        try:
            load(folder, env=env or {})
        except MetadataError as exc:
            return [
                str(p)
                .replace(str(folder) + os.sep, "")
                .replace(os.path.relpath(folder) + os.sep, "")
                for p in exc.problems
            ]
        return []

    return run


def _reset_postgres(url: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
        # a throwaway database: commits need not wait for the disk (new
        # connections take it; Flask-AppBuilder commits once per permission)
        name = conn.execute(sa.text("SELECT current_database()")).scalar_one()
        conn.execute(sa.text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    engine.dispose()


#: ``CRM_TEST_CLOCK_DAYS=366`` runs the whole suite with every clock of the
#: process (the engine's, the tests', JWT's and the session cookies') moved
#: that many days ahead: CI's PostgreSQL run does, so a test that passes only
#: before some date fails on the day it is written, not a year later.
CLOCK_DAYS = int(os.environ.get("CRM_TEST_CLOCK_DAYS") or 0)


def _move_the_clock() -> None:
    if CLOCK_DAYS:
        import time_machine

        moved = dt.datetime.now(dt.UTC) + dt.timedelta(days=CLOCK_DAYS)
        time_machine.travel(moved, tick=True).start()


@pytest.fixture(autouse=True, scope="session")
def _processes_move_their_clock_too() -> None:
    """The processes the tests start (crm worker, crm import) move their clock
    as far as this one (tests/clock/sitecustomize.py). Set here, in the process
    that runs the tests, not in pytest_configure: pytest-xdist's workers must
    start with pytest's own import hooks, before anything imports time_machine."""
    if CLOCK_DAYS:
        clock_dir = str(Path(__file__).parent / "clock")
        path = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = clock_dir + (os.pathsep + path if path else "")


def pytest_report_header(config: pytest.Config) -> str | None:
    return (
        f"clock moved {CLOCK_DAYS} days ahead: now is {dt.datetime.now(dt.UTC):%Y-%m-%d}"
        if CLOCK_DAYS
        else None
    )


def pytest_configure(config: pytest.Config) -> None:
    """Temporary folders (SQLite files among them) in memory when the machine
    has /dev/shm: a run commits thousands of times, and each commit of a file
    on disk waits for it. ``--basetemp`` still chooses another place."""
    _move_the_clock()
    shm = Path("/dev/shm")
    if config.option.basetemp or not (shm.is_dir() and os.access(shm, os.W_OK)):
        return
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: its controller chose
        return
    config.option.basetemp = tempfile.mkdtemp(prefix="crm-tests-", dir=shm)
    config.crm_shm_basetemp = config.option.basetemp  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = getattr(config, "crm_shm_basetemp", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def _worker_database(url: str) -> str:
    """Under pytest-xdist each worker has a database of its own (``test_gw0``,
    ...), created beside the configured one: they drop and create schemas."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return url
    base = sa.engine.make_url(url)
    mine = base.set(database=f"{base.database}_{worker}")
    engine = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        exists = conn.execute(
            sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": mine.database}
        ).first()
        if not exists:
            conn.execute(sa.text(f'CREATE DATABASE "{mine.database}"'))
    engine.dispose()
    return mine.render_as_string(hide_password=False)


def worker_pg_url() -> str | None:
    """The PostgreSQL database of this test process (CRM_TEST_DATABASE_URL,
    or its worker's own under pytest-xdist), or None to use SQLite."""
    return _worker_database(PG_URL) if PG_URL else None


@pytest.fixture(scope="session")
def pg_url() -> str | None:
    return worker_pg_url()


@pytest.fixture
def db_url(tmp_path: Path, pg_url: str | None) -> Iterator[str]:
    """An empty database: PostgreSQL when CRM_TEST_DATABASE_URL is set, else SQLite."""
    if pg_url:
        _reset_postgres(pg_url)
        yield pg_url
    else:
        yield f"sqlite:///{tmp_path / 'test.db'}"


# --- the sample outside plugin, installed through its entry point ------------

SAMPLE_DIR = Path(__file__).resolve().parent / "plugins" / "sample_plugin"
SAMPLE_DIST = "crm-sample-plugin"
SAMPLE_MODULE = "crm_sample_plugin"


def _need(condition: bool, reason: str) -> None:
    """Skip on a developer's machine that lacks a tool; in CI, fail."""
    if not condition:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def _sample_is_installed_from_here() -> bool:
    try:
        dist = importlib.metadata.distribution(SAMPLE_DIST)
    except importlib.metadata.PackageNotFoundError:
        return False
    direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    return bool(
        direct_url.get("dir_info", {}).get("editable")
        and direct_url.get("url") == SAMPLE_DIR.as_uri()
    )


def _can_build_editable() -> bool:
    """setuptools builds an editable wheel with ``wheel`` installed, or alone from 70.1 on."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    if importlib.util.find_spec("wheel") is not None:
        return True
    major, minor = (int(part) for part in importlib.metadata.version("setuptools").split(".")[:2])
    return (major, minor) >= (70, 1)


def _activate_sample() -> None:
    """Process the ``.pth`` file pip just wrote, as a fresh interpreter would at start."""
    importlib.invalidate_caches()
    dist = importlib.metadata.distribution(SAMPLE_DIST)
    for file in dist.files or []:
        if file.name.endswith(".pth"):
            path = Path(str(dist.locate_file(file)))
            site.addpackage(str(path.parent), path.name, None)
    importlib.invalidate_caches()


@pytest.fixture(scope="session")
def sample_plugin() -> None:
    """Install tests/plugins/sample_plugin in editable mode, once, unless it already is."""
    # parallel workers (pytest -n) install it one at a time
    lock = open(Path(tempfile.gettempdir()) / "crm-sample-plugin.lock", "w")  # noqa: SIM115
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        _install_sample()
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def _install_sample() -> None:
    if not _sample_is_installed_from_here():
        _need(
            importlib.util.find_spec("pip") is not None,
            f"pip is not available to {sys.executable}, so the sample plugin cannot be installed",
        )
        _need(
            _can_build_editable(),
            "installing the sample plugin without build isolation needs `wheel` (or "
            "setuptools >= 70.1) in this environment: pip install wheel",
        )
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-input",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-build-isolation",
            "-e",
            str(SAMPLE_DIR),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    importlib.invalidate_caches()
    if importlib.util.find_spec(SAMPLE_MODULE) is None:
        _activate_sample()
    assert importlib.util.find_spec(SAMPLE_MODULE) is not None


# --- a real SMTP server and SMS gateway, for the outbox's jobs --------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MailProvider:
    """An SMTP server that acts like a mail provider: it keeps every message,
    and drops a message whose Message-ID it has already accepted (counting
    the drop), since that Message-ID is the outbox's idempotency key. That
    dedupe is what makes a repeated delivery, after a worker died between
    sending and recording, reach the recipient once."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.port = 0
        self.accepted: list[str] = []
        self.messages: list[email.message.EmailMessage] = []
        self.dropped = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            if message["Message-ID"] in self.accepted:
                self.dropped += 1
            else:
                self.accepted.append(message["Message-ID"])
                self.messages.append(message)  # type: ignore[arg-type]
        await asyncio.sleep(self.delay)  # a slow provider: the worker may die meanwhile
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[MailProvider]:
    """A mail provider on a free local port: ``.port``, ``.accepted`` (the
    Message-IDs), ``.messages``, ``.dropped``; set ``.delay`` for a slow one."""
    from aiosmtpd.controller import Controller  # a test extra: only the tests that mail need it

    provider = MailProvider()
    controller = Controller(provider, hostname="127.0.0.1", port=free_port())
    controller.start()
    provider.port = controller.port
    yield provider
    controller.stop()


class SmsGateway(http.server.ThreadingHTTPServer):
    received: list[dict[str, Any]]


class _SmsHandler(http.server.BaseHTTPRequestHandler):
    server: SmsGateway

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.received.append(body)
        answer = json.dumps({"id": f"sms-{len(self.server.received)}"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def sms() -> Iterator[SmsGateway]:
    """An SMS gateway on a free local port (``.server_address[1]``): it keeps
    each JSON body it is POSTed in ``.received`` and answers ``{"id": "sms-N"}``."""
    gateway = SmsGateway(("127.0.0.1", 0), _SmsHandler)
    gateway.received = []
    thread = threading.Thread(target=gateway.serve_forever, daemon=True)
    thread.start()
    yield gateway
    gateway.shutdown()
    gateway.server_close()
