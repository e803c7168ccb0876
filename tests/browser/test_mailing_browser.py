"""A mailing in Chromium: started from its page, its progress bar follows
the sending to 100 %, and the unsubscribe link of a received letter works
in the browser without logging in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from engine import jobs
from tests.browser.conftest import Server
from tests.mail.test_mailing_helpers import make_mailing, system_docs

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the browser fixture skips or fails then
    expect = None  # type: ignore[assignment]

RECIPIENTS = 30


def config(port: int) -> str:
    return (
        "name: Romashka\nlocale: en\nregion: RU\nlayers: [base]\n"
        "plugins:\n  processes: {}\n"
        f"  mail: {{smtp: {{host: 127.0.0.1, port: {port}}}, from: 'Romashka <crm@romashka.example>', batch: 5}}\n"
    )


def drain(site: Server) -> int:
    state = site.app.extensions["crm"]
    with site.app.app_context():
        return jobs.Runner(state.models, state.db.engine, state.pm).drain()


def test_a_mailing_runs_to_100_percent_and_its_unsubscribe_link_works(
    serve: Callable[..., Server], new_context: Callable[..., Any], smtp: Any
) -> None:
    site = serve("{}\n", config(smtp.port))
    state = site.app.extensions["crm"]
    with site.app.app_context():
        session = state.db.session
        docs = system_docs(site.app, session)
        customers = state.models.table("Customer")
        session.execute(
            sa.insert(customers),
            [{"name": f"Customer {n}", "email": f"c{n}@x.ru", "segment": "A", "version": 1}
             for n in range(RECIPIENTS)],
        )  # fmt: skip
        mailing_id = make_mailing(docs, filter_="segment: A").id
        session.commit()
    smtp.delay = 0.02
    page = site.login(new_context().new_page(), "admin")
    page.goto(f"{site.url}/mailing/{mailing_id}")
    expect(page.locator(".crm-mailing-bar")).to_have_text("0 %")
    page.get_by_role("button", name="Start now").click()
    expect(page.locator(".alert")).to_contain_text("The mailing has started")
    expect(page.locator('.crm-mailing [data-count="queued"]')).to_have_text(str(RECIPIENTS))
    while drain(site):
        pass
    # the page polls: the bar and the counts follow without a reload
    expect(page.locator(".crm-mailing-bar")).to_have_text("100 %")
    expect(page.locator('.crm-mailing [data-count="sent"]')).to_have_text(str(RECIPIENTS))
    expect(page.locator(".crm-mailing-status")).to_have_text("Done")
    assert len(smtp.messages) == RECIPIENTS

    # a reader, not logged in, follows the link of the letter they received
    letter = next(m for m in smtp.messages if m["To"] == "c7@x.ru")
    link = str(letter["List-Unsubscribe"]).strip("<>")
    assert link.startswith(f"{site.url}/mail/unsubscribe/")
    reader = new_context().new_page()
    reader.goto(link)
    expect(reader.locator(".crm-unsubscribe")).to_contain_text("c7@x.ru")
    reader.get_by_role("button", name="Unsubscribe").click()
    expect(reader.locator(".crm-unsubscribe-done")).to_contain_text("You are unsubscribed")
    page.reload()
    expect(page.locator('.crm-mailing [data-count="unsubscribed"]')).to_have_text("1")
    with site.app.app_context():
        u = state.models.table("Unsubscribe")
        assert state.db.session.execute(sa.select(u.c.address, u.c.reason)).all() == [
            ("c7@x.ru", "link")
        ]
