"""Search finds words anywhere in the searched fields, with one meaning for the
HTML list, REST and the ref picker, within the access rules, index-backed."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

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
      manager: {read: own, create: true, update: own}
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
    for term in ("4951234567", "123-45", "+7 (495) 123-45-67", "8 495 123 45 67"[2:]):
        assert rest(term) == ["ООО «Ромашка Центр»"], term
    assert rest("55-66") == ["АО «Василёк»"]
    assert rest("99-99") == []


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
