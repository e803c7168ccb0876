"""A constrained ref's picker in Chromium: a deal's Interest picker offers
only the chosen customer's Interests, follows a change of the customer, and
the choice made for the old customer is cleared."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tests.browser.conftest import Server, expect
from tests.browser.test_in_browser import pick_ref

if TYPE_CHECKING:
    from playwright.sync_api import Page

BASE = "name: Base Ltd\nlocale: en\nregion: RU\nlayers: [base]\n"


def test_the_interest_picker_offers_only_the_customers_interests(
    serve: Callable[..., Server], page: Page
) -> None:
    site = serve("{}", BASE)
    romashka = site.create("anna", "customer", name="Romashka")
    vector = site.create("anna", "customer", name="Vector")
    site.create("anna", "interest", subject="Paper for Romashka", customer=romashka)
    site.create("anna", "interest", subject="Chairs for Romashka", customer=romashka)
    site.create("anna", "interest", subject="Laptops for Vector", customer=vector)
    site.login(page, "anna")
    page.goto(f"{site.url}/deal/add")

    pick_ref(page, "customer", "Roma", "Romashka")
    page.locator("[data-field=interest] .select2-selection").click()
    options = page.locator(".select2-container--open .select2-results__option")
    expect(options).to_have_text(["Chairs for Romashka", "Paper for Romashka"], timeout=5000)
    options.filter(has_text="Paper").click()
    rendered = page.locator("[data-field=interest] .select2-selection__rendered")
    expect(rendered).to_contain_text("Paper for Romashka")

    # another customer: the Interest chosen for Romashka goes, Vector's are offered
    pick_ref(page, "customer", "Vec", "Vector")
    expect(rendered).not_to_contain_text("Paper for Romashka")
    page.locator("[data-field=interest] .select2-selection").click()
    expect(options).to_have_text(["Laptops for Vector"])
    options.first.click()
    page.locator(".crm-save").click()
    expect(page.locator(".crm-fields dd[data-field=interest]")).to_contain_text(
        "Laptops for Vector"
    )
