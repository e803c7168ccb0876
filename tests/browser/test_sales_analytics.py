"""A head of sales in Chromium: the plan against the fact of this month, down
to the deals that make the fact; and the quality check of the client base,
from a group of duplicates to their merge. Screenshots of both pages go to
docs/screenshots/ (docs/reports.md shows them)."""

from __future__ import annotations

import calendar
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from engine import clock
from tests.browser.conftest import Server, expect

CONFIG = "name: Romashka\nlocale: en\nregion: RU\nlayers: [base]\n"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def user_id(site: Server, username: str) -> int:
    state = site.app.extensions["crm"]
    users = state.models.table("User")
    with site.app.app_context():
        return int(
            state.db.session.execute(
                sa.select(users.c.id).where(users.c.username == username)
            ).scalar_one()
        )


def win(site: Server, who: str, deal: int) -> None:
    site.transition(who, "deal", deal, "qualification", planned_close="2099-12-31")
    site.transition(who, "deal", deal, "proposal")
    site.transition(who, "deal", deal, "won")


def test_plan_against_fact_down_to_the_won_deals(serve: Callable[..., Server], page: Any) -> None:
    site = serve("{}\n", CONFIG)
    today = clock.today("UTC")
    first = today.replace(day=1)
    last = today.replace(day=calendar.monthrange(today.year, today.month)[1])
    anna = user_id(site, "anna")
    site.create("helen", "sales_plan", period_start=first.isoformat(),
                period_end=last.isoformat(), manager=anna, amount="10000")  # fmt: skip
    client = site.create("anna", "customer", name="Anna's client")
    won = [site.create("anna", "deal", customer=client, amount=str(a)) for a in (1500, 2500)]
    site.create("anna", "deal", customer=client, amount="9000")  # open: not a fact
    for deal in won:
        win(site, "anna", deal)

    site.login(page, "helen")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{site.url}/reports/")
    page.get_by_role("link", name="Plan and fact").click()
    expect(page.locator(".crm-report-chart svg")).to_be_visible()
    row = page.locator("table.crm-report-table tr.crm-report-row").first
    expect(row.locator('td[data-column="plan"]')).to_contain_text("10")
    expect(row.locator('td[data-column="fact"]')).to_contain_text("4")
    expect(row.locator('td[data-column="done"]')).to_contain_text("40")
    expect(row.locator('td[data-column="count"]')).to_have_text("2")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "report-plan-fact.png"), full_page=True)
    # the fact is exactly the two won deals
    row.locator('td[data-column="count"] a').click()
    expect(page.locator(".crm-drill-banner")).to_be_visible()
    expect(page.locator(".crm-count")).to_have_text("2")
    expect(page.locator("table tbody tr")).to_have_count(2)


def test_a_merge_from_the_quality_check(serve: Callable[..., Server], page: Any) -> None:
    site = serve("{}\n", CONFIG)
    keep = site.create("helen", "customer", name="Romashka", inn="7707083893")
    twin = site.create("helen", "customer", name="Romashka Trading", inn="7707083893",
                       email="info@romashka.example")  # fmt: skip
    site.create("helen", "customer", name="Vasilek", inn="5003052454")
    for amount in ("100", "200"):
        site.create("helen", "deal", customer=twin, amount=amount)
    site.create("helen", "deal", customer=keep, amount="50")

    site.login(page, "helen")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{site.url}/quality/")
    page.locator("#quality-reports a").first.click()
    same_inn = page.locator("#quality-groups tr[data-group=dup_inn]")
    expect(same_inn.locator(".quality-count")).to_have_text("2")
    page.screenshot(path=str(SHOTS / "quality.png"), full_page=True)
    same_inn.locator(".quality-group-link").click()
    cluster = page.locator(".quality-cluster").first
    expect(cluster).to_have_attribute("data-ids", f"{keep},{twin}")
    cluster.locator(".quality-merge").click()

    expect(page.locator(".crm-merge-table")).to_contain_text("Romashka Trading")
    page.locator(f"input[name=survivor][value='{keep}']").check()
    page.locator(f"input[name=field_email][value='{twin}']").check()
    page.locator(".crm-merge-confirm").click()
    expect(page.locator(".crm-title")).to_have_text("Romashka")
    expect(page.locator(".crm-fields dd[data-field=email]")).to_contain_text(
        "info@romashka.example"
    )
    deals = page.locator(".crm-related[data-type=Deal]")
    expect(deals.locator(".crm-related-count")).to_have_text("3")
    # the duplicate is gone from the check: the merged record is archived
    page.goto(f"{site.url}/quality/")
    page.locator("#quality-reports a").first.click()
    expect(page.locator("#quality-groups tr[data-group=dup_inn] .quality-count")).to_have_text("0")
