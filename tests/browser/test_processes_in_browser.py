"""A consultant's route map, worked through in Chromium by the people it
names: tasks appear for the right person, outcomes move the deal's stage,
a parallel branch notifies the client by SMS (through the outbox, once) and
waits, the picture shows where the deal stands."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from engine import jobs
from engine.clock import now as utcnow
from tests.browser.conftest import Server

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the browser fixture skips or fails then
    expect = None  # type: ignore[assignment]

ROUTE = """
processes:
  typical_sale:  # the consultant's own version of the layer's typical sale
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
        notify:
          - {channel: sms, to: "{{ doc.customer.phone }}", text: "Your offer {{ doc.number }} is ready"}
          - {channel: user, to: owner, text: "The offer {{ doc.number }} went to the client"}
        next: pause
      pause:
        wait: 1d
        next: contract
      contract:
        set: {stage: contract}
        task: {title: "Sign the contract {{ doc.number }}", assignee: owner, due: 3bd}
        outcomes: {signed: won, lost: lost}
      won:  {end: true, set: {stage: won}}
      lost: {end: true, set: {stage: lost}}
"""


def config(sms: Any) -> str:
    return (
        "name: Big Sales Ltd\nlocale: en\nregion: RU\nlayers: [base]\n"
        "plugins:\n  processes: {}\n"
        f"  sample: {{sms_url: 'http://127.0.0.1:{sms.server_address[1]}/sms'}}\n"
    )


def run_jobs(site: Server, later: dt.timedelta = dt.timedelta()) -> int:
    """What the worker would do: deliver the outbox, resume due waits."""
    state = site.app.extensions["crm"]
    with site.app.app_context():
        runner = jobs.Runner(
            state.models, state.db.engine, state.pm, clock=lambda: utcnow() + later
        )
        return runner.drain()


def complete(page: Any, site: Server, title: str, outcome: str) -> None:
    page.goto(f"{site.url}/tasks/")
    row = page.locator("tr.crm-task", has_text=title)
    expect(row).to_have_count(1)
    row.get_by_role("button", name=outcome).click()
    expect(page.locator(".alert")).to_contain_text("Task completed")


def current_steps(page: Any) -> list[str]:
    return sorted(
        page.locator("g.crm-step-current").evaluate_all("gs => gs.map(g => g.dataset.step)")
    )


def test_a_route_map_worked_through_in_the_browser(
    serve: Callable[..., Server], new_context: Callable[..., Any], sample_plugin: None, sms: Any
) -> None:
    site = serve(ROUTE, config(sms))
    customer = site.create("anna", "customer", name="ООО Вектор", phone="+7 495 123-45-67")
    deal = site.create("anna", "deal", customer=customer, kind="typical", amount="2000000")
    number = site.as_user("anna").api("GET", f"/api/v1/deal/{deal}").get_json()["result"]["number"]
    anna = site.login(new_context().new_page(), "anna")
    helen = site.login(new_context().new_page(), "helen")
    boris = site.login(new_context().new_page(), "boris")

    # the manager's task, and nobody else's
    anna.goto(f"{site.url}/tasks/")
    expect(anna.locator("tr.crm-task")).to_have_count(1)
    qualify_id = anna.locator("tr.crm-task").get_attribute("data-task")
    boris.goto(f"{site.url}/tasks/")
    expect(boris.locator(".crm-no-tasks")).to_be_visible()
    anna.goto(f"{site.url}/deal/{deal}")
    assert current_steps(anna) == ["qualify"]

    # a big amount: the head of sales approves, and the deal is at the proposal
    complete(anna, site, f"Qualify {number}", "ok")
    helen.goto(f"{site.url}/tasks/")
    expect(
        helen.locator("tr.crm-task", has_text=f"Approve the discount on {number}")
    ).to_have_count(1)
    anna.goto(f"{site.url}/deal/{deal}")
    expect(anna.locator('[data-state="proposal"]').first).to_be_visible()
    complete(helen, site, "Approve the discount", "approved")

    # both branches at once: a call for the manager, an SMS through the outbox
    anna.goto(f"{site.url}/deal/{deal}")
    assert current_steps(anna) == ["call_client", "pause"]
    assert sms.received == []  # written to the outbox, not yet sent
    assert run_jobs(site) == 1
    [message] = sms.received
    assert message["to"] == "+74951234567" and message["text"] == f"Your offer {number} is ready"
    run_jobs(site)
    assert len(sms.received) == 1  # once
    anna.goto(f"{site.url}/tasks/")
    expect(anna.locator("a[href='/notifications/'] .crm-unread").first).to_have_text("1")

    # one branch reaches the join; the other still waits for its day
    complete(anna, site, "Call ООО Вектор", "Done")
    anna.goto(f"{site.url}/deal/{deal}")
    assert current_steps(anna) == ["contract", "pause"]  # the call waits at the join
    expect(anna.locator('[data-state="proposal"]').first).to_be_visible()

    # a day later the worker resumes the wait: the contract step
    run_jobs(site, later=dt.timedelta(days=1, minutes=5))
    anna.goto(f"{site.url}/deal/{deal}")
    expect(anna.locator('[data-state="contract"]').first).to_be_visible()
    complete(anna, site, f"Sign the contract {number}", "signed")
    anna.goto(f"{site.url}/deal/{deal}")
    expect(anna.locator('[data-state="won"]').first).to_be_visible()
    assert current_steps(anna) == []

    # the process ran once: one instance, finished; every task closed
    with site.app.app_context():
        state = site.app.extensions["crm"]
        tasks = state.models.table("Task")
        rows = state.db.session.execute(
            sa.select(tasks.c.status, sa.func.count()).group_by(tasks.c.status)
        )
        assert dict(rows.all()) == {"done": 4}
    # a second try at the same task is refused, not run again
    page = anna.request.post(f"{site.url}/api/v1/task/{qualify_id}/complete", data={"outcome": "ok"},
                             headers={"X-CSRFToken": _token(anna, site)})  # fmt: skip
    assert page.status == 409


def _token(page: Any, site: Server) -> str:
    page.goto(f"{site.url}/customer/add")
    html = page.content()
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    if match is None:
        pytest.fail("no CSRF token on the add form")
    return match.group(1)
