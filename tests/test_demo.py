"""`crm demo`: one command from nothing to a CRM a sales manager could click through."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.fieldtypes import inn_is_valid

CRM = str(Path(sys.executable).with_name("crm"))


def run_demo(cwd: Path, db_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CRM_DATABASE_URL": db_url}
    return subprocess.run([CRM, "demo", "--no-serve"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip


def test_demo_builds_a_realistic_company_once_and_reuses_it(tmp_path: Path, db_url: str) -> None:
    first = run_demo(tmp_path, db_url)
    assert first.returncode == 0, first.stderr
    assert "200 Customer" in first.stdout and "500 Deal" in first.stdout
    for login in ("admin", "manager", "head", "operator", "marketer", "crmadmin"):
        assert f"  {login} " in first.stdout
    assert "password `demo`" in first.stdout

    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            inns = conn.execute(sa.text("SELECT inn FROM customer")).scalars().all()
            phones = conn.execute(sa.text("SELECT phone FROM customer")).scalars().all()
            stages = set(conn.execute(sa.text("SELECT DISTINCT stage FROM deal")).scalars())
            kinds = set(conn.execute(sa.text("SELECT DISTINCT kind FROM deal")).scalars())
            planned = conn.execute(
                sa.text(
                    "SELECT count(*) FROM interaction WHERE status = 'planned' AND planned_at > CURRENT_TIMESTAMP"
                )
            ).scalar_one()
            history = conn.execute(sa.text("SELECT count(*) FROM deal__history")).scalar_one()
            totals = conn.execute(
                sa.text("SELECT count(*) FROM customer_order o WHERE o.total = "
                        "(SELECT sum(l.amount) FROM customer_order__lines l WHERE l.parent_id = o.id)")
            ).scalar_one()  # fmt: skip
            roles = set(conn.execute(sa.text("SELECT name FROM ab_role")).scalars())
            # the typical deals run their process: each has a task for its manager
            typical_tasks = conn.execute(
                sa.text(
                    "SELECT count(*) FROM task t JOIN deal d ON t.doctype = 'Deal' AND t.doc_id = d.id "
                    "WHERE d.kind = 'typical' AND t.status = 'open' AND t.assignee_id = d.manager_id"
                )
            ).scalar_one()
            typical = conn.execute(
                sa.text("SELECT count(*) FROM deal WHERE kind = 'typical'")
            ).scalar_one()
    finally:
        engine.dispose()
    assert len(inns) == 200 and all(inn_is_valid(i) for i in inns)
    assert all(p.startswith("+7") and p[1:].isdigit() and len(p) == 12 for p in phones)
    assert stages == {"new", "qualification", "proposal", "contract", "won", "lost"}
    assert kinds == {"typical", "manual", "simple"}
    assert planned >= 200  # the next weeks are planned
    assert history > 500  # every deal entered, most moved on
    assert totals == 200  # order totals are computed from their lines
    assert {"manager", "sales_head", "operator", "marketer", "administrator", "Admin"} <= roles
    assert typical > 50 and typical_tasks == typical

    again = run_demo(tmp_path, db_url)
    assert again.returncode == 0, again.stderr
    assert "reusing it" in again.stdout


def test_demo_serves_with_the_background_jobs_running(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's import progress, overdue tasks and notifications need the
    job runner: `crm demo` starts it as `crm run` does."""
    import flask
    from click.testing import CliRunner

    import engine.demo
    from engine.cli import main

    served: list[Any] = []

    def run(app: flask.Flask, **_: Any) -> None:
        served.append(app.extensions.get("crm.jobs"))

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRM_DATABASE_URL", db_url)
    monkeypatch.setattr(engine.demo, "has_data", lambda *_: True)  # no need to fill it here
    monkeypatch.setattr(flask.Flask, "run", run)
    result = CliRunner().invoke(main, ["demo", "--port", "5999"])
    assert result.exit_code == 0, result.output
    assert len(served) == 1 and served[0] is not None, "no job runner while serving"
    served[0].stop()
    assert "Background jobs run in this process" in result.output
