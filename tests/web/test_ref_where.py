"""Ref constraints (`where:`): a deal's Interest must be one of the deal's
customer's. The picker offers only those; the server refuses others, by field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask

BASE = "name: Base Ltd\nlocale: en\nregion: RU\nlayers: [base]\n"


def _company(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> tuple[Any, dict[str, int]]:
    app = crm_app("{}", BASE)
    anna = login(app, "anna")
    ids: dict[str, int] = {}
    for name in ("Romashka", "Vector"):
        r = anna.api("POST", "/api/v1/customer/", {"name": name})
        assert r.status_code == 201, r.text
        ids[name] = r.json["id"]
    for subject, customer in (
        ("Romashka: paper", "Romashka"),
        ("Romashka: chairs", "Romashka"),
        ("Vector: laptops", "Vector"),
    ):
        r = anna.api("POST", "/api/v1/interest/", {"subject": subject, "customer": ids[customer]})
        assert r.status_code == 201, r.text
        ids[subject] = r.json["id"]
    return anna, ids


def test_rest_refuses_another_customers_interest_by_field(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    anna, ids = _company(crm_app, login)
    wrong = anna.api(
        "POST",
        "/api/v1/deal/",
        {"customer": ids["Romashka"], "interest": ids["Vector: laptops"], "amount": 100},
    )
    assert wrong.status_code == 422, wrong.text
    message = wrong.json["errors"]["interest"]
    assert "Vector: laptops" in message and "Customer" in message
    assert anna.api("GET", "/api/v1/deal/").json["count"] == 0  # nothing written

    right = anna.api(
        "POST",
        "/api/v1/deal/",
        {"customer": ids["Romashka"], "interest": ids["Romashka: paper"], "amount": 100},
    )
    assert right.status_code == 201, right.text
    # changing the customer alone makes the kept Interest another customer's
    moved = anna.api(
        "PUT",
        f"/api/v1/deal/{right.json['id']}",
        {"customer": ids["Vector"], "version": right.json["version"]},
    )
    assert moved.status_code == 422, moved.text
    assert "Romashka: paper" in moved.text
    # an order's Interest follows the same rule (the base layer's hub)
    order = anna.api(
        "POST",
        "/api/v1/customer_order/",
        {"customer": ids["Vector"], "interest": ids["Romashka: chairs"],
         "lines": [{"product": "Chair", "qty": 1, "price": 10}]},
    )  # fmt: skip
    assert order.status_code == 422, order.text
    assert "interest" in order.text


def test_the_form_says_it_at_the_field(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    anna, ids = _company(crm_app, login)
    page = anna.post_form(
        "/deal/add",
        {"customer": ids["Vector"], "interest": ids["Romashka: chairs"], "kind": "manual"},
    )
    assert page.status_code == 422
    field = page.text.split('data-field="interest"', 1)[1].split("</div>", 1)[0]
    assert "has-error" in page.text.split('data-field="interest"', 1)[0][-80:]
    assert "Romashka: chairs" in field and "does not fit" in field


def test_the_picker_offers_only_the_customers_interests(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    anna, ids = _company(crm_app, login)

    def offered(**args: Any) -> set[str]:
        r = anna.get("/interest/lookup", query_string=args)
        assert r.status_code == 200, r.text
        return {x["text"] for x in r.json["results"]}

    everything = {"Romashka: paper", "Romashka: chairs", "Vector: laptops"}
    assert offered(q="") == everything  # a picker without a constraint: as before
    mine = {"for": "Deal.interest", "f.customer": ids["Romashka"]}
    assert offered(**mine) == {"Romashka: paper", "Romashka: chairs"}
    assert offered(q="chairs", **mine) == {"Romashka: chairs"}
    assert offered(**{**mine, "f.customer": ids["Vector"]}) == {"Vector: laptops"}
    # no customer chosen yet: nothing narrows (the user may pick the Interest first)
    assert offered(**{**mine, "f.customer": ""}) == everything
    # a value that is no id offers nothing; an unknown `for` changes nothing
    assert offered(**{**mine, "f.customer": "abc"}) == set()
    assert offered(**{"for": "Deal.nothing", "f.customer": ids["Vector"]}) == everything
    # the form's picker says what it depends on
    form = anna.get("/deal/add").text
    assert 'data-for="Deal.interest" data-where="customer"' in form


CLOSED_TOO = """
documents:
  Deal:
    fields:
      interest: {where: {customer: customer, stage: {nin: [won, lost]}}}
"""


def test_a_later_layer_adds_a_condition_with_constants(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    """A config narrows the base layer's rule: only an open Interest of the customer."""
    app = crm_app(CLOSED_TOO, BASE)
    anna = login(app, "anna")
    customer = anna.api("POST", "/api/v1/customer/", {"name": "Romashka"}).json["id"]
    open_one = anna.api("POST", "/api/v1/interest/", {"subject": "Open", "customer": customer})
    won = anna.api("POST", "/api/v1/interest/", {"subject": "Won", "customer": customer})
    moved = anna.api(
        "POST", f"/api/v1/interest/{won.json['id']}/transition", {"to": "won", "fields": {}}
    )
    assert moved.status_code == 200, moved.text
    r = anna.get("/interest/lookup", query_string={"for": "Deal.interest", "f.customer": customer})
    assert [x["text"] for x in r.json["results"]] == ["Open"]
    refused = anna.api("POST", "/api/v1/deal/", {"customer": customer, "interest": won.json["id"]})
    assert refused.status_code == 422, refused.text
    assert "Won" in refused.json["errors"]["interest"]
    assert "Stage" in refused.json["errors"]["interest"]
    ok = anna.api("POST", "/api/v1/deal/", {"customer": customer, "interest": open_one.json["id"]})
    assert ok.status_code == 201, ok.text
