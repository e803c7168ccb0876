"""Every example address of docs/pages.md opens for a logged-in administrator."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask

DOC = Path(__file__).resolve().parents[2] / "docs" / "pages.md"

CONFIG = "name: Pages Ltd\nlocale: en\nregion: RU\nlayers: [base]\nplugins:\n  processes: {}\n"
SEGMENTS = """
segments:
  big_deals: {document: Deal, label: Big deals, filter: {amount: {gte: 1000000}}}
"""


def documented() -> list[str]:
    """The addresses of the tables' "examples" column."""
    out = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 3:
            out += re.findall(r"`(/[^`\s]*)`", cells[2])
    return out


def test_the_doc_names_the_pages_a_consultant_links_to() -> None:
    found = documented()
    assert len(found) >= 25
    patterns = DOC.read_text(encoding="utf-8")
    for pattern in ("/<type>/kanban", "/<type>/calendar", "?segment=<segment>", "?f_<field>=",
                    "/<type>/<id>", "/tasks/", "/processes/"):  # fmt: skip
        assert pattern in patterns


def test_every_documented_address_opens(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(SEGMENTS, CONFIG)
    admin = login(app, "admin")
    customer = admin.api("POST", "/api/v1/customer/", {"name": "Romashka", "kind": "company"})
    assert customer.status_code == 201, customer.json
    deal = admin.api("POST", "/api/v1/deal/", {"customer": customer.json["id"], "amount": 2e6})
    assert deal.status_code == 201, deal.json
    assert deal.json["id"] == 1  # the doc's examples open record 1
    twin = admin.api("POST", "/api/v1/customer/", {"name": "Romashka LLC", "kind": "company"})
    assert twin.json["id"] == 2  # the merge page's example merges customers 1 and 2
    failed = []
    for url in documented():
        response = admin.get(url, follow_redirects=True)  # /my_sales/ leads to a kanban
        if response.status_code != 200 or response.request.path.startswith("/login"):
            failed.append(f"{url}: {response.status_code} at {response.request.path}")
        response.close()
    assert failed == []
    # the segment's filter is applied: a small deal is not on its page
    small = admin.api("POST", "/api/v1/deal/", {"customer": customer.json["id"], "amount": 10})
    number = small.json["result"]["number"]
    assert number in admin.get("/deal/").text
    assert number not in admin.get("/deal/?segment=big_deals").text
    assert deal.json["result"]["number"] in admin.get("/deal/?segment=big_deals").text
