"""A manager's day in the web app: My tasks, completing with an outcome (form
and REST), the process moving the deal, notifications with an unread count."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from flask import Flask

from tests.web.conftest import Browser

ROUTE = """
processes:
  typical_sale:  # replaces the layer's typical sale
    label: Call back
    document: Deal
    start: {on: create, when: "kind == 'typical'"}
    steps:
      call:
        task: {title: "Call about {{ doc.number }}", assignee: owner, due: 4h}
        outcomes:
          agreed: {to: offer, label: The client agrees}
          refused: lost
      offer:
        set: {stage: proposal}
        notify: {channel: user, to: {role: sales_head}, text: "{{ doc.number }}: the client agreed"}
        next: send
      send:
        task: {title: "Send the offer", assignee: owner, due: 1d}
        next: done
      done: {end: true}
      lost: {end: true, set: {stage: lost}}
"""

CONFIG = "name: Sales Ltd\nlocale: en\nregion: RU\nlayers: [base]\nplugins:\n  processes: {}\n"


@pytest.fixture
def app(crm_app: Callable[..., Flask]) -> Flask:
    return crm_app(ROUTE, CONFIG)


def new_deal(b: Browser, app: Flask, kind: str = "typical") -> int:
    customer = b.api("POST", "/api/v1/customer/", json={"name": "ООО Вектор"})
    assert customer.status_code == 201, customer.text
    deal = b.api("POST", "/api/v1/deal/", json={"customer": customer.json["id"], "kind": kind})
    assert deal.status_code == 201, deal.text
    return int(deal.json["id"])


def task_ids(page: str) -> list[int]:
    return [int(x) for x in re.findall(r'data-task="(\d+)"', page)]


def test_my_tasks_and_completing_through_the_form(app: Flask) -> None:
    anna = Browser(app, "anna", "secret")
    deal = new_deal(anna, app)
    page = anna.get("/tasks/")
    assert page.status_code == 200
    [task] = task_ids(page.text)
    assert "Call about D-" in page.text
    # another manager sees none of it
    boris = Browser(app, "boris", "secret")
    assert task_ids(boris.get("/tasks/").text) == []
    assert boris.get(f"/task/{task}").status_code == 404

    # the task's own page offers the outcomes
    show = anna.get(f"/task/{task}")
    assert 'value="agreed">The client agrees</button>' in show.text
    assert 'value="refused">refused</button>' in show.text
    assert 'value="agreed">The client agrees</button>' in page.text  # in My tasks too
    token = Browser.token_from(show.text)
    response = anna.client.post(
        f"/tasks/{task}/complete",
        data={"csrf_token": token, "outcome": "agreed", "next": "/tasks/"},
    )
    assert response.status_code == 302 and response.headers["Location"].endswith("/tasks/")
    deal_json = anna.api("GET", f"/api/v1/deal/{deal}").json
    assert deal_json["result"]["stage"] == "proposal"
    titles = re.findall(r'<a href="/task/\d+">([^<]+)</a>', anna.get("/tasks/").text)
    assert titles == ["Send the offer"]


def test_completing_by_rest(app: Flask) -> None:
    anna = Browser(app, "anna", "secret")
    deal = new_deal(anna, app)
    [task] = task_ids(anna.get("/tasks/").text)
    bad = anna.api("POST", f"/api/v1/task/{task}/complete", json={"outcome": "maybe"})
    assert bad.status_code == 422
    assert bad.json["errors"] == {"outcome": "choose one of: agreed, refused"}
    assert anna.api("POST", f"/api/v1/task/{task}/complete", data="x").status_code == 415
    assert anna.api("POST", "/api/v1/task/999999/complete", json={}).status_code == 404
    ok = anna.api("POST", f"/api/v1/task/{task}/complete", json={"outcome": "refused"})
    assert ok.status_code == 200, ok.text
    assert ok.json["status"] == "done" and ok.json["outcome"] == "refused"
    again = anna.api("POST", f"/api/v1/task/{task}/complete", json={"outcome": "agreed"})
    assert again.status_code == 409
    assert "already done with the outcome `refused` by anna" in again.json["message"]
    assert anna.api("GET", f"/api/v1/deal/{deal}").json["result"]["stage"] == "lost"
    # somebody else's task is not found, not completed
    boris = Browser(app, "boris", "secret")
    new_deal(anna, app)
    [other] = task_ids(anna.get("/tasks/").text)
    assert (
        boris.api("POST", f"/api/v1/task/{other}/complete", json={"outcome": "agreed"}).status_code
        == 404
    )
    # without logging in
    anonymous = app.test_client()
    assert anonymous.post(f"/api/v1/task/{other}/complete", json={}).status_code == 401


def test_the_head_is_notified_and_reads_it(app: Flask) -> None:
    anna = Browser(app, "anna", "secret")
    new_deal(anna, app)
    [task] = task_ids(anna.get("/tasks/").text)
    anna.api("POST", f"/api/v1/task/{task}/complete", json={"outcome": "agreed"})
    helen = Browser(app, "helen", "secret")
    assert helen.get("/notifications/unread").json == {"count": 1}
    assert anna.get("/notifications/unread").json == {"count": 0}
    page = helen.get("/notifications/")
    assert ": the client agreed" in page.text
    # every page loads the counter's script
    assert "/processes-static/notifications.js" in helen.get("/deal/").text
    read = helen.client.post(
        "/notifications/read", data={"csrf_token": Browser.token_from(page.text)}
    )
    assert read.status_code == 302
    assert helen.get("/notifications/unread").json == {"count": 0}
    # the head sees the team's open tasks; the manager has no such tab
    assert 'data-tab="team"' in helen.get("/tasks/?tab=team").text
    assert 'data-tab="team"' not in anna.get("/tasks/").text
    assert helen.get("/tasks/?tab=nonsense").status_code == 400


def test_tasks_add_to_the_calendar_load(app: Flask) -> None:
    anna = Browser(app, "anna", "secret")
    new_deal(anna, app)
    new_deal(anna, app)
    tasks = anna.api("GET", "/api/v1/task/").json["result"]
    due = {t["due"][:10] for t in tasks}
    if len(due) > 1:  # created across midnight: count on the later day only
        pytest.skip("the two tasks fall on two days")
    [day] = due
    page = anna.get(f"/interaction/calendar?mode=week&date={day}&owner={_id(app, 'anna')}").text
    # both call-back tasks are due that day: its load counts them
    [(link, label)] = re.findall(r'crm-other-load small"><a href="([^"]+)">([^<]+)</a>', page)
    assert label == "Task: 2"
    assert link.startswith("/task/calendar?") and "mode=week" in link
    cell = re.search(rf'crm-day[^"]*crm-load-(\d)" data-date="{day}"', page)
    assert cell is not None and cell.group(1) == "2"
    # another manager's calendar shows none of anna's work
    other = anna.get(f"/interaction/calendar?mode=week&date={day}&owner={_id(app, 'boris')}")
    assert "crm-other-load" not in other.text
    # the task calendar is load too, with the interactions beside it
    assert anna.get(link).status_code == 200


def _id(app: Flask, username: str) -> int:
    with app.app_context():
        return int(app.extensions["crm"].appbuilder.sm.find_user(username=username).id)
