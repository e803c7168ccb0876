"""The kanban and the calendar as a sales department uses them: columns with
counts and sums, cards paged per column, months and weeks with per-day
counts per owner, filters by owner, the same access rules as lists, and a
cost in queries that does not grow with the data."""

from __future__ import annotations

import datetime as dt
import html as htmlmod
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from flask import Flask


def user_id(app: Flask, username: str) -> int:
    with app.app_context():
        users = app.extensions["crm"].models.table("User")
        session = app.extensions["crm"].db.session
        return int(
            session.execute(sa.select(users.c.id).where(users.c.username == username)).scalar_one()
        )


def add_deals(app: Flask, owner: str, n: int, stage: str = "new", amount: str = "10",
              planned: dt.date | None = None, name: str = "Client") -> None:  # fmt: skip
    """Deals straight into the database, as an import would leave them."""
    owner_id = user_id(app, owner)
    with app.app_context():
        state = app.extensions["crm"]
        session = state.db.session
        customers, deals = state.models.table("Customer"), state.models.table("Deal")
        now = dt.datetime.now(dt.UTC)
        customer = session.execute(
            customers.insert().values(name=name, manager_id=owner_id, version=1, created_at=now)
            .returning(customers.c.id)
        ).scalar_one()  # fmt: skip
        start = session.execute(sa.select(sa.func.count()).select_from(deals)).scalar_one()
        session.execute(
            deals.insert(),
            [{"number": f"D-{start + i + 1:05d}", "stage": stage, "customer_id": customer,
              "manager_id": owner_id, "amount": Decimal(amount), "planned_close": planned,
              "version": 1, "created_at": now - dt.timedelta(seconds=start + i)}
             for i in range(n)],
        )  # fmt: skip
        session.commit()


@contextmanager
def queries(app: Flask) -> Iterator[list[str]]:
    with app.app_context():
        engine = app.extensions["crm"].db.engine
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def columns(html: str) -> dict[str, dict[str, Any]]:
    out = {}
    for name, body in re.findall(r'<div class="crm-column" data-column="(\w+)"(.*?)(?=<div class="crm-column" |<input type="hidden" id="crm-csrf")', html, re.S):  # fmt: skip
        count = re.search(r'crm-count">(\d+)<', body)
        total = re.search(r'crm-sum"[^>]*>([^<]*)<', body)
        out[name] = {
            "count": int(count.group(1)) if count else None,
            "sum": htmlmod.unescape(total.group(1)) if total else "",
            "cards": [int(i) for i in re.findall(r'class="crm-card" draggable="true" data-id="(\d+)"', body)],
            "more": "crm-more" in body,
        }  # fmt: skip
    return out


def test_kanban_columns_have_counts_sums_and_a_page_of_cards(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app()
    add_deals(app, "anna", 25, "new", "10")
    add_deals(app, "boris", 3, "proposal", "100")
    helen = login(app, "helen")
    page = helen.get("/deal/kanban")
    assert page.status_code == 200
    board = columns(page.text)
    assert list(board) == ["new", "proposal", "won", "lost"]
    assert board["new"]["count"] == 25 and board["new"]["sum"] == "250.00"
    assert len(board["new"]["cards"]) == 20 and board["new"]["more"]
    assert board["proposal"]["count"] == 3 and board["proposal"]["sum"] == "300.00"
    assert len(board["proposal"]["cards"]) == 3 and not board["proposal"]["more"]
    assert board["won"]["count"] == 0 and board["won"]["cards"] == []
    card = page.text.split('class="crm-card"', 2)[1]
    assert "D-000" in card and "Client" in card and "Anna Test" in card and "10.00" in card
    # the next page of one column, without overlap
    more = helen.get("/deal/kanban/cards?column=new&offset=20").get_json()["cards"]
    assert len(more) == 5
    assert not {c["id"] for c in more} & set(board["new"]["cards"])
    # filtered by owner: counts and sums follow
    boris = user_id(app, "boris")
    only_boris = columns(helen.get(f"/deal/kanban?owner={boris}").text)
    assert only_boris["new"]["count"] == 0 and only_boris["proposal"]["count"] == 3
    assert helen.get(f"/deal/kanban/cards?column=proposal&offset=0&owner={boris}").get_json()[
        "cards"
    ]


def test_a_manager_kanban_counts_only_own_deals(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app()
    add_deals(app, "anna", 2, "new", "10")
    add_deals(app, "boris", 3, "proposal", "100")
    anna = login(app, "anna")
    board = columns(anna.get("/deal/kanban").text)
    assert board["new"]["count"] == 2 and board["proposal"]["count"] == 0
    assert board["proposal"]["sum"] == "0.00"
    assert anna.get("/deal/kanban/cards?column=proposal").get_json() == {"cards": []}


def test_kanban_and_calendar_cost_the_same_queries_for_few_and_many_records(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app()
    helen = login(app, "helen")
    day = dt.date(2030, 5, 15)

    def cost(url: str) -> int:
        with queries(app) as statements:
            assert helen.get(url).status_code == 200
        return len(statements)

    add_deals(app, "anna", 2, "new", planned=day)
    add_deals(app, "boris", 1, "proposal", planned=day, name="Other")
    few = (cost("/deal/kanban"), cost("/deal/calendar?date=2030-05-01"))
    add_deals(app, "anna", 60, "new", planned=day)
    add_deals(app, "boris", 30, "proposal", planned=day + dt.timedelta(days=1), name="Third")
    many = (cost("/deal/kanban"), cost("/deal/calendar?date=2030-05-01"))
    assert few == many
    # kanban: the user, the menu, the totals, the cards' ids, the cards, their
    # customers and owners (for titles), the owner filter's users;
    # calendar: the user, the menu, the entries, their customers, the counts, the users
    assert many == (8, 6)


def deal_ids(app: Flask) -> dict[str, list[int]]:
    with app.app_context():
        deals = app.extensions["crm"].models.table("Deal")
        session = app.extensions["crm"].db.session
        rows = session.execute(sa.select(deals.c.id, deals.c.stage).order_by(deals.c.id)).all()
    out: dict[str, list[int]] = {}
    for row in rows:
        out.setdefault(row.stage, []).append(row.id)
    return out


def test_a_kanban_move_asks_for_the_fields_it_needs_and_answers_the_columns_totals(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app()
    add_deals(app, "anna", 2, "new", "10")
    add_deals(app, "boris", 1, "new", "1000", name="Other")
    first = deal_ids(app)["new"][0]
    anna = login(app, "anna")
    url = f"/api/v1/deal/{first}/transition?columns=new,lost"
    # lost needs a loss reason: the answer names it, so the board can ask for it
    asked = anna.api("POST", url, json={"to": "lost", "version": 1})
    assert asked.status_code == 422
    assert asked.get_json()["needs"] == ["loss_reason"]
    assert "loss_reason" in asked.get_json()["errors"]
    assert deal_ids(app)["new"][0] == first
    # a stale card is told so, not moved
    stale = anna.api("POST", url, json={"to": "lost", "version": 0, "fields": {"loss_reason": "x"}})
    assert stale.status_code == 409
    # with the reason the move is done, and both columns' totals come back,
    # counted over what anna may see (boris's deal is not in her "new")
    done = anna.api(
        "POST", url, json={"to": "lost", "version": 1, "fields": {"loss_reason": "Too dear"}}
    )
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["columns"] == {
        "new": {"count": 1, "sum": "10.00"},
        "lost": {"count": 1, "sum": "10.00"},
    }
    assert first in deal_ids(app)["lost"]
    assert anna.get(f"/api/v1/deal/{first}").get_json()["result"]["loss_reason"] == "Too dear"
    # the head of sales, switched to boris, gets boris's totals only
    helen = login(app, "helen")
    boris = user_id(app, "boris")
    other = deal_ids(app)["new"][-1]
    moved = helen.api(
        "POST", f"/api/v1/deal/{other}/transition?columns=new,lost&owner={boris}",
        json={"to": "lost", "version": 1, "fields": {"loss_reason": "Gone"}},
    )  # fmt: skip
    assert moved.get_json()["columns"] == {
        "new": {"count": 0, "sum": "0.00"},
        "lost": {"count": 1, "sum": "1,000.00"},
    }


def test_a_move_refused_for_more_than_empty_fields_does_not_ask_for_them(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app()
    add_deals(app, "anna", 1, "new", "0")
    deal = deal_ids(app)["new"][0]
    anna = login(app, "anna")
    # proposal needs a planned close, but also an amount above zero: filling
    # in the date would not help, so the board shows the refusal instead
    refused = anna.api("POST", f"/api/v1/deal/{deal}/transition", json={"to": "proposal"})
    assert refused.status_code == 422
    body = refused.get_json()
    assert "needs" not in body and len(body["reasons"]) == 2
    # a bad `columns` refuses the request before anything moves
    bad = anna.api(
        "POST", f"/api/v1/deal/{deal}/transition?columns=new,nowhere",
        json={"to": "lost", "fields": {"loss_reason": "x"}},
    )  # fmt: skip
    assert bad.status_code == 400
    assert deal_ids(app) == {"new": [deal]}


def calendar_days(html: str) -> dict[str, dict[str, Any]]:
    out = {}
    for date, body in re.findall(r'data-date="([\d-]+)">(.*?)</td>', html, re.S):
        count = re.search(r'crm-day-count">(\d+)<', body)
        out[date] = {
            "count": int(count.group(1)) if count else 0,
            "owners": [htmlmod.unescape(o) for o in re.findall(r'crm-owner-count small text-muted">([^<]*)<', body)],
            "entries": re.findall(r'<a href="(/deal/\d+)">', body),
            "text": " ".join(htmlmod.unescape(re.sub(r"<[^>]+>", " ", body)).split()),
        }  # fmt: skip
    return out


def test_calendar_month_and_week_views_with_counts_per_owner(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app()
    add_deals(app, "anna", 2, planned=dt.date(2030, 5, 15), name="Alpha")
    add_deals(app, "boris", 1, planned=dt.date(2030, 5, 15), name="Beta")
    add_deals(app, "boris", 12, planned=dt.date(2030, 5, 20), name="Gamma")
    add_deals(app, "anna", 1, planned=dt.date(2030, 7, 1), name="Later")
    helen = login(app, "helen")
    month = helen.get("/deal/calendar?date=2030-05-10")
    assert month.status_code == 200
    days = calendar_days(month.text)
    # a month view: whole weeks around May 2030, Monday first
    assert min(days) == "2030-04-29" and max(days) == "2030-06-02"
    assert days["2030-05-15"]["count"] == 3
    assert days["2030-05-15"]["owners"] == ["Anna Test: 2", "Boris Test: 1"]
    assert len(days["2030-05-15"]["entries"]) == 3
    assert "Alpha" in days["2030-05-15"]["text"]
    # a busy day lists a few entries and says how many more
    assert days["2030-05-20"]["count"] == 12 and len(days["2030-05-20"]["entries"]) == 8
    assert "+4" in days["2030-05-20"]["text"]
    assert "Later" not in month.text  # another month is another query
    # click an entry: the record opens
    assert helen.get(days["2030-05-15"]["entries"][0]).status_code == 200
    week = calendar_days(helen.get("/deal/calendar?mode=week&date=2030-05-16").text)
    assert sorted(week) == [f"2030-05-{d}" for d in range(13, 20)]
    assert week["2030-05-15"]["count"] == 3
    boris = user_id(app, "boris")
    filtered = calendar_days(helen.get(f"/deal/calendar?date=2030-05-10&owner={boris}").text)
    assert filtered["2030-05-15"]["count"] == 1
    assert filtered["2030-05-15"]["owners"] == ["Boris Test: 1"]
    # a manager sees only own deals, and their counts
    anna_days = calendar_days(login(app, "anna").get("/deal/calendar?date=2030-05-10").text)
    assert anna_days["2030-05-15"]["count"] == 2 and anna_days["2030-05-20"]["count"] == 0
    # navigation moves by a month or a week
    assert "date=2030-04-01" in month.text and "date=2030-06-01" in month.text


def test_calendar_on_a_datetime_field_uses_the_company_clock(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    metadata = """
    roles:
      manager: {label: Manager}
      sales_head: {label: Head of sales}
    documents:
      Meeting:
        title: "{{ subject }}"
        owner: manager
        fields:
          subject: {type: string, required: true}
          starts:  {type: datetime, required: true}
          manager: {type: ref, to: User, default: current_user}
        views: {calendar: {date: starts, owner: manager}}
        access:
          manager: {read: own, create: true, update: own}
    """
    config = "name: Clock\nlocale: ru\nregion: RU\ntimezone: Asia/Vladivostok\nlayers: []\n"
    app = crm_app(metadata, config)
    anna = login(app, "anna")
    # 23:30 on the 10th in Vladivostok (UTC+10) is 13:30 UTC on the 10th;
    # 08:00 on the 11th there is 22:00 UTC on the 10th
    for subject, starts in (("Late", "2030-03-10T23:30"), ("Early", "2030-03-11T08:00")):
        response = anna.post_form("/meeting/add", {"subject": subject, "starts": starts})
        assert response.status_code == 302, response.text
    days = calendar_days(
        anna.get("/meeting/calendar?date=2030-03-01").text.replace("/meeting/", "/deal/")
    )
    assert days["2030-03-10"]["count"] == 1 and "23:30 Late" in days["2030-03-10"]["text"]
    assert days["2030-03-11"]["count"] == 1 and "08:00 Early" in days["2030-03-11"]["text"]
    assert days["2030-03-11"]["owners"] == ["Anna Test: 1"]
