"""The kanban as a sales manager uses it in Chromium: a move that needs a
field asks for it in a small form (Cancel puts the card back), a done move
can be undone from the toast for a few seconds, the columns' counts and sums
follow every move, and the board fits a 1280 px screen."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tests.browser.conftest import Server, expect
from tests.web.conftest import SALES

if TYPE_CHECKING:
    from playwright.sync_api import Page

# the sales config, where a deal in proposal may also go back to new
REVERSIBLE = SALES.replace(
    "        - {from: proposal, to: won, roles: [sales_head]}\n",
    "        - {from: proposal, to: won, roles: [sales_head]}\n"
    "        - {from: proposal, to: new}\n",
)
assert REVERSIBLE != SALES


def new_deal(site: Server, customer: str, **values: Any) -> int:
    customer_id = site.create("anna", "customer", name=customer)
    return site.create("anna", "deal", customer=customer_id, **values)


def record(site: Server, deal: int) -> dict[str, Any]:
    response = site.as_user("anna").api("GET", f"/api/v1/deal/{deal}")
    assert response.status_code == 200
    return dict(response.get_json()["result"])


class Board:
    def __init__(self, page: Page):
        self.page = page
        self.modal = page.locator("#crm-move-modal")
        self.toast = page.locator(".crm-toast")

    def column(self, name: str) -> Any:
        return self.page.locator(f".crm-column[data-column={name}]")

    def card(self, obj_id: int) -> Any:
        return self.page.locator(f".crm-card[data-id='{obj_id}']")

    def counts(self) -> Any:
        return self.page.locator(".crm-column .crm-count")

    def sums(self) -> Any:
        return self.page.locator(".crm-column .crm-sum")


def open_board(site: Server, page: Page) -> Board:
    """The board, its undo window widened so that a slow machine still clicks
    within it (the page's own is a few seconds; the tests read no clock)."""
    site.login(page, "anna")
    page.goto(site.url + "/deal/kanban")
    board = page.locator(".crm-kanban-page")
    assert 3000 <= int(board.get_attribute("data-undo-ms") or 0) <= 15000
    board.evaluate("b => b.setAttribute('data-undo-ms', '600000')")
    return Board(page)


def test_a_move_that_needs_a_field_asks_for_it(serve: Callable[..., Server], page: Page) -> None:
    site = serve(REVERSIBLE)
    deal = new_deal(site, "Romashka", amount="1000")
    board = open_board(site, page)
    expect(board.counts()).to_have_text(["1", "0", "0", "0"])  # new, proposal, won, lost

    # proposal needs a planned close date: a small form asks for just that field
    board.card(deal).drag_to(board.column("proposal"))
    expect(board.modal).to_be_visible()
    expect(board.modal.locator("h4")).to_contain_text("Proposal")
    expect(board.modal.locator("[name=planned_close]")).to_be_visible()
    expect(board.modal.locator("[name=loss_reason]")).to_be_hidden()
    # Cancel puts the card back, nothing moved
    board.modal.get_by_role("button", name="Cancel").click()
    expect(board.modal).to_be_hidden()
    expect(board.column("new").locator(".crm-card")).to_have_count(1)
    expect(board.column("proposal").locator(".crm-card")).to_have_count(0)
    assert record(site, deal)["stage"] == "new"

    # again: left empty, the form says so at the field and stays open
    board.card(deal).drag_to(board.column("proposal"))
    board.modal.get_by_role("button", name="Move").click()
    expect(board.modal.locator("[data-field=planned_close] .crm-error")).to_contain_text(
        re.compile("must be filled in", re.I)
    )
    expect(board.modal).to_be_visible()
    board.modal.locator("[name=planned_close]").fill("2030-05-15")
    board.modal.get_by_role("button", name="Move").click()

    expect(board.modal).to_be_hidden()
    expect(board.column("proposal").locator(".crm-card")).to_have_count(1)
    expect(board.counts()).to_have_text(["0", "1", "0", "0"])
    expect(board.sums()).to_have_text(["0.00", "1,000.00", "0.00", "0.00"])
    expect(board.toast).to_contain_text(re.compile(r"Deal D-\d+ Romashka → Proposal"))
    saved = record(site, deal)
    assert saved["stage"] == "proposal" and saved["planned_close"] == "2030-05-15"


def test_undo_moves_the_card_back_and_the_sums_return(
    serve: Callable[..., Server], page: Page
) -> None:
    site = serve(REVERSIBLE)
    deal = new_deal(site, "Romashka", amount="1000", planned_close="2030-05-15")
    new_deal(site, "Vasilek", amount="250", planned_close="2030-05-16")
    board = open_board(site, page)
    expect(board.counts()).to_have_text(["2", "0", "0", "0"])
    expect(board.sums()).to_have_text(["1,250.00", "0.00", "0.00", "0.00"])

    board.card(deal).drag_to(board.column("proposal"))
    expect(board.counts()).to_have_text(["1", "1", "0", "0"])
    expect(board.sums()).to_have_text(["250.00", "1,000.00", "0.00", "0.00"])
    assert record(site, deal)["stage"] == "proposal"

    board.toast.get_by_role("button", name="Undo").click()
    expect(board.column("new").locator(f".crm-card[data-id='{deal}']")).to_have_count(1)
    expect(board.counts()).to_have_text(["2", "0", "0", "0"])
    expect(board.sums()).to_have_text(["1,250.00", "0.00", "0.00", "0.00"])
    expect(board.toast).to_contain_text("Moved back")
    expect(board.toast.locator(".crm-undo")).to_be_hidden()
    expect(board.toast).to_be_visible()
    assert record(site, deal)["stage"] == "new"

    # the card moves again afterwards: its version followed both moves
    board.card(deal).drag_to(board.column("proposal"))
    expect(board.counts()).to_have_text(["1", "1", "0", "0"])
    assert record(site, deal)["stage"] == "proposal"


def test_an_undo_the_rules_refuse_says_why_and_the_card_stays(site: Server, page: Page) -> None:
    deal = new_deal(site, "Romashka", amount="1000")
    board = open_board(site, page)
    board.card(deal).drag_to(board.column("lost"))
    board.modal.locator("[name=loss_reason]").fill("Too dear")
    board.modal.get_by_role("button", name="Move").click()
    expect(board.column("lost").locator(".crm-card")).to_have_count(1)
    expect(board.sums()).to_have_text(["0.00", "0.00", "0.00", "1,000.00"])
    assert record(site, deal)["loss_reason"] == "Too dear"

    # lost is final: nothing leads back to new
    board.toast.get_by_role("button", name="Undo").click()
    expect(board.toast).to_contain_text(re.compile("Cannot move it back.*final", re.I))
    expect(board.toast).to_be_visible()
    expect(board.toast.locator(".crm-undo")).to_be_hidden()
    expect(board.column("lost").locator(".crm-card")).to_have_count(1)
    expect(board.card(deal).locator(".crm-card-error")).to_contain_text(re.compile("final", re.I))
    expect(board.counts()).to_have_text(["0", "0", "0", "1"])
    assert record(site, deal)["stage"] == "lost"


def test_a_card_changed_meanwhile_is_not_moved(site: Server, page: Page) -> None:
    deal = new_deal(site, "Romashka", amount="1000", planned_close="2030-05-15")
    board = open_board(site, page)
    changed = site.as_user("anna").api(
        "PUT", f"/api/v1/deal/{deal}", json={"amount": "900", "version": 1}
    )
    assert changed.status_code == 200, changed.get_json()
    board.card(deal).drag_to(board.column("proposal"))
    expect(board.card(deal).locator(".crm-card-error")).to_contain_text(
        re.compile("someone else|changed", re.I)
    )
    expect(board.column("new").locator(".crm-card")).to_have_count(1)
    expect(board.counts()).to_have_text(["1", "0", "0", "0"])
    assert record(site, deal)["stage"] == "new"


def wide(states: int) -> str:
    """The sales config with ``states`` free deal stages."""
    lines = "\n".join(f"        s{i}: {{label: Stage number {i}}}" for i in range(states))
    begin = SALES.index("      initial: new\n")
    last = '        - {from: "*", to: lost}\n'
    end = SALES.index(last) + len(last)
    return SALES[:begin] + f"      initial: s0\n      states:\n{lines}\n" + SALES[end:]


def test_the_board_fits_a_1280_px_screen(
    serve: Callable[..., Server], new_context: Callable[..., Any]
) -> None:
    viewport = {"width": 1280, "height": 800}
    # six stages, as the demo's deals: every column is on the screen
    site = serve(wide(6))
    customer = site.create("anna", "customer", name="A long name that has to wrap in its card " * 2)
    site.create("anna", "deal", customer=customer, amount="10")
    page = new_context(viewport=viewport).new_page()
    site.login(page, "anna")
    page.goto(site.url + "/deal/kanban")
    columns = page.locator(".crm-column")
    expect(columns).to_have_count(6)
    for i in range(6):
        box = columns.nth(i).bounding_box()
        assert box is not None and box["x"] + box["width"] <= 1280, (i, box)
    # a long card text wraps: the card is no wider than its column
    card, column = page.locator(".crm-card").first.bounding_box(), columns.first.bounding_box()
    assert card and column and card["x"] + card["width"] <= column["x"] + column["width"]

    # twelve stages do not fit: the board scrolls sideways, its scrollbar on the screen
    site = serve(wide(12))
    page = new_context(viewport=viewport).new_page()
    site.login(page, "anna")
    page.goto(site.url + "/deal/kanban")
    board = page.locator(".crm-kanban")
    box = board.bounding_box()
    assert box is not None and box["y"] + box["height"] <= 800, box
    assert board.evaluate("b => b.scrollWidth > b.clientWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280


def test_the_form_of_a_move_picks_a_record_for_a_ref_it_needs(
    serve: Callable[..., Server], page: Page
) -> None:
    site = serve(
        SALES.replace(
            "      loss_reason: {type: text}\n",
            "      loss_reason: {type: text}\n      lost_to: {type: ref, to: Customer}\n",
        ).replace("require: [loss_reason]}", "require: [loss_reason, lost_to]}")
    )
    deal = new_deal(site, "Romashka", amount="1000")
    rival = site.create("anna", "customer", name="Vasilek")
    board = open_board(site, page)
    board.card(deal).drag_to(board.column("lost"))
    expect(board.modal.locator("[name=loss_reason]")).to_be_visible()
    board.modal.locator("[name=loss_reason]").fill("Cheaper elsewhere")
    board.modal.locator("[data-field=lost_to] .select2-selection").click()
    page.keyboard.type("Vas")
    options = page.locator(".select2-container--open .select2-results__option")
    expect(options).to_have_text(["Vasilek"])
    options.first.click()
    board.modal.get_by_role("button", name="Move").click()
    expect(board.modal).to_be_hidden()
    expect(board.column("lost").locator(".crm-card")).to_have_count(1)
    expect(board.toast).to_contain_text("→")  # the server has answered: the move is saved
    saved = record(site, deal)
    assert saved["stage"] == "lost" and saved["lost_to"] == rival


def test_a_date_and_time_the_move_needs_is_on_the_company_clock(
    serve: Callable[..., Server], page: Page
) -> None:
    """As in the transition form, 10:00 typed is 10:00 in Moscow (07:00 UTC)."""
    site = serve(
        SALES.replace(
            "      loss_reason: {type: text}\n",
            "      loss_reason: {type: text}\n      lost_at: {type: datetime}\n",
        ).replace("require: [loss_reason]}", "require: [loss_reason, lost_at]}"),
        "name: Sales Ltd\nregion: RU\ntimezone: Europe/Moscow\nlayers: []\n",
    )
    deal = new_deal(site, "Romashka", amount="1000")
    board = open_board(site, page)
    board.card(deal).drag_to(board.column("lost"))
    board.modal.locator("[name=loss_reason]").fill("Too dear")
    board.modal.locator("[name=lost_at]").fill("2030-05-15T10:00")
    board.modal.get_by_role("button", name="Move").click()
    expect(board.column("lost").locator(".crm-card")).to_have_count(1)
    expect(board.toast).to_contain_text("→")  # the server has answered: the move is saved
    assert record(site, deal)["lost_at"].startswith("2030-05-15T07:00")
