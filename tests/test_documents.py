"""The documents service: what a consultant's field rules do to every save.

Each test builds a configuration from YAML, a real database (SQLite, or the
PostgreSQL of CRM_TEST_DATABASE_URL) with Flask-AppBuilder's user table, and
saves records as a user would through a form or the API.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from flask_appbuilder import Model
from flask_appbuilder.security.sqla.models import User
from sqlalchemy.orm import Session

from engine.documents import (
    DeleteRefused,
    Documents,
    StaleVersion,
    ValidationFailed,
)
from engine.hookspecs import hookimpl
from engine.models import Models, build
from engine.plugins import make_plugin_manager
from engine.registry import Registry

NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
PG_URL = os.environ.get("CRM_TEST_DATABASE_URL")
CONFIG = "name: Romashka LLC\nlocale: en\nregion: RU\ntimezone: Europe/Moscow\nlayers: []\n"
CRM = """
roles:
  manager:    {label: Manager}
  sales_head: {label: Sales head}
documents:
  Customer:
    title: "{{ name }}"
    fields:
      name:     {type: string, required: true, max_length: 40}
      inn:      {type: string, pattern: "[0-9]{10}", unique: true, label: Tax number}
      phone:    {type: phone}
      email:    {type: email, unique: true}
      segment:  {type: enum, values: {a: Key account, b: Regular}, default: b}
      discount: {type: decimal, min: 0, max: 50}
      since:    {type: date, default: today}
      visits:   {type: integer}
      vip:      {type: boolean}
      site:     {type: url}
      code:     {type: string, readonly: true}
  Deal:
    numbering: {prefix: "D-", width: 6}
    title: "{{ number }} {{ customer }}"
    owner: manager
    fields:
      customer: {type: ref, to: Customer, required: true}
      manager:  {type: ref, to: User, default: current_user}
      kind:     {type: enum, values: {typical: Typical sale, manual: Manual stages}, default: manual}
      lines:
        type: table
        fields:
          product: {type: string, required: true}
          qty:     {type: decimal, default: 1, min: 0}
          price:   {type: money}
          amount:  {type: money, compute: "qty * price"}
      total:    {type: money, compute: "lines | sum(attribute='amount')"}
      summary:  {type: string, compute: "customer.name ~ ': ' ~ lines | length ~ ' lines'"}
    statuses:
      initial: new
      states:
        new: {label: New}
        won: {label: Won, final: true}
"""


@dataclass
class World:
    registry: Registry
    models: Models
    engine: sa.Engine
    session: Session
    users: dict[str, int]

    def docs(self, user: str = "ivan", pm: Any = None, **kw: Any) -> Documents:
        roles = {"ivan": ["manager"], "olga": ["sales_head"]}[user]
        return Documents(
            self.models, self.session, self.users[user], roles, pm, kw.pop("now", NOW),
            username=user, **kw,
        )  # fmt: skip

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def add_user(engine: sa.Engine, username: str, first: str, last: str) -> int:
    """Users come from Flask-AppBuilder's security pages; here straight into ab_user."""
    users = User.__table__
    with engine.begin() as conn:
        return int(
            conn.execute(
                users.insert()
                .values(username=username, first_name=first, last_name=last,
                        email=f"{username}@romashka.example", active=True)
                .returning(users.c.id)
            ).scalar_one()
        )  # fmt: skip


@pytest.fixture
def world(load_config: Callable[..., Registry], db_url: str) -> Iterator[Callable[..., World]]:
    made: list[World] = []

    def make(text: str = CRM) -> World:
        registry = load_config({"crm.yaml": text}, CONFIG)
        models = build(registry)
        engine = sa.create_engine(db_url)
        Model.metadata.create_all(engine)
        models.metadata.create_all(engine)
        users = {
            "ivan": add_user(engine, "ivan", "Ivan", "Petrov"),
            "olga": add_user(engine, "olga", "Olga", "Smirnova"),
        }
        w = World(registry, models, engine, Session(engine), users)
        made.append(w)
        return w

    yield make
    for w in made:
        w.session.close()
        w.models.dispose()
        w.engine.dispose()


def customer(docs: Documents, **values: Any) -> Any:
    return docs.create("Customer", {"name": "Romashka", **values})


def errors_of(call: Callable[[], Any]) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as info:
        call()
    return info.value.errors


# -- defaults and normalization -----------------------------------------------------


def test_new_records_get_defaults_and_normalized_values(world: Callable[..., World]) -> None:
    w = world()
    docs = w.docs()
    c = customer(
        docs, phone="8 (495) 123-45-67", email=" Sales@ROMASHKA.Example ", discount="12,5",
        visits="1 200", vip="yes", segment="Key account",
    )  # fmt: skip
    assert c.phone == "+74951234567"  # E.164, read with the config's region RU
    assert c.email == "sales@romashka.example"
    assert c.discount == Decimal("12.5")
    assert c.visits == 1200
    assert c.vip is True
    assert c.segment == "a"  # the label is accepted, the key is stored
    assert c.since == dt.date(2026, 3, 2)  # `today` in Moscow at 12:00
    assert c.created_by_id == w.users["ivan"]
    assert aware(c.created_at) == NOW
    assert c.version == 1

    plain = docs.create("Customer", {"name": "Lyutik"})
    assert plain.segment == "b" and plain.vip is False
    deal = docs.create("Deal", {"customer": c.id, "kind": "Typical sale"})
    assert deal.manager_id == w.users["ivan"]  # default: current_user
    assert deal.kind == "typical"
    assert deal.status == "new"  # the initial state


def aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


# -- every rule, every message, all at once ---------------------------------------------


def test_every_field_error_is_reported_at_once_and_nothing_is_written(
    world: Callable[..., World],
) -> None:
    w = world()
    docs = w.docs()
    errors = errors_of(
        lambda: docs.create(
            "Customer",
            {
                "name": "x" * 41, "inn": "12345", "phone": "12", "email": "not an email",
                "segment": "c", "discount": "-1", "visits": "many", "site": "ftp://x",
                "colour": "red",
            },
        )
    )  # fmt: skip
    assert errors == {
        "name": "must be at most 40 characters",
        "inn": "does not match the required pattern",
        "phone": "is not a valid phone number",
        "email": errors["email"],
        "segment": "must be one of: a, b",
        "discount": "must be at least 0",
        "visits": "must be a whole number",
        "site": "must be a web address starting with http:// or https://",
        "colour": "is not a field of “Customer”",
    }
    assert errors["email"].startswith("is not a valid email address")
    assert errors_of(lambda: customer(docs, discount=51)) == {"discount": "must be at most 50"}
    assert errors_of(lambda: docs.create("Customer", {"name": "  "})) == {"name": "is required"}

    deal_errors = errors_of(
        lambda: docs.create(
            "Deal",
            {
                "lines": [
                    {"price": 5},
                    {"product": "Seeds", "qty": -2},
                    {"product": "Pots", "size": 3},
                ]
            },
        )
    )
    assert deal_errors == {
        "customer": "is required",
        "lines.0.product": "is required",
        "lines.1.qty": "must be at least 0",
        "lines.2.size": "is not a field of the rows of “Lines” (lines)",
    }
    assert errors_of(lambda: docs.create("Deal", {"customer": 999})) == {
        "customer": "there is no “Customer” #999"
    }
    w.session.commit()
    assert w.count("customer") == 0 and w.count("deal") == 0 and w.count("deal__lines") == 0
    # a refused save draws no number
    assert w.count("crm_sequence") == 0


def test_unique_values_are_refused_at_the_field(world: Callable[..., World]) -> None:
    w = world()
    docs = w.docs()
    first = customer(docs, inn="7701234567", email="a@romashka.example")
    # the record holding the value is named by its id only to a user who may not read it
    assert errors_of(lambda: customer(docs, inn="7701234567", email="a@romashka.example")) == {
        "inn": f"this Tax number already belongs to #{first.id} — no access",
        "email": f"this Email already belongs to #{first.id} — no access",
    }
    other = customer(docs, inn="7701234568")
    engine = Documents(w.models, w.session)  # the engine's own work reads every record
    assert errors_of(lambda: engine.update("Customer", other, {"inn": "7701234567"})) == {
        "inn": f"this Tax number already belongs to “{first.name}”"
    }
    # saving a record with its own value is no conflict
    docs.update("Customer", first, {"inn": "7701234567", "name": "Romashka LLC"})
    assert first.name == "Romashka LLC"


def test_readonly_computed_system_and_status_fields_are_refused(
    world: Callable[..., World],
) -> None:
    w = world()
    docs = w.docs()
    c = customer(docs)
    assert errors_of(lambda: customer(docs, code="X1")) == {"code": "is read-only"}
    deal = docs.create("Deal", {"customer": c.id})
    assert errors_of(
        lambda: docs.update(
            "Deal", deal,
            {"status": "won", "number": "D-1", "total": 5, "created_by": w.users["olga"], "version": 7,
             "lines": [{"product": "Seeds", "amount": 3}]},
        )
    ) == {
        "status": "changes only through a transition of the status",
        "number": "is filled in by the engine",
        "total": "is computed from `lines | sum(attribute='amount')`",
        "created_by": "is filled in by the engine",
        "version": "is filled in by the engine",
        "lines.0.amount": "is computed from `qty * price`",
    }  # fmt: skip
    # a client that sends back what it read changes nothing and is not refused
    same = docs.update("Deal", deal, docs.to_dict("Deal", deal))
    assert same.version == 1
    # the engine itself (a process, an import) may set readonly fields
    w.docs(trusted=True).update("Customer", c, {"code": "X1"})
    assert c.code == "X1"


# -- computed fields and tables ------------------------------------------------------------


def test_today_in_a_computed_field_is_the_day_on_the_company_calendar(
    world: Callable[..., World],
) -> None:
    line = "      code:     {type: string, readonly: true}\n"
    w = world(CRM.replace(line, line + '      seen:     {type: date, compute: "today()"}\n'))
    late = dt.datetime(2026, 3, 2, 22, 30, tzinfo=dt.UTC)  # the 3rd already in Moscow
    c = w.docs(now=late).create("Customer", {"name": "Night owl"})
    assert c.seen == dt.date(2026, 3, 3)


def test_row_amounts_then_the_total_are_computed_on_every_save(
    world: Callable[..., World],
) -> None:
    w = world()
    docs = w.docs()
    c = customer(docs)
    deal = docs.create(
        "Deal",
        {"customer": c.id, "lines": [
            {"product": "Seeds", "qty": 2, "price": "10.50"},
            {"product": "Pots", "price": 3},  # qty defaults to 1
            {"product": "Advice"},  # no price yet: counts as 0, like an empty cell
            {"product": "Cups", "qty": "", "price": 2},  # an empty cell of a new row: the default too
        ]},
    )  # fmt: skip
    assert [(r.product, r.qty, r.amount) for r in deal.lines] == [
        ("Seeds", Decimal("2"), Decimal("21.00")),
        ("Pots", Decimal("1"), Decimal("3.00")),
        ("Advice", Decimal("1"), Decimal("0.00")),
        ("Cups", Decimal("1"), Decimal("2.00")),
    ]
    assert deal.total == Decimal("26.00")
    assert deal.summary == "Romashka: 4 lines"

    # rows are replaced in the order given; a row sent with its id is kept
    seeds, pots, _, _ = deal.lines
    docs.update(
        "Deal", deal,
        {"lines": [{"product": "Soil", "price": 7}, {"id": pots.id, "qty": 4}, {"id": seeds.id}]},
    )  # fmt: skip
    w.session.commit()
    w.session.expire_all()
    deal = w.session.get(w.models.cls("Deal"), deal.id)
    assert [(r.product, r.amount) for r in deal.lines] == [
        ("Soil", Decimal("7.00")),
        ("Pots", Decimal("12.00")),
        ("Seeds", Decimal("21.00")),
    ]
    assert [r.id for r in deal.lines][1:] == [pots.id, seeds.id]
    assert deal.total == Decimal("40.00")
    assert deal.version == 2
    assert w.count("deal__lines") == 3
    assert errors_of(lambda: docs.update("Deal", deal, {"lines": [{"id": 999}]})) == {
        "lines.0.id": "is not a row of this record"
    }


# -- numbering ------------------------------------------------------------------------------


def test_numbers_come_from_a_sequence_that_survives_commits(world: Callable[..., World]) -> None:
    w = world()
    docs = w.docs()
    c = customer(docs)
    first = docs.create("Deal", {"customer": c.id})
    second = docs.create("Deal", {"customer": c.id})
    w.session.commit()
    third = w.docs("olga").create("Deal", {"customer": c.id})
    w.session.commit()
    assert [first.number, second.number, third.number] == ["D-000001", "D-000002", "D-000003"]
    assert docs.title("Deal", first) == "D-000001 Romashka"


def test_a_rolled_back_number_is_drawn_again(world: Callable[..., World]) -> None:
    w = world()
    docs = w.docs()
    c = customer(docs)
    w.session.commit()
    docs.create("Deal", {"customer": c.id})
    w.session.rollback()
    assert docs.create("Deal", {"customer": c.id}).number == "D-000001"


# -- updates, audit and optimistic locking -------------------------------------------------


def test_updates_are_audited_and_bump_the_version(world: Callable[..., World]) -> None:
    w = world()
    c = customer(w.docs())
    later = NOW + dt.timedelta(hours=1)
    w.docs("olga", now=later).update("Customer", c.id, {"discount": 5}, expected_version=1)
    assert c.version == 2
    assert c.updated_by_id == w.users["olga"]
    assert aware(c.updated_at) == later
    # nothing changed: nothing written
    w.docs("olga").update("Customer", c, {"discount": "5.0"})
    assert c.version == 2


def test_a_stale_edit_says_who_changed_the_record_and_when(world: Callable[..., World]) -> None:
    w = world()
    c = customer(w.docs())
    w.session.commit()
    w.docs("olga", now=NOW + dt.timedelta(minutes=30)).update("Customer", c, {"discount": 5})
    w.session.commit()
    with pytest.raises(StaleVersion) as info:
        w.docs().update("Customer", c, {"discount": 7}, expected_version=1)
    assert "changed by olga at 2026-03-02 12:30 MSK" in str(info.value)
    assert info.value.by == "olga" and info.value.version == 2
    w.session.rollback()
    assert c.discount == Decimal("5")


def test_a_race_lost_at_flush_time_is_a_stale_version_too(world: Callable[..., World]) -> None:
    w = world()
    c = customer(w.docs())
    w.session.commit()
    c_id = c.id  # loaded now, at version 1
    # another worker saves the same record meanwhile, outside this session
    with w.engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE customer SET version = 2, updated_by_id = :u, updated_at = :t WHERE id = :i"
            ),
            {"u": w.users["olga"], "t": NOW, "i": c_id},
        )
    with pytest.raises(StaleVersion, match="changed by olga at 2026-03-02 12:00 MSK"):
        w.docs().update("Customer", c, {"discount": 7})
    w.session.rollback()


# -- deleting, hooks, to_dict --------------------------------------------------------------


class Recorder:
    """A plugin that writes down every document hook it receives."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    @hookimpl
    def crm_document_created(self, session: Any, doctype: Any, doc: Any, user: Any) -> None:
        self.calls.append(("created", doctype.name, doc.id, user.username))

    @hookimpl
    def crm_document_updated(
        self, session: Any, doctype: Any, doc: Any, user: Any, changes: dict[str, Any]
    ) -> None:
        self.calls.append(("updated", doctype.name, doc.id, user.username, changes))

    @hookimpl
    def crm_document_deleted(self, session: Any, doctype: Any, doc: Any, user: Any) -> None:
        self.calls.append(("deleted", doctype.name, doc.id, user.username))


def test_plugins_hear_of_every_create_update_and_delete(world: Callable[..., World]) -> None:
    w = world()
    pm = make_plugin_manager({})[0]
    recorder = Recorder()
    pm.register(recorder)
    docs = w.docs(pm=pm)
    c = customer(docs, discount=1)
    docs.update("Customer", c, {"discount": 2, "name": "Romashka"})
    docs.delete("Customer", c.id)
    assert recorder.calls == [
        ("created", "Customer", c.id, "ivan"),
        ("updated", "Customer", c.id, "ivan", {"discount": (Decimal("1"), Decimal("2"))}),
        ("deleted", "Customer", c.id, "ivan"),
    ]


def test_a_record_others_refer_to_cannot_be_deleted(world: Callable[..., World]) -> None:
    w = world()
    docs = w.docs()
    c = customer(docs)
    deal = docs.create("Deal", {"customer": c.id, "lines": [{"product": "Seeds"}]})
    with pytest.raises(DeleteRefused, match="1 “Deal” record"):
        docs.delete("Customer", c)
    docs.delete("Deal", deal, expected_version=1)
    docs.delete("Customer", c)
    w.session.commit()
    assert w.count("deal__lines") == 0 and w.count("deal__history") == 0
    assert w.count("customer") == 0


def test_to_dict_gives_every_field_by_name(world: Callable[..., World]) -> None:
    w = world()
    docs = w.docs()
    c = customer(docs)
    deal = docs.create("Deal", {"customer": c.id, "lines": [{"product": "Seeds", "price": 2}]})
    data = docs.to_dict("Deal", deal, json=True)
    assert data["customer"] == c.id and data["manager"] == w.users["ivan"]
    assert data["number"] == "D-000001" and data["status"] == "new"
    assert data["total"] == "2.00" and data["version"] == 1
    assert data["lines"] == [
        {"id": deal.lines[0].id, "product": "Seeds", "qty": "1.0000", "price": "2.00",
         "amount": "2.00"},
    ]  # fmt: skip
    assert data["created_at"].startswith("2026-03-02T09:00:00")


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL (CRM_TEST_DATABASE_URL)")
def test_concurrent_saves_never_share_or_skip_a_number(world: Callable[..., World]) -> None:
    """Eight workers save deals at once: the counter's row lock queues them."""
    w = world()
    c = customer(w.docs())
    w.session.commit()
    start = threading.Barrier(8)
    numbers: list[str] = []
    failures: list[BaseException] = []

    def save() -> None:
        try:
            with Session(w.engine) as session:
                docs = Documents(w.models, session, w.users["ivan"], ["manager"], now=NOW)
                start.wait()
                deal = docs.create("Deal", {"customer": c.id})
                time.sleep(0.01)  # hold the lock a little, as a real request would
                session.commit()
                numbers.append(deal.number)
        except BaseException as exc:  # reported below, not lost in the thread
            failures.append(exc)

    threads = [threading.Thread(target=save) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert sorted(numbers) == [f"D-{n:06d}" for n in range(1, 9)]
