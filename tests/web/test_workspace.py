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
