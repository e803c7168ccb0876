"""The generated HTML list page against raw SQL for the same page, in one run.

``python -m bench --html [--rows N]``: N customers of configs/wholesale in a
temporary SQLite database, an administrator logged in through the login
form, then the median time of ``GET /customer/?f_industry=retail`` (the
whole request: access rules, the list query, the capped count, rendering)
against the same 25 rows plus the capped count in hand-written SQL through
the driver, and the statements each request sends.
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.generate import generate

ROOT = Path(__file__).resolve().parent.parent
RAW = (
    "SELECT c.id, c.name, c.inn, c.phone, c.segment, u.username FROM customer c "
    "LEFT OUTER JOIN ab_user u ON u.id = c.manager_id WHERE c.industry = 'retail' "
    "ORDER BY c.created_at DESC, c.id DESC LIMIT 25"
)
RAW_COUNT = (
    "SELECT count(*) FROM (SELECT 1 FROM customer WHERE industry = 'retail' LIMIT 10001) AS capped"
)


def _median_ms(fn: Any, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def run(rows: int = 100_000, repeat: int = 30) -> list[str]:
    from engine import migrate
    from engine.app import create_app
    from engine.security import sync

    with tempfile.TemporaryDirectory(prefix="crm-bench-html-") as folder:
        url = f"sqlite:///{Path(folder) / 'html.db'}"
        os.environ["CRM_DATABASE_URL"] = url
        try:
            app = create_app(ROOT / "configs" / "wholesale", {"SECRET_KEY": "bench-" * 8})
        finally:
            del os.environ["CRM_DATABASE_URL"]
        state = app.extensions["crm"]
        engine = sa.create_engine(url)
        migrate.apply(state.models, engine, migrate.plan(state.models, engine))
        with app.app_context():
            sync(state.appbuilder, state.registry)
            sm = state.appbuilder.sm
            sm.add_user(
                "bench", "Bench", "Admin", "bench@example.org", [sm.find_role("Admin")], "bench"
            )
        with engine.begin() as conn:
            generate(state.models, conn, [("Customer", rows)])
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
        client = app.test_client()
        token = re.search(
            r'name="csrf_token" type="hidden" value="([^"]+)"', client.get("/login/").text
        )
        assert token
        client.post(
            "/login/", data={"username": "bench", "password": "bench", "csrf_token": token.group(1)}
        )

        def page() -> None:
            response = client.get("/customer/?f_industry=retail")
            assert response.status_code == 200

        with app.app_context():
            app_engine = state.db.engine
        statements: list[str] = []
        listen = lambda *a: statements.append(a[2])  # noqa: E731
        sa.event.listen(app_engine, "before_cursor_execute", listen)
        page()
        sa.event.remove(app_engine, "before_cursor_execute", listen)
        html_ms = _median_ms(page, repeat)
        raw = engine.raw_connection()
        try:

            def raw_page() -> None:
                cursor = raw.cursor()
                cursor.execute(RAW)
                cursor.fetchall()
                cursor.execute(RAW_COUNT)
                cursor.fetchall()

            raw_ms = _median_ms(raw_page, repeat)
        finally:
            raw.close()
        engine.dispose()
        with app.app_context():
            state.db.engine.dispose()
        state.models.dispose()
    return [
        f"HTML list page, {rows:,} customers filtered on an attribute (SQLite, medians of {repeat}):",
        f"  GET /customer/?f_industry=retail  {html_ms:8.2f} ms  ({len(statements)} statements)",
        f"  the same page in raw SQL          {raw_ms:8.2f} ms  (2 statements)",
        f"  ratio                             {html_ms / raw_ms:8.1f}x",
    ]
