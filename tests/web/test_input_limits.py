"""Input out of range is the caller's mistake, answered 4xx with a message,
on SQLite and on PostgreSQL alike: ids past the 32-bit columns, digits that
Python reads but no form sends (``²``), relative dates past the calendar, and
texts longer than their field takes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask

from tests.web.conftest import Browser
from tests.web.test_tasks import CONFIG, ROUTE, new_deal, task_ids

TOO_BIG = 2**31


def refused(response: Any, status: int, words: str) -> None:
    assert response.status_code == status, (response.status_code, response.text[:500])
    body = response.get_json(silent=True)
    text = body["message"] if body else response.text
    assert words in text, text


def test_out_of_range_ids_and_dates_in_filters(
    crm_app: Callable[..., Flask], login: Callable[..., Browser]
) -> None:
    app = crm_app()
    admin = login(app, "admin")
    assert admin.api("POST", "/api/v1/customer/", {"name": "Acme"}).status_code == 201

    def listing(spec: dict[str, Any]) -> Any:
        return admin.api("GET", "/api/v1/customer/?filter=" + quote(json.dumps(spec)))

    refused(listing({"id": TOO_BIG}), 400, "`id`: `2147483648` is not a record id")
    refused(listing({"id": {"in": [1, TOO_BIG]}}), 400, "is not a record id")
    refused(listing({"id": {"gt": -TOO_BIG - 1}}), 400, "is not a record id")
    refused(listing({"created_at": {"gte": "-99999999d"}}), 400, "`-99999999d` is too far")
    refused(listing({"created_at": "+99999999999w"}), 400, "is too far")
    refused(listing({"created_at": {"lt": "-9999999999h"}}), 400, "is too far")
    # a ref given as text with digits int() reads but no form sends
    deal = admin.api("POST", "/api/v1/deal/", {"customer": "²"})
    assert deal.status_code == 422 and deal.json["errors"] == {"customer": "must be a record id"}
    # in range, they still work
    assert listing({"id": {"lt": TOO_BIG - 1}}).json["count"] == 1
    assert listing({"created_at": {"gte": "-36500d"}}).json["count"] == 1
    # the HTML list's filters take ids the same way
    assert admin.get(f"/customer/?f_manager={TOO_BIG}").status_code in (200, 400)


@pytest.fixture
def tasks_app(crm_app: Callable[..., Flask]) -> Flask:
    return crm_app(ROUTE, CONFIG)


def test_out_of_range_task_and_notification_ids(tasks_app: Flask) -> None:
    anna = Browser(tasks_app, "anna", "secret")
    new_deal(anna, tasks_app)
    [task] = task_ids(anna.get("/tasks/").text)
    refused(
        anna.api("POST", f"/api/v1/task/{TOO_BIG}/complete", json={"outcome": "agreed"}),
        404,
        "There is no such task",
    )
    token = Browser.token_from(anna.get(f"/task/{task}").text)
    form = anna.client.post(
        f"/tasks/{TOO_BIG}/complete", data={"csrf_token": token, "outcome": "agreed"}
    )
    assert form.status_code == 302
    assert "There is no such task" in anna.get("/tasks/").text
    assert anna.get("/notifications/").status_code == 200
    for raw in ("²", "١", str(TOO_BIG), "-1", "1e3"):
        read = anna.client.post("/notifications/read", data={"csrf_token": token, "id": raw})
        refused(read, 400, "`id` is a notification number")
    # the task was not touched
    assert task_ids(anna.get("/tasks/").text) == [task]


def test_a_text_longer_than_its_limit_is_refused(
    crm_app: Callable[..., Flask], login: Callable[..., Browser]
) -> None:
    """A text field takes 100 000 characters unless the configuration says
    otherwise (`limits: {text_length: ...}`); REST names the field."""
    app = crm_app()
    anna = login(app, "anna")
    cid = anna.api("POST", "/api/v1/customer/", {"name": "Acme"}).json["id"]
    long = anna.api("POST", "/api/v1/deal/", {"customer": cid, "loss_reason": "x" * 100_001})
    refused(long, 422, "not saved")
    assert long.json["errors"] == {
        "loss_reason": "must be at most 100000 characters (it has 100001)"
    }
    fits = anna.api("POST", "/api/v1/deal/", {"customer": cid, "loss_reason": "x" * 100_000})
    assert fits.status_code == 201, fits.text[:300]

    small = crm_app(config="name: Sales Ltd\nregion: RU\nlayers: []\nlimits: {text_length: 50}\n")
    anna = login(small, "anna")
    cid = anna.api("POST", "/api/v1/customer/", {"name": "Acme"}).json["id"]
    long = anna.api("POST", "/api/v1/deal/", {"customer": cid, "loss_reason": "y" * 51})
    assert long.status_code == 422
    assert long.json["errors"] == {"loss_reason": "must be at most 50 characters (it has 51)"}
    # and the HTML form says the same beside the field
    page = anna.post_form("/deal/add", {"customer": str(cid), "loss_reason": "y" * 51})
    assert page.status_code == 422
    assert "must be at most 50 characters (it has 51)" in page.text


SEARCHED = """
roles:
  manager: {label: Manager}
documents:
  Thing:
    fields:
      code: {type: integer}
      other: {type: ref, to: Other}
    list: {columns: [code, other], search: [code, other]}
    access:
      manager: {read: all, create: true, update: all}
  Other:
    fields:
      qty: {type: integer}
    access:
      manager: {read: all, create: true}
"""


def test_search_with_numbers_no_column_holds(
    crm_app: Callable[..., Flask], login: Callable[..., Browser]
) -> None:
    """A search term is matched as a number only when the column can hold it:
    otherwise it matches nothing, rather than failing in the database."""
    anna = login(crm_app(SEARCHED), "anna")
    anna.csrf = Browser.token_from(anna.get("/thing/add").text)
    other = anna.api("POST", "/api/v1/other/", {"qty": 1}).json["id"]
    assert anna.api("POST", "/api/v1/thing/", {"code": 7, "other": other}).status_code == 201
    for term in ("²", "-²", str(TOO_BIG), "9" * 30):
        found = anna.api("GET", "/api/v1/thing/?search=" + quote(term))
        assert found.status_code == 200, (term, found.status_code)
        assert found.json["count"] == 0
    assert anna.api("GET", "/api/v1/thing/?search=7").json["count"] == 1
    assert anna.api("GET", f"/api/v1/thing/?search={other}").json["count"] == 1


def test_a_text_field_with_its_own_max_length(
    crm_app: Callable[..., Flask], login: Callable[..., Browser]
) -> None:
    metadata = SEARCHED.replace("qty: {type: integer}", "note: {type: text, max_length: 5}")
    anna = login(crm_app(metadata), "anna")
    anna.csrf = Browser.token_from(anna.get("/thing/add").text)
    long = anna.api("POST", "/api/v1/other/", {"note": "abcdef"})
    assert long.status_code == 422
    assert long.json["errors"] == {"note": "must be at most 5 characters (it has 6)"}
    assert anna.api("POST", "/api/v1/other/", {"note": "abcde"}).status_code == 201
