"""The demo company's home pages in Chromium: the head of sales and a
manager log in and open on their dashboards, whose numbers are what the
database holds for them, and whose cards open the list of exactly those
records. The screenshots of both go to docs/screenshots/."""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from werkzeug.security import generate_password_hash
from werkzeug.serving import make_server

from engine import clock, migrate
from engine.app import create_app
from engine.demo import DEMO_USERS, Demo, Sizes
from engine.security import sync
from tests.browser.conftest import PASSWORD, QuietHandler, expect
from tests.conftest import _reset_postgres, worker_pg_url

if TYPE_CHECKING:
    from playwright.sync_api import Page

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "docs" / "screenshots"
SIZES = Sizes(
    customers=30, deals=60, interests=12, orders=10, past_interactions=30,
    planned_interactions=40, tasks=60,
)  # fmt: skip
WIDE = {"width": 1440, "height": 1000}


@dataclass
class Company:
    url: str
    engine: sa.Engine
    models: Any
    users: dict[str, int]

    def count(self, stmt: Any) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())


@pytest.fixture(scope="module")
def company(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[Company]:
    """configs/demo migrated, the demo's users, a small demo company, served."""
    folder = tmp_path_factory.mktemp("demo") / "config"
    shutil.copytree(ROOT / "configs" / "demo", folder)
    pg = worker_pg_url()
    if pg:
        _reset_postgres(pg)
    url = pg or f"sqlite:///{folder.parent / 'crm.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRM_DATABASE_URL", url)
        app = create_app(folder, {"TESTING": True, "WTF_CSRF_ENABLED": True,
                                  "SECRET_KEY": "a-test-secret-long-enough-to-sign-tokens-0123456789",
                                  "SEND_FILE_MAX_AGE_DEFAULT": 3600})  # fmt: skip
    state = app.extensions["crm"]
    engine = sa.create_engine(url)
    with ExitStack() as cleanup:
        cleanup.callback(engine.dispose)
        cleanup.callback(state.models.dispose)

        def close_app() -> None:
            with app.app_context():
                state.db.session.remove()
                state.db.engine.dispose()

        cleanup.callback(close_app)
        migrate.apply(state.models, engine, migrate.plan(state.models, engine))
        with app.app_context():
            sync(state.appbuilder, state.registry)
            sm = state.appbuilder.sm
            hashed = generate_password_hash(PASSWORD)
            users = {}
            for username, first, last, role, _ in DEMO_USERS:
                user = sm.add_user(username, first, last, f"{username}@demo.example.ru",
                                   [sm.find_role(role)], hashed_password=hashed)  # fmt: skip
                users[username] = user.id
            session = state.db.session()
            Demo(state.models, session, users, pm=state.pm).fill(SIZES)
            session.commit()
            state.db.session.remove()
        http = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
        cleanup.callback(http.server_close)
        thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05},
                                  name="crm-dashboard", daemon=True)  # fmt: skip
        thread.start()
        cleanup.callback(thread.join, timeout=5)
        cleanup.callback(http.shutdown)
        yield Company(f"http://127.0.0.1:{http.server_port}", engine, state.models, users)


def log_in(page: Page, company: Company, username: str) -> None:
    page.goto(company.url + "/login/")
    page.locator("input[name=username]").fill(username)
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("input[type=submit]").click()
    expect(page).to_have_url(company.url + "/")


def overdue_tasks(company: Company, assignee: str | None = None) -> int:
    tasks = company.models.table("Task")
    where = [tasks.c.status == "open", tasks.c.due < clock.now()]
    if assignee:
        where.append(tasks.c.assignee_id == company.users[assignee])
    return company.count(sa.select(sa.func.count()).select_from(tasks).where(*where))


def open_deals(company: Company, manager: str | None = None) -> int:
    deals = company.models.table("Deal")
    where = [deals.c.stage.not_in(["won", "lost"])]
    if manager:
        where.append(deals.c.manager_id == company.users[manager])
    return company.count(sa.select(sa.func.count()).select_from(deals).where(*where))


def card_value(page: Page, name: str) -> str:
    return page.locator(f".crm-card[data-card={name}] .crm-card-value").inner_text().strip()


def test_the_head_of_sales_opens_on_the_departments_dashboard(
    company: Company, new_context: Any
) -> None:
    page = new_context(viewport=WIDE).new_page()
    log_in(page, company, "head")
    board = page.locator(".crm-dashboard")
    expect(board).to_have_attribute("data-dashboard", "sales_head")
    expect(page.get_by_role("heading", name="Отдел продаж")).to_be_visible()
    late = overdue_tasks(company)
    assert late, "the demo leaves some tasks overdue"
    overdue = page.locator(".crm-card[data-card=tasks_overdue]")
    expect(overdue).to_contain_text("Просроченные задачи отдела")
    assert card_value(page, "tasks_overdue") == str(late)
    expect(overdue).to_have_class(re.compile("crm-tone-bad"))
    assert card_value(page, "deals_open") == str(open_deals(company))
    for name in ("interactions_overdue", "calls_missed", "pipeline"):
        expect(page.locator(f".crm-card[data-card={name}]")).to_be_visible()
    # the report cards: a chart, a table, or a quiet "not available" where no kind serves it
    wide = page.locator(".crm-card-wide")
    assert wide.count() >= 3
    page.screenshot(path=str(SHOTS / "dashboard-head.png"), full_page=True)

    # the card opens the team's overdue tasks: as many as it says, the filter shown as a chip
    overdue.click()
    expect(page).to_have_url(re.compile(r"/task/\?filter="))
    expect(page.locator(".crm-filter-chip")).to_contain_text("Срок < сейчас")
    expect(page.locator(".crm-count")).to_have_text(str(late))
    page.locator(".crm-filter-chip-remove").click()
    expect(page.locator(".crm-filter-chip")).to_have_count(0)


def test_a_manager_opens_on_his_day_and_each_card_counts_his_own(
    company: Company, new_context: Any
) -> None:
    page = new_context(viewport=WIDE).new_page()
    log_in(page, company, "manager")
    expect(page.locator(".crm-dashboard")).to_have_attribute("data-dashboard", "manager")
    expect(page.get_by_role("heading", name="Мой день")).to_be_visible()
    mine = open_deals(company, "manager")
    assert mine < open_deals(company), "other managers have deals too"
    assert card_value(page, "deals_open") == str(mine)
    assert card_value(page, "tasks_overdue") == str(overdue_tasks(company, "manager"))
    page.screenshot(path=str(SHOTS / "dashboard-manager.png"), full_page=True)
    page.locator(".crm-card[data-card=deals_open]").click()
    expect(page).to_have_url(re.compile(r"/deal/\?filter="))
    expect(page.locator(".crm-count")).to_have_text(str(mine))

    # a phone's width: the cards stack, nothing scrolls sideways
    narrow = new_context(viewport={"width": 390, "height": 800}).new_page()
    log_in(narrow, company, "manager")
    expect(narrow.locator(".crm-card").first).to_be_visible()
    assert narrow.evaluate("document.documentElement.scrollWidth") <= 390
