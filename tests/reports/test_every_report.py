"""Every report the demo company and both example configurations declare,
over the demo's data, as a head of sales and as a manager opens it: the
page, its JSON, CSV, XLSX and printable page answer, and each drillable
cell of the JSON opens a list of exactly as many records as it says."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from werkzeug.security import generate_password_hash

from engine import migrate
from engine.app import create_app
from engine.demo import DEMO_USERS, Demo, Sizes
from engine.security import sync
from engine.testing import Client
from tests.conftest import _reset_postgres, worker_pg_url

ROOT = Path(__file__).resolve().parents[2]
SIZES = Sizes(
    customers=40, deals=120, interests=20, orders=40, past_interactions=30,
    planned_interactions=20, tasks=30,
)  # fmt: skip
PASSWORD = "secret"
#: how many drillable cells of each report are opened (the first ones)
CELLS = 6


def company(tmp: Path, name: str) -> Any:
    """The configuration `configs/<name>` with the demo's users and data."""
    folder = tmp / name
    shutil.copytree(ROOT / "configs" / name, folder)
    pg = worker_pg_url()
    if pg:
        _reset_postgres(pg)
    url = pg or f"sqlite:///{tmp / (name + '.db')}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRM_DATABASE_URL", url)
        app = create_app(folder, {"TESTING": True, "WTF_CSRF_ENABLED": True,
                                  "SECRET_KEY": "a-test-secret-long-enough-to-sign-tokens-0123456789",
                                  "FAB_PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000"})  # fmt: skip
    state = app.extensions["crm"]
    engine = sa.create_engine(url)
    try:
        migrate.apply(state.models, engine, migrate.plan(state.models, engine))
    finally:
        engine.dispose()
    with app.app_context():
        sync(state.appbuilder, state.registry)
        sm = state.appbuilder.sm
        hashed = generate_password_hash(PASSWORD, "pbkdf2:sha256:1000")
        users = {}
        for username, first, last, role, _ in DEMO_USERS:
            if sm.find_role(role) is None:
                continue
            user = sm.add_user(username, first, last, f"{username}@demo.example.ru",
                               [sm.find_role(role)], hashed_password=hashed)  # fmt: skip
            users[username] = user.id
        session = state.db.session()
        Demo(state.models, session, users, pm=state.pm).fill(SIZES)
        session.commit()
        state.db.session.remove()
    return app


@pytest.fixture(scope="module", params=["demo", "services", "wholesale"])
def app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    made = company(tmp_path_factory.mktemp("every"), request.param)
    yield made
    state = made.extensions["crm"]
    with made.app_context():
        state.db.session.remove()
        state.db.engine.dispose()
    state.models.dispose()


def count_of(client: Client, url: str) -> int:
    """The number of records the REST list of a drill-down URL holds."""
    parts = urlsplit(url)
    resource = parts.path.strip("/").split("/")[0]
    listed = client.get(f"/api/v1/{resource}/?{parts.query}&page_size=1")
    assert listed.status_code == 200, (url, listed.get_json())
    return int(listed.get_json()["count"])


@pytest.mark.parametrize("username", ["head", "manager"])
def test_every_report_answers_and_its_cells_open_their_records(app: Any, username: str) -> None:
    client = Client(app, username, PASSWORD)
    registry = app.extensions["crm"].registry
    listed = client.get("/api/v1/reports/").get_json()["result"]
    names = {r["name"] for r in listed}
    if username == "head":  # the head of sales reads every type the reports are of
        assert names == set(registry.reports), set(registry.reports) - names
    assert names, "a manager sees some reports too"
    for name in sorted(names):
        page = client.get(f"/reports/{name}?period=year")
        assert page.status_code == 200, (name, page.text[:500])
        data = client.get(f"/api/v1/reports/{name}?period=year")
        assert data.status_code == 200, (name, data.get_json())
        body = data.get_json()
        assert body["columns"], name
        for suffix in ("csv", "xlsx"):
            assert client.get(f"/reports/{name}/{suffix}?period=year").status_code == 200
        assert client.get(f"/reports/{name}?period=year&print=1").status_code == 200
        counts = {c["key"] for c in body["columns"] if c["format"] == "count"}
        cells = [c for c in body["drill"] if c["column"] in counts][:CELLS]
        for cell in cells:  # a count: the list holds exactly that many
            row = body["total"] if cell["row"] == -1 else body["rows"][cell["row"]]
            assert count_of(client, cell["url"]) == row[cell["column"]], (name, cell)
