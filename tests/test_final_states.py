"""Final states lock a record: its fields and table rows stay as they were
unless the state's ``editable`` allows a change (some fields, some roles);
moves out of the state still work."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from flask_appbuilder import Model
from sqlalchemy.orm import Session

from engine.documents import DeleteRefused, Documents, ValidationFailed
from engine.models import build
from engine.registry import Registry
from engine.statuses import StatusEngine

CONFIG = "name: Romashka LLC\nlocale: en\nregion: RU\ntimezone: Europe/Moscow\nlayers: []\n"
CRM = """
roles:
  manager:    {label: Manager}
  sales_head: {label: Sales head}
documents:
  Order:
    label: Order
    numbering: {prefix: "CO-", width: 4}
    title: "{{ number }}"
    fields:
      note:   {type: string}
      client: {type: string}
      lines:
        type: table
        fields:
          product: {type: string, required: true}
          qty:     {type: decimal, default: 1}
          price:   {type: money}
          amount:  {type: money, compute: "(qty or 0) * (price or 0)"}
      total: {type: money, compute: "lines | sum(attribute='amount')"}
    statuses:
      initial: new
      states:
        new:       {label: New}
        cancelled: {label: Cancelled, final: true}
        closed:    {label: Closed, final: true, editable: [note]}
        archived:  {label: Archived, final: true, editable: {roles: [sales_head]}}
        paused:    {label: Paused, editable: false}
      transitions:
        - {from: "*", to: [cancelled, closed, archived, paused]}
        - {from: cancelled, to: new}
"""


@pytest.fixture
def docs_for(
    load_config: Callable[..., Registry], db_url: str
) -> Iterator[Callable[[list[str]], Documents]]:
    registry = load_config({"crm.yaml": CRM}, CONFIG)
    models = build(registry)
    engine = sa.create_engine(db_url)
    Model.metadata.create_all(engine)
    models.metadata.create_all(engine)
    session = Session(engine)

    def make(roles: list[str]) -> Documents:
        return Documents(models, session, None, roles, None, username="ivan")

    yield make
    session.close()
    models.dispose()
    engine.dispose()


def order_in(docs: Documents, state: str) -> Any:
    order = docs.create(
        "Order", {"note": "call first", "lines": [{"product": "Tea", "qty": 2, "price": 10}]}
    )
    if state != "new":
        StatusEngine(docs).apply("Order", order, state)
    docs.session.flush()
    return order


def errors_of(call: Callable[[], Any]) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as info:
        call()
    return info.value.errors


def test_a_cancelled_orders_lines_and_total_stay_as_they_were(
    docs_for: Callable[[list[str]], Documents],
) -> None:
    docs = docs_for(["manager"])
    order = order_in(docs, "cancelled")
    rows = [{"id": order.lines[0].id, "product": "Tea", "qty": 5, "price": 10}]
    errors = errors_of(lambda: docs.update("Order", order, {"lines": rows}))
    assert errors == {"lines": "“Order” CO-0001 is Cancelled: its fields can no longer be changed"}
    errors = errors_of(lambda: docs.update("Order", order, {"note": "x", "client": "Acme"}))
    assert set(errors) == {"note", "client"}
    docs.session.refresh(order)
    assert order.total == Decimal("20") and order.lines[0].qty == 2 and order.note == "call first"
    # sending back what it holds is no change
    docs.update("Order", order, {"note": "call first"})
    with pytest.raises(DeleteRefused, match="is Cancelled"):
        docs.delete("Order", order)
    # a move out of the final state still works, and the order is editable again
    StatusEngine(docs).apply("Order", order, "new")
    docs.update("Order", order, {"lines": rows})
    assert order.total == Decimal("50")


def test_editable_fields_of_a_final_state_may_change_and_only_they(
    docs_for: Callable[[list[str]], Documents],
) -> None:
    docs = docs_for(["manager"])
    order = order_in(docs, "closed")
    docs.update("Order", order, {"note": "paid in cash"})
    assert order.note == "paid in cash"
    assert set(errors_of(lambda: docs.update("Order", order, {"client": "Acme"}))) == {"client"}
    assert set(errors_of(lambda: docs.update("Order", order, {"lines": []}))) == {"lines"}


def test_a_state_may_stay_editable_for_some_roles_only(
    docs_for: Callable[[list[str]], Documents],
) -> None:
    manager = docs_for(["manager"])
    order = order_in(manager, "archived")
    assert set(errors_of(lambda: manager.update("Order", order, {"client": "Acme"}))) == {"client"}
    head = docs_for(["sales_head"])
    head.update("Order", order.id, {"client": "Acme", "lines": []})
    assert order.client == "Acme" and order.total == 0


def test_a_state_that_is_not_final_may_lock_too(
    docs_for: Callable[[list[str]], Documents],
) -> None:
    docs = docs_for(["manager"])
    assert "note" in errors_of(
        lambda: docs.update("Order", order_in(docs, "paused"), {"note": "x"})
    )
    docs.update("Order", order_in(docs, "new"), {"note": "x"})
