"""A ref never shows what its target's access rule hides.

ContactPerson is readable by every manager; its Customer is `own`. boris must
not learn anything about anna's customer through boris-readable contacts: not
by a dotted filter (one character at a time), not by the `customer_label`
beside the id, not by search, not on the record page.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import Flask

INN = "7707083893"
BASE = "name: Base Ltd\nlocale: en\nregion: RU\nlayers: [base]\n"


def _setup(crm_app: Callable[..., Flask], login: Callable[..., Any]) -> tuple[Any, Any, int, int]:
    app = crm_app("{}", BASE)
    anna, boris = login(app, "anna"), login(app, "boris")
    customer = anna.api(
        "POST",
        "/api/v1/customer/",
        {"name": "Romashka", "email": "bob.secret@example.org", "inn": INN},
    )
    assert customer.status_code == 201, customer.text
    cid = customer.json["id"]
    contact = anna.api("POST", "/api/v1/contact_person/", {"customer": cid, "name": "Ivan"})
    assert contact.status_code == 201, contact.text
    return anna, boris, cid, contact.json["id"]


def _list(who: Any, spec: dict[str, Any], **args: str) -> Any:
    query = "&".join(f"{k}={v}" for k, v in args.items())
    r = who.api("GET", f"/api/v1/contact_person/?filter={json.dumps(spec)}&{query}")
    assert r.status_code == 200, r.text
    return r.json


def test_a_dotted_filter_does_not_read_a_hidden_customer(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    anna, boris, cid, pid = _setup(crm_app, login)
    assert boris.api("GET", f"/api/v1/customer/{cid}").status_code == 404
    secret = {"id": pid, "customer.email": {"contains": "bob.secret"}}
    assert _list(anna, secret)["count"] == 1
    seen = _list(boris, secret)
    assert seen["count"] == 0 and seen["result"] == []
    # nor by name, by a negated condition, or by search through the ref
    assert _list(boris, {"id": pid, "customer.name": "Romashka"})["count"] == 0
    assert _list(boris, {"id": pid, "customer": "Romashka"})["count"] == 0
    assert _list(boris, {"id": pid, "customer.name": {"ne": "Romashka"}})["count"] == 1
    assert _list(boris, {"id": pid, "customer.name": {"ne": "Zzz"}})["count"] == 1


def test_a_hidden_customer_shows_no_label(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    anna, boris, cid, pid = _setup(crm_app, login)
    mine = _list(anna, {"id": pid})["result"][0]
    assert mine["customer"] == cid and mine["customer_label"] == "Romashka"
    theirs = _list(boris, {"id": pid})["result"][0]
    assert theirs["customer"] == cid
    assert theirs["customer_label"] == f"#{cid} — no access"
    page = boris.get("/contact_person/")
    assert page.status_code == 200 and "Romashka" not in page.text
    assert f"#{cid} — no access" in page.text
    record = boris.get(f"/contact_person/{pid}")
    assert record.status_code == 200 and "Romashka" not in record.text, record.text
    assert "Romashka" in anna.get(f"/contact_person/{pid}").text
    # the REST record and the list's CSV export (a ref by its key, the INN) name it by its id only
    one = boris.api("GET", f"/api/v1/contact_person/{pid}")
    assert one.status_code == 200 and "Romashka" not in one.text
    assert one.json["result"]["customer"] == cid
    csv_text = boris.get("/contact_person/export.csv").get_data(as_text=True)
    assert "Ivan" in csv_text and "Romashka" not in csv_text and INN not in csv_text
    assert INN in anna.get("/contact_person/export.csv").get_data(as_text=True)


def test_the_no_access_label_speaks_the_configs_language(
    load_config: Callable[..., Any],
) -> None:
    from engine import access

    ru = load_config({}, "name: X\nlocale: ru\nregion: RU\nlayers: []\n")
    en = load_config({}, "name: X\nlocale: en\nregion: RU\nlayers: []\n")
    assert access.hidden_label(ru, 201) == "#201 — нет доступа"
    assert access.hidden_label(en, 201) == "#201 — no access"
