"""The generated pages, as a user clicks through them with a real login."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from flask import Flask


def _user_id(app: Flask, username: str) -> int:
    with app.app_context():
        users = app.extensions["crm"].models.table("User")
        return int(
            app.extensions["crm"]
            .db.session.execute(sa.select(users.c.id).where(users.c.username == username))
            .scalar_one()
        )


def test_create_a_customer_then_a_deal_with_lines(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app()
    anna = login(app, "anna")
    response = anna.post_form(
        "/customer/add", {"name": "Romashka", "phone": "8 (495) 123-45-67", "segment": "A"}
    )
    assert response.status_code == 302, response.text
    customer_url = response.headers["Location"]
    page = anna.get(customer_url)
    assert "Romashka" in page.text
    assert "+7 495 123-45-67" in page.text  # stored in E.164, shown formatted
    customer_id = int(customer_url.rstrip("/").rsplit("/", 1)[1])

    response = anna.post_form(
        "/deal/add",
        {"customer": str(customer_id), "amount": "1 500,50",
         "lines-0-product": "Tea", "lines-0-qty": "2", "lines-0-price": "100",
         "lines-1-product": "Cups", "lines-1-qty": "3", "lines-1-price": "10"},
    )  # fmt: skip
    assert response.status_code == 302, response.text
    page = anna.get(response.headers["Location"])
    assert "D-00001 Romashka" in page.text
    assert "230.00" in page.text  # the computed total of the lines
    assert page.text.index("Tea") < page.text.index("Cups")


def test_server_side_validation_shows_the_message_at_the_field(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app()
    anna = login(app, "anna")
    response = anna.post_form("/customer/add", {"name": "", "phone": "12", "email": "not-an-email"})
    assert response.status_code == 422
    html = response.text
    for field in ("name", "phone", "email"):
        block = html.split(f'data-field="{field}"', 1)[1].split("</div>", 1)[0]
        assert "crm-error" in block, f"no error shown at {field}"


def test_a_manager_sees_only_own_customers_and_gets_404_for_others(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app()
    anna, boris = login(app, "anna"), login(app, "boris")
    created = anna.post_form("/customer/add", {"name": "Anna's client"})
    url = created.headers["Location"]
    boris.post_form("/customer/add", {"name": "Boris's client"})
    assert "Anna&#39;s client" in anna.get("/customer/").text
    assert "Boris&#39;s client" not in anna.get("/customer/").text
    assert boris.get(url).status_code == 404
    assert boris.get(url + "/edit").status_code == 404
    assert boris.api("GET", "/api/v1/customer/" + url.rsplit("/", 1)[1]).status_code == 404
    lookup = boris.get("/customer/lookup?q=Ann").get_json()
    assert lookup == {"results": []}


def test_list_page_costs_the_same_number_of_queries_for_5_and_60_rows(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app()
    helen = login(app, "helen")
    anna_id = _user_id(app, "anna")

    def count_queries(n_rows: int) -> int:
        with app.app_context():
            state = app.extensions["crm"]
            table = state.models.table("Customer")
            session = state.db.session
            session.execute(sa.delete(table))
            session.execute(table.insert(), [{"name": f"C{i}", "manager_id": anna_id, "version": 1,
                                              "created_at": dt.datetime.now(dt.UTC)} for i in range(n_rows)])  # fmt: skip
            session.commit()
            engine = state.db.engine
        statements: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement)

        sa.event.listen(engine, "before_cursor_execute", record)
        try:
            assert helen.get("/customer/").status_code == 200
        finally:
            sa.event.remove(engine, "before_cursor_execute", record)
        return len(statements)

    assert count_queries(5) == count_queries(60)


def test_a_list_filter_through_a_ref_is_offered_and_applied(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    from tests.web.conftest import SALES

    app = crm_app(SALES.replace("filters: [stage, manager]", "filters: [stage, customer.segment]"))
    anna = login(app, "anna")
    for name, segment in (("Romashka", "A"), ("Vector", "B")):
        customer = anna.post_form("/customer/add", {"name": name, "segment": segment})
        customer_id = customer.headers["Location"].rstrip("/").rsplit("/", 1)[1]
        assert (
            anna.post_form("/deal/add", {"customer": customer_id, "amount": "10"}).status_code
            == 302
        )
    page = anna.get("/deal/")
    assert page.status_code == 200
    assert 'name="f_customer.segment"' in page.text
    filtered = anna.get("/deal/?f_customer.segment=A")
    assert filtered.status_code == 200
    assert "Romashka" in filtered.text and "Vector" not in filtered.text
