"""Merging duplicates: every reference of every kind moves to the record
kept, the others are archived (hidden from every list, picker, count and
export, their pages still open), and an undo puts back exactly what was.

The configuration is the base layer with the processes, mail and telephony
plugins, so references come from the engine's types and the plugins' alike
(tasks, process instances, notifications, calls, SMS, mail messages point at
records by a ``doctype`` + ``doc_id`` pair). Rows are written straight into
every referencing table the registry names, so no kind can be left out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import has_app_context

from engine import clock
from engine import merge as merging
from engine.access import Principal
from engine.documents import Documents
from engine.testing import Client, dispose, make_app

PLUGINS = {
    "processes": {},
    "mail": {"smtp": {"host": "127.0.0.1", "port": 2525}, "from": "R <crm@romashka.example>"},
    "telephony": {"region": "RU"},
}
USERS = {
    "admin": ["Admin"], "head": ["sales_head"], "anna": ["manager"], "boris": ["manager"],
    "olga": ["operator"],
}  # fmt: skip


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[Any]:
    made = make_app(
        tmp_path / "config", "{}\n", plugins=PLUGINS, layers=("base",), database=db_url,
        users=USERS,
    )  # fmt: skip
    yield made
    dispose(made)


@pytest.fixture
def service(app: Any) -> Iterator[Any]:
    """The app with its context pushed, for tests that make no requests."""
    with app.app_context():
        yield app


def in_context(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a helper in the test's app context, or in one of its own between
    requests (a context held open would share ``g``, the login, with them)."""

    def run(app: Any, *args: Any, **kw: Any) -> Any:
        if has_app_context():
            return fn(app, *args, **kw)
        with app.app_context():
            return fn(app, *args, **kw)

    return run


def session_of(app: Any) -> Any:
    return app.extensions["crm"].db.session


@in_context
def user_id(app: Any, username: str) -> int:
    users = app.extensions["crm"].models.table("User")
    return int(
        session_of(app).execute(sa.select(users.c.id).where(users.c.username == username)).scalar()
    )


def docs_for(app: Any, username: str) -> Documents:
    state = app.extensions["crm"]
    roles = USERS[username]
    who = Principal(user_id(app, username), username, frozenset(roles))
    return Documents.for_principal(state.models, session_of(app), who, state.pm)


@in_context
def customers(app: Any, owner: str, *specs: dict[str, Any]) -> list[int]:
    docs = docs_for(app, "admin")
    ids = [docs.create("Customer", {"manager": user_id(app, owner), **spec}).id for spec in specs]
    session_of(app).commit()
    return ids


@in_context
def fill_references(app: Any, doctype: str, targets: list[int]) -> None:
    """Two rows pointing at each target in every referencing column."""
    state = app.extensions["crm"]
    session = session_of(app)
    now = clock.now()
    for ref in merging.references(state.models, doctype):
        t = ref.table
        for target in targets:
            for _ in range(2):
                values: dict[str, Any] = {ref.column: target}
                if ref.type_column is not None:
                    values[ref.type_column] = doctype
                if "created_at" in t.c:
                    values["created_at"] = now
                if "parent_id" in t.c:  # a table's row: a parent of its own
                    parent = next(iter(t.c.parent_id.foreign_keys)).column.table
                    values["parent_id"] = session.execute(
                        parent.insert().values(created_at=now).returning(parent.c.id)
                    ).scalar_one()
                if "to_state" in t.c:  # a status history row
                    values.update(field="stage", to_state="new", at=now)
                session.execute(t.insert().values(values))
    session.commit()


@in_context
def snapshot(app: Any, doctype: str) -> dict[str, list[tuple[int, Any]]]:
    """Every referencing column's (row id, value), table by table."""
    state = app.extensions["crm"]
    out = {}
    for ref in merging.references(state.models, doctype):
        t = ref.table
        rows = session_of(app).execute(sa.select(t.c.id, t.c[ref.column]).order_by(t.c.id)).all()
        out[ref.key + (f"[{ref.type_column}]" if ref.type_column else "")] = [
            tuple(r) for r in rows
        ]
    return out


@in_context
def record(app: Any, doctype: str, ident: int) -> dict[str, Any]:
    state = app.extensions["crm"]
    t = state.models.table(doctype)
    session_of(app).expire_all()
    row = session_of(app).execute(sa.select(t).where(t.c.id == ident)).one()
    return {
        k: v for k, v in row._mapping.items() if k not in ("version", "updated_at", "updated_by_id")
    }


def test_every_kind_of_reference_is_found(app: Any) -> None:
    """The registry names every referencing column: refs, plugin types'
    doctype/doc_id pairs, and a status history for a type that has one."""
    state = app.extensions["crm"]
    keys = {r.key for r in merging.references(state.models, "Customer")}
    for expected in ("deal.customer_id", "contact_person.customer_id", "interaction.customer_id",
                     "customer_order.customer_id", "task.doc_id", "process_instance.doc_id",
                     "call.doc_id", "notification.doc_id", "email_message.doc_id",
                     "email_message.customer_id", "sms_message.doc_id", "mailing_recipient.doc_id"):  # fmt: skip
        assert expected in keys, expected
    deal_keys = {r.key for r in merging.references(state.models, "Deal")}
    assert "deal__history.doc_id" in deal_keys


def test_merge_moves_everything_archives_and_undo_restores_exactly(service: Any) -> None:
    app = service
    keep, dup, other = customers(
        app, "anna",
        {"name": "Romashka", "phone": "+7 495 123-45-67"},
        {"name": "Romashka LLC", "inn": "7707083893", "email": "info@romashka.example"},
        {"name": "Vasilek"},
    )  # fmt: skip
    fill_references(app, "Customer", [keep, dup, other])
    before = snapshot(app, "Customer")
    survivor_before = record(app, "Customer", keep)
    state = app.extensions["crm"]
    merge_id = merging.merge(
        docs_for(app, "head"), "Customer", keep, [dup], {"inn": dup, "email": dup, "name": keep}
    )
    session_of(app).commit()
    after = snapshot(app, "Customer")
    for key, rows in after.items():
        was = dict(before[key])
        for row_id, value in rows:
            # every row that pointed at the duplicate points at the survivor; no other moved
            assert value == (keep if was[row_id] == dup else was[row_id]), (key, row_id)
        assert sum(1 for _, v in rows if v == keep) >= 4, key
    survivor = record(app, "Customer", keep)
    assert survivor["inn"] == "7707083893" and survivor["email"] == "info@romashka.example"
    assert survivor["name"] == "Romashka" and survivor["phone"] == "+74951234567"
    assert record(app, "Customer", dup)["merged_into"] == keep
    log = merging.get(state.models, session_of(app), merge_id)
    assert log is not None and log.merged_ids == (dup,) and log.count == 2 * len(after)
    # undo: every reference back, the duplicate live again, the survivor's values restored
    merging.undo(docs_for(app, "head"), merge_id)
    session_of(app).commit()
    assert snapshot(app, "Customer") == before
    assert record(app, "Customer", keep) == survivor_before
    assert record(app, "Customer", dup)["merged_into"] is None
    with pytest.raises(merging.MergeError, match="undone already"):
        merging.undo(docs_for(app, "head"), merge_id)


def test_deals_merge_with_their_status_history(service: Any) -> None:
    app = service
    (cust,) = customers(app, "anna", {"name": "Romashka"})
    docs = docs_for(app, "admin")
    a = docs.create("Deal", {"customer": cust, "amount": "10"}).id
    b = docs.create("Deal", {"customer": cust, "amount": "20"}).id
    session_of(app).commit()
    hist = app.extensions["crm"].models.metadata.tables["deal__history"]
    merging.merge(docs_for(app, "head"), "Deal", a, [b], {"amount": b})
    session_of(app).commit()
    ids = session_of(app).execute(sa.select(hist.c.doc_id)).scalars().all()
    assert ids and set(ids) == {a}
    assert record(app, "Deal", a)["amount"] == 20


def test_a_failure_midway_leaves_nothing_changed(
    service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = service
    keep, dup = customers(
        app, "anna", {"name": "Romashka"}, {"name": "Romashka 2", "inn": "7707083893"}
    )
    fill_references(app, "Customer", [keep, dup])
    before, survivor = snapshot(app, "Customer"), record(app, "Customer", keep)
    real = merging._move

    def move_then_fail(*args: Any, **kw: Any) -> Any:
        real(*args, **kw)  # every reference moved ...
        raise RuntimeError("the disk is full")  # ... and then the archive step fails

    monkeypatch.setattr(merging, "_move", move_then_fail)
    with pytest.raises(RuntimeError):
        merging.merge(docs_for(app, "head"), "Customer", keep, [dup], {"inn": dup})
    session_of(app).rollback()
    assert snapshot(app, "Customer") == before
    assert record(app, "Customer", keep) == survivor
    assert record(app, "Customer", dup)["merged_into"] is None
    merges = app.extensions["crm"].models.merges
    count = sa.select(sa.func.count()).select_from(merges)
    assert session_of(app).execute(count).scalar() == 0


def test_undo_is_refused_once_the_survivor_was_merged_again(service: Any) -> None:
    app = service
    a, b, c = customers(app, "anna", {"name": "A"}, {"name": "B"}, {"name": "C"})
    first = merging.merge(docs_for(app, "head"), "Customer", a, [b])
    second = merging.merge(docs_for(app, "head"), "Customer", c, [a])
    session_of(app).commit()
    with pytest.raises(merging.MergeError, match=f"merge #{second}"):
        merging.undo(docs_for(app, "head"), first)
    session_of(app).rollback()
    merging.undo(docs_for(app, "head"), second)
    merging.undo(docs_for(app, "head"), first)
    session_of(app).commit()
    assert all(record(app, "Customer", i)["merged_into"] is None for i in (a, b, c))


def test_archived_records_are_hidden_everywhere_but_their_page(app: Any) -> None:
    keep, dup = customers(app, "anna", {"name": "Romashka Keep"}, {"name": "Romashka Twin"})
    head = Client(app, "head")
    answer = head.api("POST", "/api/v1/customer/merge", {"survivor": keep, "others": [dup]})
    assert answer.status_code == 200, answer.text
    merge_id = answer.json["id"]
    # lists, search, REST list, picker, export: only the survivor
    assert "Romashka Twin" not in head.get("/customer/").text
    assert "Romashka Twin" not in head.get("/customer/?q=Romashka").text
    listed = head.api("GET", "/api/v1/customer/?page_size=100").json
    assert [r["id"] for r in listed["result"]] == [keep]
    picked = head.get("/customer/lookup?q=Romashka").json["results"]
    assert [r["id"] for r in picked] == [keep]
    assert "Romashka Twin" not in head.get("/customer/export.csv").text
    # its page opens and says where it went; it cannot be edited
    page = head.get(f"/customer/{dup}")
    assert page.status_code == 200
    assert "merged into another" in page.text and f'href="/customer/{keep}"' in page.text
    assert head.get(f"/customer/{dup}/edit").status_code == 404
    assert head.api("GET", f"/api/v1/customer/{dup}").status_code == 200
    # the survivor's page and timeline tell of the merge, with its undo
    survivor = head.get(f"/customer/{keep}").text
    assert "crm-merge-undo" in survivor and "merged 1 records into this one" in survivor
    undone = head.api("POST", f"/api/v1/customer/merge/{merge_id}/undo")
    assert undone.status_code == 200, undone.text
    assert "Romashka Twin" in head.get("/customer/").text
    again = head.api("POST", f"/api/v1/customer/merge/{merge_id}/undo")
    assert again.status_code == 409 and "undone already" in again.json["message"]


def test_rest_merge_answers_bad_input_with_json_4xx(app: Any) -> None:
    keep, dup = customers(app, "anna", {"name": "A"}, {"name": "B"})
    head = Client(app, "head")
    post = lambda body: head.api("POST", "/api/v1/customer/merge", body)  # noqa: E731
    assert post({"survivor": keep}).status_code == 422
    assert post({"survivor": keep, "others": [keep]}).status_code == 400
    assert post({"survivor": keep, "others": ["x"]}).status_code == 400
    assert post({"survivor": keep, "others": [999999]}).status_code == 404
    bad_field = post({"survivor": keep, "others": [dup], "fields": {"version": dup}})
    assert bad_field.status_code == 422 and "version" in bad_field.json["message"]
    bad_source = post({"survivor": keep, "others": [dup], "fields": {"name": 12345}})
    assert bad_source.status_code == 422
    assert head.api("POST", "/api/v1/customer/merge/999/undo").status_code == 404
    assert (
        head.api("POST", "/api/v1/deal/merge", {"survivor": keep, "others": [dup]}).status_code
        == 404
    )


def test_only_who_may_change_all_the_records_merges(app: Any) -> None:
    mine, also_mine = customers(app, "anna", {"name": "A1"}, {"name": "A2"})
    (boris,) = customers(app, "boris", {"name": "B1"})
    anna = Client(app, "anna")
    # another manager's record: not even found for her (404), and never merged
    assert anna.get(f"/merge/customer/?ids={mine},{boris}").status_code == 404
    refused = anna.api("POST", "/api/v1/customer/merge", {"survivor": mine, "others": [boris]})
    assert refused.status_code == 404
    # a role that may read them all but change only its own: 403
    olga = Client(app, "olga")
    assert olga.get(f"/merge/customer/?ids={mine},{boris}").status_code == 403
    refused = olga.api("POST", "/api/v1/customer/merge", {"survivor": mine, "others": [boris]})
    assert refused.status_code == 403
    # her own two: she may
    assert anna.get(f"/merge/customer/?ids={mine},{also_mine}").status_code == 200
    assert record(app, "Customer", boris)["merged_into"] is None


def test_the_merge_page(app: Any) -> None:
    keep, dup = customers(
        app, "anna", {"name": "Romashka", "phone": "+7 495 123-45-67"},
        {"name": "Romashka LLC", "email": "info@romashka.example"},
    )  # fmt: skip
    fill_references(app, "Customer", [dup])
    head = Client(app, "head")
    page = head.get(f"/merge/customer/?ids={keep},{dup}")
    assert page.status_code == 200
    html = page.text
    assert "Romashka LLC" in html and "info@romashka.example" in html
    # defaults: the survivor's value, or the other's where the survivor has none
    assert re.search(rf'name="field_email" value="{dup}" checked', html)
    assert re.search(rf'name="field_name" value="{keep}" checked', html)
    assert head.get("/merge/customer/?ids=1").status_code == 400
    assert head.get("/merge/customer/?ids=a,b").status_code == 400
    assert head.get("/merge/customer/?ids=999998,999999").status_code == 404
    assert head.get("/merge/nothing/?ids=1,2").status_code == 404
    done = head.post_form(
        f"/merge/customer/?ids={keep},{dup}",
        {"survivor": str(keep), "field_name": str(dup), "field_email": str(dup)},
    )
    assert done.status_code == 302 and done.headers["Location"].endswith(f"/customer/{keep}")
    survivor = record(app, "Customer", keep)
    assert survivor["name"] == "Romashka LLC" and survivor["email"] == "info@romashka.example"
    assert deals_of(app, keep) == 2
    log = head.get("/merge/").text
    assert f'href="/customer/{keep}"' in log and "crm-merge-undo" in log
    # the undo button of the survivor's page
    merge_id = int(re.search(r'data-merge="(\d+)"', head.get(f"/customer/{keep}").text)[1])
    back = head.client.post(f"/merge/undo/{merge_id}", data={"csrf_token": head.csrf})
    assert back.status_code == 302
    assert record(app, "Customer", keep)["name"] == "Romashka"
    assert deals_of(app, keep) == 0


@in_context
def deals_of(app: Any, customer: int) -> int:
    deals = app.extensions["crm"].models.table("Deal")
    count = sa.select(sa.func.count()).where(deals.c.customer_id == customer)
    return int(session_of(app).execute(count).scalar_one())
