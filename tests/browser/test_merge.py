"""Merging two customers from the merge page, as the quality check sends a
user there: pick the record to keep and a value of the other, confirm, and
land on the kept customer with the other's deals; then undo it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tests.browser.conftest import Server, expect

if TYPE_CHECKING:
    from playwright.sync_api import Page

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def test_merge_two_customers_from_the_page_and_undo(site: Server, page: Page) -> None:
    keep = site.create("helen", "customer", name="Romashka", phone="+7 495 123-45-67")
    twin = site.create("helen", "customer", name="Romashka LLC", email="info@romashka.example",
                       segment="A")  # fmt: skip
    for amount in ("100", "200"):
        site.create("helen", "deal", customer=twin, amount=amount)
    site.create("helen", "deal", customer=keep, amount="50")
    site.login(page, "helen")
    page.set_viewport_size({"width": 1280, "height": 720})
    page.goto(f"{site.url}/merge/customer/?ids={keep},{twin}")

    table = page.locator(".crm-merge-table")
    expect(table).to_contain_text("Romashka LLC")
    # the kept record's value where it has one, the other's where it has none
    expect(page.locator(f"input[name=field_email][value='{twin}']")).to_be_checked()
    expect(page.locator(f"input[name=survivor][value='{keep}']")).to_be_checked()
    page.locator(f"input[name=field_name][value='{twin}']").check()
    page.screenshot(path=str(SCREENSHOTS / "merge.png"), full_page=True)
    page.locator(".crm-merge-confirm").click()

    expect(page).to_have_url(f"{site.url}/customer/{keep}")
    expect(page.locator(".crm-title")).to_have_text("Romashka LLC")
    expect(page.locator(".crm-fields dd[data-field=email]")).to_contain_text(
        "info@romashka.example"
    )
    deals = page.locator(".crm-related[data-type=Deal]")
    expect(deals.locator(".crm-related-count")).to_have_text("3")
    expect(page.locator(".crm-merged")).to_contain_text(f"#{twin}")

    # the archived one opens and points here
    page.goto(f"{site.url}/customer/{twin}")
    expect(page.locator(".crm-archived a")).to_have_attribute("href", f"/customer/{keep}")
    page.goto(f"{site.url}/customer/")
    expect(page.locator(f"a[href='/customer/{keep}']").first).to_be_visible()
    expect(page.locator(f"a[href='/customer/{twin}']")).to_have_count(0)
    page.goto(f"{site.url}/customer/{keep}")
    page.locator(".crm-merge-undo").click()
    expect(page.locator(".crm-title")).to_have_text("Romashka")
    expect(deals.locator(".crm-related-count")).to_have_text("1")
