"""The kitchen studio of tests/processes/test_standalone.py (no base layer,
its own roles) in Chromium: the seller enters a kitchen through the form, the
measurer finds the route map's task on her list, hears that it is overdue,
clicks its outcome, and the seller is told."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from tests.browser.conftest import Server
from tests.browser.test_processes_in_browser import complete
from tests.processes.test_standalone import CONFIG, PEOPLE, STUDIO, run_jobs

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the browser fixture skips or fails then
    expect = None  # type: ignore[assignment]


def test_a_standalone_studio_works_its_route_map_in_the_browser(
    serve: Callable[..., Server], new_context: Callable[..., Any]
) -> None:
    site = serve(STUDIO, CONFIG)
    with site.app.app_context():
        sm = site.app.extensions["crm"].appbuilder.sm
        for login, role in PEOPLE.items():
            sm.add_user(login, login.title(), "Test", f"{login}@example.org",
                        [sm.find_role(role)], "secret")  # fmt: skip
    sam = site.login(new_context().new_page(), "sam")
    mia = site.login(new_context().new_page(), "mia")
    title = "Measure the kitchen of Ivanov"

    # the seller enters the kitchen; the route map gives the measurer a task
    sam.goto(f"{site.url}/kitchen/add")
    sam.locator("input[name=client]").fill("Ivanov")
    sam.get_by_role("button", name="Save").click()
    expect(sam.locator(".alert-danger")).to_have_count(0)
    sam.goto(f"{site.url}/tasks/")
    expect(sam.locator(".crm-no-tasks")).to_be_visible()
    mia.goto(f"{site.url}/tasks/")
    expect(mia.locator("tr.crm-task")).to_have_count(1)
    expect(mia.locator("tr.crm-task")).to_contain_text(title)

    # three days on, the worker marks it overdue and tells her
    assert run_jobs(site.app, dt.timedelta(days=3)) >= 1
    mia.goto(f"{site.url}/tasks/")
    expect(mia.locator("a[href='/notifications/'] .crm-unread").first).to_have_text("1")
    mia.goto(f"{site.url}/notifications/")
    expect(mia.locator(".crm-notifications-page")).to_contain_text(f"Overdue: {title}")

    # she clicks the outcome; the process goes on and tells the seller
    complete(mia, site, title, "Measured")
    expect(mia.locator(".crm-no-tasks")).to_be_visible()
    sam.goto(f"{site.url}/notifications/")
    expect(sam.locator(".crm-notifications-page")).to_contain_text(
        "Ivanov: the kitchen is measured"
    )
