"""Search finds words anywhere in the searched fields, with one meaning for the
HTML list, REST and the ref picker, within the access rules, index-backed."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from engine import migrate
from engine.models import build
from engine.registry import Registry

CONFIG = "name: Search Ltd\nlocale: ru\nregion: RU\nlayers: []\n"

CRM = """
roles:
  manager: {label: Manager}
documents:
  Customer:
    title: "{{ name }}"
    owner: manager
    fields:
      name:    {type: string, required: true, max_length: 100}
      address: {type: string, max_length: 200}
      phone:   {type: phone}
      manager: {type: ref, to: User, default: current_user}
    list: {columns: [name, address, phone], search: [name, address, phone]}
    access:
      manager: {read: own, create: true, update: own, delete: own}
  Deal:
    title: "{{ subject }}"
    owner: manager
    fields:
      subject:  {type: string, required: true}
      customer: {type: ref, to: Customer}
      manager:  {type: ref, to: User, default: current_user}
    access:
      manager: {read: own, create: true, update: own}
"""


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, (response.status_code, response.text)
    return response.json


def _world(crm_app: Callable[..., Flask], login: Callable[..., Any]) -> tuple[Any, Any]:
    app = crm_app(CRM, CONFIG)
    anna, boris = login(app, "anna"), login(app, "boris")
    for name, address, phone in (
        ("ООО «Ромашка Центр»", "г. Москва, ул. Тверская, д. 1", "+7 (495) 123-45-67"),
        ("АО «Василёк»", "г. Тула, проспект Ленина, д. 5", "+7 (4872) 55-66-77"),
    ):
        ok(anna.api("POST", "/api/v1/customer/", {"name": name, "address": address,
                                                  "phone": phone}), 201)  # fmt: skip
    # boris's client: anna may not read it, so no search of hers finds it
    ok(boris.api("POST", "/api/v1/customer/", {"name": "ИП «Ромашка Юг»"}), 201)
    return anna, boris


def test_a_word_in_the_middle_of_a_name_is_found_in_list_rest_and_picker(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    anna, boris = _world(crm_app, login)

    def rest(term: str) -> list[str]:
        return [
            r["name"] for r in ok(anna.api("GET", f"/api/v1/customer/?search={term}"))["result"]
        ]

    def picker(term: str) -> list[str]:
        return [r["text"] for r in anna.get(f"/customer/lookup?q={term}").get_json()["results"]]

    def rest_picker(term: str) -> list[str]:
        return [
            r["text"] for r in ok(anna.api("GET", f"/api/v1/customer/_lookup?q={term}"))["result"]
        ]

    for term in ("Ромашка", "ромашка", "РОМАШКА", "машка Цен"):
        assert rest(term) == ["ООО «Ромашка Центр»"], term
        assert picker(term) == ["ООО «Ромашка Центр»"], term
        assert rest_picker(term) == ["ООО «Ромашка Центр»"], term
        page = anna.get(f"/customer/?q={term}").text
        assert "Ромашка Центр" in page and "Василёк" not in page
    # a hidden record is not found, and its owner finds it the same way
    assert "Ромашка Юг" not in anna.get("/customer/?q=Юг").text
    assert rest("Юг") == [] and picker("Юг") == []
    assert [r["text"] for r in boris.get("/customer/lookup?q=ромашка").get_json()["results"]] == [
        "ИП «Ромашка Юг»"
    ]


def test_a_street_in_the_middle_of_an_address_and_phone_digits_are_found(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    anna, _ = _world(crm_app, login)

    def rest(term: str) -> list[str]:
        response = anna.api("GET", "/api/v1/customer/", query_string={"search": term})
        return [r["name"] for r in ok(response)["result"]]

    assert rest("тверская") == ["ООО «Ромашка Центр»"]
    assert rest("Ленина") == ["АО «Василёк»"]
    # stored as +74951234567: its digits are found however the number is written
    for term in (
        "8 (495) 123-45-67",
        "+7 495 1234567",
        "4951234567",
        "+7 (495) 123-45-67",
        "84951234567",
        "123-45",
    ):
        assert rest(term) == ["ООО «Ромашка Центр»"], term
    assert rest("55-66") == ["АО «Василёк»"]
    assert rest("99-99") == [] and rest("8 (495) 123-45-68") == []


def test_terms_shorter_than_three_characters_are_found_too(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    anna, _ = _world(crm_app, login)

    def rest(term: str) -> list[str]:
        response = anna.api("GET", "/api/v1/customer/", query_string={"search": term})
        return sorted(r["name"] for r in ok(response)["result"])

    assert rest("тв") == ["ООО «Ромашка Центр»"]  # ул. Тверская
    assert rest("Ю") == []  # boris's «Ромашка Юг» stays hidden
    assert rest("45") == ["ООО «Ромашка Центр»"]  # phone digits
    assert rest("д.") == ["АО «Василёк»", "ООО «Ромашка Центр»"]
    # text that no index query can hold is still an answer, not a server error
    assert rest("ром\x00ашка") in ([], ["ООО «Ромашка Центр»"])
    for odd in ('"""', "NEAR(", "a OR b", "* ^ :"):
        assert rest(odd) == [], odd


def test_the_index_follows_every_change_of_a_record(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    anna, _ = _world(crm_app, login)

    def rest(term: str) -> list[str]:
        response = anna.api("GET", "/api/v1/customer/", query_string={"search": term})
        return [r["name"] for r in ok(response)["result"]]

    (found,) = ok(anna.api("GET", "/api/v1/customer/", query_string={"search": "Василёк"}))[
        "result"
    ]
    version = ok(anna.api("GET", f"/api/v1/customer/{found['id']}"))["version"]
    ok(
        anna.api(
            "PUT",
            f"/api/v1/customer/{found['id']}",
            {"version": version, "name": "АО «Колокольчик»"},
        )
    )
    assert rest("Василёк") == [] and rest("кольчик") == ["АО «Колокольчик»"]
    assert rest("проспект Ленина") == ["АО «Колокольчик»"]  # untouched fields stay found
    ok(anna.api("DELETE", f"/api/v1/customer/{found['id']}"))
    assert rest("кольчик") == [] and rest("Ленина") == []
    assert rest("Ромашка") == ["ООО «Ромашка Центр»"]


def test_on_sqlite_the_search_reads_the_trigram_index_not_every_row(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    anna, _ = _world(crm_app, login)
    with anna.app.app_context():
        engine = anna.app.extensions["crm"].db.engine
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL: the GIN trigram index, see the migrate test")
    sent: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        if ("MATCH" in statement or "LIKE" in statement) and "EXPLAIN" not in statement:
            sent.append((statement, params))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        for url in (
            "/api/v1/customer/?search=машка Цен",
            "/api/v1/customer/?search=8 (495) 123-45-67",
            "/api/v1/customer/_lookup?q=ромашка",
            "/customer/lookup?q=ромашка",
            "/customer/?q=ромашка",
        ):
            assert anna.api("GET", url).status_code == 200, url
            assert sent, url
            for statement, params in sent:
                assert "crm_fts_customer" in statement and "LIKE" not in statement, url
                with engine.connect() as conn:
                    steps = [
                        r[3]
                        for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
                    ]
                assert any("crm_fts_customer VIRTUAL TABLE" in s for s in steps), steps
                assert not any(s.startswith("SCAN customer") for s in steps), (url, steps)
            sent.clear()
        # a term of two characters has no trigram: it looks at every row
        assert anna.api("GET", "/api/v1/customer/?search=тв").status_code == 200
        assert sent and all("LIKE" in s and "MATCH" not in s for s, _ in sent)
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def test_migrate_shows_the_search_index_steps_and_a_second_run_does_nothing(
    load_config: Callable[..., Registry], db_url: str
) -> None:
    models = build(load_config({"crm.yaml": textwrap.dedent(CRM)}, CONFIG))
    engine = sa.create_engine(db_url)
    try:
        first = migrate.plan(models, engine)
        lines = "\n".join(first.lines())
        if engine.dialect.name == "postgresql":
            for column in ("name", "address", "phone"):
                assert f"add search index {models.table('Customer').name}.{column}" in lines
        migrate.apply(models, engine, first)
        assert migrate.plan(models, engine).empty
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                names = {i["name"] for i in sa.inspect(conn).get_indexes("customer")}
            assert migrate.search_index_name("customer", "address") in names
    finally:
        engine.dispose()
        models.dispose()
