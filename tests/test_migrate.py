"""`crm migrate`: additive schema changes that keep every row, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from engine import lists, migrate
from engine.loader import load
from engine.models import Models, build

CONFIG = "name: Migrations Ltd\nlayers: []\n"
CUSTOMER = """
documents:
  Customer:
    title: "{{ name }}"
    fields:
      name:  {type: string, required: true}
      phone: {type: phone}
      notes: {type: text}
"""


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def migrated(engine: sa.Engine) -> Iterator[Callable[[Path], tuple[Models, migrate.Plan]]]:
    built: list[Models] = []

    def run(folder: Path) -> tuple[Models, migrate.Plan]:
        models = build(load(folder, env={}))
        built.append(models)
        the_plan = migrate.plan(models, engine)
        migrate.apply(models, engine, the_plan)
        return models, the_plan

    yield run
    for models in built:
        models.dispose()


def _rows(engine: sa.Engine, sql: str) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql))]


def test_create_add_attribute_then_remove_field_keeps_every_value(
    make_config: Callable[..., Path],
    migrated: Callable[..., tuple[Models, migrate.Plan]],
    engine: sa.Engine,
) -> None:
    folder = make_config({"customer.yaml": CUSTOMER}, CONFIG)
    models, first = migrated(folder)
    assert any(str(s) == "add table customer" for s in first.steps)
    with engine.begin() as conn:
        conn.execute(
            models.table("Customer").insert(),
            [{"name": "Romashka", "phone": "+74951234567", "notes": "old friend", "version": 1,
              "created_at": dt.datetime.now(dt.UTC)}],
        )  # fmt: skip

    # a consultant adds an attribute in a new file
    (folder / "zz_attributes.yaml").write_text(
        "attributes:\n  Customer:\n    loyalty_card: {type: string, index: true}\n"
        "    vip: {type: boolean}\n    discount: {type: decimal, default: 5}\n",
        encoding="utf-8",
    )
    _, second = migrated(folder)
    assert [str(s) for s in second.steps] == [
        "add column customer.loyalty_card",
        "add column customer.vip",
        "add column customer.discount",
        "add index customer.ix_customer_loyalty_card_created_at_id",
    ]
    assert _rows(engine, "SELECT name, phone, notes, vip, discount FROM customer") == [
        ("Romashka", "+74951234567", "old friend", False, 5)
    ]

    # ... and later removes a field: its column and data stay, reported as retired
    (folder / "customer.yaml").write_text(
        CUSTOMER.replace("      notes: {type: text}\n", ""), encoding="utf-8"
    )
    _, third = migrated(folder)
    assert third.steps == []
    assert third.retired == ["customer.notes"]
    assert _rows(engine, "SELECT name, notes FROM customer") == [("Romashka", "old friend")]
    inspector = sa.inspect(engine)
    assert "ix_customer_loyalty_card_created_at_id" in {
        i["name"] for i in inspector.get_indexes("customer")
    }


def test_a_new_ref_attribute_gets_a_foreign_key_and_an_index(
    make_config: Callable[..., Path],
    migrated: Callable[..., tuple[Models, migrate.Plan]],
    engine: sa.Engine,
) -> None:
    folder = make_config({"a.yaml": CUSTOMER}, CONFIG)
    migrated(folder)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO customer (name, version, created_at) VALUES ('A', 1, CURRENT_TIMESTAMP)"
            )
        )
    (folder / "b.yaml").write_text(
        "documents:\n  Region:\n    fields:\n      name: {type: string}\n"
        "attributes:\n  Customer:\n    region: {type: ref, to: Region}\n",
        encoding="utf-8",
    )
    _, the_plan = migrated(folder)
    assert "add table region" in [str(s) for s in the_plan.steps]
    assert "add column customer.region_id" in [str(s) for s in the_plan.steps]
    inspector = sa.inspect(engine)
    fks = inspector.get_foreign_keys("customer")
    assert any(
        fk["referred_table"] == "region" and fk["constrained_columns"] == ["region_id"]
        for fk in fks
    )
    assert any(i["column_names"][0] == "region_id" for i in inspector.get_indexes("customer"))
    assert _rows(engine, "SELECT name, region_id FROM customer") == [("A", None)]


def test_a_type_change_is_refused_and_nothing_is_applied(
    make_config: Callable[..., Path],
    migrated: Callable[..., tuple[Models, migrate.Plan]],
    engine: sa.Engine,
) -> None:
    folder = make_config({"customer.yaml": CUSTOMER}, CONFIG)
    migrated(folder)
    changed = (
        CUSTOMER.replace("notes: {type: text}", "notes: {type: integer}")
        + "      extra: {type: string}\n"
    )
    (folder / "customer.yaml").write_text(changed, encoding="utf-8")
    models = build(load(folder, env={}))
    try:
        the_plan = migrate.plan(models, engine)
        assert the_plan.refused == [
            "customer.notes holds text values in the database but the metadata now says integer: "
            "changing a field's type needs a data migration"
        ]
        with pytest.raises(migrate.MigrationRefused):
            migrate.apply(models, engine, the_plan)
    finally:
        models.dispose()
    assert "extra" not in {c["name"] for c in sa.inspect(engine).get_columns("customer")}


def test_drop_retired_drops_only_when_asked(
    make_config: Callable[..., Path],
    migrated: Callable[..., tuple[Models, migrate.Plan]],
    engine: sa.Engine,
) -> None:
    folder = make_config({"customer.yaml": CUSTOMER}, CONFIG)
    migrated(folder)
    (folder / "customer.yaml").write_text(
        CUSTOMER.replace("      notes: {type: text}\n", ""), encoding="utf-8"
    )
    models = build(load(folder, env={}))
    try:
        the_plan = migrate.plan(models, engine, drop_retired=True)
        assert [str(s) for s in the_plan.steps] == ["DROP column customer.notes"]
        migrate.apply(models, engine, the_plan)
    finally:
        models.dispose()
    assert "notes" not in {c["name"] for c in sa.inspect(engine).get_columns("customer")}


def test_migrating_twice_plans_nothing(
    make_config: Callable[..., Path], migrated: Callable[..., tuple[Models, migrate.Plan]]
) -> None:
    folder = make_config(config="name: Base\nlayers: [base]\n")
    _, first = migrated(folder)
    assert first.steps
    _, second = migrated(folder)
    assert second.steps == [] and second.retired == [] and second.refused == []


def test_the_search_index_follows_the_searched_fields_and_keeps_up_with_the_rows(
    make_config: Callable[..., Path],
    migrated: Callable[..., tuple[Models, migrate.Plan]],
    engine: sa.Engine,
) -> None:
    folder = make_config({"a.yaml": CUSTOMER}, CONFIG)
    migrated(folder)
    insert = (
        "INSERT INTO customer (name, phone, notes, version, created_at) "
        "VALUES (:name, :phone, :notes, 1, CURRENT_TIMESTAMP)"
    )
    with engine.begin() as conn:
        conn.execute(sa.text(insert), [
            {"name": "ООО «Ромашка Центр»", "phone": "+74951234567", "notes": "звонить после обеда"},
            {"name": "АО «Василёк»", "phone": None, "notes": None},
        ])  # fmt: skip

    def found(models: Models, term: str) -> list[str]:
        with Session(engine) as s:
            return [r["name"] for r in lists.page(models, s, "Customer", search=term).rows]

    # searching the notes and the phone too: the index is rebuilt over the rows already there
    (folder / "a.yaml").write_text(
        CUSTOMER + "    list: {columns: [name, phone], search: [name, phone, notes]}\n",
        encoding="utf-8",
    )
    models, the_plan = migrated(folder)
    steps = [str(s) for s in the_plan.steps]
    if engine.dialect.name == "sqlite":
        assert "build search index customer (name, notes, phone) (trigram, FTS5)" in steps
    else:
        assert "add search index customer.notes (trigram)" in steps
    assert found(models, "после обеда") == ["ООО «Ромашка Центр»"]
    assert found(models, "+7 (495) 123-45-67") == ["ООО «Ромашка Центр»"]
    assert found(models, "ВАСИЛ") == ["АО «Василёк»"]

    # a new reference copies the table on SQLite, dropping its triggers: migrate
    # puts them back, and rows written afterwards are found
    (folder / "b.yaml").write_text(
        "documents:\n  Region:\n    fields:\n      name: {type: string}\n"
        "attributes:\n  Customer:\n    region: {type: ref, to: Region}\n",
        encoding="utf-8",
    )
    models, _ = migrated(folder)
    with engine.begin() as conn:
        conn.execute(sa.text(insert), [{"name": "ИП Лютиков", "phone": None, "notes": "опт"}])
        conn.execute(sa.text("UPDATE customer SET notes = 'звонить утром' WHERE notes LIKE 'зв%'"))
    assert found(models, "Лютик") == ["ИП Лютиков"]
    assert found(models, "после обеда") == [] and found(models, "утром") == ["ООО «Ромашка Центр»"]
    _, again = migrated(folder)
    assert again.steps == []

    # a field searched no more leaves the index
    (folder / "a.yaml").write_text(
        CUSTOMER + "    list: {columns: [name, phone], search: [name]}\n", encoding="utf-8"
    )
    models, the_plan = migrated(folder)
    if engine.dialect.name == "sqlite":
        assert "build search index customer (name) (trigram, FTS5)" in [
            str(s) for s in the_plan.steps
        ]
    assert found(models, "утром") == [] and found(models, "Ромашка") == ["ООО «Ромашка Центр»"]
