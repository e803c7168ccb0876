"""Calls in Chromium: the call button beside a customer's phone rings the
manager's extension and shows the call going ringing → answered → ended (the
simulator's jobs run in the web process, as under `crm run`); an incoming
call reported as a provider reports it opens the caller card with the
customer's history in under a second; the simulator's "Ring me" page."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from engine import jobs
from engine.api import clock
from tests.browser.conftest import Server
from tests.telephony.conftest import report, set_extensions

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the browser fixture skips or fails then
    expect = None  # type: ignore[assignment]

CONFIG = (
    "name: Romashka\nlocale: en\nregion: RU\nlayers: [base]\n"
    "jobs: {interval: 0.2}\n"
    "plugins:\n  processes: {}\n  telephony: {}\n  simulator: {answer_after: 2, talk: 2}\n"
)


@pytest.fixture(autouse=True)
def quiet_at_the_end(serve: Callable[..., Server], page: Any) -> Iterator[None]:
    """The pages poll every 0.3 s: leave them before the server stops, so that
    no request holds a database connection while the app is disposed."""
    yield
    page.goto("about:blank")
    page.wait_for_timeout(300)


def started(serve: Callable[..., Server]) -> Server:
    site = serve("{}\n", CONFIG)
    set_extensions(site.app, {"anna": "201"})
    return site


def test_the_call_button_rings_and_shows_the_calls_progress(
    serve: Callable[..., Server], page: Any
) -> None:
    site = started(serve)
    customer = site.create("anna", "customer", name="Vector LLC", phone="+7 495 123-45-67")
    site.login(page, "anna")
    page.goto(f"{site.url}/customer/{customer}")
    page.locator(".crm-tabs a", has_text="Contacts").click()
    field = page.locator('dd[data-field="phone"]')
    expect(field.locator('a[href="tel:+74951234567"]')).to_have_text("+7 495 123-45-67")
    button = field.locator(".crm-call-button")
    expect(button).to_be_enabled()
    runner = jobs.start_in_process(site.app)  # what `crm run` starts
    try:
        button.click()
        progress = field.locator(".crm-call-progress")
        expect(progress).to_have_attribute("data-status", "ringing")
        expect(progress).to_have_text("Ringing…")
        expect(progress).to_have_attribute("data-status", "answered")
        expect(progress).to_contain_text("Answered")
        expect(progress).to_have_attribute("data-status", "ended")
        expect(progress).to_have_text("Ended · 0:02")
    finally:
        runner.stop()
    # on the list, the same number has its button too; the call is in the log
    page.goto(f"{site.url}/customer/")
    expect(
        page.locator('.crm-table-list [data-phone="+74951234567"] + .crm-call-button')
    ).to_have_count(1)
    page.goto(f"{site.url}/call/")
    expect(page.locator(".crm-table-list tbody tr")).to_have_count(1)
    expect(page.locator(".crm-table-list tbody")).to_contain_text("Answered")


def test_without_an_extension_the_button_is_disabled_and_says_why(
    serve: Callable[..., Server], page: Any
) -> None:
    site = started(serve)
    customer = site.create("boris", "customer", name="Vector LLC", phone="+74951234567")
    site.login(page, "boris")
    page.goto(f"{site.url}/customer/{customer}")
    page.locator(".crm-tabs a", has_text="Contacts").click()
    button = page.locator('dd[data-field="phone"] .crm-call-button')
    expect(button).to_be_disabled()
    expect(button).to_have_attribute("title", re.compile("You have no phone extension"))


def test_an_incoming_call_opens_the_caller_card_with_history_in_under_a_second(
    serve: Callable[..., Server], page: Any
) -> None:
    site = started(serve)
    customer = site.create("anna", "customer", name="Vector LLC", phone="+74951234567")
    site.create("anna", "deal", customer=customer, amount="5000")
    site.create("anna", "interaction", customer=customer, subject="Talked about the price",
                kind="meeting", planned_at=clock.now().strftime("%Y-%m-%dT%H:%M"))  # fmt: skip
    site.login(page, "anna")
    page.goto(f"{site.url}/")
    page.wait_for_timeout(700)  # the page is open and asking
    began = time.monotonic()
    report(site.app, call_id="pbx-1", kind="ringing", direction="in", number="8 495 123 45 67",
           extension="201")  # fmt: skip
    reported = time.monotonic() - began
    card = page.locator(".crm-caller-card")
    card.wait_for(state="visible", timeout=3000)
    elapsed = time.monotonic() - began
    print(
        f"the caller card opened {elapsed:.3f} s after the call rang ({reported:.3f} s to report it)"
    )
    assert elapsed < 1.0, f"the card opened {elapsed:.2f} s after the call rang"
    expect(card.locator(".crm-caller-party")).to_contain_text("Vector LLC")
    expect(card.locator(".crm-caller-open-list")).to_contain_text("D-")
    expect(card.locator(".crm-caller-history")).to_contain_text("Talked about the price")
    expect(card.locator('[data-phone="+74951234567"] + .crm-call-button')).to_be_enabled()
    card.locator(".crm-caller-dismiss").click()
    expect(card).to_have_count(0)
    page.wait_for_timeout(1200)  # still ringing: a dismissed card does not come back
    expect(page.locator(".crm-caller-card")).to_have_count(0)
    page.reload()
    page.wait_for_timeout(1200)
    expect(page.locator(".crm-caller-card")).to_have_count(0)
    # "open the record" from a card of the next call
    report(site.app, call_id="pbx-2", kind="ringing", direction="in", number="+74951234567",
           extension="201")  # fmt: skip
    page.locator(".crm-caller-card .crm-caller-open-record").click()
    expect(page).to_have_url(f"{site.url}/customer/{customer}")


def test_ring_me_from_the_simulator_then_answer_and_hang_up(
    serve: Callable[..., Server], page: Any
) -> None:
    site = started(serve)
    site.create("anna", "customer", name="Vector LLC", phone="+74951234567")
    site.login(page, "anna")
    page.goto(f"{site.url}/")
    page.locator(".crm-nav-list a", has_text="Ring me (simulator)").click()
    expect(page).to_have_url(f"{site.url}/telephony/simulator/")
    page.locator(".crm-sim-ring-known").click()
    card = page.locator(".crm-caller-card")
    expect(card.locator(".crm-caller-party")).to_contain_text("Vector LLC")
    row = page.locator(".crm-sim-calls tbody tr").first
    expect(row).to_have_attribute("data-status", "ringing")
    row.locator(".crm-sim-answer").click()
    row = page.locator(".crm-sim-calls tbody tr").first
    expect(row.locator(".crm-sim-status")).to_have_text("Answered")
    row.locator(".crm-sim-hangup").click()
    expect(page.locator(".crm-sim-calls tbody tr").first.locator("form")).to_have_count(0)
    # an unknown number: the card offers a new customer with the phone filled in
    page.locator("#crm-sim-number").fill("+7 495 765 43 21")
    page.locator(".crm-sim-ring-number").click()
    create = page.locator(".crm-caller-card .crm-caller-create")
    expect(create).to_be_visible()
    create.click()
    expect(page).to_have_url(re.compile(r"/customer/add\?phone="))
    expect(page.locator('input[name="phone"]')).to_have_value(
        re.compile(r"\+7 ?495 ?765-?43-?21|\+74957654321")
    )
