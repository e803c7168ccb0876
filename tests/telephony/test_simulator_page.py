"""The simulator's "Ring me" page: an incoming call rung into the user's own
extension (from a typed number or a customer's phone), then answered, hung
up or missed — ordinary call events, with what follows from them."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import create, rows, user_id


@pytest.fixture
def app(phone_app: Any) -> Any:
    return phone_app()


def test_ring_me_then_answer_and_hang_up_makes_an_answered_call_on_the_timeline(
    app: Any, login: Any
) -> None:
    cid = create(app, "Customer", {"name": "Romashka", "phone": "+74951234567",
                                   "manager": user_id(app, "manager")})  # fmt: skip
    anna = login(app, "manager")
    page = anna.get("/telephony/simulator/").text
    assert "Your extension: 101" in page and 'href="/telephony/simulator/"' in page  # the menu
    ringing = anna.client.post("/telephony/simulator/ring",
                               data={"csrf_token": anna.csrf, "known": "1"})  # fmt: skip
    assert ringing.status_code == 303
    (call,) = rows(app, "Call")
    assert (call["direction"], call["status"], call["number"]) == ("in", "ringing", "+74951234567")
    assert (call["user_id"], call["customer_id"], call["provider"]) == (
        user_id(app, "manager"), cid, "simulator",
    )  # fmt: skip
    assert anna.get("/telephony/ringing").get_json()["calls"] == [call["id"]]
    for action in ("answer", "hangup"):
        done = anna.client.post(f"/telephony/simulator/{call['id']}/{action}",
                                data={"csrf_token": anna.csrf})  # fmt: skip
        assert done.status_code == 303
    (call,) = rows(app, "Call")
    assert call["status"] == "answered" and call["ended_at"] is not None
    (interaction,) = rows(app, "Interaction", customer_id=cid)
    assert (interaction["kind"], interaction["status"]) == ("call", "done")
    assert "Answered" in anna.get("/telephony/simulator/").text


def test_a_missed_simulated_call_gives_a_call_back_task(app: Any, login: Any) -> None:
    anna = login(app, "manager")
    anna.client.post("/telephony/simulator/ring",
                     data={"csrf_token": anna.csrf, "number": "8 (916) 111-22-33"})  # fmt: skip
    (call,) = rows(app, "Call")
    anna.client.post(f"/telephony/simulator/{call['id']}/miss", data={"csrf_token": anna.csrf})
    (call,) = rows(app, "Call")
    assert call["status"] == "missed"
    (task,) = rows(app, "Task")
    assert "+7 916 111-22-33" in task["title"] and task["assignee_id"] == user_id(app, "manager")


def test_what_cannot_be_rung_is_said_and_nothing_is_recorded(app: Any, login: Any) -> None:
    anna = login(app, "manager")
    bad = anna.client.post("/telephony/simulator/ring",
                           data={"csrf_token": anna.csrf, "number": "hello"},
                           follow_redirects=True)  # fmt: skip
    assert "hello is not a phone number." in bad.text
    nobody = anna.client.post("/telephony/simulator/ring",
                              data={"csrf_token": anna.csrf, "known": "1"},
                              follow_redirects=True)  # fmt: skip
    assert "There is no record with a phone you may read." in nobody.text
    marketer = login(app, "marketer")  # no extension
    assert "You have no phone extension" in marketer.get("/telephony/simulator/").text
    refused = marketer.client.post("/telephony/simulator/ring",
                                   data={"csrf_token": marketer.csrf, "number": "+74951234567"},
                                   follow_redirects=True)  # fmt: skip
    assert "You have no phone extension" in refused.text
    assert rows(app, "Call") == []


def test_another_users_simulated_call_cannot_be_touched(app: Any, login: Any) -> None:
    anna = login(app, "manager")
    anna.client.post("/telephony/simulator/ring",
                     data={"csrf_token": anna.csrf, "number": "+74951234567"})  # fmt: skip
    (call,) = rows(app, "Call")
    head = login(app, "sales_head")
    answer = head.client.post(f"/telephony/simulator/{call['id']}/answer",
                              data={"csrf_token": head.csrf})  # fmt: skip
    assert answer.status_code == 404
    assert anna.client.post(f"/telephony/simulator/{call['id']}/explode",
                            data={"csrf_token": anna.csrf}).status_code == 404  # fmt: skip
    assert rows(app, "Call")[0]["status"] == "ringing"
