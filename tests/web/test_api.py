"""The REST API as a client meets it: Flask-AppBuilder's conventions under
/api/v1/<resource>/, the documents service's rules behind every write, the
status engine behind /transition, and a 4xx JSON answer with a message for
anything a client gets wrong (never a 500, a traceback or SQL)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

CONFIG = "name: Api Ltd\nlocale: en\nregion: RU\nlayers: []\n"
BASE = "name: Base Ltd\nlocale: en\nregion: RU\nlayers: [base]\n"

API = """
roles:
  manager:    {label: Manager}
  sales_head: {label: Head of sales}
  operator:   {label: Operator}
documents:
  Customer:
    title: "{{ name }}"
    owner: manager
    fields:
      name:    {type: string, required: true, max_length: 100}
      segment: {type: enum, values: [A, B, C]}
      source:  {type: string, readonly: true, default: web}
      manager: {type: ref, to: User, default: current_user}
    list: {columns: [name, segment, manager], search: [name]}
    access:
      manager:    {read: own, create: true, update: own}
      sales_head: {read: all, create: true, update: all, delete: true}
  Deal:
    numbering: {prefix: "D-", width: 5}
    title: "{{ number }} {{ customer }}"
    owner: manager
    fields:
      customer: {type: ref, to: Customer, required: true}
      amount:   {type: money, min: 0}
      manager:  {type: ref, to: User, default: current_user}
      planned_close: {type: date}
      loss_reason: {type: text}
      lines:
        type: table
        fields:
          product: {type: string, required: true}
          qty:     {type: decimal, default: 1, min: 0}
          price:   {type: money}
          total:   {type: money, compute: "(qty or 0) * (price or 0)"}
      total: {type: money, compute: "lines | sum(attribute='total')"}
    statuses:
      field: stage
      initial: new
      states:
        new:      {label: New}
        proposal: {label: Proposal, require: [planned_close]}
        won:      {label: Won, final: true, outcome: won}
        lost:     {label: Lost, final: true, outcome: lost, require: [loss_reason]}
      transitions:
        - {from: new, to: proposal, when: "amount and amount > 0"}
        - {from: proposal, to: won, roles: [sales_head]}
        - {from: "*", to: lost}
    list: {columns: [number, customer, stage, amount, manager], search: [number]}
    access:
      manager:    {read: own, create: true, update: own}
      sales_head: {read: all, create: true, update: all, delete: true}
"""

#: what an error body must never show
LEAKS = ("Traceback", 'File "', "sqlalchemy", "psycopg", "sqlite3", "SELECT ", "INSERT ", "UPDATE ")


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.mimetype == "application/json"
    return response.json


def refused(response: Any, status: int) -> dict[str, Any]:
    """A 4xx a client can act on: JSON, with a message, nothing internal."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.mimetype == "application/json", response.text
    body = response.json
    assert isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]
    assert not any(leak in response.text for leak in LEAKS), response.text
    return body  # type: ignore[no-any-return]


def user_id(app: Flask, username: str) -> int:
    with app.app_context():
        state = app.extensions["crm"]
        users = state.models.table("User")
        return int(
            state.db.session.execute(
                sa.select(users.c.id).where(users.c.username == username)
            ).scalar_one()
        )


def add_user(app: Flask, username: str, role: str) -> None:
    with app.app_context():
        sm = app.extensions["crm"].appbuilder.sm
        sm.add_user(
            username, username.title(), "Test", f"{username}@example.org",
            [sm.find_role(role)], "secret",
        )  # fmt: skip


def jwt(app: Flask, username: str) -> dict[str, str]:
    """Log in as a token client: Authorization headers, no cookie, no CSRF token."""
    # the fixture's SECRET_KEY ("test") is too short to sign a JWT without a
    # warning; a real one (engine.app.secret_key) is 64 bytes
    app.config["JWT_SECRET_KEY"] = "a signing key of more than thirty-two bytes"
    client = app.test_client()
    response = client.post(
        "/api/v1/security/login",
        json={"username": username, "password": "secret", "provider": "db"},
    )
    body = ok(response)
    return {"Authorization": f"Bearer {body['access_token']}"}


# -- CRUD --------------------------------------------------------------------------


def test_create_list_read_update_delete(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(API, CONFIG)
    anna, helen = login(app, "anna"), login(app, "helen")
    anna_id = user_id(app, "anna")

    created = ok(anna.api("POST", "/api/v1/customer/", {"name": "Acme", "segment": "A"}), 201)
    cid = created["id"]
    assert created["version"] == 1
    assert created["result"]["name"] == "Acme"
    assert created["result"]["manager"] == anna_id  # default: current_user
    assert created["result"]["source"] == "web"  # a read-only field's default

    deal = ok(
        anna.api("POST", "/api/v1/deal/", {
            "customer": cid, "amount": "1500.5",
            "lines": [{"product": "Chair", "qty": 2, "price": "10"}, {"product": "Desk", "price": 99.99}],
        }),
        201,
    )  # fmt: skip
    did = deal["id"]
    assert deal["result"]["number"] == "D-00001"
    assert deal["result"]["stage"] == "new"
    assert deal["result"]["amount"] == "1500.50"  # decimals are strings: no digit lost
    assert deal["result"]["total"] == "119.99"  # computed from the rows
    assert [(r["product"], r["total"]) for r in deal["result"]["lines"]] == [
        ("Chair", "20.00"), ("Desk", "99.99"),
    ]  # fmt: skip

    page = ok(anna.api("GET", "/api/v1/deal/"))
    assert set(page) == {"count", "count_capped", "ids", "next", "result"}
    assert page["count"] == 1 and page["count_capped"] is False and page["next"] is None
    assert page["ids"] == [did]
    row = page["result"][0]
    # refs come as the id and, beside it, the label a person recognises
    assert row["customer"] == cid and row["customer_label"] == "Acme"
    assert row["manager"] == anna_id and row["manager_label"] == "Anna Test"  # a name
    assert "lines" not in row  # rows of tables are read with the record

    one = ok(anna.api("GET", f"/api/v1/deal/{did}"))
    assert one["id"] == did and one["version"] == 1
    assert one["result"]["customer"] == cid and len(one["result"]["lines"]) == 2

    # an update sends the version it read, and may leave fields out
    chair = one["result"]["lines"][0]
    changed = ok(
        anna.api("PUT", f"/api/v1/deal/{did}", {
            "version": 1, "amount": 2000, "lines": [{"id": chair["id"], "qty": 3}],
        })
    )  # fmt: skip
    assert changed["version"] == 2
    assert changed["result"]["amount"] == "2000.00"
    assert changed["result"]["customer"] == cid
    assert [(r["id"], r["qty"], r["total"]) for r in changed["result"]["lines"]] == [
        (chair["id"], "3.0000", "30.00")
    ]
    assert changed["result"]["total"] == "30.00"
    assert changed["result"]["updated_by"] == anna_id

    # managers may not delete; the head may, unless something refers to the record
    assert "may not delete" in refused(anna.api("DELETE", f"/api/v1/deal/{did}"), 403)["message"]
    body = refused(helen.api("DELETE", f"/api/v1/customer/{cid}"), 409)
    assert "cannot be deleted" in body["message"] and "`customer`" in body["message"]
    assert ok(helen.api("GET", f"/api/v1/customer/{cid}"))["result"]["name"] == "Acme"
    assert ok(helen.api("DELETE", f"/api/v1/deal/{did}")) == {"message": "Deleted"}
    assert refused(helen.api("GET", f"/api/v1/deal/{did}"), 404)["message"] == "Not found"
    ok(helen.api("DELETE", f"/api/v1/customer/{cid}"))
    assert ok(helen.api("GET", "/api/v1/customer/"))["count"] == 0


def test_paging_filtering_searching_and_ordering(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(API, CONFIG)
    anna = login(app, "anna")
    for name, segment in (("Alpha", "A"), ("Beta", "B"), ("Gamma", "A"), ("Delta", "C")):
        ok(anna.api("POST", "/api/v1/customer/", {"name": name, "segment": segment}), 201)

    def names(query: str) -> list[str]:
        return [r["name"] for r in ok(anna.api("GET", f"/api/v1/customer/?{query}"))["result"]]

    assert names("order=name") == ["Alpha", "Beta", "Delta", "Gamma"]
    assert names("order=-name") == ["Gamma", "Delta", "Beta", "Alpha"]
    assert names('order=name&filter={"segment": "A"}') == ["Alpha", "Gamma"]
    assert names('order=name&filter={"segment": {"in": ["B", "C"]}}') == ["Beta", "Delta"]
    assert names("search=gam") == ["Gamma"]
    assert names("order=name&page_size=3&page=1") == ["Gamma"]
    first = ok(anna.api("GET", "/api/v1/customer/?order=name&page_size=3"))
    assert first["count"] == 4 and first["next"]
    rest = ok(anna.api("GET", f"/api/v1/customer/?order=name&page_size=3&after={first['next']}"))
    assert [r["name"] for r in rest["result"]] == ["Gamma"] and rest["next"] is None
    lookup = ok(anna.api("GET", "/api/v1/customer/_lookup?q=be"))
    assert [m["text"] for m in lookup["result"]] == ["Beta"]


def test_a_filter_value_of_the_wrong_kind_is_a_400_that_names_the_field(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(API, CONFIG)
    anna = login(app, "anna")
    ok(anna.api("POST", "/api/v1/customer/", {"name": "5 Stars"}), 201)
    for query, message in (
        ('{"name": {"gt": 5}}', "`name` is a string field and takes text, not the number `5`"),
        ('{"name": true}', "`name` is a string field and takes text, not the yes/no value `true`"),
        ('{"amount": {"gte": false}}', "`amount` is a money field and takes a number, "
         "not the yes/no value `false`"),
    ):  # fmt: skip
        doc = "deal" if "amount" in query else "customer"
        assert refused(anna.api("GET", f"/api/v1/{doc}/?filter={query}"), 400) == {
            "message": message
        }
    # the same comparison written as text is a text comparison
    assert ok(anna.api("GET", '/api/v1/customer/?filter={"name": {"gte": "5"}}'))["count"] == 1


def test_validation_errors_come_by_field_path(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(API, CONFIG)
    anna = login(app, "anna")
    cid = ok(anna.api("POST", "/api/v1/customer/", {"name": "Acme"}), 201)["id"]

    body = refused(anna.api("POST", "/api/v1/deal/", {"amount": -5, "nope": 1}), 422)
    assert body["message"] == "The record was not saved"
    assert body["errors"]["customer"] == "is required"
    assert body["errors"]["amount"] == "must be at least 0"
    assert body["errors"]["nope"].startswith("is not a field of")

    body = refused(
        anna.api("POST", "/api/v1/deal/", {
            "customer": cid,
            "lines": [{"product": "Chair"}, {"qty": "many"}, {"product": "Desk", "colour": "red"}],
        }),
        422,
    )  # fmt: skip
    assert body["errors"] == {
        "lines.1.qty": "must be a number",
        "lines.1.product": "is required",
        "lines.2.colour": "is not a field of the rows of “Lines” (lines)",
    }
    body = refused(anna.api("POST", "/api/v1/deal/", {"customer": 999999}), 422)
    assert body["errors"] == {"customer": "there is no “Customer” #999999"}
    body = refused(anna.api("POST", "/api/v1/deal/", {"customer": cid, "lines": "x"}), 422)
    assert body["errors"] == {"lines": "expects a list of rows, each a map of field → value"}
    body = refused(anna.api("POST", "/api/v1/customer/", {"name": "x" * 101}), 422)
    assert body["errors"] == {"name": "must be at most 100 characters"}
    body = refused(anna.api("POST", "/api/v1/customer/", {"name": "A", "segment": "Z"}), 422)
    assert body["errors"] == {"segment": "must be one of: A, B, C"}
    # text no database can store is refused before it reaches one
    body = refused(anna.api("POST", "/api/v1/customer/", {"name": "a\x00b"}), 422)
    assert body["errors"] == {"name": "must not contain NUL characters or unpaired surrogates"}
    body = refused(
        anna.client.post(
            "/api/v1/customer/", data='{"name": "\\ud800"}',
            headers={"X-CSRFToken": anna.csrf, "Content-Type": "application/json"},
        ),
        422,
    )  # fmt: skip
    assert body["errors"] == {"name": "must not contain NUL characters or unpaired surrogates"}
    assert ok(anna.api("GET", "/api/v1/deal/"))["count"] == 0


def test_fields_the_engine_fills_cannot_be_set(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(API, CONFIG)
    anna, helen = login(app, "anna"), login(app, "helen")
    boris_id = user_id(app, "boris")
    cid = ok(anna.api("POST", "/api/v1/customer/", {"name": "Acme"}), 201)["id"]

    # status, computed, numbering, audit, version, id: refused, by name
    body = refused(
        anna.api("POST", "/api/v1/deal/", {
            "customer": cid, "stage": "won", "total": "5", "number": "X-1", "id": 77,
            "created_by": boris_id, "created_at": "2020-01-01T00:00:00Z", "version": 9,
        }),
        422,
    )  # fmt: skip
    assert body["errors"] == {
        "stage": "changes only through a transition of the status",
        "total": "is computed from `lines | sum(attribute='total')`",
        "number": "is filled in by the engine",
        "id": "is filled in by the engine",
        "created_by": "is filled in by the engine",
        "created_at": "is filled in by the engine",
        "version": "is filled in by the engine",
    }
    body = refused(
        anna.api("POST", "/api/v1/deal/", {"customer": cid, "lines": [{"product": "A", "total": 1}]}),
        422,
    )  # fmt: skip
    assert body["errors"] == {"lines.0.total": "is computed from `(qty or 0) * (price or 0)`"}
    body = refused(anna.api("POST", "/api/v1/customer/", {"name": "B", "source": "fax"}), 422)
    assert body["errors"] == {"source": "is read-only"}

    deal = ok(anna.api("POST", "/api/v1/deal/", {"customer": cid, "amount": 5}), 201)
    did = deal["id"]
    for values, field, message in (
        ({"stage": "won"}, "stage", "changes only through a transition of the status"),
        ({"number": "D-99999"}, "number", "is filled in by the engine"),
        ({"total": "1000"}, "total", "is computed from `lines | sum(attribute='total')`"),
        ({"updated_by": boris_id}, "updated_by", "is filled in by the engine"),
        # the owner of an `own` record stays its owner
        ({"manager": boris_id}, "manager", "you may only keep your own records: it must be you"),
    ):
        body = refused(anna.api("PUT", f"/api/v1/deal/{did}", {"version": 1, **values}), 422)
        assert body["errors"] == {field: message}
    # a manager who reads only their own records may not make one for someone
    # else: they could not open it afterwards
    body = refused(
        anna.api("POST", "/api/v1/customer/", {"name": "For Boris", "manager": boris_id}), 422
    )
    assert body["errors"] == {
        "manager": "you may only give a record to yourself: you may not open other users' records"
    }
    assert ok(login(app, "boris").api("GET", "/api/v1/customer/?q=For"))["count"] == 0
    mine = ok(anna.api("POST", "/api/v1/customer/", {"name": "Mine", "manager": user_id(app, "anna")}), 201)  # fmt: skip
    assert ok(anna.api("GET", f"/api/v1/customer/{mine['id']}"))["result"]["name"] == "Mine"
    # the head may hand a record over; the status still moves only by a transition
    moved = ok(helen.api("PUT", f"/api/v1/deal/{did}", {"version": 1, "manager": boris_id}))
    assert moved["result"]["manager"] == boris_id and moved["result"]["stage"] == "new"

    # what the client read may be sent back as it is: unchanged values are no attempt
    current = ok(helen.api("GET", f"/api/v1/deal/{did}"))
    again = ok(
        helen.api(
            "PUT", f"/api/v1/deal/{did}", {**current["result"], "version": current["version"]}
        )
    )
    assert again["version"] == current["version"]
    assert again["result"]["stage"] == "new" and again["result"]["number"] == "D-00001"


def test_a_stale_version_is_refused_and_overwrites_nothing(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(API, CONFIG)
    anna, helen = login(app, "anna"), login(app, "helen")
    cid = ok(anna.api("POST", "/api/v1/customer/", {"name": "Acme"}), 201)["id"]
    ok(helen.api("PUT", f"/api/v1/customer/{cid}", {"version": 1, "name": "Acme Ltd"}))

    body = refused(anna.api("PUT", f"/api/v1/customer/{cid}", {"version": 1, "name": "Mine"}), 409)
    assert re.search(
        r"“Customer” #\d+ was changed by helen at \d{4}-\d\d-\d\d \d\d:\d\d UTC", body["message"]
    ), body["message"]
    record = ok(anna.api("GET", f"/api/v1/customer/{cid}"))
    assert record["version"] == 2 and record["result"]["name"] == "Acme Ltd"

    for version in (None, "2", True, 2.0):
        body = refused(
            anna.api("PUT", f"/api/v1/customer/{cid}", {"version": version, "name": "Mine"}), 422
        )
        assert body["errors"] == {"version": "required"}
    body = refused(anna.api("PUT", f"/api/v1/customer/{cid}", {"name": "Mine"}), 422)
    assert "version" in body["message"]
    assert ok(anna.api("GET", f"/api/v1/customer/{cid}"))["result"]["name"] == "Acme Ltd"
    assert (
        ok(anna.api("PUT", f"/api/v1/customer/{cid}", {"version": 2, "name": "Mine"}))["version"]
        == 3
    )


# -- transitions ---------------------------------------------------------------------


def test_transitions_and_history(crm_app: Callable[..., Flask], login: Callable[..., Any]) -> None:
    app = crm_app(API, CONFIG)
    anna, helen = login(app, "anna"), login(app, "helen")
    cid = ok(anna.api("POST", "/api/v1/customer/", {"name": "Acme"}), 201)["id"]
    did = ok(anna.api("POST", "/api/v1/deal/", {"customer": cid}), 201)["id"]
    url = f"/api/v1/deal/{did}/transition"

    # `when` false and a required field empty: both reasons at once
    body = refused(anna.api("POST", url, {"to": "proposal"}), 422)
    assert body["message"] == "The transition was refused"
    assert body["reasons"] == [
        "the condition `amount and amount > 0` is not met",
        "“Planned close” (planned_close) must be filled in to enter “Proposal” (proposal)",
    ]
    assert body["errors"] == {
        "planned_close": "“Planned close” (planned_close) must be filled in to enter “Proposal” (proposal)"
    }
    # the fields a transition needs come along with it
    moved = ok(
        anna.api(
            "POST",
            url,
            {"to": "proposal", "fields": {"amount": 100, "planned_close": "2031-03-01"}},
        )
    )
    assert moved["id"] == did and moved["state"] == "proposal" and moved["version"] == 2
    assert moved["result"]["stage"] == "proposal"
    assert moved["result"]["planned_close"] == "2031-03-01"
    # a role the transition does not name
    body = refused(anna.api("POST", url, {"to": "won"}), 422)
    assert body["reasons"] == ["only these roles may make this move: “Head of sales” (sales_head)"]
    # not listed
    body = refused(anna.api("POST", url, {"to": "new"}), 422)
    assert body["reasons"] == ["no transition from “Proposal” (proposal) to “New” (new)"]
    # not a state
    body = refused(anna.api("POST", url, {"to": "paid"}), 422)
    assert body["errors"] == {"to": "one of new, proposal, won, lost"}
    # bad field values: by field, nothing moves
    body = refused(anna.api("POST", url, {"to": "lost", "fields": {"amount": "lots"}}), 422)
    assert body["errors"] == {"amount": "must be a number"}
    # a stale version: a conflict, as for PUT
    body = refused(
        anna.api("POST", url, {"to": "lost", "version": 1, "fields": {"loss_reason": "x"}}), 409
    )
    assert re.search(
        r"“Deal” #\d+ was changed by anna at \d{4}-\d\d-\d\d \d\d:\d\d UTC", body["message"]
    ), body["message"]
    assert ok(anna.api("GET", f"/api/v1/deal/{did}"))["result"]["stage"] == "proposal"

    won = ok(helen.api("POST", url, {"to": "won", "version": 2}))
    assert won["state"] == "won"
    # a final state is left only through a transition listed from it
    body = refused(helen.api("POST", url, {"to": "lost", "fields": {"loss_reason": "x"}}), 422)
    assert body["reasons"][0].startswith("“Won” (won) is final")

    history = ok(anna.api("GET", f"/api/v1/deal/{did}/history"))["result"]
    assert [(h["from"], h["to"], h["by"]) for h in history] == [
        ("proposal", "won", "Helen Test"), ("new", "proposal", "Anna Test"), (None, "new", "Anna Test"),
    ]  # fmt: skip
    assert all(h["field"] == "stage" for h in history)
    assert history[0]["by_id"] == user_id(app, "helen")
    moments = [dt.datetime.fromisoformat(h["at"]) for h in history]
    assert moments == sorted(moments, reverse=True) and all(m.tzinfo for m in moments)

    # a type without statuses has neither endpoint
    refused(anna.api("POST", f"/api/v1/customer/{cid}/transition", {"to": "x"}), 404)
    refused(anna.api("GET", f"/api/v1/customer/{cid}/history"), 404)


def test_a_step_that_needs_the_next_one_planned(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    """The base layer: an Interaction is done only with the next one planned,
    linked to the same Interest, in the same call."""
    app = crm_app("{}", BASE)
    anna = login(app, "anna")
    cid = ok(anna.api("POST", "/api/v1/customer/", {"name": "Acme"}), 201)["id"]
    iid = ok(anna.api("POST", "/api/v1/interest/", {"subject": "Chairs", "customer": cid}), 201)[
        "id"
    ]
    first = ok(
        anna.api("POST", "/api/v1/interaction/", {
            "subject": "First call", "planned_at": "2030-01-01T10:00:00Z", "customer": cid,
            "interest": iid,
        }),
        201,
    )["id"]  # fmt: skip
    url = f"/api/v1/interaction/{first}/transition"
    done = {"to": "done", "fields": {"result": "They want 40 chairs"}}

    body = refused(anna.api("POST", url, done), 422)
    assert body["reasons"] == [
        "entering “Done” (done) needs at least 1 new “Interaction” planned in the future and "
        "linked through “Interest” (interest); 0 given"
    ]
    assert body["errors"] == {"next": body["reasons"][0]}
    past = {"subject": "Too late", "planned_at": "2001-01-01T10:00:00Z", "customer": cid}
    body = refused(anna.api("POST", url, {**done, "next": [past]}), 422)
    assert "which is in the past" in body["reasons"][0]
    body = refused(
        anna.api("POST", url, {**done, "next": [{"subject": "No date", "customer": cid}]}), 422
    )
    assert body["errors"] == {"next.0.planned_at": "is required"}
    other = ok(anna.api("POST", "/api/v1/interest/", {"subject": "Desks", "customer": cid}), 201)
    body = refused(
        anna.api("POST", url, {**done, "next": [{**past, "interest": other["id"]}]}), 422
    )
    assert body["errors"] == {"next.0.interest": "is filled in from this “Interaction”"}
    refused(anna.api("POST", url, {**done, "next": {"subject": "x"}}), 400)
    assert ok(anna.api("GET", "/api/v1/interaction/"))["count"] == 1  # nothing was saved

    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).replace(microsecond=0)
    nxt = {"subject": "Send the offer", "planned_at": future.isoformat(), "customer": cid}
    moved = ok(anna.api("POST", url, {**done, "next": [nxt]}))
    assert moved["state"] == "done" and moved["result"]["result"] == "They want 40 chairs"
    rows = ok(anna.api("GET", '/api/v1/interaction/?filter={"status": "planned"}'))["result"]
    assert [(r["subject"], r["interest"], r["interest_label"]) for r in rows] == [
        ("Send the offer", iid, "Chairs")
    ]
    assert dt.datetime.fromisoformat(rows[0]["planned_at"]) == future


VIEWINGS = """
roles: {manager: {label: Manager}, sales_head: {label: Head}}
documents:
  Customer:
    title: "{{ name }}"
    fields: {name: {type: string, required: true}}
    access: {manager: {read: true, create: true}}
  Viewing:
    fields:
      buyer: {type: ref, to: Customer, required: true}
    statuses:
      initial: planned
      states:
        planned: {}
        held:
          final: true
          require_next: {document: Interaction, link: {customer: buyer, viewing: self}}
    access: {manager: {read: true, create: true, update: true}}
  Interaction:
    fields:
      customer:   {type: ref, to: Customer, required: true}
      viewing:    {type: ref, to: Viewing}
      planned_at: {type: datetime, required: true}
      subject:    {type: string}
    access: {manager: {read: true, create: true, update: true}}
"""


def test_the_next_document_takes_the_mapped_fields(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    """`link: {customer: buyer, viewing: self}`: the follow-up of a viewing is for
    its buyer and refers to it, though the refs have other names."""
    app = crm_app(VIEWINGS, CONFIG)
    anna = login(app, "anna")
    cid = ok(anna.api("POST", "/api/v1/customer/", {"name": "Anna Petrova"}), 201)["id"]
    vid = ok(anna.api("POST", "/api/v1/viewing/", {"buyer": cid}), 201)["id"]
    nxt = {"subject": "Call back", "planned_at": "2099-01-01T10:00:00Z"}
    moved = ok(anna.api("POST", f"/api/v1/viewing/{vid}/transition", {"to": "held", "next": [nxt]}))
    assert moved["state"] == "held"
    rows = ok(anna.api("GET", "/api/v1/interaction/"))["result"]
    assert [(r["subject"], r["customer"], r["viewing"]) for r in rows] == [("Call back", cid, vid)]


# -- robustness ------------------------------------------------------------------------


def test_bad_requests_get_a_4xx_json_message(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(API, CONFIG)
    admin = login(app, "admin")
    cid = ok(admin.api("POST", "/api/v1/customer/", {"name": "Acme"}), 201)["id"]
    did = ok(admin.api("POST", "/api/v1/deal/", {"customer": cid}), 201)["id"]
    json_ct = {"X-CSRFToken": admin.csrf, "Content-Type": "application/json"}

    def raw(method: str, url: str, data: Any, headers: dict[str, str]) -> Any:
        return admin.client.open(url, method=method, data=data, headers=headers)

    cases: list[tuple[Any, int, str]] = [
        (raw("POST", "/api/v1/customer/", "{bad", json_ct), 400, "not valid JSON"),
        (raw("POST", "/api/v1/customer/", b"\xff\xfe{", json_ct), 400, "not valid JSON"),
        (raw("POST", "/api/v1/customer/", "[" * 100_000, json_ct), 400, "not valid JSON"),
        (raw("POST", "/api/v1/customer/", "", json_ct), 400, "not valid JSON"),
        (raw("POST", "/api/v1/customer/", '["name"]', json_ct), 400, "not a JSON object"),
        (raw("PUT", f"/api/v1/customer/{cid}", "42", json_ct), 400, "not a JSON object"),
        (raw("POST", f"/api/v1/deal/{did}/transition", "null", json_ct), 400, "not a JSON object"),
        (raw("POST", "/api/v1/customer/", '{"name": "x"}',
             {"X-CSRFToken": admin.csrf, "Content-Type": "text/plain"}), 415, "Content-Type"),
        (admin.client.post("/api/v1/customer/", data={"name": "x"},
                           headers={"X-CSRFToken": admin.csrf}), 415, "Content-Type"),
        (admin.api("GET", "/api/v1/customer/99999999999999999999"), 404, "Not found"),
        (admin.api("GET", f"/api/v1/customer/{2**31}"), 404, "Not found"),
        (admin.api("GET", "/api/v1/customer/0"), 404, "Not found"),
        (admin.api("GET", "/api/v1/customer/-1"), 404, "not found"),
        (admin.api("GET", "/api/v1/customer/abc"), 404, "not found"),
        (admin.api("PUT", "/api/v1/customer/99999999999999999999", {"version": 1}), 404, "Not found"),
        (admin.api("DELETE", "/api/v1/customer/99999999999999999999"), 404, "Not found"),
        (admin.api("POST", "/api/v1/deal/99999999999999999999/transition", {"to": "lost"}), 404, "Not found"),
        (admin.api("GET", "/api/v1/deal/99999999999999999999/history"), 404, "Not found"),
        (admin.api("GET", "/api/v1/nothing/"), 404, "not found"),
        (admin.api("PATCH", f"/api/v1/customer/{cid}", {}), 405, "not allowed"),
        (admin.api("GET", "/api/v1/customer/?filter={bad"), 400, "not valid JSON"),
        (admin.api("GET", "/api/v1/customer/?filter=[1]"), 400, "must be a JSON object"),
        (admin.api("GET", '/api/v1/customer/?filter={"nope": 1}'), 400, "`Customer` has no field `nope`"),
        (admin.api("GET", '/api/v1/customer/?filter={"manager.nope": 1}'), 400, "has no field `nope`"),
        (admin.api("GET", '/api/v1/customer/?filter={"name": {"like": "a"}}'), 400, "unknown operator `like`"),
        (admin.api("GET", '/api/v1/customer/?filter={"name": {"gt": "a"}, "segment": {"gt": "A"}}'), 400,
         "does not apply"),
        (admin.api("GET", '/api/v1/customer/?filter={"id": {"in": "x"}}'), 400, "takes a list"),
        (admin.api("GET", '/api/v1/customer/?filter={"id": "abc"}'), 400, "must be a whole number"),
        (admin.api("GET", '/api/v1/customer/?filter={"manager": 99999999999999999999}'), 400,
         "must be a record id"),
        (admin.api("GET", '/api/v1/customer/?filter={"created_at": {"gte": "0001-01-01T00:00+14:00"}}'),
         400, "date and time"),
        (admin.api("GET", '/api/v1/customer/?filter={"name": "\\u0000"}'), 400, "NUL"),
        (admin.api("GET", "/api/v1/customer/?page_size=0"), 400, "`page_size`"),
        (admin.api("GET", "/api/v1/customer/?page_size=101"), 400, "`page_size`"),
        (admin.api("GET", "/api/v1/customer/?page_size=ten"), 400, "whole numbers"),
        (admin.api("GET", "/api/v1/customer/?page=-1"), 400, "`page`"),
        (admin.api("GET", "/api/v1/customer/?page=99999999999999999999999"), 400, "`after` cursor"),
        (admin.api("GET", "/api/v1/customer/?order=nope"), 400, "cannot order by `nope`"),
        (admin.api("GET", "/api/v1/customer/?order=--name"), 400, "cannot order by `--name`"),
        (admin.api("GET", "/api/v1/customer/?order=manager"), 400, "is a reference"),
        (admin.api("GET", "/api/v1/customer/?after=garbage"), 400, "cursor is not valid"),
        (admin.api("POST", f"/api/v1/deal/{did}/transition", {"to": "nowhere"}), 422, "must name a state"),
        (admin.api("POST", f"/api/v1/deal/{did}/transition", {"to": ["lost"]}), 422, "must name a state"),
        (admin.api("POST", f"/api/v1/deal/{did}/transition", {}), 422, "must name a state"),
        (admin.api("POST", f"/api/v1/deal/{did}/transition", {"to": "lost", "fields": []}), 400, "`fields`"),
        (admin.api("POST", f"/api/v1/deal/{did}/transition", {"to": "lost", "next": [1]}), 400, "`next`"),
        (admin.api("POST", f"/api/v1/deal/{did}/transition", {"to": "lost", "version": "1"}), 400,
         "`version`"),
        (admin.api("POST", f"/api/v1/deal/{did}/transition", {"to": "lost", "fields": {"loss_reason": "x"},
                                                               "next": [{"subject": "x"}]}), 422,
         "transition was refused"),
        (admin.api("POST", "/api/v1/deal/", {"customer": cid, "planned_close": "2020-13-45"}), 422,
         "not saved"),
        (admin.api("POST", "/api/v1/deal/", {"customer": True}), 422, "not saved"),
        (admin.api("POST", "/api/v1/deal/", {"customer": cid, "amount": 1e400}), 422, "not saved"),
        (admin.api("POST", "/api/v1/deal/", {"customer": cid, "amount": "NaN"}), 422, "not saved"),
        (admin.api("POST", "/api/v1/deal/", {"customer": cid, "amount": 10**30}), 422, "not saved"),
        (admin.api("POST", "/api/v1/deal/", {"customer": 2**31}), 422, "not saved"),
        (admin.api("POST", "/api/v1/deal/", {"customer": cid, "lines": [{"id": "x", "product": "a"}]}),
         422, "not saved"),
    ]  # fmt: skip
    for response, status, words in cases:
        body = refused(response, status)
        assert words in body["message"], (status, words, body)
    # nothing bad was written
    assert ok(admin.api("GET", "/api/v1/deal/"))["count"] == 1
    assert ok(admin.api("GET", f"/api/v1/deal/{did}"))["result"]["stage"] == "new"


# -- who may call -----------------------------------------------------------------------


def test_callers_must_log_in(crm_app: Callable[..., Flask], login: Callable[..., Any]) -> None:
    app = crm_app(API, CONFIG)
    anna = login(app, "anna")
    cid = ok(anna.api("POST", "/api/v1/customer/", {"name": "Acme"}), 201)["id"]
    nobody = app.test_client()
    for method, url in (("GET", "/api/v1/customer/"), ("POST", "/api/v1/customer/"),
                        ("GET", f"/api/v1/customer/{cid}"), ("PUT", f"/api/v1/customer/{cid}"),
                        ("DELETE", f"/api/v1/customer/{cid}"), ("GET", "/api/v1/customer/_lookup"),
                        ("GET", "/api/v1/deal/1/history"), ("POST", "/api/v1/deal/1/transition")):  # fmt: skip
        body = refused(nobody.open(url, method=method, json={"name": "x"}), 401)
        assert body["message"].startswith("Log in first")
    refused(nobody.get("/api/v1/customer/", headers={"Authorization": "Bearer not.a.token"}), 401)
    refused(
        nobody.get("/api/v1/customer/", headers={"Authorization": "Basic YW5uYTpzZWNyZXQ="}), 401
    )
    wrong = nobody.post(
        "/api/v1/security/login", json={"username": "anna", "password": "nope", "provider": "db"}
    )
    assert wrong.status_code == 401


def test_token_clients_need_no_csrf_token(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(API, CONFIG)
    headers = jwt(app, "anna")
    client = app.test_client()
    created = client.post("/api/v1/customer/", json={"name": "By token"}, headers=headers)
    assert ok(created, 201)["result"]["manager"] == user_id(app, "anna")
    cid = created.json["id"]
    assert ok(client.get("/api/v1/customer/", headers=headers))["ids"] == [cid]
    ok(
        client.put(
            f"/api/v1/customer/{cid}", json={"version": 1, "name": "Renamed"}, headers=headers
        )
    )
    # the token says who calls, whatever session the client also has
    boris = login(app, "boris")
    seen = boris.client.get("/api/v1/customer/", headers=headers)
    assert ok(seen)["ids"] == [cid]
    assert ok(boris.api("GET", "/api/v1/customer/"))["ids"] == []
    refused(boris.client.get("/api/v1/customer/", headers={"Authorization": "Bearer x"}), 401)
    # the OpenAPI document is there for token clients too
    assert "/api/v1/customer/" in ok(client.get("/api/v1/_openapi", headers=headers))["paths"]


def test_a_browser_session_must_send_the_csrf_header(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(API, CONFIG)
    anna = login(app, "anna")
    cid = ok(anna.api("POST", "/api/v1/customer/", {"name": "Acme"}), 201)["id"]
    for method, url, body in (("POST", "/api/v1/customer/", {"name": "Forged"}),
                              ("PUT", f"/api/v1/customer/{cid}", {"version": 1, "name": "Forged"}),
                              ("DELETE", f"/api/v1/customer/{cid}", None)):  # fmt: skip
        for headers in ({}, {"X-CSRFToken": "forged"}):
            response = anna.client.open(url, method=method, json=body, headers=headers)
            assert "CSRF" in refused(response, 400)["message"]
    page = ok(anna.api("GET", "/api/v1/customer/"))
    assert page["count"] == 1 and page["result"][0]["name"] == "Acme"


def test_a_role_without_access_is_forbidden(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(API, CONFIG)
    add_user(app, "olga", "operator")  # a role no type gives any access
    anna = login(app, "anna")
    cid = ok(anna.api("POST", "/api/v1/customer/", {"name": "Acme"}), 201)["id"]
    did = ok(anna.api("POST", "/api/v1/deal/", {"customer": cid}), 201)["id"]
    headers = jwt(app, "olga")
    client = app.test_client()
    for method, url, action in (
        ("GET", "/api/v1/deal/", "read"), ("GET", f"/api/v1/deal/{did}", "read"),
        ("GET", "/api/v1/deal/_lookup?q=D", "read"), ("GET", f"/api/v1/deal/{did}/history", "read"),
        ("POST", "/api/v1/deal/", "create"), ("PUT", f"/api/v1/deal/{did}", "update"),
        ("POST", f"/api/v1/deal/{did}/transition", "update"), ("DELETE", f"/api/v1/deal/{did}", "delete"),
        ("GET", "/api/v1/customer/", "read"), ("POST", "/api/v1/customer/", "create"),
    ):  # fmt: skip
        response = client.open(
            url, method=method, json={"to": "lost", "version": 1}, headers=headers
        )
        body = refused(response, 403)
        assert body["message"] == f"Your roles may not {action} {url.split('/')[3].title()} records"
    assert ok(anna.api("GET", f"/api/v1/deal/{did}"))["version"] == 1


def test_the_openapi_document_describes_what_may_be_sent(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(API, CONFIG)
    spec = ok(login(app, "admin").api("GET", "/api/v1/_openapi"))
    paths = spec["paths"]
    assert {"get", "post"} <= set(paths["/api/v1/deal/"])
    assert {"get", "put", "delete"} <= set(paths["/api/v1/deal/{pk}"])
    assert "post" in paths["/api/v1/deal/{pk}/transition"]
    answers = paths["/api/v1/deal/{pk}/transition"]["post"]["responses"]
    assert "409" in answers
    refusal = answers["422"]["content"]["application/json"]["schema"]
    assert refusal["properties"]["reasons"] == {"type": "array", "items": {"type": "string"}}
    assert "get" in paths["/api/v1/deal/{pk}/history"]
    assert "/api/v1/customer/{pk}/transition" not in paths
    assert "/api/v1/customer/{pk}/history" not in paths
    schemas = spec["components"]["schemas"]
    post, put = schemas["DealApi.post"], schemas["DealApi.put"]
    assert set(post["properties"]) == {
        "customer",
        "amount",
        "manager",
        "planned_close",
        "loss_reason",
        "lines",
    }
    assert post["required"] == ["customer"]
    assert set(put["properties"]) == set(post["properties"]) | {"version"}
    assert put["required"] == ["version"]
    assert set(schemas["DealApi_lines_write"]["properties"]) == {"id", "product", "qty", "price"}
    get = schemas["DealApi.get"]["properties"]
    assert {"stage", "number", "total", "version", "created_at"} <= set(get)
    assert get["amount"]["type"] == "string"  # decimals are read as strings
    assert "customer_label" in schemas["DealApi.row"]["properties"]
    assert schemas["CustomerApi.post"]["properties"]["segment"]["enum"] == ["A", "B", "C", None]
    assert "source" not in schemas["CustomerApi.post"]["properties"]  # read-only


@pytest.mark.parametrize("username", ["anna", "helen"])
def test_lookup_answers_within_the_rules(
    crm_app: Callable[..., Flask], login: Callable[..., Any], username: str
) -> None:
    app = crm_app(API, CONFIG)
    anna, boris = login(app, "anna"), login(app, "boris")
    ok(anna.api("POST", "/api/v1/customer/", {"name": "Anna's"}), 201)
    ok(boris.api("POST", "/api/v1/customer/", {"name": "Boris's"}), 201)
    user = login(app, username)
    texts = {m["text"] for m in ok(user.api("GET", "/api/v1/customer/_lookup?q="))["result"]}
    assert texts == ({"Anna's"} if username == "anna" else {"Anna's", "Boris's"})
