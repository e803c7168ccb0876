"""The sales manager's workspace: "My sales", planning from the calendar, the customer's timeline."""

from __future__ import annotations

import re
from typing import Any


def test_my_sales_opens_the_users_own_funnel_with_a_tab_per_board(crm_app: Any, login: Any) -> None:
    app = crm_app()
    anna = login(app, "anna")
    response = anna.get("/my_sales/")
    assert response.status_code == 302
    assert re.fullmatch(r"/deal/kanban\?owner=\d+", response.headers["Location"])
    page = anna.get(response.headers["Location"])
    assert page.status_code == 200
    assert "crm-kanban" in page.text
    assert "My sales" in anna.get("/deal/").text  # in the menu


def test_the_menu_shows_my_sales_only_to_a_role_that_may_open_it(crm_app: Any, login: Any) -> None:
    from tests.web.conftest import SALES

    # a clerk keeps the customer directory and may not read deals (the only board)
    metadata = SALES.replace(
        "  sales_head: {label: Head of sales}\n",
        "  sales_head: {label: Head of sales}\n  clerk: {label: Clerk}\n",
        1,
    ).replace(
        "      sales_head: {read: all, create: true, update: all, delete: true}\n",
        "      sales_head: {read: all, create: true, update: all, delete: true}\n"
        "      clerk: {read: all}\n",
        1,
    )
    app = crm_app(metadata)
    with app.app_context():
        sm = app.extensions["crm"].appbuilder.sm
        sm.add_user(
            "clara", "Clara", "Test", "clara@example.org", [sm.find_role("clerk")], "secret"
        )
    clara = login(app, "clara")
    assert clara.get("/my_sales/").status_code == 404
    page = clara.get("/customer/")
    assert page.status_code == 200
    assert "/my_sales/" not in page.text and "My sales" not in page.text
    assert 'href="/deal/"' not in page.text
    assert "/my_sales/" in login(app, "anna").get("/customer/").text


def test_the_heads_my_sales_opens_on_the_team(crm_app: Any, login: Any) -> None:
    import sqlalchemy as sa

    app = crm_app("{}", "name: Base Ltd\nlocale: en\nregion: RU\nlayers: [base]\n")
    helen = login(app, "helen")
    added = helen.api("POST", "/api/v1/department/", {"name": "Sales"})
    assert added.status_code == 201, added.get_json()
    department = added.get_json()["id"]
    state = app.extensions["crm"]
    users = state.models.table("User")
    with app.app_context(), state.db.engine.begin() as conn:
        conn.execute(
            sa.update(users)
            .where(users.c.username.in_(["helen", "anna", "boris"]))
            .values(department_id=department)
        )
        anna_id = conn.execute(sa.select(users.c.id).where(users.c.username == "anna")).scalar()
    team = helen.get("/my_sales/")
    assert team.status_code == 302
    assert team.headers["Location"] == f"/deal/kanban?department={department}"
    # a manager still opens on their own deals
    own = login(app, "anna").get("/my_sales/")
    assert own.headers["Location"] == f"/deal/kanban?owner={anna_id}"


def test_a_day_in_the_calendar_plans_a_record_on_that_day(crm_app: Any, login: Any) -> None:
    app = crm_app()
    anna = login(app, "anna")
    page = anna.get("/deal/calendar?date=2026-12-10")
    link = re.search(r'href="(/deal/add\?planned_close=2026-12-10)"', page.text)
    assert link, "no planning link on the day"
    form = anna.get(link.group(1))
    assert form.status_code == 200
    assert 'value="2026-12-10"' in form.text


def test_the_customer_page_shows_its_timeline_newest_first(crm_app: Any, login: Any) -> None:
    app = crm_app()
    anna = login(app, "anna")
    customer = anna.api("POST", "/api/v1/customer/", {"name": "Timeline Ltd"}).get_json()["id"]
    first = anna.api("POST", "/api/v1/deal/", {"customer": customer, "amount": "10"}).get_json()[
        "id"
    ]
    second = anna.api("POST", "/api/v1/deal/", {"customer": customer, "amount": "20"}).get_json()[
        "id"
    ]
    html = anna.get(f"/customer/{customer}").text
    assert "crm-timeline" in html
    rows = re.findall(r'class="crm-timeline-row[^"]*".*?href="/deal/(\d+)"', html, re.S)
    assert [int(r) for r in rows] == [second, first]


def test_the_timeline_and_the_history_tell_the_same_time_on_the_company_clock(
    crm_app: Any, login: Any
) -> None:
    app = crm_app(config="name: Sales Ltd\nregion: RU\nlayers: []\ntimezone: Europe/Moscow\n")
    anna = login(app, "anna")
    customer = anna.api("POST", "/api/v1/customer/", {"name": "Clock Ltd"}).get_json()["id"]
    deal = anna.api("POST", "/api/v1/deal/", {"customer": customer, "amount": "10"}).get_json()
    did = deal["id"]
    anna.api(
        "POST", f"/api/v1/deal/{did}/transition", {"to": "proposal", "version": deal["version"]}
    )
    html = anna.get(f"/deal/{did}").text
    history = re.findall(r'class="crm-history-row"><td>([^<]+)</td>', html)
    timeline = re.findall(r'class="crm-timeline-row crm-kind-status"><td>([^<]+)</td>', html)
    assert history and timeline, html
    stamp = re.compile(r"\d\d\.\d\d\.\d{4} \d\d:\d\d|\d{4}-\d\d-\d\d \d\d:\d\d")
    assert stamp.search(timeline[0]) and stamp.search(history[-1])
    assert {stamp.search(t).group(0) for t in timeline} == {  # type: ignore[union-attr]
        stamp.search(h).group(0)
        for h in history  # type: ignore[union-attr]
    }
