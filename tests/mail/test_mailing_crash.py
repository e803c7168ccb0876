"""A mailing survives a ``kill -9`` of ``crm worker`` in its middle: after a
restart every recipient has exactly one final status, nobody is missed, and
the letters sent twice are bounded by the batch in flight (they carry the
same Message-ID, which the provider drops). Prints ``missed = 0`` and the
number of duplicates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from engine.testing import dispose

from .test_mailing_helpers import make_mailing, system_docs

RECIPIENTS = 300
BATCH = 40


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CRM_DATABASE_URL", None)
    return env


def _status(url: str) -> tuple[str, dict[str, int]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            status = conn.execute(sa.text("SELECT status FROM mailing")).scalar_one()
            rows = conn.execute(
                sa.text("SELECT status, count(*) FROM mailing_recipient GROUP BY status")
            ).all()
        return str(status), {str(s): int(n) for s, n in rows}
    finally:
        engine.dispose()


def test_a_worker_killed_mid_mailing_misses_nobody_and_repeats_at_most_a_batch(
    mail_app: Any, smtp: Any, db_url: str, tmp_path: Path
) -> None:
    from plugins.mail import delivery

    smtp.delay = 0.01  # a slow provider: the kill lands mid-batch
    app = mail_app(batch=BATCH)
    state = app.extensions["crm"]
    folder = tmp_path / "config0"  # mail_app's first configuration
    with app.app_context():
        session = state.db.session
        docs = system_docs(app, session)
        customers = state.models.table("Customer")
        session.execute(
            sa.insert(customers),
            [{"name": f"Customer {n}", "email": f"c{n}@x.ru", "segment": "A", "version": 1}
             for n in range(RECIPIENTS)],
        )  # fmt: skip
        mailing = make_mailing(docs, filter_="segment: A")
        delivery.start(session, state.models, mailing, now=docs.now(), base_url="https://crm.test")
        session.commit()
    dispose(app)
    config = json.loads((folder / "config.yaml").read_text(encoding="utf-8"))
    config["jobs"] = {"runner": "external", "lease": 2}
    (folder / "config.yaml").write_text(json.dumps(config), encoding="utf-8")
    command = [sys.executable, "-m", "engine.cli", "worker", str(folder), "--interval", "0.1"]

    first = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 90
    while len(smtp.accepted) < RECIPIENTS // 3 and time.monotonic() < deadline:
        if first.poll() is not None:
            break
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    _, err = first.communicate(timeout=30)
    at_kill = len(smtp.accepted)
    assert RECIPIENTS // 3 <= at_kill < RECIPIENTS, err

    second = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and second.poll() is None:
        if _status(db_url)[0] == "done":
            break
        time.sleep(0.2)
    second.send_signal(signal.SIGTERM)
    _, err = second.communicate(timeout=60)
    assert "Traceback" not in err, err

    status, counts = _status(db_url)
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        ids = conn.execute(sa.text("SELECT message_id FROM mailing_recipient")).scalars().all()
    engine.dispose()
    received = len(smtp.accepted) + smtp.dropped
    missed = len(set(ids) - set(smtp.accepted))
    duplicates = received - RECIPIENTS
    print(f"\nmailing kill -9: {RECIPIENTS} recipients, batch {BATCH}, killed after {at_kill} "
          f"letters; missed = {missed}, duplicates = {duplicates} (dropped by Message-ID: "
          f"{smtp.dropped})")  # fmt: skip
    assert status == "done"
    assert counts == {"sent": RECIPIENTS}  # one final status each
    assert None not in ids
    assert missed == 0
    assert sorted(smtp.accepted) == sorted(ids)
    assert 0 <= duplicates <= BATCH
