"""The operator's desk in Chromium: two operators in two browsers work one
campaign — each presses Next, reads the script over the target, answers the
questionnaire and records a result — and never get the same target."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from werkzeug.serving import make_server

from engine.api import Documents, Principal
from tests.browser.conftest import QuietHandler, Server

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the browser fixture skips or fails then
    expect = None  # type: ignore[assignment]

PORTS = range(18200, 18300)  # this test's own ports
TARGETS = 6
CONFIG = (
    "name: Romashka\nlocale: en\nregion: RU\nlayers: [base]\n"
    "plugins:\n  processes: {}\n  telephony: {region: RU}\n  simulator: {}\n"
)


@pytest.fixture
def desk_site(crm_app: Callable[..., Any]) -> Iterator[Server]:
    app = crm_app("{}\n", CONFIG)
    app.config["SEND_FILE_MAX_AGE_DEFAULT"] = 3600
    http = None
    for port in PORTS:
        try:
            http = make_server("127.0.0.1", port, app, threaded=True, request_handler=QuietHandler)
            break
        except OSError:
            continue
    assert http is not None, "no free port in 18200-18299"
    thread = threading.Thread(
        target=http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield Server(app, f"http://127.0.0.1:{http.server_port}")
    http.shutdown()
    http.server_close()
    thread.join(timeout=5)


def setup_campaign(site: Server) -> int:
    from plugins.telephony import campaigns

    state = site.app.extensions["crm"]
    with site.app.app_context():
        session = state.db.session
        customers = state.models.table("Customer")
        session.execute(
            sa.insert(customers),
            [{"name": f"Customer {n}", "phone": f"+7495200{n:04d}", "segment": "A", "version": 1}
             for n in range(TARGETS)],
        )  # fmt: skip
        users = state.models.table("User")
        ids = dict(session.execute(sa.select(users.c.username, users.c.id)).all())
        docs = Documents(state.models, session, ids["admin"], ["Admin"], state.pm,
                         username="admin", trusted=True)  # fmt: skip
        made = docs.create("Campaign", {
            "name": "Spring offer", "doctype": "Customer", "filter": "segment: A",
            "script": "Good morning, {{ doc.name }}!", "work_from": 0, "work_to": 24,
            "questions": [{"key": "interest", "question": "Interested?", "choices": "yes,no"}],
            "results": [{"code": "agreed", "label": "Agreed"}, {"code": "refused", "label": "Refused"}],
            "operators": [{"user": ids["anna"]}, {"user": ids["boris"]}],
        })  # fmt: skip
        campaigns.start(session, state.models, made, now=docs.now(),
                        principal=Principal(ids["admin"], "admin", frozenset({"Admin"})))  # fmt: skip
        session.commit()
        return int(made.id)


def test_two_operators_work_one_campaign_and_never_get_the_same_target(
    desk_site: Server, new_context: Callable[..., Any]
) -> None:
    site = desk_site
    cid = setup_campaign(site)
    pages = [site.login(new_context().new_page(), name) for name in ("anna", "boris")]
    for page in pages:
        page.goto(f"{site.url}/desk/{cid}")
        expect(page.locator("h2")).to_contain_text("Spring offer")
    seen: list[str] = []
    holding: dict[int, str] = {}
    for page in pages:  # both hold a target at once
        page.get_by_role("button", name="Next").click()
        expect(page.locator(".crm-desk-target")).to_be_visible()
        expect(page.locator(".crm-desk-script")).to_contain_text("Good morning, Customer")
        holding[id(page)] = page.locator(".crm-desk").get_attribute("data-target") or ""
    assert len(set(holding.values())) == 2
    seen += holding.values()
    turn = 0
    while len(seen) < TARGETS:
        page = pages[turn % 2]
        turn += 1
        page.locator(".crm-desk-answer").select_option("yes")
        page.get_by_role("button", name="Agreed").click()
        expect(page.locator(".crm-desk-target")).to_be_hidden()
        page.get_by_role("button", name="Next").click()
        expect(page.locator(".crm-desk-target")).to_be_visible()
        seen.append(page.locator(".crm-desk").get_attribute("data-target") or "")
    assert len(set(seen)) == TARGETS
    # an unknown answer is refused with the server's message, the target stays held
    page = pages[0]
    page.locator(".crm-desk-comment").fill("no luck")
    page.evaluate(
        "document.querySelector('.crm-desk-answer').innerHTML += '<option>maybe</option>'"
    )
    page.locator(".crm-desk-answer").select_option("maybe")
    page.get_by_role("button", name="Refused").click()
    expect(page.locator(".crm-desk-error")).to_contain_text("not one of the choices")
    expect(page.locator(".crm-desk-target")).to_be_visible()
    first, second = pages
    first.locator(".crm-desk-answer").select_option("no")
    first.get_by_role("button", name="Refused").click()
    expect(first.locator(".crm-desk-target")).to_be_hidden()
    first.get_by_role("button", name="Next").click()
    expect(first.locator(".crm-desk-empty")).to_be_visible()  # the last one is in other hands
    second.locator(".crm-desk-answer").select_option("no")
    second.get_by_role("button", name="Refused").click()
    expect(second.locator(".crm-desk-target")).to_be_hidden()
    second.get_by_role("button", name="Next").click()  # nothing left: the campaign is done
    expect(second.locator(".crm-desk-error")).to_contain_text("The campaign is not running")
    expect(pages[1].locator('[data-mine="done"]')).not_to_have_text("0")
    state = site.app.extensions["crm"]
    with site.app.app_context():
        t = state.models.table("CampaignCall")
        statuses = state.db.session.execute(
            sa.select(t.c.status, sa.func.count()).group_by(t.c.status)
        ).all()
    assert dict(statuses) == {"done": TARGETS}
