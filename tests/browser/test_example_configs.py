"""The example setups as a sales department gets them: configs/wholesale and
configs/services, migrated and filled with the demo company (`engine.demo`),
served, and clicked through in Chromium by a sales manager and the head of
sales — own customers and deals only, a customer's timeline, planning and
completing interactions with the next one demanded, dragging cards in
"My sales", the calendar's load, and what each config adds of its own.

Each config is built once for the module (a small demo fill). The database
is read only to know what the pages ought to show; everything a test checks
is what the browser shows.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from werkzeug.security import generate_password_hash
from werkzeug.serving import make_server

from engine import migrate
from engine.app import create_app
from engine.demo import DEMO_USERS, DEPARTMENTS, Demo, Sizes
from engine.security import sync
from tests.browser.conftest import PASSWORD, QuietHandler, Server, expect
from tests.conftest import _reset_postgres, worker_pg_url

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ("wholesale", "services")
#: a small company: each config is built in a few seconds
SIZES = Sizes(
    customers=16, deals=30, interests=10, orders=8, past_interactions=16, planned_interactions=24
)
NAMES = {u[0]: f"{u[1]} {u[2]}" for u in DEMO_USERS}
MANAGER, OTHER_MANAGER, HEAD = "manager", "ivanov", "head"
DAY_TIME = re.compile(r"(\d\d)\.(\d\d)\.(\d{4}) (\d\d):(\d\d)")


@dataclass
class Company:
    """A served example config with the demo company in it."""

    config: str
    server: Server
    engine: sa.Engine
    models: Any
    users: dict[str, int]
    tz: dt.tzinfo

    @property
    def url(self) -> str:
        return self.server.url

    def rows(self, stmt: Any) -> list[Any]:
        """What the database holds: the oracle for what a page ought to show."""
        with self.engine.connect() as conn:
            return list(conn.execute(stmt).all())

    def table(self, doctype: str) -> sa.Table:
        return self.models.table(doctype)  # type: ignore[no-any-return]

    def owned(self, doctype: str, user: str) -> list[Any]:
        t = self.table(doctype)
        return self.rows(sa.select(t).where(t.c.manager_id == self.users[user]).order_by(t.c.id))

    def local_now(self) -> dt.datetime:
        return dt.datetime.now(self.tz).replace(second=0, microsecond=0)


@pytest.fixture(scope="module", params=CONFIGS)
def company(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, browser: Any
) -> Iterator[Company]:
    """The config copied to a temporary folder, its database there (or the CI
    PostgreSQL), migrated, users of every demo role, the demo data, served."""
    name = request.param
    folder = tmp_path_factory.mktemp(name) / "config"
    shutil.copytree(ROOT / "configs" / name, folder)
    pg = worker_pg_url()
    if pg:
        _reset_postgres(pg)
        url = pg
    else:
        url = f"sqlite:///{folder.parent / 'crm.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRM_DATABASE_URL", url)
        app = create_app(
            folder,
            {
                "TESTING": True,
                "SECRET_KEY": "a-test-secret-long-enough-to-sign-tokens-0123456789",
                "WTF_CSRF_ENABLED": True,
                "SEND_FILE_MAX_AGE_DEFAULT": 3600,
            },
        )
    state = app.extensions["crm"]
    assert state.registry.database == url
    engine = sa.create_engine(url)
    with ExitStack() as cleanup:  # undone in reverse, however far the setup got
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
            users = {}
            hashed = generate_password_hash(PASSWORD)  # once: hashing is slow on purpose
            for username, first, last, role, _ in (("admin", "Админ", "Демо", sm.auth_role_admin, 0),
                                                    *DEMO_USERS):  # fmt: skip
                user = sm.add_user(username, first, last, f"{username}@demo.example.ru",
                                   [sm.find_role(role)], hashed_password=hashed)  # fmt: skip
                users[username] = user.id
            session = state.db.session()
            Demo(state.models, session, users).fill(SIZES)
            session.commit()
            state.db.session.remove()
        http = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
        cleanup.callback(http.server_close)
        thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05},
                                  name=f"crm-{name}", daemon=True)  # fmt: skip
        thread.start()
        cleanup.callback(thread.join, timeout=5)
        cleanup.callback(http.shutdown)
        tz = ZoneInfo(str(state.registry.settings.get("timezone") or "UTC"))
        yield Company(name, Server(app, f"http://127.0.0.1:{http.server_port}"), engine,
                      state.models, users, tz)  # fmt: skip


# -- what a page shows --------------------------------------------------------------------


def list_texts(page: Page, column: int) -> list[str]:
    """The texts of one column of a list page (1-based)."""
    return page.locator(f".crm-table-list tbody tr td:nth-child({column})").all_inner_texts()


def field(page: Page, name: str) -> Locator:
    return page.locator(f".crm-fields dd[data-field={name}]")


def pick(page: Page, scope: str, typed: str, choice: str) -> None:
    """Choose a record in a select2 ref picker by typing the start of its name."""
    page.locator(f"[data-field={scope}] .select2-selection").click()
    with page.expect_response(lambda r: "/lookup?" in r.url and r.status == 200):
        page.keyboard.type(typed)
    option = page.locator(".select2-container--open .select2-results__option").filter(
        has_text=re.compile("^" + re.escape(choice) + "$")
    )
    expect(option).to_have_count(1)
    option.click()
    expect(page.locator(f"[data-field={scope}] .select2-selection__rendered")).to_contain_text(
        choice
    )


def moments(texts: list[str]) -> list[dt.datetime]:
    out = []
    for text in texts:
        m = DAY_TIME.search(text)
        assert m, f"no date and time in {text!r}"
        day, month, year, hour, minute = map(int, m.groups())
        out.append(dt.datetime(year, month, day, hour, minute))
    return out


def datetime_input(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M")


# -- 1. a manager sees his own records only ------------------------------------------------


def test_a_manager_logs_in_and_sees_only_his_customers_and_deals(
    company: Company, page: Page
) -> None:
    page.goto(company.url + "/customer/")
    expect(page).to_have_url(re.compile(r"/login/"))
    page.locator("input[name=username]").fill(MANAGER)
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("input[type=submit]").click()
    expect(page).to_have_url(f"{company.url}/customer/")
    expect(page.locator(".navbar")).to_contain_text(NAMES[MANAGER])

    mine = [c.name for c in company.owned("Customer", MANAGER)]
    others = company.owned("Customer", OTHER_MANAGER)
    assert mine and others, "the demo gives both managers customers"
    assert len(mine) <= 25, "one page of the list"
    expect(page.locator(".crm-table-list tbody tr")).to_have_count(len(mine))
    assert sorted(list_texts(page, 1)) == sorted(mine)
    assert set(list_texts(page, 5)) == {NAMES[MANAGER]}  # the manager column: his name
    foreign = next(c for c in others if c.name not in mine)
    page.locator(".crm-filters input[name=q]").fill(foreign.name)
    page.locator(".crm-filters button[type=submit]").click()
    expect(page.locator(".crm-table-list tbody")).to_contain_text("Нет записей")
    response = page.goto(f"{company.url}/customer/{foreign.id}")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Не найдено")).to_be_visible()
    expect(page.get_by_text(foreign.name)).to_have_count(0)

    page.goto(company.url + "/deal/")
    deals = company.owned("Deal", MANAGER)
    assert len(deals) <= 25, "one page of the list"
    expect(page.locator(".crm-table-list tbody tr")).to_have_count(len(deals))
    shown = list_texts(page, 1)
    assert sorted(shown) == sorted(d.number for d in deals)
    assert set(list_texts(page, 5)) == {NAMES[MANAGER]}
    foreign_deal = company.owned("Deal", OTHER_MANAGER)[0]
    assert foreign_deal.number not in shown
    response = page.goto(f"{company.url}/deal/{foreign_deal.id}")
    assert response is not None and response.status == 404
    expect(page.get_by_text(foreign_deal.number)).to_have_count(0)


# -- 2. a customer's timeline -----------------------------------------------------------------


def busiest_customer(company: Company, user: str = MANAGER) -> Any:
    """The user's customer with the most deals and interactions (both, if any has both)."""
    customers = company.table("Customer")
    counts = []
    for doctype in ("Deal", "Interaction"):
        t = company.table(doctype)
        counts.append(
            sa.select(sa.func.count()).where(t.c.customer_id == customers.c.id).scalar_subquery()
        )
    rows = company.rows(
        sa.select(customers.c.id, customers.c.name, counts[0].label("deals"),
                  counts[1].label("interactions"))
        .where(customers.c.manager_id == company.users[user])
    )  # fmt: skip
    return max(rows, key=lambda r: (r.deals > 0 and r.interactions > 0, r.deals + r.interactions))


def test_a_customers_page_shows_its_timeline_newest_first(company: Company, page: Page) -> None:
    customer = busiest_customer(company)
    assert customer.deals and customer.interactions, "a customer with deals and interactions"
    company.server.login(page, MANAGER)
    page.goto(company.url + "/customer/")
    page.get_by_role("link", name=customer.name, exact=True).click()
    expect(page.locator(".crm-title")).to_have_text(customer.name)

    rows = page.locator(".crm-timeline .crm-timeline-row")
    expect(rows.first).to_be_visible()
    assert rows.count() >= customer.deals + customer.interactions or rows.count() == 25
    when = moments(rows.locator("td:nth-child(1)").all_inner_texts())
    assert when == sorted(when, reverse=True), "newest first"
    kinds = set(rows.locator("td:nth-child(2)").all_inner_texts())
    assert {"Сделка", "Взаимодействие"} <= kinds
    # the customer's newest deal is there, and leads to the deal
    deals = company.table("Deal")
    deal = company.rows(
        sa.select(deals)
        .where(deals.c.customer_id == customer.id)
        .order_by(deals.c.created_at.desc())
    )[0]
    page.locator(".crm-timeline a", has_text=deal.number).first.click()
    expect(page.locator(".crm-title")).to_contain_text(deal.number)


# -- 3. planning an interaction and completing it with the next one ------------------------------


def test_plan_an_interaction_then_complete_it_and_the_next_one_is_demanded(
    company: Company, page: Page
) -> None:
    customer = busiest_customer(company)
    subject = f"Поставка для {company.config}"
    company.server.create(MANAGER, "interest", subject=subject, customer=customer.id)
    company.server.login(page, MANAGER)
    page.goto(company.url + "/interaction/")
    page.locator(".crm-new").click()

    tomorrow = (company.local_now() + dt.timedelta(days=1)).replace(hour=10, minute=0)
    page.locator("select[name=kind]").select_option(label="Встреча")
    page.locator("input[name=subject]").fill("Презентация каталога на складе")
    page.locator("input[name=planned_at]").fill(datetime_input(tomorrow))
    pick(page, "customer", customer.name[:8], customer.name)
    pick(page, "interest", subject[:8], subject)
    page.locator(".crm-save").click()

    expect(page.locator(".crm-title")).to_have_text("Презентация каталога на складе")
    expect(page.locator(".crm-current-state")).to_have_text("Запланировано")
    expect(field(page, "planned_at")).to_have_text(tomorrow.strftime("%d.%m.%Y 10:00"))
    expect(field(page, "interest")).to_have_text(subject)
    planned_url = page.url

    # the customer's timeline starts with it
    field(page, "customer").locator("a").click()
    first = page.locator(".crm-timeline .crm-timeline-row").first
    expect(first).to_contain_text("Презентация каталога на складе")
    expect(first).to_contain_text("Взаимодействие")

    page.goto(planned_url)
    page.locator(".crm-transition[data-to=done]").click()
    expect(page.locator(".crm-transition-form h2")).to_contain_text("Выполнено")
    next_row = page.locator("fieldset.crm-next")
    expect(next_row).to_have_count(1)
    page.locator("textarea[name=result]").fill("Каталог показали, ждут расчёт")
    # without the next interaction the form is not sent: the browser points at what is missing
    page.locator(".crm-confirm-transition").click()
    subject_input = next_row.locator("input[name=next-0-subject]")
    expect(subject_input).to_be_focused()
    assert subject_input.evaluate("e => !e.validity.valid && e.validationMessage !== ''")
    expect(page).to_have_url(re.compile(r"/transition/done$"))
    expect(page.locator("textarea[name=result]")).to_have_value("Каталог показали, ждут расчёт")

    # planned in the past: refused, saying why
    next_row.locator("input[name=next-0-subject]").fill("Обсудить расчёт")
    yesterday = company.local_now() - dt.timedelta(days=1)
    next_row.locator("input[name=next-0-planned_at]").fill(datetime_input(yesterday))
    pick(page, "next-0-customer", customer.name[:8], customer.name)
    page.locator(".crm-confirm-transition").click()
    expect(page.locator(".crm-reasons")).to_contain_text("это уже прошло")

    in_a_week = (company.local_now() + dt.timedelta(days=7)).replace(hour=11, minute=30)
    next_row.locator("input[name=next-0-planned_at]").fill(datetime_input(in_a_week))
    page.locator(".crm-confirm-transition").click()
    expect(page).to_have_url(planned_url)
    expect(page.locator(".crm-current-state")).to_have_text("Выполнено")
    expect(field(page, "result")).to_have_text("Каталог показали, ждут расчёт")

    # the next one is planned, in the same interest
    field(page, "interest").locator("a").click()
    expect(page.locator(".crm-title")).to_have_text(subject)
    page.locator(".crm-timeline a", has_text="Обсудить расчёт").first.click()
    expect(page.locator(".crm-current-state")).to_have_text("Запланировано")
    expect(field(page, "planned_at")).to_have_text(in_a_week.strftime("%d.%m.%Y 11:30"))
    expect(field(page, "interest")).to_have_text(subject)
    expect(field(page, "customer")).to_have_text(customer.name)
    expect(field(page, "manager")).to_contain_text(re.compile(f"{MANAGER}|{NAMES[MANAGER]}"))


# -- 4. "My sales": dragging a card ----------------------------------------------------------------


def column(page: Page, name: str) -> Locator:
    return page.locator(f".crm-column[data-column={name}]")


def card(page: Page, obj_id: int) -> Locator:
    return page.locator(f".crm-card[data-id='{obj_id}']")


def drag(page: Page, item: Locator, target: Locator) -> None:
    """Drag a card to a column as a person does: the drag starts on the card
    before the board scrolls to the column. (``drag_to`` scrolls the board to
    the column first and then starts the drag on whatever card has come under
    the pointer, when the board is wider than the page.)"""
    item.hover()
    page.mouse.down()
    box = item.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2 + 10, box["y"] + box["height"] / 2 + 10)
    target.hover()
    page.mouse.up()


def test_my_sales_drag_a_deal_to_the_next_stage(company: Company, page: Page) -> None:
    customer = busiest_customer(company)
    closes = (company.local_now() + dt.timedelta(days=30)).date().isoformat()
    deal = company.server.create(MANAGER, "deal", customer=customer.id, amount="450000",
                                 planned_close=closes)  # fmt: skip
    company.server.login(page, MANAGER)
    page.goto(company.url + "/deal/")
    page.locator(".navbar").get_by_role("link", name="Мои продажи").click()  # under Продажи
    expect(page).to_have_url(re.compile(rf"/deal/kanban\?owner={company.users[MANAGER]}$"))
    expect(page.locator(".crm-boards li")).to_have_text(["Сделка", "Интерес"])
    owners = page.locator(".crm-card .crm-card-owner")
    assert set(owners.all_inner_texts()) == {NAMES[MANAGER]}  # his cards only

    new, qualification = column(page, "new"), column(page, "qualification")
    before = int(new.locator(".crm-count").inner_text())
    after = int(qualification.locator(".crm-count").inner_text())
    expect(new.locator(".crm-card").first).to_have_attribute("data-id", str(deal))

    # lost needs a loss reason: the board asks for it; Cancel puts the card back
    drag(page, card(page, deal), column(page, "lost"))
    modal = page.locator("#crm-move-modal")
    expect(modal.locator("[data-field=loss_reason]")).to_be_visible()
    modal.get_by_role("button", name="Отмена").click()
    expect(modal).to_be_hidden()
    expect(new.locator(f".crm-card[data-id='{deal}']")).to_have_count(1)
    expect(new.locator(".crm-count")).to_have_text(str(before))

    drag(page, card(page, deal), qualification)
    expect(qualification.locator(f".crm-card[data-id='{deal}']")).to_have_count(1)
    expect(card(page, deal).locator(".crm-card-error")).to_have_text("")
    expect(new.locator(".crm-count")).to_have_text(str(before - 1))
    expect(qualification.locator(".crm-count")).to_have_text(str(after + 1))

    page.reload()
    expect(qualification.locator(f".crm-card[data-id='{deal}']")).to_have_count(1)
    expect(new.locator(f".crm-card[data-id='{deal}']")).to_have_count(0)
    card(page, deal).locator("a").click()
    expect(page.locator(".crm-current-state")).to_have_text("Квалификация")


# -- 5. the calendar's load -------------------------------------------------------------------------


def test_the_calendar_shows_each_days_load_and_plans_on_a_day(company: Company, page: Page) -> None:
    interactions = company.owned("Interaction", MANAGER)
    upcoming = sorted(
        i.planned_at.replace(tzinfo=dt.UTC).astimezone(company.tz)
        for i in interactions
        if i.status == "planned" and i.planned_at.replace(tzinfo=dt.UTC) > dt.datetime.now(dt.UTC)
    )
    assert upcoming, "the demo plans the coming weeks"
    month = upcoming[0].date()
    company.server.login(page, MANAGER)
    page.goto(company.url + "/interaction/")
    page.get_by_role("link", name="Календарь").click()
    expect(page).to_have_url(re.compile(r"/interaction/calendar"))
    if month.month != company.local_now().month:
        page.locator(".crm-next").click()
    expect(page.locator(".crm-period")).to_have_text(month.strftime("%m.%Y"))

    days = page.locator("td.crm-day")
    dates = [dt.date.fromisoformat(d) for d in days.evaluate_all(
        "cells => cells.map(c => c.dataset.date)")]  # fmt: skip
    load: dict[dt.date, int] = {}
    for i in interactions:
        day = i.planned_at.replace(tzinfo=dt.UTC).astimezone(company.tz).date()
        if dates[0] <= day <= dates[-1]:
            load[day] = load.get(day, 0) + 1
    assert load, "a month with interactions"
    # each day's badge: its interactions (per person) and any other load listed beside them
    interactions_shown: dict[dt.date, int] = {}
    for cell in page.locator("td.crm-day:has(.crm-day-count)").all():
        date = dt.date.fromisoformat(cell.get_attribute("data-date") or "")
        total = int(cell.locator(".crm-day-count").inner_text())
        expect(cell).to_have_class(re.compile(rf"\bcrm-load-{min(total, 5)}\b"))
        owners = cell.locator(".crm-owner-count").all_inner_texts()
        others = [
            int(t.rsplit(":", 1)[1]) for t in cell.locator(".crm-other-load").all_inner_texts()
        ]
        if owners:
            assert len(owners) == 1 and owners[0].startswith(f"{NAMES[MANAGER]}: "), owners
            interactions_shown[date] = int(owners[0].rsplit(":", 1)[1])
        assert total == interactions_shown.get(date, 0) + sum(others), (date, owners, others)
    assert interactions_shown == load
    today = company.local_now().date()
    quiet = next(d for d in dates if d.month == month.month and d >= today and
                 not page.locator(f"td.crm-day[data-date='{d}'] .crm-day-count").count())  # fmt: skip
    expect(page.locator(f"td.crm-day[data-date='{quiet}']")).to_have_class(
        re.compile(r"\bcrm-load-0\b")
    )

    # planning on a quiet day: the form comes with the day filled in, and the day's load grows
    page.locator(f"td.crm-day[data-date='{quiet}'] .crm-plan").click()
    expect(page.locator("input[name=planned_at]")).to_have_value(f"{quiet.isoformat()}T10:00")
    customer = busiest_customer(company)
    page.locator("input[name=subject]").fill("Звонок с календаря")
    pick(page, "customer", customer.name[:8], customer.name)
    page.locator(".crm-save").click()
    expect(page.locator(".crm-title")).to_have_text("Звонок с календаря")
    page.goto(f"{company.url}/interaction/calendar?date={quiet.isoformat()}")
    day = page.locator(f"td.crm-day[data-date='{quiet}']")
    expect(day.locator(".crm-day-count")).to_have_text("1")
    expect(day).to_have_class(re.compile(r"\bcrm-load-1\b"))
    expect(day.locator(".crm-entry")).to_have_text(["10:00 Звонок с календаря"])


# -- 6. what each config adds -----------------------------------------------------------------------


def test_what_the_config_adds(company: Company, page: Page) -> None:
    """Wholesale: an order with lines and totals. Services: its own deal stages."""
    {"wholesale": an_order_gets_a_line_and_its_totals,
     "services": the_firms_own_deal_stages_are_on_the_kanban}[company.config](company, page)  # fmt: skip


def an_order_gets_a_line_and_its_totals(company: Company, page: Page) -> None:
    customer = busiest_customer(company)
    order = company.server.create(MANAGER, "customer_order", customer=customer.id, lines=[
        {"product": "Бумага офисная А4", "qty": 10, "price": 320}])  # fmt: skip
    company.server.login(page, MANAGER)
    page.goto(company.url + "/customer_order/")
    page.locator(f".crm-table-list a[href='/customer_order/{order}']").first.click()
    expect(field(page, "total")).to_have_text("3 200,00")
    expect(field(page, "warehouse")).to_have_text("Москва")  # the config's default
    page.locator(".crm-edit").click()

    page.get_by_role("button", name="+ Строка").click()
    row = page.locator("[data-field=lines] tbody tr.crm-row").last
    row.locator("input[name$='-product']").fill("Картридж лазерный")
    row.locator("input[name$='-qty']").fill("3")
    row.locator("input[name$='-price']").fill("4500")
    page.locator(".crm-save").click()

    expect(page).to_have_url(f"{company.url}/customer_order/{order}")
    lines = page.locator("table.crm-rows[data-field=lines] tbody tr")
    expect(lines).to_have_count(2)
    expect(lines.nth(0).locator("td")).to_have_text(
        ["Бумага офисная А4", "10", "320,00", "3 200,00"]
    )
    expect(lines.nth(1).locator("td")).to_have_text(
        ["Картридж лазерный", "3", "4 500,00", "13 500,00"]
    )
    expect(field(page, "total")).to_have_text("16 700,00")
    # now it may be confirmed (a guard wants a total)
    page.locator(".crm-transition[data-to=confirmed]").click()
    expect(page.locator(".crm-current-state")).to_have_text("Подтверждён")


def the_firms_own_deal_stages_are_on_the_kanban(company: Company, page: Page) -> None:
    customer = busiest_customer(company)
    closes = (company.local_now() + dt.timedelta(days=45)).date().isoformat()
    deal = company.server.create(MANAGER, "deal", customer=customer.id, amount="1200000",
                                 planned_close=closes)  # fmt: skip
    company.server.transition(MANAGER, "deal", deal, "qualification")
    company.server.login(page, MANAGER)
    page.goto(company.url + "/my_sales/")
    heads = page.locator(".crm-column .crm-column-head strong")
    expect(heads).to_contain_text(["Пресейл", "Согласование SOW"])
    expect(column(page, "presale").locator(".crm-count")).to_have_text("0")

    # presale wants the effort in hours: the board asks for it with the move
    drag(page, card(page, deal), column(page, "presale"))
    modal = page.locator("#crm-move-modal")
    expect(modal.locator("input[name=hours]")).to_be_visible()
    modal.locator("input[name=hours]").fill("120")
    modal.get_by_role("button", name="Перевести").click()
    expect(modal).to_be_hidden()
    expect(column(page, "presale").locator(f".crm-card[data-id='{deal}']")).to_have_count(1)
    expect(column(page, "presale").locator(".crm-count")).to_have_text("1")
    # the statement of work needs a rate as well
    drag(page, card(page, deal), column(page, "sow"))
    expect(card(page, deal)).to_have_class(re.compile("crm-refused"))
    expect(column(page, "presale").locator(f".crm-card[data-id='{deal}']")).to_have_count(1)
    page.reload()
    expect(column(page, "presale").locator(f".crm-card[data-id='{deal}']")).to_have_count(1)


# -- 7. the head of sales --------------------------------------------------------------------------


def test_the_head_of_sales_switches_managers_and_departments(company: Company, page: Page) -> None:
    company.server.login(page, HEAD)
    page.goto(company.url + "/my_sales/")
    expect(page).to_have_url(re.compile(r"/deal/kanban"))
    owner = page.locator("select[name=owner]")
    department = page.locator("select[name=department]")
    for name in (NAMES[MANAGER], NAMES[OTHER_MANAGER], NAMES["petrova"]):
        expect(owner.locator("option", has_text=name)).to_have_count(1)
    expect(department.locator("option")).to_have_text(["Все отделы", *sorted(DEPARTMENTS)])

    owner.select_option(label=NAMES[OTHER_MANAGER])
    page.locator("form button[type=submit]", has_text="OK").click()
    expect(page).to_have_url(re.compile(rf"owner={company.users[OTHER_MANAGER]}"))
    deals = company.owned("Deal", OTHER_MANAGER)
    per_stage: dict[str, int] = {}
    for d in deals:
        per_stage[d.stage] = per_stage.get(d.stage, 0) + 1
    for col in page.locator(".crm-column").all():
        stage = col.get_attribute("data-column") or ""
        expect(col.locator(".crm-count")).to_have_text(str(per_stage.get(stage, 0)))
    cards = page.locator(".crm-card .crm-card-owner")
    expect(cards).to_have_count(sum(min(n, 20) for n in per_stage.values()))
    assert set(cards.all_inner_texts()) == {NAMES[OTHER_MANAGER]}

    # a department: its managers' cards, nobody else's
    owner.select_option(label="Все")
    department.select_option(label=DEPARTMENTS[1])
    page.locator("form button[type=submit]", has_text="OK").click()
    expect(page).to_have_url(re.compile(r"department=\d+"))
    expect(cards.first).to_be_visible()
    assert set(cards.all_inner_texts()) == {NAMES["petrova"]}
    # the interests' board keeps the choice
    page.locator(".crm-boards").get_by_role("link", name="Интерес").click()
    expect(page).to_have_url(re.compile(r"/interest/kanban\?.*department=\d+"))
    expect(page.locator(".crm-kanban-page h2")).to_contain_text("Интерес")
    interests = company.owned("Interest", "petrova")
    counts = page.locator(".crm-column .crm-count").all_inner_texts()
    assert sum(map(int, counts)) == len(interests)
    assert set(cards.all_inner_texts()) == ({NAMES["petrova"]} if interests else set())
