"""Access rules as users meet them in the pages: the same rows in lists,
counts, record pages, edits, deletes, ref pickers and exports; another
user's record is a 404; owner, status, version and audit fields cannot be
set through a form unless the rules allow it."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from flask import Flask


def record_id(response: Any) -> int:
    assert response.status_code == 302, response.text
    return int(response.headers["Location"].rstrip("/").rsplit("/", 1)[1])


def user_id(app: Flask, username: str) -> int:
    with app.app_context():
        users = app.extensions["crm"].models.table("User")
        session = app.extensions["crm"].db.session
        return int(
            session.execute(sa.select(users.c.id).where(users.c.username == username)).scalar_one()
        )


def row_of(app: Flask, table: str, obj_id: int) -> dict[str, Any]:
    with app.app_context():
        state = app.extensions["crm"]
        t = state.models.table(table)
        return dict(state.db.session.execute(sa.select(t).where(t.c.id == obj_id)).mappings().one())


def exported(browser: Any, url: str) -> list[list[str]]:
    response = browser.get(url)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    return list(csv.reader(io.StringIO(response.text.lstrip("\ufeff"))))


def test_another_users_record_is_not_found_anywhere(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app()
    anna, boris, helen = login(app, "anna"), login(app, "boris"), login(app, "helen")
    mine = record_id(anna.post_form("/customer/add", {"name": "Anna's client"}))
    deal = record_id(anna.post_form("/deal/add", {"customer": str(mine), "amount": "5"}))
    record_id(boris.post_form("/customer/add", {"name": "Boris's client"}))
    for url in (f"/customer/{mine}", f"/customer/{mine}/edit", f"/deal/{deal}",
                f"/deal/{deal}/edit", f"/deal/{deal}/transition/lost"):  # fmt: skip
        assert boris.get(url).status_code == 404, url
    for url, data in ((f"/customer/{mine}/edit", {"name": "Taken", "_version": "1"}),
                      (f"/deal/{deal}/transition/lost", {"loss_reason": "x", "_version": "1"})):  # fmt: skip
        assert boris.client.post(url, data={"csrf_token": boris.csrf, **data}).status_code == 404
    # managers may not delete at all; the head may
    assert boris.client.post(f"/customer/{mine}/delete", data={"csrf_token": boris.csrf}).status_code == 403  # fmt: skip
    assert "crm-delete" not in anna.get(f"/customer/{mine}").text
    assert "crm-delete" in helen.get(f"/customer/{mine}").text
    assert row_of(app, "Customer", mine)["name"] == "Anna's client"
    # lists and their counts
    boris_list = boris.get("/customer/").text
    assert "Anna&#39;s client" not in boris_list and "Boris&#39;s client" in boris_list
    assert re.search(r'class="crm-count">1<', boris_list)
    assert re.search(r'class="crm-count">2<', helen.get("/customer/").text)
    assert "No records" in boris.get("/deal/").text
    # ref pickers
    assert boris.get("/customer/lookup?q=").get_json()["results"][0]["text"] == "Boris's client"
    assert len(boris.get("/customer/lookup?q=").get_json()["results"]) == 1
    assert boris.get("/deal/lookup?q=D").get_json() == {"results": []}
    assert len(helen.get("/customer/lookup?q=").get_json()["results"]) == 2
    # exports
    assert [r[1] for r in exported(boris, "/customer/export.csv")[1:]] == ["Boris's client"]
    assert sorted(r[1] for r in exported(helen, "/customer/export.csv")[1:]) == ["Anna's client", "Boris's client"]  # fmt: skip


def test_the_record_page_links_refs_the_user_may_open(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app()
    anna, helen = login(app, "anna"), login(app, "helen")
    customer = record_id(helen.post_form("/customer/add", {"name": "Shared"}))
    deal = record_id(helen.post_form("/deal/add", {"customer": str(customer), "manager": str(user_id(app, "anna"))}))  # fmt: skip
    page = helen.get(f"/deal/{deal}").text
    dd = page.split('data-field="customer"', 1)[1].split("</dd>", 1)[0]
    assert f'href="/customer/{customer}"' in dd and "Shared" in dd
    listed = helen.get("/deal/").text
    assert f'class="crm-ref-link" href="/customer/{customer}"' in listed
    # Anna owns the deal, not its customer: she sees its id, neither its name nor a dead link
    page = anna.get(f"/deal/{deal}").text
    dd = page.split('data-field="customer"', 1)[1].split("</dd>", 1)[0]
    assert f"#{customer} — no access" in dd and "href" not in dd
    assert "Shared" not in page
    assert anna.get(f"/customer/{customer}").status_code == 404


def test_owner_status_version_and_audit_fields_cannot_be_set_through_a_form(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app()
    anna, helen = login(app, "anna"), login(app, "helen")
    customer = record_id(anna.post_form("/customer/add", {"name": "Mine"}))
    deal = record_id(anna.post_form("/deal/add", {"customer": str(customer), "amount": "5"}))
    before = row_of(app, "Deal", deal)
    boris = user_id(app, "boris")
    edit = anna.get(f"/deal/{deal}/edit").text
    # managers update `own` deals: the owner is shown, not editable
    assert "disabled" in edit.split('data-field="manager"', 1)[1].split("</div>", 1)[0]
    forged = {
        "_version": str(before["version"]), "customer": str(customer), "amount": "7",
        "manager": str(boris), "stage": "won", "number": "D-99999", "version": "99",
        "created_by": str(boris), "created_at": "2001-01-01T00:00", "updated_by": str(boris),
        "id": "12345", "total": "1000000",
    }  # fmt: skip
    assert anna.post_form(f"/deal/{deal}/edit", forged).status_code == 302
    after = row_of(app, "Deal", deal)
    assert after["amount"] == 7  # the one real change
    for name in ("manager_id", "stage", "number", "created_by_id", "created_at", "id", "total"):
        assert after[name] == before[name], name
    assert after["version"] == before["version"] + 1
    assert after["updated_by_id"] == user_id(app, "anna")
    # the head of sales updates every deal, so she may hand it over
    page = helen.get(f"/deal/{deal}/edit").text
    assert "disabled" not in page.split('data-field="manager"', 1)[1].split("</div>", 1)[0]
    handed = helen.post_form(
        f"/deal/{deal}/edit",
        {"_version": str(after["version"]), "customer": str(customer), "manager": str(boris)},
    )
    assert handed.status_code == 302
    assert row_of(app, "Deal", deal)["manager_id"] == boris
    assert anna.get(f"/deal/{deal}").status_code == 404  # no longer hers


def test_the_export_follows_the_list_and_keeps_formulas_out(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app()
    helen = login(app, "helen")
    for name, segment in (("Alpha", "A"), ('=HYPERLINK("http://x")', "A"), ("Beta", "B")):
        record_id(helen.post_form("/customer/add", {"name": name, "segment": segment, "phone": "+7 495 123-45-67"}))  # fmt: skip
    rows = exported(helen, "/customer/export.csv?f_segment=A&order=name")
    assert rows[0][:5] == ["id", "Name", "Phone", "Segment", "Manager"]
    assert [r[1] for r in rows[1:]] == ['\'=HYPERLINK("http://x")', "Alpha"]
    # the cells of every file of the type (crm export): the phone as stored, a plain
    # number that no spreadsheet runs as a formula; enums by key; users by login
    assert rows[1][2] == "+74951234567" and rows[1][3] == "A" and rows[1][4] == "Helen Test"
    assert len(exported(helen, "/customer/export.csv?q=Be")) == 2
    link = helen.get("/customer/?f_segment=A").text
    assert 'href="/customer/export.csv?f_segment=A"' in link
