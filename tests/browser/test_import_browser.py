"""Import in Chromium: from the list's Import button through the upload form
to the progress page, whose bar the page's script moves by polling the job
until the import has run (in the in-process runner, as under ``crm run``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from engine import jobs
from tests.browser.conftest import Server, expect

if TYPE_CHECKING:
    from playwright.sync_api import Page


def start_import(site: Server, page: Page, file: Path, partial: bool = False) -> None:
    site.login(page, "anna")
    page.goto(site.url + "/customer/")
    page.locator(".crm-import").click()
    expect(page).to_have_url(f"{site.url}/customer/import")
    expect(page.locator(".crm-import-columns")).to_contain_text("segment")
    page.locator("#crm-import-file").set_input_files(str(file))
    if partial:
        page.get_by_label("import the good rows, skip the bad ones").check()
    page.get_by_role("button", name="Import").click()
    expect(page).to_have_url(re.compile(r"/customer/import/\d+$"))


def test_the_progress_bar_runs_to_100_and_the_result_shows(
    site: Server, page: Page, tmp_path: Path
) -> None:
    file = tmp_path / "customers.csv"
    file.write_text(
        "name,segment\n" + "".join(f"Customer {i:03},{'ABC'[i % 3]}\n" for i in range(300)),
        encoding="utf-8",
    )
    csp_violations: list[str] = []
    page.on("console", lambda m: csp_violations.append(m.text) if "Content Security" in m.text else None)  # fmt: skip
    polls: list[int] = []
    page.on("response", lambda r: polls.append(r.status) if r.url.endswith("/status") else None)
    start_import(site, page, file)

    bar = page.get_by_role("progressbar", name="Import progress")
    expect(bar).to_have_attribute("aria-valuenow", "0")
    expect(page.locator(".crm-import-message")).to_contain_text("Queued")
    page.wait_for_timeout(1000)  # the page asks while the job waits for a runner
    assert polls and set(polls) == {200}

    runner = jobs.start_in_process(site.app)  # what `crm run` starts
    try:
        expect(bar).to_have_attribute("aria-valuenow", "100")
        expect(bar).to_have_text("100%")
        expect(page.locator(".crm-import-done")).to_contain_text("Records created: 300")
    finally:
        runner.stop()
    expect(bar).to_have_class(re.compile(r"progress-bar-success"))
    assert csp_violations == []

    page.locator(".crm-import-to-list").click()
    expect(page).to_have_url(f"{site.url}/customer/")
    expect(page.locator(".crm-count")).to_have_text("300")


def test_bad_rows_are_listed_with_their_line_and_column(
    site: Server, page: Page, tmp_path: Path
) -> None:
    file = tmp_path / "customers.csv"
    file.write_text("name,segment\nAcme,A\n,B\nCirrus,Z\n", encoding="utf-8")
    start_import(site, page, file)
    runner = jobs.start_in_process(site.app)
    try:
        expect(page.locator(".crm-import-rejected")).to_contain_text("Nothing was imported")
    finally:
        runner.stop()
    rows = page.locator(".crm-import-errors tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator("td").nth(0)).to_have_text("3")
    expect(rows.nth(0).locator("td").nth(1)).to_have_text("name")
    expect(rows.nth(1).locator("td").nth(0)).to_have_text("4")
    expect(rows.nth(1).locator("td").nth(1)).to_have_text("segment")
    expect(page.get_by_role("progressbar")).to_have_class(re.compile(r"progress-bar-danger"))
    page.goto(site.url + "/customer/")
    expect(page.locator(".crm-table-list tbody")).to_contain_text("No records")
