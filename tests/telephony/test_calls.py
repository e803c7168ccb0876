"""A call's life from a provider's events: matched to the caller, applied in
any order and once each, kept on the customer's timeline when answered, a
call-back task when missed; click-to-call through the simulator."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from engine.api import clock
from engine.testing import drain

from .conftest import create, report, rows, user_id

T0 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)


def at(seconds: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


@pytest.fixture
def app(phone_app: Any) -> Any:
    return phone_app()


def customer(app: Any, phone: str = "+74951234567", owner: str = "manager") -> int:
    return create(
        app, "Customer", {"name": "Romashka", "phone": phone, "manager": user_id(app, owner)}
    )


def test_an_answered_incoming_call_is_filed_against_the_caller_and_kept_on_the_timeline(
    app: Any,
) -> None:
    cid = customer(app)
    person = create(
        app, "ContactPerson", {"customer": cid, "name": "Olga", "phone": "+79161112233"}
    )
    report(
        app,
        call_id="c1",
        kind="ringing",
        direction="in",
        number="8 916 111-22-33",
        extension="101",
        at=at(0),
    )
    report(app, call_id="c1", kind="answered", at=at(5))
    report(app, call_id="c1", kind="hangup", at=at(130))
    (call,) = rows(app, "Call")
    assert (call["number"], call["status"], call["duration"]) == ("+79161112233", "answered", 125)
    assert (call["customer_id"], call["contact_id"]) == (cid, person)
    assert call["user_id"] == user_id(app, "manager")
    (interaction,) = rows(app, "Interaction", customer_id=cid)
    assert (interaction["kind"], interaction["status"], interaction["contact_id"]) == (
        "call",
        "done",
        person,
    )
    assert call["interaction_id"] == interaction["id"]
    assert "2 min 05 s" in interaction["result"]


def test_events_out_of_order_and_twice_come_out_the_same(app: Any) -> None:
    customer(app)
    report(app, call_id="c2", kind="hangup", at=at(90), event_id="e3")
    report(app, call_id="c2", kind="answered", at=at(10), event_id="e2")
    assert report(app, call_id="c2", kind="answered", at=at(10), event_id="e2") is None
    report(
        app,
        call_id="c2",
        kind="ringing",
        direction="in",
        number="+74951234567",
        extension="101",
        at=at(0),
        event_id="e1",
    )
    (call,) = rows(app, "Call")
    assert (call["status"], call["duration"], call["number"]) == ("answered", 80, "+74951234567")
    assert call["started_at"].replace(tzinfo=None) == T0.replace(tzinfo=None)
    assert len(rows(app, "CallEvent")) == 3
    assert len(rows(app, "Interaction")) == 1


def test_a_missed_incoming_call_gives_the_owner_a_call_back_task(app: Any) -> None:
    customer(app, owner="sales_head")
    report(
        app,
        call_id="c3",
        kind="ringing",
        direction="in",
        number="+74951234567",
        extension="101",
        at=at(0),
    )
    report(app, call_id="c3", kind="hangup", at=at(20))
    (call,) = rows(app, "Call")
    assert call["status"] == "missed"
    (task,) = rows(app, "Task", doctype="Call", doc_id=call["id"])
    assert task["assignee_id"] == user_id(app, "sales_head")
    assert "+7 495 123-45-67" in task["title"]
    report(app, call_id="c3", kind="hangup", at=at(20), event_id="again")
    assert len(rows(app, "Task")) == 1


def test_click_to_call_rings_the_users_extension_and_the_simulator_carries_it_through(
    app: Any, login: Any
) -> None:
    from plugins.telephony import placing
    from plugins.telephony.api import system_documents

    customer(app)
    with clock.use(lambda: T0), app.app_context():
        state = app.extensions["crm"]
        session = state.db.session()
        call = placing.place(system_documents(session), user_id(app, "manager"), "+7 495 123 45 67")
        session.commit()
        call_id = call.call_id
    with clock.use(lambda: at(60)):
        drain(app)
    (row,) = rows(app, "Call", call_id=call_id)
    assert (row["direction"], row["extension"], row["status"]) == ("out", "101", "answered")
    assert row["ended_at"] is not None and row["duration"] == 8
    assert rows(app, "Interaction")[0]["kind"] == "call"


def test_the_exchanges_talk_time_stands_when_the_answer_is_reported_late(app: Any) -> None:
    """A hangup that counts 95 s of talk is an answered call; a late answer
    without its own moment changes neither the talk time nor the end."""
    report(app, call_id="c9", kind="hangup", duration=95, at=at(100), event_id="h")
    report(app, call_id="c9", kind="answered", event_id="a")
    (call,) = rows(app, "Call")
    assert (call["status"], call["duration"]) == ("answered", 95)
    answered = call["answered_at"].replace(tzinfo=None)
    assert answered == (T0 + dt.timedelta(seconds=5)).replace(tzinfo=None)
