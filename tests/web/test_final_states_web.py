"""A record in a final state, seen through the web: the record page offers no
Edit or Delete, the form keeps its rows read-only, and the API refuses changes
by field with a 422 (a delete with a 409, like other refused deletes)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from flask import Flask

from tests.web.conftest import SALES, Browser

#: the head may still correct the loss reason of a lost deal; nothing else changes
EDITABLE = SALES.replace(
    "require: [loss_reason]}",
    "require: [loss_reason], editable: {roles: [sales_head], fields: [loss_reason]}}",
)


def lost_deal(user: Browser) -> int:
    created = user.api(
        "POST", "/api/v1/deal/", {"customer": customer(user), "amount": "100",
                                  "lines": [{"product": "Tea", "qty": 2, "price": 10}]},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    did = int(created.json["id"])
    moved = user.api(
        "POST", f"/api/v1/deal/{did}/transition",
        {"to": "lost", "version": 1, "fields": {"loss_reason": "too dear"}},
    )  # fmt: skip
    assert moved.status_code == 200, moved.text
    return did


def customer(user: Browser) -> int:
    created = user.api("POST", "/api/v1/customer/", {"name": "Acme"})
    assert created.status_code == 201, created.text
    return int(created.json["id"])


def test_a_lost_deal_has_no_edit_and_the_api_refuses_its_changes(
    crm_app: Callable[..., Flask], login: Callable[[Flask, str], Browser]
) -> None:
    app = crm_app()
    helen = login(app, "helen")
    did = lost_deal(helen)
    page = helen.get(f"/deal/{did}")
    assert page.status_code == 200
    assert "crm-edit" not in page.text and "crm-delete" not in page.text

    got = helen.api("GET", f"/api/v1/deal/{did}").json["result"]
    rows = [{**got["lines"][0], "qty": 5}]
    refused = helen.api("PUT", f"/api/v1/deal/{did}", {"version": got["version"], "lines": rows})
    assert refused.status_code == 422, refused.text
    assert refused.json["errors"] == {
        "lines": f"“Deal” {got['number']} Acme is Lost: its fields can no longer be changed"
    }
    after = helen.api("GET", f"/api/v1/deal/{did}").json["result"]
    assert after["total"] == got["total"] == "20.00" and after["version"] == got["version"]
    assert helen.api("DELETE", f"/api/v1/deal/{did}").status_code == 409


def test_editable_by_role_shows_edit_with_only_those_fields_open(
    crm_app: Callable[..., Flask], login: Callable[[Flask, str], Browser]
) -> None:
    app = crm_app(EDITABLE)
    helen, anna = login(app, "helen"), login(app, "anna")
    did = lost_deal(anna)
    assert "crm-edit" not in anna.get(f"/deal/{did}").text
    assert "crm-edit" in helen.get(f"/deal/{did}").text
    form = helen.get(f"/deal/{did}/edit").text
    assert re.search(r'<textarea[^>]*name="loss_reason"(?![^>]*readonly)', form), form
    assert re.search(r'<input[^>]*name="amount"[^>]*readonly', form)
    assert "+ Row" not in form  # the lines stay as they are
    got: Any = helen.api("GET", f"/api/v1/deal/{did}").json["result"]
    ok = helen.api("PUT", f"/api/v1/deal/{did}", {"version": got["version"], "loss_reason": "x"})
    assert ok.status_code == 200, ok.text
    bad = helen.api("PUT", f"/api/v1/deal/{did}", {"version": got["version"] + 1, "amount": "5"})
    assert bad.status_code == 422 and set(bad.json["errors"]) == {"amount"}
