"""A customer's card: one timeline of everything about it, newest first, paged, in one query."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask_appbuilder import Model
from flask_appbuilder.security.sqla.models import User
from sqlalchemy.orm import Session

from engine import timeline
from engine.access import Principal
from engine.documents import Documents
from engine.hookspecs import hookimpl
from engine.models import Models, build
from engine.plugins import make_plugin_manager
from engine.registry import Registry
from engine.statuses import StatusEngine

CRM = """
roles:
  manager: {label: Manager}
documents:
  Customer:
    title: "{{ name }}"
    fields:
      name: {type: string}
    access:
      manager: {read: true, create: true, update: true}
  Deal:
    title: "{{ subject }}"
    owner: manager
    fields:
      subject:  {type: string}
      customer: {type: ref, to: Customer}
      manager:  {type: ref, to: User, default: current_user}
    statuses:
      initial: new
      states: {new: {label: New}, won: {label: Won, final: true}}
    access:
      manager: {read: own, create: true, update: own}
  Interaction:
    title: "{{ subject }}"
    fields:
      subject:  {type: string}
      customer: {type: ref, to: Customer}
    access:
      manager: {read: true, create: true}
"""


def _user(engine: sa.Engine, name: str) -> int:
    with engine.begin() as conn:
        return int(conn.execute(
            User.__table__.insert().values(username=name, first_name=name, last_name="", email=f"{name}@x.example",
                                           active=True).returning(User.__table__.c.id)).scalar_one())  # fmt: skip


@pytest.fixture
def world(
    load_config: Callable[..., Registry], db_url: str
) -> Iterator[tuple[Models, Session, dict[str, int]]]:
    models = build(load_config({"crm.yaml": CRM}))
    engine = sa.create_engine(db_url)
    Model.metadata.create_all(engine)
    models.metadata.create_all(engine)
    users = {n: _user(engine, n) for n in ("anna", "boris")}
    session = Session(engine)
    yield models, session, users
    session.close()
    models.dispose()
    engine.dispose()


def _docs(models: Models, session: Session, uid: int, at: dt.datetime) -> Documents:
    return Documents(models, session, uid, ["manager"], now=at)


def test_the_timeline_holds_referring_records_and_their_states_newest_first(world: Any) -> None:
    models, session, users = world
    t0 = dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC)
    anna = users["anna"]
    customer = _docs(models, session, anna, t0).create("Customer", {"name": "Romashka"})
    deal = _docs(models, session, anna, t0 + dt.timedelta(hours=1)).create(
        "Deal", {"subject": "Tea supply", "customer": customer.id}
    )
    _docs(models, session, anna, t0 + dt.timedelta(hours=2)).create(
        "Interaction", {"subject": "First call", "customer": customer.id}
    )
    StatusEngine(_docs(models, session, anna, t0 + dt.timedelta(hours=3))).apply(
        "Deal", deal, "won"
    )
    other = _docs(models, session, anna, t0).create("Customer", {"name": "Other"})
    _docs(models, session, anna, t0).create(
        "Interaction", {"subject": "Not about Romashka", "customer": other.id}
    )
    session.commit()
    customer_id = customer.id

    pm, _ = make_plugin_manager({})
    statements: list[str] = []
    sa.event.listen(session.get_bind(), "before_cursor_execute", lambda *a: statements.append(a[2]))
    entries, more = timeline.page(models, session, pm, models.registry.documents["Customer"], customer_id,
                                  Principal(anna, "anna", frozenset({"manager"})))  # fmt: skip
    assert [(e.kind, e.doctype, e.detail) for e in entries] == [
        ("status", "Deal", "won"),
        ("created", "Interaction", None),
        ("created", "Deal", None),
    ]
    assert more is False
    assert len(statements) == 1  # every source in one UNION ALL


def test_a_reader_sees_only_entries_of_records_they_may_read(world: Any) -> None:
    models, session, users = world
    at = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    customer = _docs(models, session, users["anna"], at).create("Customer", {"name": "Shared"})
    _docs(models, session, users["anna"], at).create(
        "Deal", {"subject": "Anna's", "customer": customer.id}
    )
    _docs(models, session, users["boris"], at).create(
        "Deal", {"subject": "Boris's", "customer": customer.id}
    )
    session.commit()
    pm, _ = make_plugin_manager({})
    boris = Principal(users["boris"], "boris", frozenset({"manager"}))
    entries, _ = timeline.page(
        models, session, pm, models.registry.documents["Customer"], customer.id, boris
    )
    deals = [e.doc_id for e in entries if e.doctype == "Deal"]
    assert len(deals) == 1
    assert session.get(models.cls("Deal"), deals[0]).subject == "Boris's"


def test_pages_and_plugin_sources(world: Any) -> None:
    models, session, users = world
    base = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    customer = _docs(models, session, users["anna"], base).create("Customer", {"name": "Busy"})
    for i in range(30):
        _docs(models, session, users["anna"], base + dt.timedelta(minutes=i)).create(
            "Interaction", {"subject": f"call {i}", "customer": customer.id}
        )
    session.commit()

    class Calls:
        @hookimpl
        def crm_timeline_sources(
            self, models: Any, doctype: Any, doc_id: int, principal: Any
        ) -> list[Any]:
            at = sa.literal(dt.datetime(2027, 1, 1, tzinfo=dt.UTC), sa.DateTime(timezone=True))
            return [
                timeline.entry_select(
                    at,
                    "call",
                    "Customer",
                    sa.literal(doc_id, sa.Integer),
                    sa.literal("+74951234567"),
                )
            ]

    pm, _ = make_plugin_manager({})
    pm.register(Calls(), name="calls")
    anna = Principal(users["anna"], "anna", frozenset({"manager"}))
    d = models.registry.documents["Customer"]
    first, more = timeline.page(models, session, pm, d, customer.id, anna, offset=0, limit=25)
    second, more2 = timeline.page(models, session, pm, d, customer.id, anna, offset=25, limit=25)
    assert (len(first), more, len(second), more2) == (25, True, 6, False)
    assert (first[0].kind, first[0].detail) == ("call", "+74951234567")
    subjects = [session.get(models.cls("Interaction"), e.doc_id).subject for e in first[1:4]]
    assert subjects == ["call 29", "call 28", "call 27"]
