"""Field-level access: `access: ROLE: fields: {amount: none | read | write}`.

A manager may not see a deal's amount (nor its note, nor a customer's
rating); a head of sales sees the amount but may not change it. Neither may
learn a hidden value by listing, filtering, sorting, searching, exporting or
summing it, and a write of a field one may not change is a 422 naming it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import Flask

META = """
roles:
  manager:    {label: Manager}
  sales_head: {label: Head of sales}
documents:
  Customer:
    title: "{{ name }}"
    fields:
      name:   {type: string, required: true}
      rating: {type: integer}
    list: {columns: [name, rating], search: [name], filters: [rating]}
    access:
      manager:    {read: true, create: true, update: true, fields: {rating: none}}
      sales_head: {read: true, create: true, update: true}
  Contact:
    title: "{{ name }}"
    fields:
      name:     {type: string, required: true}
      customer: {type: ref, to: Customer}
    list: {columns: [name, customer.rating]}
    access:
      everyone: {read: true, create: true, update: true}
  Deal:
    title: "{{ subject }}"
    fields:
      subject:  {type: string, required: true}
      customer: {type: ref, to: Customer}
      stage:    {type: enum, values: [open, closed], default: open}
      amount:   {type: money}
      note:     {type: string}
      margin:   {type: money, compute: "(amount or 0) / 10"}
    list:
      columns: [subject, customer, customer.rating, stage, amount, margin]
      search: [subject, note]
      filters: [stage, amount]
      order: "-amount"
    views: {kanban: {by: stage, amount: amount}}
    access:
      manager:    {read: true, create: true, update: true, fields: {amount: none, note: none}}
      sales_head: {read: true, create: true, update: true, fields: {amount: read}}
"""
CONFIG = "name: Sales Ltd\nregion: RU\nlocale: en\nlayers: []\n"
AMOUNT = "987654.32"


def _setup(crm_app: Callable[..., Flask], login: Callable[..., Any]) -> tuple[Any, ...]:
    app = crm_app(META, CONFIG)
    admin, anna, helen = login(app, "admin"), login(app, "anna"), login(app, "helen")
    customer = admin.api("POST", "/api/v1/customer/", {"name": "Romashka", "rating": 777})
    assert customer.status_code == 201, customer.text
    deal = admin.api(
        "POST",
        "/api/v1/deal/",
        {"subject": "Pumps", "customer": customer.json["id"], "amount": AMOUNT,
         "note": "kickback zebra"},
    )  # fmt: skip
    assert deal.status_code == 201, deal.text
    return app, admin, anna, helen, customer.json["id"], deal.json["id"]


def _list(who: Any, **args: str) -> Any:
    query = "&".join(f"{k}={v}" for k, v in args.items())
    return who.api("GET", f"/api/v1/deal/?{query}")


def test_hidden_fields_are_absent_from_rest_records_and_lists(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    _, admin, anna, helen, _, did = _setup(crm_app, login)
    # the manager: no amount, no note, no margin (computed from the amount)
    record = anna.api("GET", f"/api/v1/deal/{did}")
    assert record.status_code == 200
    assert record.json["result"]["subject"] == "Pumps"
    for hidden in ("amount", "note", "margin"):
        assert hidden not in record.json["result"]
    assert "654.32" not in record.text and "kickback" not in record.text
    page = _list(anna)
    assert page.status_code == 200, page.text
    row = page.json["result"][0]
    assert row["subject"] == "Pumps" and "amount" not in row and "margin" not in row
    assert "654.32" not in page.text
    # the head of sales and the admin see it
    assert helen.api("GET", f"/api/v1/deal/{did}").json["result"]["amount"] == AMOUNT
    assert _list(helen).json["result"][0]["amount"] == AMOUNT
    assert admin.api("GET", f"/api/v1/deal/{did}").json["result"]["note"] == "kickback zebra"


def test_a_hidden_field_cannot_be_filtered_sorted_or_searched(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    _, _, anna, helen, cid, did = _setup(crm_app, login)
    for spec in ({"amount": {"gt": 900000}}, {"amount": {"set": True}}, {"margin": {"gt": 1}}):
        r = _list(anna, filter=json.dumps(spec))
        assert r.status_code == 400, r.text
        assert "hidden from you" in r.json["message"]
    # a field of a referenced type hidden from the user: refused too
    r = _list(anna, filter=json.dumps({"customer.rating": {"gte": 5}}))
    assert r.status_code == 400 and "Customer.rating" in r.json["message"]
    # sorting would order the records by the value
    for order in ("amount", "-amount", "margin"):
        r = _list(anna, order=order)
        assert r.status_code == 400 and "hidden from you" in r.json["message"], r.text
    # the search does not look in the hidden note
    assert _list(anna, search="zebra").json["count"] == 0
    assert _list(anna, search="Pumps").json["count"] == 1
    # who may read the amount may filter and sort on it (read-only is enough)
    r = _list(helen, filter=json.dumps({"amount": {"gt": 900000}}), order="amount")
    assert r.status_code == 200 and r.json["ids"] == [did]
    assert _list(helen, search="zebra").json["count"] == 1
    # a list column through a ref to a field hidden on the referenced type is dropped
    contact = anna.api("POST", "/api/v1/contact/", {"name": "Ivan", "customer": cid})
    assert contact.status_code == 201, contact.text
    contacts = anna.get("/contact/")
    assert contacts.status_code == 200 and "Ivan" in contacts.text
    assert "777" not in contacts.text and "777" in helen.get("/contact/").text
    r = anna.api("GET", '/api/v1/contact/?filter={"customer.rating": 777}')
    assert r.status_code == 400 and "Customer.rating" in r.json["message"]
    # the HTML list drops what it may not use: the column, the filter, the order
    html = anna.get("/deal/?f_amount=5&order=amount")
    assert html.status_code == 200, html.text
    assert "Pumps" in html.text and "654.32" not in html.text
    assert 'name="f_amount"' not in html.text
    assert 'name="f_amount"' in helen.get("/deal/").text
    assert "Pumps" not in anna.get("/deal/?q=zebra").text


def test_writes_of_hidden_and_read_only_fields_are_refused(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    _, admin, anna, helen, _, did = _setup(crm_app, login)
    version = admin.api("GET", f"/api/v1/deal/{did}").json["version"]
    # the manager may not set a hidden field, not even to the value it holds
    for body in ({"amount": "1"}, {"amount": AMOUNT}, {"note": "x"}):
        r = anna.api("PUT", f"/api/v1/deal/{did}", {"version": version, **body})
        assert r.status_code == 422, r.text
        field = next(iter(body))
        assert r.json["errors"][field] == "is hidden from you: you may not set it"
    r = anna.api("POST", "/api/v1/deal/", {"subject": "More", "amount": "5"})
    assert r.status_code == 422 and "amount" in r.json["errors"]
    # the head of sales sees the amount but may not change it
    r = helen.api("PUT", f"/api/v1/deal/{did}", {"version": version, "amount": "1"})
    assert r.status_code == 422 and r.json["errors"]["amount"] == "is read-only to you"
    # sending back what was read is no change, and the other fields may change
    r = helen.api(
        "PUT", f"/api/v1/deal/{did}", {"version": version, "amount": AMOUNT, "note": "ok"}
    )
    assert r.status_code == 200, r.text
    assert admin.api("GET", f"/api/v1/deal/{did}").json["result"]["amount"] == AMOUNT
    # the manager may still change what they see; nothing they may not was stored
    version = r.json["version"]
    r = anna.api("PUT", f"/api/v1/deal/{did}", {"version": version, "subject": "Pumps 2"})
    assert r.status_code == 200, r.text
    assert "amount" not in r.json["result"]
    stored = admin.api("GET", f"/api/v1/deal/{did}").json["result"]
    assert stored["amount"] == AMOUNT and stored["note"] == "ok"


def test_html_form_and_record_page_leave_out_hidden_fields(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    _, admin, anna, helen, cid, did = _setup(crm_app, login)

    # the customer's page lists the deal, without the hidden amount column
    def deals(who: Any) -> str:
        page = who.get(f"/customer/{cid}").text
        return page.split('data-type="Deal"', 1)[1].split("</table>", 1)[0]

    assert "Pumps" in deals(anna) and "654" not in deals(anna)
    assert "Pumps" in deals(helen) and "654" in deals(helen)
    form = anna.get(f"/deal/{did}/edit")
    assert form.status_code == 200
    assert 'name="subject"' in form.text
    assert 'name="amount"' not in form.text and 'name="note"' not in form.text
    assert "654.32" not in form.text and "kickback" not in form.text
    page = anna.get(f"/deal/{did}")
    assert page.status_code == 200 and "Pumps" in page.text
    assert "654.32" not in page.text and "kickback" not in page.text
    # the head of sales sees the amount, in a read-only input
    shown = helen.get(f"/deal/{did}/edit").text
    assert "654.32" in shown and 'name="note"' in shown
    assert "654.32" in helen.get(f"/deal/{did}").text
    # a posted hidden value is refused with a message, not dropped unseen
    version = admin.api("GET", f"/api/v1/deal/{did}").json["version"]
    r = anna.post_form(
        f"/deal/{did}/edit", {"_version": version, "subject": "Pumps", "amount": "1"}
    )
    assert r.status_code == 422 and "is hidden from you" in r.text
    r = helen.post_form(
        f"/deal/{did}/edit", {"_version": version, "subject": "Pumps", "amount": "1"}
    )
    assert r.status_code == 422 and "is read-only to you" in r.text
    assert admin.api("GET", f"/api/v1/deal/{did}").json["result"]["amount"] == AMOUNT
    # the form as the head of sales gets it saves (the read-only amount comes back as shown)
    r = helen.post_form(
        f"/deal/{did}/edit", {"_version": version, "subject": "Pumps B", "amount": AMOUNT}
    )
    assert r.status_code == 302, r.text


def test_export_import_and_kanban_leave_out_hidden_fields(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    _, _, anna, helen, _, _ = _setup(crm_app, login)
    csv_text = anna.get("/deal/export.csv").get_data(as_text=True)
    header = csv_text.splitlines()[0]
    assert "Pumps" in csv_text and "654.32" not in csv_text and "kickback" not in csv_text
    assert "Amount" not in header and "Note" not in header and "Margin" not in header
    assert "654.32" in helen.get("/deal/export.csv").get_data(as_text=True)
    template = anna.get("/deal/import/template.csv").get_data(as_text=True)
    assert "subject" in template and "amount" not in template
    # the column sum of a hidden amount is not shown
    board = anna.get("/deal/kanban")
    assert board.status_code == 200 and "Pumps" in board.text
    assert "654.32" not in board.text
    assert "654.32" in helen.get("/deal/kanban").text


def test_the_most_generous_role_wins(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app, _, _, _, _, did = _setup(crm_app, login)
    state = app.extensions["crm"]
    with app.app_context():
        sm = state.appbuilder.sm
        sm.add_user("both", "Both", "Roles", "both@example.org",
                    [sm.find_role("manager"), sm.find_role("sales_head")], "secret")  # fmt: skip
    both = login(app, "both")
    # hidden to one role, read-only to the other: read-only
    assert both.api("GET", f"/api/v1/deal/{did}").json["result"]["amount"] == AMOUNT
    # hidden to one role, writable by the other: writable
    assert both.api("GET", f"/api/v1/deal/{did}").json["result"]["note"] == "kickback zebra"


LINES = """
roles:
  manager:    {label: Manager}
  sales_head: {label: Head of sales}
documents:
  Customer:  # the test clients take their CSRF token from its form
    fields: {name: {type: string}}
    access: {everyone: {read: true, create: true}}
  Order:
    title: "{{ subject }}"
    fields:
      subject: {type: string, required: true}
      lines:
        type: table
        fields:
          product: {type: string, required: true}
          qty:     {type: decimal, default: 1}
          price:   {type: money}
          amount:  {type: money, compute: "(qty or 0) * (price or 0)"}
      total: {type: money, compute: "lines | sum(attribute='amount')"}
    statuses:
      initial: new
      states: {new: {}, confirmed: {}}
      transitions:
        - {from: new, to: confirmed, when: "total and total > 0"}
    access:
      manager:    {read: true, create: true, update: true, fields: {lines.price: none}}
      sales_head: {read: true, create: true, update: true, fields: {lines.price: read}}
"""


def test_a_column_of_a_table_may_be_hidden(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(LINES, CONFIG)
    admin, anna, helen = login(app, "admin"), login(app, "anna"), login(app, "helen")
    body = {"subject": "Pumps", "lines": [{"product": "Pump", "qty": 2, "price": "4321.09"}]}
    made = admin.api("POST", "/api/v1/order/", body)
    assert made.status_code == 201, made.text
    oid, version = made.json["id"], made.json["version"]
    assert made.json["result"]["total"] == "8642.18"
    # the manager sees the product and the quantity, not the price, the amount or the total
    got = anna.api("GET", f"/api/v1/order/{oid}").json["result"]
    assert got["lines"][0]["product"] == "Pump" and "price" not in got["lines"][0]
    assert "amount" not in got["lines"][0] and "total" not in got
    for url in (f"/order/{oid}", f"/order/{oid}/edit", "/order/export.csv"):
        text = anna.get(url).get_data(as_text=True)
        assert "Pump" in text and "321.09" not in text and "642.18" not in text, url
    assert "321.09" in helen.get(f"/order/{oid}").text
    # a move guarded by the hidden total is judged on the record as it is
    assert "is not met" not in anna.get(f"/order/{oid}").text
    move = anna.get(f"/order/{oid}/transition/confirmed")
    assert move.status_code == 200 and "is not met" not in move.text
    assert "642.18" in helen.get(f"/order/{oid}").text
    # the manager changes the quantity; the price stays as it was
    row = got["lines"][0]["id"]
    r = anna.api(
        "PUT", f"/api/v1/order/{oid}", {"version": version, "lines": [{"id": row, "qty": 3}]}
    )
    assert r.status_code == 200, r.text
    stored = admin.api("GET", f"/api/v1/order/{oid}").json
    assert stored["result"]["lines"][0]["price"] == "4321.09"
    assert stored["result"]["total"] == "12963.27"
    # setting the price is refused by its row and column, as hidden or as read-only
    change = {"version": stored["version"], "lines": [{"id": row, "price": "1"}]}
    r = anna.api("PUT", f"/api/v1/order/{oid}", change)
    assert r.status_code == 422 and "hidden from you" in r.json["errors"]["lines.0.price"]
    r = helen.api("PUT", f"/api/v1/order/{oid}", change)
    assert r.status_code == 422 and r.json["errors"]["lines.0.price"] == "is read-only to you"
    # the HTML form: a posted price column is refused too
    r = anna.post_form(
        f"/order/{oid}/edit",
        {"_version": stored["version"], "subject": "Pumps", "lines-0-id": row,
         "lines-0-product": "Pump", "lines-0-qty": "3", "lines-0-price": "1"},
    )  # fmt: skip
    assert r.status_code == 422 and "hidden from you" in r.text
    assert admin.api("GET", f"/api/v1/order/{oid}").json["result"]["total"] == "12963.27"
    # the form as the manager gets it saves, keeping the price
    r = anna.post_form(
        f"/order/{oid}/edit",
        {"_version": stored["version"], "subject": "Pumps 2", "lines-0-id": row,
         "lines-0-product": "Pump", "lines-0-qty": "1"},
    )  # fmt: skip
    assert r.status_code == 302, r.text
    assert admin.api("GET", f"/api/v1/order/{oid}").json["result"]["total"] == "4321.09"
