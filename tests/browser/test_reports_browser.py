"""The head of sales opens the deal funnel in Chromium: the chart and the
table; a click on a cell lands on the deal list narrowed to exactly the
deals it counted, with a banner leading back to the report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.browser.conftest import Server

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the browser fixture skips or fails then
    expect = None  # type: ignore[assignment]

CONFIG = "name: Romashka\nlocale: en\nregion: RU\nlayers: [base]\n"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "report-funnel.png"


def test_the_head_drills_from_the_funnel_into_the_deals(
    serve: Callable[..., Server], page: Any
) -> None:
    site = serve("{}\n", CONFIG)
    customers = {
        who: site.create(who, "customer", name=f"{who.title()}'s client")
        for who in ("anna", "helen")
    }
    owners = ["anna" if i % 2 else "helen" for i in range(7)]
    deals = [
        site.create(who, "deal", customer=customers[who], amount=1000 * (i + 1))
        for i, who in enumerate(owners)
    ]
    for i in deals[:4]:
        site.transition("helen", "deal", i, "qualification", planned_close="2030-01-31")
    for i in deals[:2]:
        site.transition("helen", "deal", i, "proposal")
    site.transition("helen", "deal", deals[0], "contract")
    site.transition("helen", "deal", deals[6], "lost", loss_reason="Too expensive")
    site.login(page, "helen")
    page.set_viewport_size({"width": 1200, "height": 900})
    page.goto(f"{site.url}/reports/")
    page.get_by_role("link", name="Deal funnel").click()
    expect(page.locator(".crm-report-chart svg")).to_be_visible()
    table = page.locator("table.crm-report-table")
    row = table.locator("tr.crm-report-row", has_text="Qualification")
    expect(row.locator('td[data-column="reached"]')).to_have_text("4")
    expect(
        table.locator("tr.crm-report-apart", has_text="Lost").locator('td[data-column="reached"]')
    ).to_have_text("1")
    expect(table.locator('tfoot td[data-column="reached"]')).to_have_text("7")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    row.locator('td[data-column="reached"] a').click()
    expect(page.locator(".crm-drill-banner")).to_contain_text(
        "From the report Deal funnel: Qualification"
    )
    expect(page.locator(".crm-count")).to_have_text("4")
    expect(page.locator("table tbody tr")).to_have_count(4)
    page.locator(".crm-drill-back").click()
    expect(page.locator(".crm-report-chart svg")).to_be_visible()
