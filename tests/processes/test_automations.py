"""Automations: an event, a condition, actions — and what leaves the system
goes through the outbox once, whatever happens to the save or the worker."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

from engine import jobs
from engine.statuses import StatusEngine
from plugins.processes import tasks as task_api
from plugins.processes.runtime import ProcessError

SHIPPED = """
attributes:
  CustomerOrder:
    shipped_note: {type: string, label: Shipping note}
automations:
  order_shipped:
    on: {document: CustomerOrder, status: shipped}
    when: "doc.customer.phone"
    do:
      - notify: {channel: sms, to: "{{ doc.customer.phone }}", text: "Order {{ doc.number }} has shipped"}
      - notify: {channel: email, to: "{{ doc.customer.email }}", subject: "Order {{ doc.number }}", text: "It is on its way."}
      - set: {shipped_note: "SMS sent to {{ doc.customer.phone }}"}
      - create: {document: Task, values: {title: "Call {{ doc.customer.name }} about the delivery", assignee: "{{ doc.manager.id }}"}}
      - start: {process: after_sale}
  welcome:
    on: {document: Customer, event: create}
    do:
      - notify: {channel: user, to: manager, text: "New customer {{ doc.name }}"}
processes:
  after_sale:
    document: CustomerOrder
    start: {on: {status: closed}}
    steps:
      survey:
        task: {title: "Ask {{ doc.customer.name }} how it went", assignee: manager, due: 3d}
        next: done
      done: {end: true}
"""


def config(smtp: Any, sms: Any) -> str:
    return (
        "name: Test sales\nlocale: en\ntimezone: Europe/Moscow\nlayers: [base]\n"
        "plugins:\n  processes: {}\n"
        f"  sample: {{smtp_host: 127.0.0.1, smtp_port: {smtp.port}, "
        f"sms_url: 'http://127.0.0.1:{sms.server_address[1]}/sms'}}\n"
    )


@pytest.fixture
def shop(world_for: Any, sample_plugin: None, smtp: Any, sms: Any) -> Any:
    return world_for({"shop.yaml": SHIPPED}, config(smtp, sms))


def order(w: Any, s: Any, phone: str | None = "+7 495 123-45-67") -> Any:
    customer = w.customer(s, phone=phone)
    o = w.docs(s).create(
        "CustomerOrder",
        {"customer": customer.id, "lines": [{"product": "Paper A4", "qty": 10, "price": 250}]},
    )
    StatusEngine(w.docs(s)).apply("CustomerOrder", o, "confirmed")
    return o


def runner(w: Any) -> jobs.Runner:
    return jobs.Runner(w.models, w.engine, w.pm, clock=lambda: w.now)


def test_shipping_sends_an_sms_and_an_email_once(shop: Any, smtp: Any, sms: Any) -> None:
    w = shop
    s = w.session()
    o = order(w, s)
    StatusEngine(w.docs(s)).apply("CustomerOrder", o, "shipped")
    s.commit()
    # nothing has left yet: the messages wait in the outbox for the runner
    assert sms.received == [] and smtp.accepted == []
    assert runner(w).drain() == 2
    [message] = sms.received
    assert message["to"] == "+74951234567"
    assert message["text"] == f"Order {o.number} has shipped"
    [mail] = smtp.messages
    assert mail["To"] == "buyer@romashka.example" and mail["Subject"] == f"Order {o.number}"
    # running again delivers nothing twice
    assert runner(w).drain() == 0
    assert len(sms.received) == 1 and len(smtp.accepted) == 1
    s.refresh(o)
    assert o.shipped_note == "SMS sent to +74951234567"
    cls = w.models.cls("Task")
    task, survey = s.execute(sa.select(cls).order_by(cls.id)).scalars()
    assert task.title == "Call ООО Ромашка about the delivery" and task.process_id is None
    assert task.assignee_id == w.users["anna"]
    # and the `start` action started the after-sale process at once
    assert survey.title == "Ask ООО Ромашка how it went" and survey.step == "survey"


def test_a_refused_save_sends_nothing(shop: Any, sms: Any) -> None:
    w = shop
    s = w.session()
    o = order(w, s)
    StatusEngine(w.docs(s)).apply("CustomerOrder", o, "shipped")
    s.rollback()  # the user's save failed after the automation ran
    assert runner(w).drain() == 0
    assert sms.received == []


def test_the_condition_holds_the_automation_back(shop: Any, sms: Any) -> None:
    w = shop
    s = w.session()
    o = order(w, s, phone=None)
    StatusEngine(w.docs(s)).apply("CustomerOrder", o, "shipped")
    s.commit()
    runner(w).drain()
    assert sms.received == []
    s.refresh(o)
    assert o.shipped_note is None


def test_an_automation_starts_a_process_and_notifies_in_the_app(shop: Any) -> None:
    w = shop
    s = w.session()
    o = order(w, s, phone=None)
    notes = w.models.cls("Notification")
    [welcome] = s.execute(sa.select(notes)).scalars()
    assert welcome.text == "New customer ООО Ромашка" and welcome.recipient_id == w.users["anna"]
    StatusEngine(w.docs(s)).apply("CustomerOrder", o, "shipped")
    StatusEngine(w.docs(s)).apply("CustomerOrder", o, "closed")
    s.commit()
    tasks = s.execute(sa.select(w.models.cls("Task")).order_by(sa.text("id"))).scalars().all()
    assert [t.title for t in tasks] == ["Ask ООО Ромашка how it went"]
    task_api.complete(w.docs(s), tasks[0].id, None)
    s.commit()
    instance = s.execute(sa.select(w.models.cls("ProcessInstance"))).scalar_one()
    assert instance.status == "done"


LOOP = """
attributes:
  Customer:
    touched: {type: integer, default: 0}
automations:
  ping:
    on: {document: Customer, field: touched}
    do:
      - set: {touched: "{{ (doc.touched or 0) + 1 }}"}
"""


def test_automations_that_set_each_other_off_forever_are_refused(world_for: Any) -> None:
    w = world_for({"loop.yaml": LOOP})
    s = w.session()
    customer = w.customer(s)
    s.commit()
    with pytest.raises(ProcessError, match=r"set one another off more than 8 times.*ping"):
        w.docs(s).update("Customer", customer, {"touched": 1})
    s.rollback()
    s.refresh(customer)
    assert customer.touched == 0


def test_overdue_tasks_are_marked_and_told_once(world_for: Any) -> None:
    w = world_for({})
    s = w.session()
    customer = w.customer(s)
    w.docs(s).create("Deal", {"customer": customer.id, "kind": "typical", "amount": 10})
    s.commit()
    # the head of anna's department hears of it too
    dept = w.docs(s, "head1", ("sales_head",)).create(
        "Department", {"name": "Sales", "head": w.users["head1"]}
    )
    users = w.models.table("User")
    s.execute(users.update().where(users.c.id == w.users["anna"]).values(department_id=dept.id))
    s.commit()
    w.now += dt.timedelta(days=5)
    jobs.enqueue(s, "processes.deadlines", {}, key="deadlines:test")
    s.commit()
    assert runner(w).drain() == 1
    [task] = s.execute(sa.select(w.models.cls("Task"))).scalars()
    s.refresh(task)
    assert task.overdue is True
    notes = s.execute(sa.select(w.models.cls("Notification"))).scalars().all()
    assert sorted(n.recipient_id for n in notes) == sorted([w.users["anna"], w.users["head1"]])
    assert all(n.text == f"Overdue: {task.title}" for n in notes)
    jobs.enqueue(s, "processes.deadlines", {}, key="deadlines:again")
    s.commit()
    runner(w).drain()
    assert len(s.execute(sa.select(w.models.cls("Notification"))).scalars().all()) == 2
