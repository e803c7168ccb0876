"""A manager writes to a client from the client's card in Chromium: "Send
email", a template filled in over the client, a file attached, sent through
the outbox to a real SMTP server (aiosmtpd), and the letter on the card."""

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


def config(smtp: Any) -> str:
    return (
        "name: Romashka\nlocale: en\nregion: RU\nlayers: [base]\n"
        "plugins:\n  processes: {}\n"
        f"  mail: {{smtp: {{host: 127.0.0.1, port: {smtp.port}}}, "
        "from: 'Romashka <crm@romashka.example>'}\n"
    )


def test_a_manager_sends_a_letter_with_a_template_and_a_file_from_a_customers_card(
    serve: Callable[..., Server], page: Any, smtp: Any
) -> None:
    site = serve("{}\n", config(smtp))
    customer = site.create("anna", "customer", name="Vector LLC", email="buyer@vector.example")
    site.create("helen", "email_template", name="Offer", locale="en", doctype="Customer",
                subject="Our offer for {{ doc.name }}",
                body="Dear {{ doc.name }},\nplease find our offer attached.")  # fmt: skip
    site.login(page, "anna")
    page.goto(f"{site.url}/customer/{customer}")
    page.get_by_role("link", name="Send email").click()
    expect(page).to_have_url(re.compile(r"/mail/compose\?doctype=Customer&id=\d+$"))
    expect(page.locator("#crm-mail-to")).to_have_value("buyer@vector.example")

    page.locator("#crm-mail-template").select_option(label="Offer (en)")
    expect(page.locator("#crm-mail-subject")).to_have_value("Our offer for Vector LLC")
    expect(page.locator("#crm-mail-text")).to_have_value(
        "Dear Vector LLC,\nplease find our offer attached."
    )
    page.locator("#crm-mail-text").press("End")
    page.locator("#crm-mail-text").type("\nAnna")
    page.locator("#crm-mail-files").set_input_files(
        [{"name": "offer.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4 the offer"}]
    )
    page.locator(".crm-mail-send").click()

    expect(page).to_have_url(re.compile(rf"/customer/{customer}$"))
    expect(page.locator("body")).to_contain_text("Queued for sending")
    drain(site.app)
    assert len(smtp.messages) == 1
    got = smtp.messages[0]
    assert got["To"] == "buyer@vector.example" and got["Subject"] == "Our offer for Vector LLC"
    text = got.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "please find our offer attached.\nAnna" in text
    files = {a.get_filename(): a.get_content() for a in got.iter_attachments()}
    assert files == {"offer.pdf": b"%PDF-1.4 the offer"}

    page.reload()
    letters = page.locator('.crm-related[data-type="EmailMessage"]')
    expect(letters.locator(".crm-related-count")).to_have_text("1")
    expect(letters).to_contain_text("Our offer for Vector LLC")  # the list shows its subject
    # on the timeline as a done interaction of kind email
    expect(page.locator(".crm-timeline")).to_contain_text("Our offer for Vector LLC")
    letters.locator(".crm-related-rows a").first.click()
    expect(page.locator("h2 .crm-title")).to_have_text("Our offer for Vector LLC")
    expect(page.locator(".crm-mail-status")).to_contain_text("Sent")
    expect(page.locator(".crm-mail-attachments")).to_contain_text("offer.pdf")
