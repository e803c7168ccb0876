"""Telemarketing campaigns and the operator's desk: a campaign takes its
targets in one statement, operators claim them one at a time (never the same
one twice, even at once), record results, call back, and the campaign counts
what is done."""

from __future__ import annotations

import datetime as dt
import json
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from engine.api import clock

from .conftest import create, rows, user_id

T0 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)  # a Monday, 10:00 on the company's clock (UTC)


@pytest.fixture
def app(phone_app: Any) -> Any:
    return phone_app()


@pytest.fixture(autouse=True)
def fixed_clock() -> Any:
    with clock.use(lambda: T0):
        yield


def customers(app: Any, n: int, city: str = "Kazan") -> list[int]:
    made = []
    for i in range(n):
        made.append(create(app, "Customer", {"name": f"{city} {i}", "phone": f"+7495100{i:04d}",
                                             "address": city}))  # fmt: skip
    return made


def campaign(app: Any, operators: tuple[str, ...] = ("operator",), **more: Any) -> int:
    values = {
        "name": "Spring offer", "doctype": "Customer", "filter": "address: Kazan",
        "script": "Good morning, {{ doc.name }}!",
        "questions": [{"key": "interest", "question": "Interested?", "choices": "yes,no"},
                      {"key": "note", "question": "Anything else?"}],
        "results": [{"code": "agreed", "label": "Agreed", "success": True},
                    {"code": "refused", "label": "Refused"},
                    {"code": "no_answer", "label": "No answer", "retry": True}],
        "operators": [{"user": user_id(app, name)} for name in operators],
        "max_attempts": 2, "retry_minutes": 30, "work_from": 9, "work_to": 20,
        **more,
    }  # fmt: skip
    return create(app, "Campaign", values, username="sales_head")


def started(app: Any, login: Any, **more: Any) -> int:
    cid = campaign(app, **more)
    page = login(app, "sales_head").post_form(f"/campaigns/{cid}/start", {})
    assert page.status_code == 302
    return cid


def next_target(client: Any, cid: int) -> Any:
    r = client.api("POST", f"/desk/{cid}/next", json={})
    assert r.status_code == 200, r.text
    return r.get_json()["target"]


def test_starting_takes_the_targets_in_one_go_without_duplicates_or_phoneless(
    app: Any, login: Any
) -> None:
    ids = customers(app, 3)
    create(app, "Customer", {"name": "Twin", "phone": "+74951000000", "address": "Kazan"})
    create(app, "Customer", {"name": "Silent", "address": "Kazan"})
    customers(app, 2, city="Omsk")
    cid = started(app, login)
    (c,) = rows(app, "Campaign", id=cid)
    assert (c["status"], c["total"], c["skipped"], c["done"]) == ("running", 3, 1, 0)
    targets = rows(app, "CampaignCall", campaign_id=cid)
    assert sorted(t["customer_id"] for t in targets) == ids  # the first of a number stands for it
    assert {t["name"] for t in targets} == {"Kazan 0", "Kazan 1", "Kazan 2"}
    assert {t["status"] for t in targets} == {"queued"}
    page = login(app, "sales_head").get(f"/campaign/{cid}")
    assert page.status_code == 200


def test_a_campaign_starts_once_and_only_for_who_may_update_it(app: Any, login: Any) -> None:
    customers(app, 1)
    cid = campaign(app)
    assert login(app, "operator").post_form(f"/campaigns/{cid}/start", {}).status_code == 403
    assert rows(app, "Campaign", id=cid)[0]["status"] == "draft"
    client = login(app, "sales_head")
    client.post_form(f"/campaigns/{cid}/start", {})
    client.post_form(f"/campaigns/{cid}/start", {})
    assert len(rows(app, "CampaignCall", campaign_id=cid)) == 1


def test_an_operator_not_on_the_campaign_is_refused(app: Any, login: Any) -> None:
    customers(app, 2)
    cid = started(app, login)
    manager = login(app, "manager")
    r = manager.api("POST", f"/desk/{cid}/next", json={})
    assert r.status_code == 403
    assert manager.get(f"/desk/{cid}").status_code == 403
    assert {t["status"] for t in rows(app, "CampaignCall", campaign_id=cid)} == {"queued"}
    page = login(app, "operator").get(f"/desk/{cid}")
    assert page.status_code == 200 and "Spring offer" in page.text


def test_the_desk_shows_the_target_with_its_script_and_records_a_result(
    app: Any, login: Any
) -> None:
    customers(app, 2)
    cid = started(app, login)
    op = login(app, "operator")
    target = next_target(op, cid)
    assert target["name"] == "Kazan 0" and target["number"] == "+74951000000"
    assert target["script"] == "Good morning, Kazan 0!"
    assert target["link"].endswith(f"/{rows(app, 'CampaignCall', id=target['id'])[0]['doc_id']}")
    assert next_target(op, cid)["id"] == target["id"]  # pressing again keeps the one held
    r = op.api("POST", f"/desk/{cid}/targets/{target['id']}/result",
               json={"code": "agreed", "answers": {"interest": "yes", "note": "call in May"},
                     "comment": "Nice talk"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.get_json()["mine"] == {"done": 1}
    (t,) = rows(app, "CampaignCall", id=target["id"])
    assert (t["status"], t["result"], t["attempts"]) == ("done", "agreed", 1)
    assert json.loads(t["answers"]) == {"interest": "yes", "note": "call in May"}
    assert rows(app, "Campaign", id=cid)[0]["done"] == 1
    (interaction,) = rows(app, "Interaction", customer_id=t["customer_id"])
    assert (interaction["kind"], interaction["status"]) == ("call", "done")
    assert "Agreed" in interaction["result"] and "Nice talk" in interaction["result"]
    assert t["interaction_id"] == interaction["id"]
    section = login(app, "sales_head").get(f"/campaign/{cid}").text
    assert "By result" in section and "Agreed" in section


def test_bad_results_are_4xx_and_change_nothing(app: Any, login: Any) -> None:
    customers(app, 2)
    cid = started(app, login)
    op = login(app, "operator")
    target = next_target(op, cid)
    url = f"/desk/{cid}/targets/{target['id']}"
    cases = [
        (f"{url}/result", {"code": "nonsense"}, 400),
        (f"{url}/result", {"code": "agreed", "answers": {"ghost": "x"}}, 400),
        (f"{url}/result", {"code": "agreed", "answers": {"interest": "maybe"}}, 400),
        (f"{url}/result", {"code": "agreed", "answers": ["yes"]}, 400),
        (f"{url}/callback", {"at": (T0 - dt.timedelta(hours=1)).isoformat()}, 400),
        (f"{url}/callback", {"at": "tomorrow"}, 400),
    ]
    for path, body, status in cases:
        r = op.api("POST", path, json=body)
        assert r.status_code == status, (body, r.text)
        assert r.get_json()["message"]
    other = rows(app, "CampaignCall", campaign_id=cid)[1]["id"]
    r = op.api("POST", f"/desk/{cid}/targets/{other}/result", json={"code": "agreed"})
    assert r.status_code == 409
    r = op.api("POST", f"/desk/{cid}/targets/999999/result", json={"code": "agreed"})
    assert r.status_code == 404
    assert {t["status"] for t in rows(app, "CampaignCall", campaign_id=cid)} == {
        "claimed",
        "queued",
    }
    assert rows(app, "Campaign", id=cid)[0]["done"] == 0
    assert rows(app, "Interaction") == []


def test_a_call_back_returns_to_the_same_operator_first(app: Any, login: Any) -> None:
    customers(app, 4)
    cid = started(app, login, operators=("operator", "manager"))
    op, other = login(app, "operator"), login(app, "manager")
    mine = next_target(op, cid)
    later = T0 + dt.timedelta(hours=2)
    r = op.api("POST", f"/desk/{cid}/targets/{mine['id']}/callback",
               json={"at": later.isoformat(), "comment": "after lunch"})  # fmt: skip
    assert r.status_code == 200, r.text
    with clock.use(lambda: later + dt.timedelta(minutes=1)):
        # due for me: another operator does not get it within the grace period
        theirs = next_target(other, cid)
        assert theirs["id"] != mine["id"]
        again = next_target(op, cid)
        assert again["id"] == mine["id"] and again["comment"] == "after lunch"
        op.api("POST", f"/desk/{cid}/targets/{mine['id']}/callback",
               json={"at": (later + dt.timedelta(hours=1)).isoformat()})  # fmt: skip
    with clock.use(lambda: later + dt.timedelta(hours=1, minutes=20)):
        # overdue by more than the grace period: anyone may take it
        other.api("POST", f"/desk/{cid}/targets/{theirs['id']}/result", json={"code": "refused"})
        assert next_target(other, cid)["id"] == mine["id"]


def test_no_answer_comes_back_after_the_retry_time_until_the_attempts_run_out(
    app: Any, login: Any
) -> None:
    customers(app, 1)
    cid = started(app, login)
    op = login(app, "operator")
    target = next_target(op, cid)
    op.api("POST", f"/desk/{cid}/targets/{target['id']}/result", json={"code": "no_answer"})
    assert rows(app, "CampaignCall", id=target["id"])[0]["status"] == "queued"
    r = op.api("POST", f"/desk/{cid}/next", json={})
    assert r.get_json()["target"] is None  # not before retry_minutes
    with clock.use(lambda: T0 + dt.timedelta(minutes=31)):
        assert next_target(op, cid)["id"] == target["id"]
        r = op.api("POST", f"/desk/{cid}/targets/{target['id']}/result", json={"code": "no_answer"})
        assert r.get_json()["status"] == "failed"
    (t,) = rows(app, "CampaignCall", id=target["id"])
    assert (t["status"], t["attempts"]) == ("failed", 2)
    (c,) = rows(app, "Campaign", id=cid)
    assert (c["failed"], c["done"], c["status"]) == (1, 0, "done")  # nothing left: done


def test_calls_only_in_work_hours_and_between_the_dates(app: Any, login: Any) -> None:
    customers(app, 1)
    cid = started(app, login, ends_at=T0 + dt.timedelta(days=1))
    op = login(app, "operator")
    with clock.use(lambda: T0.replace(hour=21)):
        r = op.api("POST", f"/desk/{cid}/next", json={})
        assert r.status_code == 409 and "9:00" in r.get_json()["message"]
    with clock.use(lambda: T0 + dt.timedelta(days=2)):
        assert op.api("POST", f"/desk/{cid}/next", json={}).status_code == 409
    assert {t["status"] for t in rows(app, "CampaignCall", campaign_id=cid)} == {"queued"}
    assert next_target(op, cid) is not None


def test_an_abandoned_claim_returns_to_the_queue(app: Any, login: Any) -> None:
    customers(app, 1)
    cid = started(app, login, operators=("operator", "manager"))
    taken = next_target(login(app, "operator"), cid)
    other = login(app, "manager")
    assert other.api("POST", f"/desk/{cid}/next", json={}).get_json()["target"] is None
    with clock.use(lambda: T0 + dt.timedelta(minutes=31)):
        assert next_target(other, cid)["id"] == taken["id"]


def test_the_call_button_places_the_call_and_shows_its_progress(app: Any, login: Any) -> None:
    customers(app, 1)
    cid = started(app, login)
    op = login(app, "operator")
    target = next_target(op, cid)
    r = op.api("POST", f"/desk/{cid}/targets/{target['id']}/call", json={})
    assert r.status_code == 200, r.text
    call_id = r.get_json()["call"]
    assert rows(app, "CampaignCall", id=target["id"])[0]["call_id"] == call_id
    (call,) = rows(app, "Call")
    assert (call["number"], call["user_id"]) == ("+74951000000", user_id(app, "operator"))
    shown = op.get(f"/desk/calls/{call_id}.json").get_json()
    assert (shown["status"], shown["ended"]) == ("ringing", False)
    assert login(app, "manager").get(f"/desk/calls/{call_id}.json").status_code == 404


def _claim_all(app: Any, db_url: str, cid: int, users: list[int], rounds: int) -> list[int]:
    """Each user in a thread of its own with its own connection claims until none is left."""
    from plugins.telephony import campaigns

    models = app.extensions["crm"].models
    engine = sa.create_engine(
        db_url, connect_args={"timeout": 30} if db_url.startswith("sqlite") else {}
    )
    got: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(users))

    def work(uid: int) -> None:
        barrier.wait()
        for _ in range(rounds):
            with Session(engine) as session:
                found = campaigns.claim(session, models, cid, uid, T0)
                session.commit()
            if found is None:
                return
            with lock:
                got.append(found)

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.dispose()
    return got


def test_operators_at_once_never_get_the_same_target(app: Any, login: Any, db_url: str) -> None:
    customers(app, 40)
    cid = started(app, login)
    users = [user_id(app, name) for name in ("operator", "manager", "sales_head", "marketer")] * 2
    got = _claim_all(app, db_url, cid, users, rounds=100)
    assert len(got) == 40 and len(set(got)) == 40
    targets = rows(app, "CampaignCall", campaign_id=cid)
    assert {t["status"] for t in targets} == {"claimed"}
