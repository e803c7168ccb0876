"""A manager texts a client from the client's card in Chromium: "Send
SMS", a template filled in over the client, the count of characters and SMS
parts as the text changes (GSM-7, then UCS-2), a refusal beside the field,
then sent through the outbox and the simulator, and the SMS on the card."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from engine.testing import drain
from tests.browser.conftest import Server

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the browser fixture skips or fails then
    expect = None  # type: ignore[assignment]

CONFIG = (
    "name: Romashka\nlocale: en\nregion: RU\nlayers: [base]\n"
    "plugins:\n  processes: {}\n  telephony: {}\n  simulator: {}\n"
)


def test_a_manager_sends_an_sms_with_a_template_from_a_customers_card(
    serve: Callable[..., Server], page: Any
) -> None:
    site = serve("{}\n", CONFIG)
    customer = site.create("anna", "customer", name="Vector LLC", phone="+7 916 123-45-67")
    site.create("helen", "sms_template", name="Reminder", doctype="Customer",
                text="Hello, {{ doc.name }}! We are waiting for you.")  # fmt: skip
    site.login(page, "anna")
    page.goto(f"{site.url}/customer/{customer}")
    page.get_by_role("link", name="Send SMS").click()
    expect(page).to_have_url(re.compile(r"/telephony/sms\?doctype=Customer&id=\d+$"))
    expect(page.locator("#crm-sms-number")).to_have_value("+79161234567")
    count = page.locator(".crm-sms-count")
    expect(count).to_have_text("0 characters, GSM-7, 0 SMS")

    page.locator("#crm-sms-template").select_option(label="Reminder")
    text = page.locator("#crm-sms-text")
    expect(text).to_have_value("Hello, Vector LLC! We are waiting for you.")
    expect(count).to_have_text("42 characters, GSM-7, 1 SMS")
    text.fill("Привет! " * 9)  # 72 UCS-2 characters: two parts
    expect(count).to_have_text("72 characters, UCS-2, 2 SMS")

    text.fill("   ")
    page.locator(".crm-sms-send").click()
    expect(page.locator('[data-error="text"]')).to_have_text("is required")
    expect(page.locator(".crm-form-error")).to_be_visible()

    page.locator("#crm-sms-text").fill("Your order has shipped")
    page.locator(".crm-sms-send").click()
    expect(page).to_have_url(re.compile(rf"/customer/{customer}$"))
    expect(page.locator("body")).to_contain_text("The SMS is queued for sending")
    drain(site.app)

    page.reload()
    messages = page.locator('.crm-related[data-type="SmsMessage"]')
    expect(messages.locator(".crm-related-count")).to_have_text("1")
    # on the timeline as a done interaction of kind SMS
    expect(page.locator(".crm-timeline")).to_contain_text("SMS to +7 916 123-45-67")
    messages.locator(".crm-related-rows a").first.click()
    expect(page.locator(".crm-sms-status")).to_contain_text("Sent")
