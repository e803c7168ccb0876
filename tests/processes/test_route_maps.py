"""A consultant's route map runs end to end: tasks for the right people,
outcomes and conditions choose the way, a parallel branch joins, a wait
resumes, the document's stage follows the process."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

from engine.documents import ValidationFailed
from engine.statuses import StatusEngine, TransitionRefused
from plugins.processes import tasks as task_api
from plugins.processes.tasks import AlreadyClosed

SALE = """
processes:
  typical_sale:  # replaces the layer's typical sale
    label: Big sale
    document: Deal
    start: {on: create, when: "kind == 'typical'"}
    steps:
      qualify:
        task: {title: "Qualify {{ doc.number }}", assignee: owner, due: 2d}
        outcomes: {ok: check_amount, reject: lost}
      check_amount:
        if: "doc.amount >= 1000000"
        then: approve
        else: both
      approve:
        set: {stage: proposal}
        task: {title: "Approve the discount on {{ doc.number }}", assignee: {role: sales_head}, due: 1bd}
        outcomes: {approved: both, rejected: lost}
      both:
        parallel: [call_client, tell_client]
        join: contract
      call_client:
        task: {title: "Call {{ doc.customer.name }}", assignee: owner, due: 4h}
        next: contract
      tell_client:
        notify: {channel: user, to: owner, text: "Offer {{ doc.number }} is ready"}
        next: pause
      pause:
        wait: 1d
        next: contract
      contract:
        set: {stage: contract}
        task: {title: "Sign the contract", assignee: owner, due: 3bd}
        outcomes: {signed: won, lost: lost}
      won:  {end: true, set: {stage: won}}
      lost: {end: true, set: {stage: lost}}
"""


def open_tasks(w: Any, session: Any, user: str | None = None) -> list[Any]:
    cls = w.models.cls("Task")
    q = sa.select(cls).where(cls.status == "open").order_by(cls.id)
    if user:
        q = q.where(cls.assignee_id == w.users[user])
    return list(session.execute(q).scalars())


def stage(w: Any, session: Any, deal_id: int) -> str:
    return str(session.get(w.models.cls("Deal"), deal_id).stage)


def test_a_route_map_runs_from_start_to_end(world_for: Any) -> None:
    w = world_for({"sale.yaml": SALE})
    s = w.session()
    customer = w.customer(s)
    deal = w.docs(s).create(
        "Deal", {"customer": customer.id, "kind": "typical", "amount": 2_000_000}
    )
    manual = w.docs(s).create("Deal", {"customer": customer.id, "kind": "manual"})
    s.commit()

    # the process started for the typical deal only, with a task for its owner
    [qualify] = open_tasks(w, s)
    assert qualify.title == f"Qualify {deal.number}"
    assert qualify.assignee_id == w.users["anna"]
    assert qualify.due == w.now + dt.timedelta(days=2) or qualify.due.replace(
        tzinfo=dt.UTC
    ) == w.now + dt.timedelta(days=2)
    assert qualify.doctype == "Deal" and qualify.doc_id == deal.id
    instances = w.models.cls("ProcessInstance")
    assert s.execute(sa.select(sa.func.count()).select_from(instances)).scalar() == 1
    del manual

    # the amount is large: approval by the least loaded head of sales
    task_api.complete(w.docs(s), qualify.id, "ok")
    s.commit()
    [approve] = open_tasks(w, s)
    assert approve.assignee_id == w.users["head1"]
    assert stage(w, s, deal.id) == "proposal"

    # approved: both branches at once — a task and a notification, then a wait
    task_api.complete(w.docs(s, "head1", ("sales_head",)), approve.id, "approved")
    s.commit()
    [call] = open_tasks(w, s)
    assert call.title == "Call ООО Ромашка"
    notes = w.models.cls("Notification")
    [note] = s.execute(sa.select(notes)).scalars()
    assert note.recipient_id == w.users["anna"] and note.text == f"Offer {deal.number} is ready"
    instance = s.execute(sa.select(instances)).scalar_one()
    states = sorted((t.step, t.state) for t in instance.tokens if t.state != "done")
    assert states == [("call_client", "waiting"), ("pause", "waiting")]

    # one branch at the join waits for the other
    task_api.complete(w.docs(s), call.id, None)
    s.commit()
    assert open_tasks(w, s) == []
    assert stage(w, s, deal.id) == "proposal"

    # the wait's time comes (the job runner calls resume): the contract step
    pause = next(t for t in instance.tokens if t.step == "pause")
    from plugins.processes import definitions_for
    from plugins.processes.runtime import Runtime

    w.now += dt.timedelta(days=1, minutes=1)
    Runtime(w.docs(s), definitions_for(w.models.registry, w.pm)).resume(
        instance.id, pause.id, "pause"
    )
    s.commit()
    [sign] = open_tasks(w, s)
    assert sign.title == "Sign the contract"
    assert stage(w, s, deal.id) == "contract"

    task_api.complete(w.docs(s), sign.id, "signed")
    s.commit()
    s.refresh(instance)
    assert stage(w, s, deal.id) == "won"
    assert instance.status == "done" and instance.finished_at is not None
    assert all(t.state == "done" for t in instance.tokens)


def test_a_small_deal_skips_the_approval_and_a_rejection_ends_lost(world_for: Any) -> None:
    w = world_for({"sale.yaml": SALE})
    s = w.session()
    customer = w.customer(s)
    small = w.docs(s).create("Deal", {"customer": customer.id, "kind": "typical", "amount": 1000})
    doomed = w.docs(s).create("Deal", {"customer": customer.id, "kind": "typical", "amount": 5})
    s.commit()
    first, second = open_tasks(w, s)
    task_api.complete(w.docs(s), first.id, "ok")
    task_api.complete(w.docs(s), second.id, "reject")
    s.commit()
    assert [t.step for t in open_tasks(w, s)] == ["call_client"]
    assert stage(w, s, small.id) == "new"
    assert stage(w, s, doomed.id) == "lost"


def test_completing_a_task_twice_advances_once(world_for: Any) -> None:
    w = world_for({"sale.yaml": SALE})
    s = w.session()
    customer = w.customer(s)
    w.docs(s).create("Deal", {"customer": customer.id, "kind": "typical", "amount": 10})
    s.commit()
    [qualify] = open_tasks(w, s)
    task_api.complete(w.docs(s), qualify.id, "ok")
    s.commit()
    with pytest.raises(AlreadyClosed, match="already done with the outcome `ok` by anna"):
        task_api.complete(w.docs(s), qualify.id, "reject")
    s.rollback()
    assert [t.step for t in open_tasks(w, s)] == ["call_client"]


def test_an_outcome_must_be_one_of_the_tasks(world_for: Any) -> None:
    w = world_for({"sale.yaml": SALE})
    s = w.session()
    customer = w.customer(s)
    w.docs(s).create("Deal", {"customer": customer.id, "kind": "typical", "amount": 10})
    s.commit()
    [qualify] = open_tasks(w, s)
    with pytest.raises(ValidationFailed) as err:
        task_api.complete(w.docs(s), qualify.id, "maybe")
    assert err.value.errors == {"outcome": "choose one of: ok, reject"}
    # the plain transition cannot skip the outcome either
    with pytest.raises(TransitionRefused, match="completed with an outcome: ok, reject"):
        StatusEngine(w.docs(s)).apply("Task", qualify, "done")
    s.rollback()
    assert len(open_tasks(w, s)) == 1


def test_the_least_loaded_member_of_a_role_gets_the_task(world_for: Any) -> None:
    w = world_for({"sale.yaml": SALE})
    s = w.session()
    customer = w.customer(s)
    for _ in range(3):
        w.docs(s).create("Deal", {"customer": customer.id, "kind": "typical", "amount": 5_000_000})
    s.commit()
    for t in open_tasks(w, s, "anna"):
        task_api.complete(w.docs(s), t.id, "ok")
    s.commit()
    heads = sorted(t.assignee_id for t in open_tasks(w, s) if t.step == "approve")
    assert heads == sorted([w.users["head1"], w.users["head2"], w.users["head1"]])


def test_deleting_the_document_cancels_its_process(world_for: Any) -> None:
    w = world_for({"sale.yaml": SALE})
    s = w.session()
    customer = w.customer(s)
    deal = w.docs(s).create("Deal", {"customer": customer.id, "kind": "typical", "amount": 10})
    s.commit()
    w.docs(s, "head1", ("sales_head",)).delete("Deal", deal.id)
    s.commit()
    instance = s.execute(sa.select(w.models.cls("ProcessInstance"))).scalar_one()
    assert instance.status == "cancelled"
    assert open_tasks(w, s) == []


BUSINESS = """
processes:
  follow_up:
    document: Interaction
    start: {on: {status: done}}
    steps:
      remind:
        task: {title: "Send the minutes of {{ subject }}", assignee: manager, due: 2bd}
        next: finish
      finish: {end: true}
"""


def test_business_days_skip_the_weekend_and_holidays(world_for: Any) -> None:
    config = (
        "name: T\nlocale: en\ntimezone: Europe/Moscow\nlayers: [base]\n"
        "plugins:\n  processes: {holidays: [2026-12-07]}\n"
    )
    w = world_for({"p.yaml": BUSINESS}, config)
    w.now = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)  # a Friday, 15:00 in Moscow
    s = w.session()
    customer = w.customer(s)
    interest = w.docs(s).create("Interest", {"subject": "Audit", "customer": customer.id})
    call = w.docs(s).create(
        "Interaction",
        {
            "subject": "Kick-off",
            "customer": customer.id,
            "planned_at": w.now + dt.timedelta(days=3),
        },
    )
    StatusEngine(w.docs(s)).apply("Interaction", call, "cancelled")  # not `done`: nothing starts
    s.commit()
    assert open_tasks(w, s) == []
    call2 = w.docs(s).create(
        "Interaction",
        {
            "subject": "Demo",
            "customer": customer.id,
            "interest": interest.id,
            "planned_at": w.now + dt.timedelta(days=3),
        },
    )
    StatusEngine(w.docs(s)).apply(
        "Interaction", call2, "done", fields={"result": "Went well"},
        next=[{"subject": "Next", "customer": customer.id, "planned_at": w.now + dt.timedelta(days=5)}],
    )  # fmt: skip
    s.commit()
    [task] = open_tasks(w, s)
    due = task.due if task.due.tzinfo else task.due.replace(tzinfo=dt.UTC)
    # Friday + 2 business days, Monday 7th a holiday: Wednesday the 9th, same hour
    assert due == dt.datetime(2026, 12, 9, 12, 0, tzinfo=dt.UTC)


def test_the_typical_sale_of_the_base_configuration(world_for: Any) -> None:
    w = world_for({})
    s = w.session()
    customer = w.customer(s)
    deal = w.docs(s).create(
        "Deal", {"customer": customer.id, "kind": "typical", "amount": 1_500_000}
    )
    s.commit()
    [qualify] = open_tasks(w, s)
    assert qualify.title.startswith(f"Квалифицировать сделку {deal.number}")
    assert stage(w, s, deal.id) == "qualification"
    # fixed stages: a person cannot drag a typical sale elsewhere, its process moves it
    with pytest.raises(TransitionRefused, match="moves only through its process"):
        StatusEngine(w.docs(s)).apply("Deal", deal, "proposal")
    s.rollback()
    task_api.complete(w.docs(s), qualify.id, "qualified")
    [offer] = open_tasks(w, s)
    assert stage(w, s, deal.id) == "proposal"
    task_api.complete(w.docs(s), offer.id, "sent")
    [approve] = open_tasks(w, s)
    assert approve.assignee_id in (w.users["head1"], w.users["head2"])
    task_api.complete(w.docs(s, "head1", ("sales_head",)), approve.id, "approved")
    [sign] = open_tasks(w, s)
    assert stage(w, s, deal.id) == "contract"
    task_api.complete(w.docs(s), sign.id, "signed")
    s.commit()
    assert stage(w, s, deal.id) == "won"
    # a manual deal is moved by hand as before
    manual = w.docs(s).create("Deal", {"customer": customer.id, "kind": "manual"})
    StatusEngine(w.docs(s)).apply(
        "Deal", manual, "qualification", fields={"planned_close": "2027-01-31"}
    )
    s.commit()
    assert stage(w, s, manual.id) == "qualification"


def test_a_deals_tasks_are_on_its_customers_timeline(world_for: Any) -> None:
    from engine import timeline
    from engine.access import Principal

    w = world_for({"sale.yaml": SALE})
    s = w.session()
    customer = w.customer(s)
    deal = w.docs(s).create("Deal", {"customer": customer.id, "kind": "typical", "amount": 10})
    s.commit()
    [qualify] = open_tasks(w, s)
    w.now += dt.timedelta(hours=1)
    task_api.complete(w.docs(s), qualify.id, "ok")
    s.commit()
    registry = w.models.registry

    def entries(user: str, roles: tuple[str, ...]) -> list[tuple[str, str, str | None]]:
        got, _ = timeline.page(
            w.models, s, w.pm, registry.documents["Customer"], customer.id,
            Principal(w.users[user], user, frozenset(roles)),
        )  # fmt: skip
        return [(e.kind, e.doctype, e.detail) for e in got if e.doctype == "Task"]

    assert entries("anna", ("manager",)) == [
        ("task", "Task", "assigned"),
        ("task_done", "Task", "done: ok"),
        ("task", "Task", "assigned"),
    ]
    del deal
    # another manager reads none of anna's tasks
    assert entries("boris", ("manager",)) == []


def test_a_config_switches_the_typical_sale_off(world_for: Any) -> None:
    # with its process switched off, a typical deal is moved by hand: the
    # config says so (crm check refuses a `process` kind no process moves)
    off = (
        "processes:\n  typical_sale: {enabled: false}\n"
        "documents:\n  Deal:\n    statuses:\n      control: {process: []}\n"
    )
    w = world_for({"off.yaml": off})
    s = w.session()
    customer = w.customer(s)
    deal = w.docs(s).create("Deal", {"customer": customer.id, "kind": "typical", "amount": 10})
    s.commit()
    assert open_tasks(w, s) == []
    StatusEngine(w.docs(s)).apply(
        "Deal", deal, "qualification", fields={"planned_close": "2027-01-31"}
    )
    s.commit()
    assert stage(w, s, deal.id) == "qualification"
