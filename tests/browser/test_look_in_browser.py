"""The record page, the list and the form as a user works with them: related
lists with their counts and a prefilled "add", totals computed while typing,
dates typed as the user writes them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tests.browser.conftest import Server, expect

if TYPE_CHECKING:
    from playwright.sync_api import Page

RU = "name: Sales Ltd\nlocale: ru\nregion: RU\nlayers: []\n"


def test_a_customer_lists_its_deals_and_adds_one_prefilled(site: Server, page: Page) -> None:
    romashka = site.create("anna", "customer", name="Romashka")
    for amount in ("100", "200"):
        site.create("anna", "deal", customer=romashka, amount=amount)
    other = site.create("boris", "customer", name="Borealis")
    site.create("boris", "deal", customer=other, amount="5")
    site.login(page, "anna")
    page.goto(f"{site.url}/customer/{romashka}")

    deals = page.locator(".crm-related[data-type=Deal]")
    expect(deals.locator(".crm-related-count")).to_have_text("2")
    expect(deals.locator("tbody tr")).to_have_count(2)
    expect(deals.locator("thead")).to_contain_text("Amount")

    deals.locator(".crm-related-add").click()
    expect(page).to_have_url(f"{site.url}/deal/add?customer={romashka}")
    # the form starts with the customer chosen
    expect(page.locator("[data-field=customer] .select2-selection__rendered")).to_contain_text(
        "Romashka"
    )
    page.locator("input[name=amount]").fill("300")
    page.locator(".crm-save").click()
    expect(page.locator(".crm-fields dd[data-field=customer]")).to_have_text("Romashka")

    page.locator(".crm-fields dd[data-field=customer] a").click()
    expect(deals.locator(".crm-related-count")).to_have_text("3")


def test_totals_follow_the_lines_while_typing(site: Server, page: Page) -> None:
    site.create("anna", "customer", name="Romashka")
    site.login(page, "anna")
    page.goto(f"{site.url}/deal/add")
    add_row = page.get_by_role("button", name="+ Row")
    rows = page.locator("[data-field=lines] tbody tr.crm-row")
    for product, qty, price in (("Tea", "2", "150"), ("Cups", "3", "10.50")):
        add_row.click()
        row = rows.last
        row.locator("input[name$='-product']").fill(product)
        row.locator("input[name$='-qty']").fill(qty)
        row.locator("input[name$='-price']").press_sequentially(price)
    # the server's own expressions: qty * price per line, their sum as the total
    expect(rows.nth(0).locator("input[name$='-total']")).to_have_value("300.00")
    expect(rows.nth(1).locator("input[name$='-total']")).to_have_value("31.50")
    expect(page.locator("input[name=total]")).to_have_value("331.50")
    rows.nth(1).locator("input[name$='-qty']").fill("4")
    expect(page.locator("input[name=total]")).to_have_value("342.00")
    rows.nth(0).get_by_role("button", name="✕").click()
    expect(page.locator("input[name=total]")).to_have_value("42.00")


def test_a_date_typed_as_dd_mm_yyyy_is_saved(serve: Callable[..., Server], page: Page) -> None:
    site = serve(config=RU)
    customer = site.create("anna", "customer", name="Ромашка")
    deal = site.create("anna", "deal", customer=customer)
    site.login(page, "anna")
    page.goto(f"{site.url}/deal/{deal}/edit")
    close = page.locator("input[name=planned_close]")
    expect(close).to_have_attribute("placeholder", "дд.мм.гггг")
    close.fill("31.03.2027")
    close.press("Escape")  # the date picker closes
    page.locator(".crm-save").click()
    expect(page.locator(".crm-fields dd[data-field=planned_close]")).to_have_text("31.03.2027")
    page.locator(".crm-edit").click()
    expect(close).to_have_value("31.03.2027")  # the edit form writes it the same way
    saved = site.as_user("anna").api("GET", f"/api/v1/deal/{deal}").get_json()
    assert saved["result"]["planned_close"] == "2027-03-31"
