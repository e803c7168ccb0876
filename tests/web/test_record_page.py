"""The record page's related lists and actions, the form's computed fields
and dates as the user writes them, the home page."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from flask import Flask

from engine.hookspecs import hookimpl
from tests.web.conftest import SALES

RU = "name: Sales Ltd\nlocale: ru\nregion: RU\nlayers: []\n"


def create(client: Any, resource: str, **values: Any) -> int:
    response = client.api("POST", f"/api/v1/{resource}/", json=values)
    assert response.status_code == 201, response.get_json()
    return int(response.get_json()["id"])


def related(html: str, doctype: str) -> str:
    return html.split(f'class="crm-panel crm-related" data-type="{doctype}"', 1)[1].split(
        "</table>", 1
    )[0]


def test_related_lists_count_only_what_the_user_may_read(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(SALES)
    anna, boris, helen = login(app, "anna"), login(app, "boris"), login(app, "helen")
    romashka = create(anna, "customer", name="Romashka")
    create(anna, "deal", customer=romashka, amount="100")
    # boris cannot open Romashka, helen (head) can: his deal for it is hers to see
    create(helen, "deal", customer=romashka, amount="7", manager=3)
    page = anna.get(f"/customer/{romashka}").text
    deals = related(page, "Deal")
    assert re.search(r'crm-related-count">1<', deals), deals
    assert f'href="/deal/add?customer={romashka}"' in deals
    assert "100.00" in deals and "7.00" not in deals
    head = related(helen.get(f"/customer/{romashka}").text, "Deal")
    assert re.search(r'crm-related-count">2<', head), head
    assert boris.get(f"/customer/{romashka}").status_code == 404


def test_the_add_form_takes_a_ref_from_the_query(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(SALES)
    anna = login(app, "anna")
    romashka = create(anna, "customer", name="Romashka")
    html = anna.get(f"/deal/add?customer={romashka}").text
    block = html.split('data-field="customer"', 1)[1].split("</select>", 1)[0]
    assert f'<option value="{romashka}" selected>Romashka</option>' in block


def test_compute_answers_the_saves_own_totals(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(SALES)
    anna = login(app, "anna")
    form = {
        "csrf_token": anna.csrf, "lines-0-product": "Tea", "lines-0-qty": "2",
        "lines-0-price": "150", "lines-1-product": "", "lines-2-product": "Cups",
        "lines-2-qty": "3", "lines-2-price": "10,50",
    }  # fmt: skip
    answer = anna.client.post("/deal/compute", data=form)
    assert answer.status_code == 200
    values = answer.get_json()["values"]
    # the empty row 1 is skipped: row 2 keeps its index in the form
    assert values == {"lines-0-total": "300.00", "lines-2-total": "31.50", "total": "331.50"}
    assert anna.api("GET", "/api/v1/deal/").get_json()["count"] == 0  # nothing was saved
    # without the page's token the post is refused
    assert anna.client.post("/deal/compute", data={"lines-0-qty": "1"}).status_code == 400


def test_compute_on_an_edit_form_needs_the_right_to_edit(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(SALES)
    anna, boris = login(app, "anna"), login(app, "boris")
    deal = create(anna, "deal", customer=create(anna, "customer", name="R"))
    form = {"csrf_token": boris.csrf, "_id": str(deal), "lines-0-qty": "2", "lines-0-price": "1"}
    assert boris.client.post("/deal/compute", data=form).status_code == 404
    form["csrf_token"] = anna.csrf
    assert anna.client.post("/deal/compute", data=form).get_json()["values"]["total"] == "2.00"


def test_dates_and_numbers_are_written_as_the_user_writes_them(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(SALES, RU)
    anna = login(app, "anna")
    customer = create(anna, "customer", name="Romashka")
    deal = create(anna, "deal", customer=customer, amount="1500.5", planned_close="2027-03-31")
    html = anna.get(f"/deal/{deal}/edit").text
    assert 'value="31.03.2027"' in html.split('name="planned_close"', 1)[1].split(">", 1)[0]
    assert 'value="1500,50"' in html.split('name="amount"', 1)[1].split(">", 1)[0]
    # both the user's format and ISO are read back
    for typed, saved in (("01.04.2027", "2027-04-01"), ("2027-04-02", "2027-04-02")):
        version = anna.api("GET", f"/api/v1/deal/{deal}").get_json()["version"]
        response = anna.post_form(
            f"/deal/{deal}/edit",
            {
                "_version": version,
                "customer": customer,
                "planned_close": typed,
                "amount": "1 500,50",
            },
        )
        assert response.status_code == 302, response.text
        result = anna.api("GET", f"/api/v1/deal/{deal}").get_json()["result"]
        assert result["planned_close"] == saved and result["amount"] == "1500.50"


class Actions:
    """A plugin offering a call on every customer, and a link it may not offer."""

    @hookimpl
    def crm_record_actions(self, doctype: Any, doc: Any, principal: Any) -> list[Any]:
        if doctype.name != "Customer":
            return []
        return [
            {"label": "Call <now>", "url": f"tel:{doc.phone}", "icon": "fa-phone"},
            {"label": "Plan", "url": f"/deal/add?customer={doc.id}"},
            {"label": "Elsewhere", "url": "javascript:alert(1)"},
            {"label": "Away", "url": "//evil.example/"},
        ]


def test_plugins_add_actions_to_the_record_header(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(SALES)
    app.extensions["crm"].pm.register(Actions(), name="actions")
    anna = login(app, "anna")
    customer = create(anna, "customer", name="Romashka", phone="+74951234567")
    html = anna.get(f"/customer/{customer}").text
    actions = html.split('class="crm-record-actions"', 1)[1].split("</div>", 1)[0]
    assert 'href="tel:+74951234567"' in actions and "Call &lt;now&gt;" in actions
    assert f'href="/deal/add?customer={customer}"' in actions
    assert "javascript" not in actions and "evil" not in actions
    assert (
        'class="crm-record-actions"'
        not in anna.get(f"/deal/{create(anna, 'deal', customer=customer)}").text
    )


def test_the_home_page_says_what_is_open(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(SALES)
    anna = login(app, "anna")
    home = anna.get("/").text
    assert "Nothing open yet" in home and 'href="/deal/add"' in home
    create(anna, "deal", customer=create(anna, "customer", name="R"))
    home = anna.get("/").text
    assert re.search(r'href="/deal/\?f_manager=\d+"><span>Deal</span><span class="badge">1<', home)


def test_compute_with_bad_input_answers_what_it_can(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(SALES)
    anna = login(app, "anna")
    form = {
        "csrf_token": anna.csrf, "customer": "not a number", "amount": "x" * 300,
        "lines-0-product": "Tea", "lines-0-qty": "two", "lines-0-price": "5",
        "lines-1-product": "Cups", "lines-1-qty": "2", "lines-1-price": "5",
        "lines-99999999-qty": "1", "_id": "nope",
    }  # fmt: skip
    answer = anna.client.post("/deal/compute", data=form)
    assert answer.status_code == 200
    values = answer.get_json()["values"]
    assert values["lines-1-total"] == "10.00"  # the line that can be computed is
    assert anna.client.post("/ticket/compute", data={"csrf_token": anna.csrf}).status_code == 404
