"""What a user sees of calls, through the app's endpoints: click-to-call and
its errors, a call's progress (the user's own calls only), the caller card
within the user's read rules, the phone marks the engine puts on pages, the
call log's quick filters and the recording on a Call's page."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest

from engine.api import clock
from engine.testing import drain

from .conftest import create, report, rows, set_extensions, user_id


@pytest.fixture
def app(phone_app: Any) -> Any:
    return phone_app(telephony={"region": "RU"}, simulator={"answer_after": 1, "talk": 2})


def customer(
    app: Any, name: str = "Romashka", phone: str = "+74951234567", owner: str = "manager"
) -> int:
    return create(app, "Customer", {"name": name, "phone": phone, "manager": user_id(app, owner)})


def ring(
    app: Any, number: str = "+74951234567", extension: str = "101", call_id: str = "in1"
) -> int:
    return int(report(app, call_id=call_id, kind="ringing", direction="in", number=number,
                      extension=extension))  # fmt: skip


# --- click-to-call -----------------------------------------------------------------------------


def test_me_says_the_extension_or_why_there_is_none(app: Any, login: Any) -> None:
    body = login(app, "manager").get("/telephony/me").get_json()
    assert body["extension"] == "101" and body["csrf"] and "reason" not in body
    body = login(app, "marketer").get("/telephony/me").get_json()
    assert body["extension"] is None
    assert "no phone extension" in body["reason"]


def test_a_call_from_the_button_progresses_to_its_end(app: Any, login: Any) -> None:
    customer(app)
    anna = login(app, "manager")
    t0 = clock.now()
    with clock.use(lambda: t0):
        answer = anna.api("POST", "/telephony/call", json={"number": "8 495 123-45-67"})
    assert answer.status_code == 201, answer.get_json()
    call = answer.get_json()
    assert (call["status"], call["number"], call["ended"]) == ("ringing", "+74951234567", False)
    progress = anna.get(f"/telephony/calls/{call['id']}").get_json()
    assert progress["status_label"] == "Ringing" and not progress["answered"]
    with clock.use(lambda: t0 + dt.timedelta(seconds=1.5)):
        drain(app)
    progress = anna.get(f"/telephony/calls/{call['id']}").get_json()
    assert (progress["answered"], progress["ended"]) == (True, False)
    with clock.use(lambda: t0 + dt.timedelta(seconds=10)):
        drain(app)
    progress = anna.get(f"/telephony/calls/{call['id']}").get_json()
    assert (progress["status"], progress["ended"], progress["duration"]) == ("answered", True, 2)


@pytest.mark.parametrize(
    ("who", "body", "status", "says"),
    [
        ("marketer", {"number": "+74951234567"}, 422, "no phone extension"),
        ("manager", {"number": "hello"}, 422, "is not a phone number"),
        ("manager", {"number": ""}, 422, "Give the number"),
        ("manager", {"number": 42}, 422, "Give the number"),
        ("manager", ["+74951234567"], 400, "not a JSON object"),
    ],
)
def test_a_call_that_cannot_be_placed_is_a_4xx_with_a_message_and_no_record(
    app: Any, login: Any, who: str, body: Any, status: int, says: str
) -> None:
    answer = login(app, who).api("POST", "/telephony/call", json=body)
    assert answer.status_code == status
    assert says in answer.get_json()["message"]
    assert rows(app, "Call") == []


def test_without_a_provider_the_call_is_refused_and_nothing_is_kept(
    phone_app: Any, login: Any
) -> None:
    app = phone_app(simulator=None)
    answer = login(app, "manager").api("POST", "/telephony/call", json={"number": "+74951234567"})
    assert answer.status_code == 422
    assert "No telephony provider" in answer.get_json()["message"]
    assert rows(app, "Call") == []


def test_a_post_without_the_csrf_token_is_refused(app: Any, login: Any) -> None:
    anna = login(app, "manager")
    answer = anna.client.post("/telephony/call", json={"number": "+74951234567"})
    assert answer.status_code == 400
    assert rows(app, "Call") == []


def test_another_users_call_is_not_found(app: Any, login: Any) -> None:
    mine = login(app, "manager").api("POST", "/telephony/call", json={"number": "+74951234567"})
    call_id = mine.get_json()["id"]
    assert login(app, "sales_head").get(f"/telephony/calls/{call_id}").status_code == 404
    assert login(app, "sales_head").get(f"/telephony/card/{call_id}").status_code == 404
    assert login(app, "manager").get("/telephony/calls/999999").status_code == 404


# --- the caller card ---------------------------------------------------------------------------


def test_a_ringing_call_is_offered_to_the_user_it_rings_only(app: Any, login: Any) -> None:
    customer(app)
    call = ring(app)
    anna = login(app, "manager")
    first = anna.get("/telephony/ringing").get_json()
    assert first["calls"] == [call] and "Romashka" in first["cards"][str(call)]
    # a card the page has shown is not sent again
    assert anna.get(f"/telephony/ringing?seen={call}").get_json() == {"calls": [call], "cards": {}}
    assert login(app, "sales_head").get("/telephony/ringing").get_json()["calls"] == []
    report(app, call_id="in1", kind="answered")
    assert anna.get("/telephony/ringing").get_json() == {"calls": [], "cards": {}}


def test_an_old_ringing_call_opens_no_card(app: Any, login: Any) -> None:
    ring(app)
    later = clock.now() + dt.timedelta(minutes=3)
    with clock.use(lambda: later):
        assert login(app, "manager").get("/telephony/ringing").get_json()["calls"] == []


def test_the_card_shows_the_caller_their_open_deals_and_interests_and_history(
    app: Any, login: Any
) -> None:
    cid = customer(app)
    person = create(app, "ContactPerson", {"customer": cid, "name": "Olga Petrova",
                                           "phone": "+79161112233"})  # fmt: skip
    manager = user_id(app, "manager")
    create(app, "Deal", {"customer": cid, "amount": "1000", "manager": manager})
    create(app, "Interest", {"customer": cid, "subject": "Spring supplies", "manager": manager})
    create(app, "Interaction", {"customer": cid, "subject": "Talked about prices", "kind": "meeting",
                                "planned_at": clock.now().isoformat(), "manager": manager})  # fmt: skip
    other = customer(app, "Vector", "+74959999999")
    create(app, "Interaction", {"customer": other, "subject": "Someone else's talk",
                                "planned_at": clock.now().isoformat(), "manager": manager})  # fmt: skip
    call = ring(app, "8 916 111 22 33")
    html = login(app, "manager").get(f"/telephony/card/{call}").get_json()["html"]
    assert "Olga Petrova" in html and f"/contact_person/{person}" in html.replace(
        "contactperson", "contact_person"
    )
    assert "Romashka" in html and "Spring supplies" in html and "D-" in html
    assert "Talked about prices" in html and "Someone else" not in html
    assert 'data-phone="+79161112233"' in html


def test_a_customer_the_user_may_not_read_is_not_shown_only_the_number(
    app: Any, login: Any
) -> None:
    customer(app, "Secret Ltd", owner="sales_head")
    create(app, "Interaction", {"customer": rows(app, "Customer")[0]["id"], "subject": "Secret talk",
                                "planned_at": clock.now().isoformat(),
                                "manager": user_id(app, "sales_head")})  # fmt: skip
    call = ring(app)
    html = login(app, "manager").get(f"/telephony/card/{call}").get_json()["html"]
    assert "+7 495 123-45-67" in html
    assert "Secret" not in html and "/customer/" not in html


def test_an_unknown_number_offers_a_new_customer_with_the_phone_filled_in(
    app: Any, login: Any
) -> None:
    call = ring(app, "+74957654321")
    anna = login(app, "manager")
    html = anna.get(f"/telephony/card/{call}").get_json()["html"]
    found = re.search(r'href="(/customer/add\?phone=[^"]+)"', html)
    assert found, html
    form = anna.get(found[1].replace("&amp;", "&")).text
    assert "+74957654321" in form or "+7 495 765-43-21" in form


# --- pages -------------------------------------------------------------------------------------


def test_every_page_loads_the_script_and_phones_are_marked(app: Any, login: Any) -> None:
    cid = customer(app)
    create(app, "ContactPerson", {"customer": cid, "name": "Olga", "phone": "+79161112233"})
    anna = login(app, "manager")
    page = anna.get(f"/customer/{cid}").text
    assert "/telephony-static/telephony/phones.js" in page
    assert 'href="tel:+74951234567" data-phone="+74951234567"' in page  # the field
    assert 'data-phone="+79161112233"' in page  # the related list of contact persons
    assert 'data-phone="+74951234567"' in anna.get("/customer/").text  # the list
    script = anna.get("/telephony-static/telephony/phones.js")
    assert script.status_code == 200 and b"data-phone" in script.data
    script.close()


def test_the_call_log_has_quick_filters_and_a_playable_recording(app: Any, login: Any) -> None:
    customer(app)
    ring(app)
    report(app, call_id="in1", kind="hangup", recording="https://rec.example/in1.mp3")
    ring(app, "+74957654321", "102", "in2")
    report(app, call_id="in2", kind="answered")
    report(app, call_id="in2", kind="hangup")
    head = login(app, "sales_head")
    missed = head.get("/call/?segment=missed_calls").text
    assert "+7 495 123-45-67" in missed and "+7 495 765-43-21" not in missed
    mine = head.get("/call/?segment=my_calls").text
    assert "+7 495 765-43-21" in mine and "+7 495 123-45-67" not in mine
    today = clock.now().date().isoformat()
    assert "+7 495 123-45-67" in head.get(f"/call/?f_started_at={today}").text
    (first, _) = rows(app, "Call")
    page = login(app, "manager").get(f"/call/{first['id']}").text
    assert (
        '<audio class="crm-call-recording" controls preload="none" src="https://rec.example/in1.mp3">'
        in page
    )


def test_users_without_an_extension_get_none_set(app: Any) -> None:
    set_extensions(app, {"manager": ""})
    from plugins.telephony import placing
    from plugins.telephony.api import system_documents

    with app.app_context():
        docs = system_documents(app.extensions["crm"].db.session())
        assert placing.extension_of(docs, user_id(app, "manager")) is None


OWN_CONFIG = """
roles:
  agent: {label: Agent}
attributes:
  User:
    extension: {type: string, max_length: 16, index: true}
documents:
  Client:
    title: "{{ name }}"
    owner: agent
    fields:
      name:   {type: string, required: true}
      mobile: {type: phone, index: true}
      agent:  {type: ref, to: User, default: current_user}
    access:
      agent: {read: own, create: true, update: own}
"""


def test_in_a_configuration_of_its_own_the_card_shows_the_matched_record(
    phone_app: Any, login: Any
) -> None:
    app = phone_app(OWN_CONFIG, layers=(), processes=None)
    set_extensions(app, {"agent": "7"})
    client = create(app, "Client", {"name": "Ivan Petrov", "mobile": "+74951234567",
                                    "agent": user_id(app, "agent")})  # fmt: skip
    call = ring(app, extension="7")
    agent = login(app, "agent")
    html = agent.get(f"/telephony/card/{call}").get_json()["html"]
    assert "Ivan Petrov" in html and f"/client/{client}" in html
    assert "Last interactions" not in html and "Open deals" not in html
    unknown = ring(app, "+74957654321", extension="7", call_id="in2")
    html = agent.get(f"/telephony/card/{unknown}").get_json()["html"]
    assert "/client/add?mobile=%2B74957654321" in html
    assert 'data-phone="+74951234567"' in agent.get("/client/").text
