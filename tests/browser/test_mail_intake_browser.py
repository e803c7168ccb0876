"""In Chromium: a letter goes to a customer from the CRM, the customer's
reply arrives through a real IMAP server (Dovecot) and the sync job, and the
manager sees it threaded: on the customer's timeline, on the letter's page
(its Conversation button) and in the conversation view, with the remote
image hidden until asked."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.api import Documents, enqueue
from engine.testing import drain
from plugins.mail import accounts, imap, outbox
from tests.browser.conftest import expect

# tests/mail is no package and pytest imports in importlib mode: the Dovecot fixture by path
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "mail"))
from imap_server import ImapServer, imap_settings, needed

OWN = "crm@romashka.example"


@pytest.fixture
def dovecot() -> Iterator[ImapServer]:
    with needed() as found:
        yield found


def _config(smtp_port: int, server: ImapServer) -> str:
    imap_conf = imap_settings(server)
    return (
        "name: Sales Ltd\nlocale: en\nregion: RU\nlayers: [base]\nplugins:\n  processes: {}\n"
        f"  mail:\n    smtp: {{host: 127.0.0.1, port: {smtp_port}}}\n"
        f"    imap: {{host: {imap_conf['host']}, port: {imap_conf['port']}, "
        f"username: {imap_conf['username']}, password: {imap_conf['password']}}}\n"
        f'    from: "Romashka <{OWN}>"\n'
    )


def test_a_customers_reply_arrives_threaded_on_the_timeline_and_in_the_conversation(
    serve: Any, page: Any, smtp: Any, dovecot: ImapServer
) -> None:
    site = serve("{}\n", _config(smtp.port, dovecot))
    app = site.app
    state = app.extensions["crm"]
    customer_id = site.create("anna", "customer", name="Romashka LLC", email="buyer@romashka.ru")
    with app.app_context():
        session = state.db.session
        users = state.models.table("User")
        anna = session.execute(sa.select(users.c.id).where(users.c.username == "anna")).scalar_one()
        docs = Documents(state.models, session, anna, ("manager",), state.pm, username="anna")
        d = state.registry.documents["Customer"]
        ours = outbox.queue(docs, account_id=None, to="buyer@romashka.ru", subject="Our offer",
                            text="Dear buyer, please see our offer.",
                            about=(d, docs.get("Customer", customer_id)))  # fmt: skip
        session.commit()
        our_message_id = ours.message_id
    drain(app)
    assert [m["Message-ID"] for m in smtp.messages] == [our_message_id]

    reply = EmailMessage()
    reply["From"] = "Buyer <buyer@romashka.ru>"
    reply["To"] = OWN
    reply["Subject"] = "Re: Our offer"
    reply["Message-ID"] = f"<{uuid.uuid4().hex}@romashka.ru>"
    reply["In-Reply-To"] = our_message_id
    reply["References"] = our_message_id
    reply.set_content("We accept the offer.")
    reply.add_alternative(
        "<p>We <b>accept</b> the offer.</p><img src='https://tracker.example/pixel.gif' alt='pixel'>",
        subtype="html",
    )
    dovecot.append(reply.as_bytes())
    with app.app_context():
        session = state.db.session
        account = accounts.ensure_config_account(session, state.models, state.registry)
        enqueue(session, imap.SYNC_JOB, {"account": account}, key=uuid.uuid4().hex)
        session.commit()
    drain(app)
    with app.app_context():
        table = state.models.table("EmailMessage")
        got = state.db.session.execute(
            sa.select(table.c.id, table.c.thread).where(table.c.subject == "Re: Our offer")
        ).one()
    reply_id = got.id

    site.login(page, "anna")
    page.goto(f"{site.url}/customer/{customer_id}")
    timeline = page.locator(".crm-timeline")
    # the reply is on the customer's timeline as a letter and as a done interaction
    expect(timeline.locator(".crm-timeline-row", has_text="Re: Our offer")).to_have_count(3)
    expect(timeline.locator(".crm-timeline-row", has_text="Re: Our offer").first).to_contain_text(
        "Done"
    )

    page.goto(f"{site.url}/email_message/{reply_id}")
    page.get_by_role("link", name="Conversation").click()
    expect(page).to_have_url(f"{site.url}/mail/thread/{reply_id}")
    letters = page.locator(".crm-mail-message")
    expect(letters).to_have_count(2)
    expect(letters.nth(0)).to_contain_text("Dear buyer, please see our offer.")
    expect(letters.nth(1)).to_contain_text("We accept the offer.")
    expect(letters.nth(1).locator("img")).not_to_have_attribute(
        "src", "https://tracker.example/pixel.gif"
    )
    expect(page.locator(".crm-reply")).to_have_attribute(
        "href", f"/mail/compose?reply_to={reply_id}"
    )
    page.get_by_role("link", name="Show images").click()
    expect(page.locator(".crm-mail-message").nth(1).locator("img")).to_have_attribute(
        "src", "https://tracker.example/pixel.gif"
    )


def test_an_unsorted_letter_is_filed_under_a_customer_with_a_pick_and_a_click(
    serve: Any, page: Any, smtp: Any, dovecot: ImapServer
) -> None:
    site = serve("{}\n", _config(smtp.port, dovecot))
    app = site.app
    state = app.extensions["crm"]
    customer_id = site.create("helen", "customer", name="Vasilek LLC")
    stranger = EmailMessage()
    stranger["From"] = "New Person <new@vasilek.example>"
    stranger["To"] = OWN
    stranger["Subject"] = "A question about prices"
    stranger["Message-ID"] = f"<{uuid.uuid4().hex}@vasilek.example>"
    stranger.set_content("What are your prices?")
    dovecot.append(stranger.as_bytes())
    with app.app_context():
        session = state.db.session
        account = accounts.ensure_config_account(session, state.models, state.registry)
        enqueue(session, imap.SYNC_JOB, {"account": account}, key=uuid.uuid4().hex)
        session.commit()
    drain(app)

    site.login(page, "helen")
    page.goto(f"{site.url}/mail/unsorted/")
    row = page.locator(".crm-unsorted-row", has_text="A question about prices")
    expect(row).to_contain_text("new@vasilek.example")
    row.locator(".select2-selection").click()
    expect(page.locator(".select2-container--open .select2-search__field")).to_be_focused()
    with page.expect_response(
        lambda r: "/lookup?" in r.url and "q=Vas" in r.url and r.status == 200
    ):
        page.keyboard.type("Vas")
    options = page.locator(".select2-container--open .select2-results__option")
    expect(options).to_have_text(["Vasilek LLC"])
    options.first.click()
    row.get_by_role("button", name="Link").click()
    expect(page.locator(".alert-success")).to_contain_text("filed under the customer")
    expect(page.locator(".crm-unsorted-empty")).to_be_visible()
    page.goto(f"{site.url}/customer/{customer_id}")
    expect(page.locator(".crm-timeline")).to_contain_text("A question about prices")
