"""The generated CRM as a user sees it in Chromium: logging in, a deal with
lines, stages with guards, a stale edit, the kanban board, the calendar,
row-level access and escaping. Data a test only needs to exist is created
through the REST API; what the test is about is done by clicking."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from tests.browser.conftest import Server, expect

if TYPE_CHECKING:
    from playwright.sync_api import Page


def new_deal(site: Server, user: str = "anna", customer: str = "Romashka", **values: Any) -> int:
    customer_id = site.create(user, "customer", name=customer)
    return site.create(user, "deal", customer=customer_id, **values)


def pick_ref(page: Page, field: str, typed: str, choice: str) -> None:
    """Choose a record in a select2 ref picker by typing: the server does the search."""
    page.locator(f"[data-field={field}] .select2-selection").click()
    # select2 focuses its search box once the dropdown is open: typing before
    # that would go nowhere
    expect(page.locator(".select2-container--open .select2-search__field")).to_be_focused()
    with page.expect_response(
        lambda r: "/lookup?" in r.url and f"q={typed}" in r.url and r.status == 200
    ):
        page.keyboard.type(typed)
    options = page.locator(".select2-container--open .select2-results__option")
    expect(options).to_have_text([choice])  # only what starts with the typed text
    options.first.click()
    expect(page.locator(f"[data-field={field}] .select2-selection__rendered")).to_contain_text(
        choice
    )


def field(page: Page, name: str) -> Any:
    """A value on the record page."""
    return page.locator(f".crm-fields dd[data-field={name}]")


# -- 1. logging in -------------------------------------------------------------------


def test_log_in_through_the_login_page(site: Server, page: Page) -> None:
    page.goto(site.url + "/deal/")
    expect(page).to_have_url(re.compile(r"/login/"))
    page.get_by_label("Username").fill("anna")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign In").click()
    expect(page.get_by_text("Invalid login. Please try again.")).to_be_visible()

    page.get_by_label("Username").fill("anna")
    page.get_by_label("Password").fill("secret")
    page.get_by_role("button", name="Sign In").click()
    expect(page).to_have_url(f"{site.url}/deal/")  # back where the visit began
    expect(page.locator(".navbar")).to_contain_text("Anna Test")
    expect(page.locator(".crm-list h2")).to_contain_text("Deal")
    expect(page.locator(".crm-table-list tbody")).to_contain_text("No records")
    # the left navigation: the menu's areas as headings, the page open marked
    sidebar = page.locator(".navbar.crm-sidebar")
    expect(sidebar.locator(".crm-nav-heading")).to_contain_text(["Sales", "Directory"])
    expect(sidebar.locator("li.active")).to_have_text("Deal")
    directory = sidebar.locator(".crm-nav-group", has_text="Directory")
    directory.get_by_role("link", name="Customer", exact=True).click()
    expect(page).to_have_url(f"{site.url}/customer/")
    expect(page.locator(".crm-list h2")).to_contain_text("Customer")
    expect(sidebar.locator("li.active")).to_have_text("Customer")
    # the empty list says what to do next, with the button to do it
    expect(page.locator(".crm-empty-state")).to_contain_text("Create the first one")
    page.locator(".crm-empty-state .crm-new-first").click()
    expect(page).to_have_url(f"{site.url}/customer/add")
    # on a narrow screen the navigation folds behind a button
    page.set_viewport_size({"width": 600, "height": 800})
    expect(sidebar).not_to_be_in_viewport()
    page.locator(".crm-burger").click()
    expect(sidebar).to_be_in_viewport()
    sidebar.get_by_role("link", name="Deal", exact=True).click()
    expect(page).to_have_url(f"{site.url}/deal/")


# -- 2. a deal with lines ----------------------------------------------------------------


def test_create_a_deal_with_lines(site: Server, page: Page) -> None:
    for name in ("Acme", "Borealis", "Bordeaux wines"):
        site.create("anna", "customer", name=name)
    site.login(page, "anna")
    page.goto(site.url + "/deal/")
    page.locator(".crm-new").click()

    pick_ref(page, "customer", "Bore", "Borealis")
    add_row = page.get_by_role("button", name="+ Row")
    rows = page.locator("[data-field=lines] tbody tr.crm-row")
    for product, qty, price in (("Tea", "2", "150"), ("Cups", "3", "10.50"), ("Spoons", "1", "5")):
        add_row.click()
        row = rows.last
        expect(row.locator("input[name$='-product']")).to_be_focused()
        row.locator("input[name$='-product']").fill(product)
        row.locator("input[name$='-qty']").fill(qty)
        row.locator("input[name$='-price']").fill(price)
    expect(rows).to_have_count(3)

    def products() -> list[str]:
        return [rows.nth(i).locator("input[name$='-product']").input_value() for i in range(3)]

    rows.nth(2).get_by_role("button", name="▲").click()  # Spoons above Cups
    rows.nth(0).get_by_role("button", name="▼").click()  # Tea below Spoons
    assert products() == ["Spoons", "Tea", "Cups"]
    rows.nth(0).get_by_role("button", name="✕").click()  # remove Spoons
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator("input[name$='-product']")).to_have_attribute(
        "name", "lines-0-product"
    )
    expect(rows.nth(1).locator("input[name$='-product']")).to_have_attribute(
        "name", "lines-1-product"
    )
    rows.nth(1).get_by_role("button", name="▲").click()  # Cups first
    page.get_by_role("button", name="Save").click()

    expect(page.locator(".crm-title")).to_have_text("D-00001 Borealis")
    lines = page.locator("table.crm-rows[data-field=lines] tbody tr")
    expect(lines).to_have_count(2)
    expect(lines.nth(0).locator("td")).to_have_text(["Cups", "3", "10.50", "31.50"])
    expect(lines.nth(1).locator("td")).to_have_text(["Tea", "2", "150.00", "300.00"])
    expect(field(page, "total")).to_have_text("331.50")
    expect(field(page, "customer")).to_have_text("Borealis")
    expect(page.locator(".crm-current-state")).to_have_text("New")


# -- 3. editing it --------------------------------------------------------------------------


def test_edit_a_deal(site: Server, page: Page) -> None:
    deal = new_deal(site, amount="100", lines=[{"product": "Tea", "qty": 2, "price": 150}])
    site.login(page, "anna")
    page.goto(f"{site.url}/deal/{deal}")
    expect(field(page, "total")).to_have_text("300.00")
    page.locator(".crm-edit").click()

    expect(page.locator("input[name=amount]")).to_have_value("100.00")
    page.locator("input[name=amount]").fill("2500")
    page.locator("input[name=planned_close]").fill("2030-05-15")
    page.locator("input[name='lines-0-qty']").fill("4")
    page.get_by_role("button", name="+ Row").click()
    page.locator("input[name='lines-1-product']").fill("Cake")
    expect(page.locator("input[name='lines-1-qty']")).to_have_value("1")  # the column's default
    page.locator("input[name='lines-1-price']").fill("20")
    page.get_by_role("button", name="Save").click()

    expect(page).to_have_url(f"{site.url}/deal/{deal}")
    expect(field(page, "amount")).to_have_text("2,500.00")
    expect(field(page, "planned_close")).to_have_text("2030-05-15")
    lines = page.locator("table.crm-rows[data-field=lines] tbody tr")
    expect(lines.nth(0).locator("td")).to_have_text(["Tea", "4", "150.00", "600.00"])
    expect(lines.nth(1).locator("td")).to_have_text(["Cake", "1", "20.00", "20.00"])
    expect(field(page, "total")).to_have_text("620.00")


def test_a_field_error_is_shown_at_the_field_and_the_input_is_kept(
    site: Server, page: Page
) -> None:
    deal = new_deal(site)
    site.login(page, "anna")
    page.goto(f"{site.url}/deal/{deal}/edit")
    page.locator("input[name=amount]").fill("-5")
    page.locator("textarea[name=loss_reason]").fill("Kept")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("[data-field=amount] .crm-error")).to_be_visible()
    expect(page.locator("input[name=amount]")).to_have_value("-5")
    expect(page.locator("textarea[name=loss_reason]")).to_have_value("Kept")


# -- 4. stages -------------------------------------------------------------------------------


def test_a_refused_transition_shows_why_and_an_allowed_one_moves_the_deal(
    site: Server, page: Page
) -> None:
    deal = new_deal(site)
    site.login(page, "anna")
    page.goto(f"{site.url}/deal/{deal}")
    expect(page.locator(".crm-current-state")).to_have_text("New")
    # without an amount the guard refuses: the button is disabled and says why
    refused = page.locator(".crm-move-refused[data-to=proposal]")
    expect(refused.get_by_role("button", name="→ Proposal")).to_be_disabled()
    expect(refused.locator(".crm-why")).to_contain_text(re.compile("amount", re.IGNORECASE))
    # going to the transition anyway (a bookmark, an old tab) is refused with the reasons
    page.goto(f"{site.url}/deal/{deal}/transition/proposal")
    expect(page.locator(".crm-reasons .crm-reason")).to_contain_text(
        [re.compile("amount", re.IGNORECASE)]
    )
    expect(page.locator(".crm-confirm-transition")).to_have_count(0)
    page.goto(f"{site.url}/deal/{deal}")
    expect(page.locator(".crm-current-state")).to_have_text("New")
    expect(page.locator(".crm-history-row")).to_have_count(1)  # — → New only

    page.locator(".crm-edit").click()
    page.locator("input[name=amount]").fill("1200")
    page.get_by_role("button", name="Save").click()
    expect(field(page, "amount")).to_have_text("1,200.00")
    expect(page.locator(".crm-move-refused")).to_have_count(0)
    page.locator(".crm-transition[data-to=proposal]").click()

    # proposal requires planned_close: asked for in the same step
    expect(page.locator(".crm-transition-form h2")).to_contain_text("Proposal")
    page.locator(".crm-confirm-transition").click()
    expect(page.locator("[data-field=planned_close] .crm-error")).to_be_visible()
    page.locator("input[name=planned_close]").fill("2030-05-15")
    page.locator(".crm-confirm-transition").click()

    expect(page).to_have_url(f"{site.url}/deal/{deal}")
    expect(page.locator(".crm-current-state")).to_have_text("Proposal")
    expect(field(page, "planned_close")).to_have_text("2030-05-15")
    moved = page.locator(".crm-history-row").filter(has_text="New → Proposal")
    expect(moved).to_have_count(1)
    expect(moved.locator("td").nth(1)).to_have_text(re.compile("anna", re.I))  # who


# -- 5. a stale edit ------------------------------------------------------------------------


def test_a_stale_edit_from_a_second_tab_overwrites_nothing(
    site: Server, context: Any, page: Page
) -> None:
    deal = new_deal(site, amount="100")
    site.login(page, "anna")
    first, second = page, context.new_page()
    for tab in (first, second):
        tab.goto(f"{site.url}/deal/{deal}/edit")
        expect(tab.locator("input[name=amount]")).to_have_value("100.00")

    first.locator("input[name=amount]").fill("200")
    first.get_by_role("button", name="Save").click()
    expect(field(first, "amount")).to_have_text("200.00")

    second.locator("input[name=amount]").fill("300")
    second.get_by_role("button", name="Save").click()
    stale = second.locator(".crm-stale")
    expect(stale).to_be_visible()
    # “… was changed by anna at 2030-05-15 10:00 UTC after you opened it; reload it …”
    expect(stale).to_contain_text(re.compile(r"changed by .*\banna\b.* at .*\d\d:\d\d", re.I))
    expect(second.locator("input[name=amount]")).to_have_value("300")  # the input is kept

    first.reload()
    expect(field(first, "amount")).to_have_text("200.00")


# -- 6. kanban --------------------------------------------------------------------------------


def test_kanban_drag_refused_and_allowed(site: Server, page: Page) -> None:
    ready = new_deal(site, customer="Ready", amount="1000", planned_close="2030-05-15")
    offered = new_deal(site, customer="Offered", amount="500", planned_close="2030-05-16")
    site.transition("anna", "deal", offered, "proposal")
    site.login(page, "anna")
    page.goto(site.url + "/deal/kanban")

    def column(name: str) -> Any:
        return page.locator(f".crm-column[data-column={name}]")

    def card(obj_id: int) -> Any:
        return page.locator(f".crm-card[data-id='{obj_id}']")

    def counts() -> Any:
        return page.locator(".crm-column .crm-count")

    expect(counts()).to_have_text(["1", "1", "0", "0"])  # new, proposal, won, lost

    # only the head of sales may close a deal as won: refused, shown on the card, which goes back
    card(offered).drag_to(column("won"))
    expect(card(offered).locator(".crm-card-error")).not_to_have_text("")
    expect(card(offered)).to_have_class(re.compile("crm-refused"))
    expect(column("proposal").locator(".crm-card")).to_have_count(1)
    expect(column("won").locator(".crm-card")).to_have_count(0)
    expect(counts()).to_have_text(["1", "1", "0", "0"])

    # lost needs a loss reason: the board asks for it; Cancel puts the card back
    card(ready).drag_to(column("lost"))
    modal = page.locator("#crm-move-modal")
    expect(modal).to_be_visible()
    expect(modal.locator("[name=loss_reason]")).to_be_visible()
    modal.locator(".crm-move-cancel").click()
    expect(modal).to_be_hidden()
    expect(column("new").locator(".crm-card")).to_have_count(1)
    expect(column("lost").locator(".crm-card")).to_have_count(0)

    card(ready).drag_to(column("proposal"))
    expect(column("proposal").locator(".crm-card")).to_have_count(2)
    expect(card(ready).locator(".crm-card-error")).to_have_text("")
    expect(card(ready)).not_to_have_class(re.compile("crm-refused"))
    expect(counts()).to_have_text(["0", "2", "0", "0"])

    page.reload()
    expect(column("proposal").locator(".crm-card")).to_have_count(2)
    expect(column("new").locator(".crm-card")).to_have_count(0)
    expect(counts()).to_have_text(["0", "2", "0", "0"])
    expect(column("proposal").locator(".crm-sum")).to_have_text("1,500.00")
    card(ready).locator("a").click()
    expect(page.locator(".crm-current-state")).to_have_text("Proposal")


# -- 7. calendar -------------------------------------------------------------------------------


def test_calendar_month_and_week(site: Server, page: Page) -> None:
    new_deal(site, "anna", customer="Anna's", amount="10", planned_close="2030-05-15")
    new_deal(site, "boris", customer="Boris's", amount="20", planned_close="2030-05-15")
    new_deal(site, "anna", customer="Later", planned_close="2030-05-20")
    new_deal(site, "anna", customer="Next year", planned_close="2031-05-15")
    site.login(page, "helen")  # the head of sales sees every manager's deals
    page.goto(site.url + "/deal/calendar?date=2030-05-15")

    def day(date: str) -> Any:
        return page.locator(f"td.crm-day[data-date='{date}']")

    expect(page.locator(".crm-period")).to_have_text("05.2030")
    expect(day("2030-05-15").locator(".crm-entry")).to_have_text(
        ["D-00001 Anna's", "D-00002 Boris's"]
    )
    expect(day("2030-05-15").locator(".crm-day-count")).to_have_text("2")
    expect(day("2030-05-15").locator(".crm-owner-count")).to_have_text(
        ["Anna Test: 1", "Boris Test: 1"], ignore_case=False
    )
    expect(day("2030-05-20").locator(".crm-entry")).to_have_text(["D-00003 Later"])
    expect(page.locator(".crm-entry")).to_have_count(3)  # not next year's

    page.locator("select[name=owner]").select_option(label="Boris Test")
    page.get_by_role("button", name="Show").click()
    expect(day("2030-05-15").locator(".crm-entry")).to_have_text(["D-00002 Boris's"])
    expect(day("2030-05-20").locator(".crm-entry")).to_have_count(0)

    page.locator("select[name=owner]").select_option(label="Everyone")
    page.locator("select[name=mode]").select_option("week")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("table.crm-week td.crm-day")).to_have_count(7)
    expect(page.locator("td.crm-day").first).to_have_attribute("data-date", "2030-05-13")
    expect(day("2030-05-15").locator(".crm-entry")).to_have_count(2)
    page.locator(".crm-next").click()  # the next week starts on Monday the 20th
    expect(page.locator("td.crm-day").first).to_have_attribute("data-date", "2030-05-20")
    expect(day("2030-05-20").locator(".crm-entry")).to_have_text(["D-00003 Later"])

    day("2030-05-20").get_by_role("link", name="D-00003 Later").click()
    expect(page.locator(".crm-title")).to_have_text("D-00003 Later")
    expect(field(page, "planned_close")).to_have_text("2030-05-20")


# -- 8. row-level access -------------------------------------------------------------------------


def test_a_manager_does_not_see_another_managers_customer(site: Server, page: Page) -> None:
    annas = site.create("anna", "customer", name="Anna's client")
    site.create("boris", "customer", name="Boris's client")
    site.login(page, "boris")
    page.goto(site.url + "/customer/")
    names = page.locator(".crm-table-list tbody tr td:first-child")
    expect(names).to_have_text(["Boris's client"])
    page.locator(".crm-filters input[name=q]").fill("Anna")
    page.locator(".crm-filters").get_by_role("button", name="Apply").click()
    expect(page.locator(".crm-table-list tbody")).to_contain_text("No records")

    response = page.goto(f"{site.url}/customer/{annas}")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Not Found")).to_be_visible()
    expect(page.get_by_text("Anna's client")).to_have_count(0)
