"""A route map stops: cancelling its process cancels its open tasks, which
cannot be completed afterwards; `stop_when` cancels it when the document
comes to a state the map names."""

from __future__ import annotations

import datetime as dt
import html
import re
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from engine import timeline
from engine.access import Principal
from engine.documents import Documents
from engine.statuses import StatusEngine
from plugins.processes import tasks as task_api
from plugins.processes.tasks import AlreadyClosed
from tests.web.conftest import Browser, crm_app  # noqa: F401 - its fixture
from tests.web.test_costs import statements_of

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


CONFIG = "name: Test sales\nlocale: en\nlayers: [base]\nplugins:\n  processes: {}\n"


def test_the_record_page_disables_the_moves_a_running_process_refuses(
    crm_app: Any,  # noqa: F811 - the fixture
) -> None:
    app: Flask = crm_app(SALE, CONFIG)
    state = app.extensions["crm"]
    with app.app_context():
        session = state.db.session
        users = state.models.table("User")
        ids = dict(session.execute(sa.select(users.c.username, users.c.id)).tuples().all())
        docs = Documents(state.models, session, ids["anna"], ["manager"], state.pm, username="anna")
        customer = docs.create("Customer", {"name": "ООО Ромашка"})
        steered = docs.create("Deal", {"customer": customer.id, "kind": "typical", "amount": 5})
        free = docs.create("Deal", {"customer": customer.id, "kind": "simple", "amount": 5})
        session.commit()
        steered_id, free_id = steered.id, free.id
        engine = state.db.engine
    anna = Browser(app, "anna", "secret")
    with statements_of(engine) as seen:
        page = anna.get(f"/deal/{steered_id}")
    assert page.status_code == 200
    # a typical sale offers no move by hand: the page says its process moves it
    assert refused_moves(page.text) == {} and 'data-to="qualification"' not in page.text
    assert "moves only through its process" in html.unescape(page.text)
    why = "its stages follow the process “Big sale”: complete the process's tasks to move it"
    # no query for the record's running instances: its kind alone says no
    running = [st for st in seen if "process_instance.status" in st and "running" in st.lower()]
    assert len(running) <= 1, running
    # a deal without a process keeps its moves
    other = anna.get(f"/deal/{free_id}").text
    assert why not in refused_moves(other).values()
    assert 'data-to="qualification"' in other
    # the head cancels the process over REST: anna's task goes with it, and
    # completing it from a stale tab is a 409 that says why
    with app.app_context():
        instances = state.models.cls("ProcessInstance")
        instance_id = session.execute(
            sa.select(instances.id).where(instances.doc_id == steered_id)
        ).scalar_one()
        tasks = state.models.cls("Task")
        task_id = session.execute(
            sa.select(tasks.id).where(tasks.process_id == instance_id)
        ).scalar_one()
        resource = state.registry.documents["ProcessInstance"].resource
    helen = Browser(app, "helen", "secret")
    cancel = helen.api(
        "POST", f"/api/v1/{resource}/{instance_id}/transition", json={"to": "cancelled"}
    )
    assert cancel.status_code == 200, cancel.text
    late = anna.api("POST", f"/api/v1/task/{task_id}/complete", json={"outcome": "ok"})
    assert late.status_code == 409
    assert late.json["message"] == "the task was cancelled: the process “Big sale” was cancelled"
    # the deal is still a typical sale: it stays where the process left it
    # until someone who may edit it changes its kind to manual stages
    assert 'data-to="qualification"' not in anna.get(f"/deal/{steered_id}").text
    with app.app_context():
        docs = Documents(state.models, session, ids["anna"], ["manager"], state.pm, username="anna")
        docs.update("Deal", steered_id, {"kind": "manual"})
        session.commit()
    page = anna.get(f"/deal/{steered_id}").text
    assert refused_moves(page) == {} and 'data-to="qualification"' in page


def refused_moves(page: str) -> dict[str, str]:
    """The record page's disabled move buttons: target → the reason in their title."""
    found = re.findall(
        r'<span class="crm-move-refused" data-to="(\w+)">\s*<button[^>]*title="([^"]*)"', page
    )
    return {to: html.unescape(title) for to, title in found}
