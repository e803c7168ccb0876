"""A route map stops: cancelling its process cancels its open tasks, which
cannot be completed afterwards; `stop_when` cancels it when the document
comes to a state the map names."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

from engine import timeline
from engine.access import Principal
from engine.statuses import StatusEngine
from plugins.processes import tasks as task_api
from plugins.processes.tasks import AlreadyClosed

SALE = """
processes:
  typical_sale:
    label: Big sale
    document: Deal
    start: {on: create, when: "kind == 'typical'"}
    steps:
      qualify:
        task: {title: "Qualify {{ doc.number }}", assignee: owner, due: 2d}
        outcomes: {ok: call, reject: lost}
      call:
        task: {title: "Call the client", assignee: owner, due: 4h}
        next: won
      won:  {end: true, set: {stage: won}}
      lost: {end: true, set: {stage: lost}}
"""

HEAD = ("head1", ("sales_head",))


def tasks_of(w: Any, session: Any) -> list[Any]:
    cls = w.models.cls("Task")
    return list(session.execute(sa.select(cls).order_by(cls.id)).scalars())


def instance_of(w: Any, session: Any) -> Any:
    return session.execute(sa.select(w.models.cls("ProcessInstance"))).scalar_one()


def test_cancelling_a_process_cancels_its_tasks_and_refuses_a_late_completion(
    world_for: Any,
) -> None:
    w = world_for({"sale.yaml": SALE})
    s = w.session()
    customer = w.customer(s)
    deal = w.docs(s).create("Deal", {"customer": customer.id, "kind": "typical", "amount": 10})
    s.commit()
    [qualify] = tasks_of(w, s)
    assert qualify.status == "open"
    w.now += dt.timedelta(hours=1)
    StatusEngine(w.docs(s, *HEAD)).apply("ProcessInstance", instance_of(w, s), "cancelled")
    s.commit()
    [qualify] = tasks_of(w, s)
    assert qualify.status == "cancelled"
    assert qualify.reason == "the process “Big sale” was cancelled"
    assert instance_of(w, s).finished_at is not None
    with pytest.raises(AlreadyClosed, match="the task was cancelled: the process “Big sale”"):
        task_api.complete(w.docs(s), qualify.id, "ok")
    s.rollback()
    # the deal's timeline says why the task went
    got, _ = timeline.page(
        w.models, s, w.pm, w.models.registry.documents["Deal"], deal.id,
        Principal(w.users["anna"], "anna", frozenset({"manager"})),
    )  # fmt: skip
    details = [(e.kind, e.detail) for e in got if e.doctype == "Task"]
    assert ("task_cancelled", "cancelled: the process “Big sale” was cancelled") in details
    assert tasks_of(w, s)[0].status == "cancelled"
    assert len(tasks_of(w, s)) == 1  # the process did not go on


FOLLOW_UP = """
processes:
  follow_up:
    label: Follow up
    document: Deal
    start: {on: create}
    stop_when: "stage == 'lost'"
    steps:
      call:
        task: {title: "Call about {{ doc.number }}", assignee: owner, due: 1d}
        next: done
      done: {end: true}
"""


def test_stop_when_cancels_the_process_when_the_document_is_lost(world_for: Any) -> None:
    w = world_for({"sale.yaml": FOLLOW_UP})
    s = w.session()
    customer = w.customer(s)
    deal = w.docs(s).create("Deal", {"customer": customer.id, "amount": 10})
    s.commit()
    [call] = tasks_of(w, s)
    # a save that leaves the condition false changes nothing
    w.docs(s).update("Deal", deal, {"amount": 20})
    s.commit()
    assert instance_of(w, s).status == "running"
    StatusEngine(w.docs(s)).apply("Deal", deal, "lost", fields={"loss_reason": "price"})
    s.commit()
    instance = instance_of(w, s)
    assert instance.status == "cancelled"
    assert instance.reason == "the process “Follow up” stopped: stage == 'lost'"
    [call] = tasks_of(w, s)
    assert call.status == "cancelled"
    with pytest.raises(AlreadyClosed, match="cancelled: the process “Follow up” stopped"):
        task_api.complete(w.docs(s), call.id, None)
