"""Writing a letter from a record's page: the "Send email" action, the
compose form (prefilled, templates, attachments), what it refuses, who may
use it, replies, and the letter's own page."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.api import clock
from engine.testing import Client, dispose, drain, make_app
from tests.mail.conftest import mail_settings

VIEWER = """
roles:
  viewer: {label: Viewer}
documents:
  Customer:
    access:
      viewer: {read: all}
  EmailMessage:
    access:
      viewer: {read: own}
"""
USERS = {
    "admin": ["Admin"],
    "anna": ["manager"],
    "boris": ["manager"],
    "head": ["sales_head"],
    "viewer": ["viewer"],
}


@pytest.fixture
def app_of(tmp_path: Path, db_url: str, smtp: Any) -> Iterator[Any]:
    apps: list[Any] = []

    def build(**settings: Any) -> Any:
        app = make_app(
            tmp_path / f"config{len(apps)}", VIEWER,
            plugins={"processes": {}, "mail": mail_settings(smtp.port, **settings)},
            layers=("base",), database=db_url, users=USERS,
        )  # fmt: skip
        apps.append(app)
        return app

    yield build
    for app in apps:
        dispose(app)


@pytest.fixture
def app(app_of: Any) -> Any:
    return app_of()


def create(client: Client, resource: str, **values: Any) -> int:
    response = client.api("POST", f"/api/v1/{resource}/", json=values)
    assert response.status_code == 201, response.get_json()
    return int(response.get_json()["id"])


def count(app: Any, doctype: str = "EmailMessage") -> int:
    state = app.extensions["crm"]
    with app.app_context():
        return int(
            state.db.session.execute(
                sa.select(sa.func.count()).select_from(state.models.table(doctype))
            ).scalar_one()
        )


def row(app: Any, doctype: str, obj_id: int) -> dict[str, Any]:
    state = app.extensions["crm"]
    table = state.models.table(doctype)
    with app.app_context():
        found = state.db.session.execute(sa.select(table).where(table.c.id == obj_id)).one()
        return dict(found._mapping)


def send(client: Client, data: dict[str, Any], files: list[tuple[str, bytes]] = ()) -> Any:  # type: ignore[assignment]
    form: dict[str, Any] = {"csrf_token": client.csrf, **data}
    if files:
        form["attachments"] = [(io.BytesIO(content), name) for name, content in files]
    return client.client.post("/mail/compose", data=form, content_type="multipart/form-data")


def field_value(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no {name} field"
    return found[1]


def the_box(html: str) -> str:
    found = re.search(r'name="account">\s*<option value="(\d+)"', html)
    assert found, "no mailbox to choose"
    return found[1]


@pytest.fixture
def customer(app: Any) -> tuple[Client, int]:
    anna = Client(app, "anna")
    return anna, create(anna, "customer", name="Romashka LLC", email="buyer@romashka.ru")


def test_the_action_shows_on_a_customers_page_to_who_may_write_and_not_to_others(
    app: Any, customer: tuple[Client, int]
) -> None:
    anna, customer_id = customer
    page = anna.get(f"/customer/{customer_id}")
    assert page.status_code == 200
    assert f'href="/mail/compose?doctype=Customer&amp;id={customer_id}"' in page.text
    assert "Send email" in page.text
    deal_id = create(anna, "deal", customer=customer_id, amount="1000")
    assert "/mail/compose?doctype=Deal&amp;id=" in anna.get(f"/deal/{deal_id}").text
    interaction = create(anna, "interaction", customer=customer_id, subject="Call", kind="call",
                         planned_at="2030-01-01T10:00:00Z")  # fmt: skip
    assert "/mail/compose" not in anna.get(f"/interaction/{interaction}").text
    viewer = Client(app, "viewer")
    seen = viewer.get(f"/customer/{customer_id}")
    assert seen.status_code == 200 and "Romashka LLC" in seen.text
    assert "Send email" not in seen.text
    assert viewer.get(f"/mail/compose?doctype=Customer&id={customer_id}").status_code == 403


def test_the_form_is_prefilled_from_the_record_and_its_customer(
    app: Any, customer: tuple[Client, int]
) -> None:
    anna, customer_id = customer
    page = anna.get(f"/mail/compose?doctype=Customer&id={customer_id}")
    assert page.status_code == 200
    assert field_value(page.text, "to") == "buyer@romashka.ru"
    assert "crm@romashka.example" in page.text  # the configuration's mailbox
    assert "Romashka LLC" in page.text
    deal_id = create(anna, "deal", customer=customer_id, amount="1000")
    page = anna.get(f"/mail/compose?doctype=Deal&id={deal_id}")
    assert field_value(page.text, "to") == "buyer@romashka.ru"
    contact = create(anna, "contact_person", customer=customer_id, name="Olga",
                     email="olga@romashka.ru")  # fmt: skip
    page = anna.get(f"/mail/compose?doctype=ContactPerson&id={contact}")
    assert field_value(page.text, "to") == "olga@romashka.ru"
    assert anna.get("/mail/compose?doctype=Customer&id=999999").status_code == 404
    assert anna.get("/mail/compose?doctype=Nothing&id=1").status_code == 404
    assert anna.get("/mail/compose?doctype=Customer&id=abc").status_code == 404


def test_a_template_fills_the_subject_and_text_over_the_record(
    app: Any, customer: tuple[Client, int]
) -> None:
    anna, customer_id = customer
    head = Client(app, "head")
    other = create(head, "email_template", name="Invoice", locale="ru", doctype="Deal",
                   subject="Счёт {{ doc.number }}", body="Для {{ doc.customer.name }}, {{ now.year }}")  # fmt: skip
    mine = create(head, "email_template", name="Offer", locale="en", doctype="Customer",
                  subject="Our offer for {{ doc.name }}",
                  body="Dear {{ doc.name }},\nyours, {{ user.first_name }}")  # fmt: skip
    russian = create(head, "email_template", name="Предложение", locale="ru", doctype="Customer",
                     subject="Предложение", body="Добрый день")  # fmt: skip
    anywhere = create(head, "email_template", name="News", subject="News", body="News")
    page = anna.get(f"/mail/compose?doctype=Customer&id={customer_id}")
    assert f'<option value="{mine}">Offer (en)</option>' in page.text
    # the reader's language first, then templates of any language, then the others
    offered = re.findall(r'<option value="(\d+)">', page.text.split('id="crm-mail-template"')[1])
    assert offered == [str(mine), str(anywhere), str(russian)]
    # a deal's template is not offered for a customer
    assert f'<option value="{other}">' not in page.text
    assert "/mail-static/mail/compose.js" in page.text
    got = anna.get(f"/mail/compose/template?template={mine}&doctype=Customer&id={customer_id}")
    assert got.status_code == 200
    assert got.get_json() == {"subject": "Our offer for Romashka LLC",
                              "text": "Dear Romashka LLC,\nyours, Anna"}  # fmt: skip
    deal_id = create(anna, "deal", customer=customer_id, amount="1000")
    got = anna.get(f"/mail/compose/template?template={other}&doctype=Deal&id={deal_id}")
    year = str(clock.now().year)
    assert got.get_json() == {"subject": "Счёт D-000001", "text": f"Для Romashka LLC, {year}"}
    assert anna.get("/mail/compose/template?template=999999").status_code == 404
    boris = Client(app, "boris")  # may not read anna's customer
    refused = boris.get(f"/mail/compose/template?template={mine}&doctype=Customer&id={customer_id}")
    assert refused.status_code == 404
    assert "Romashka" not in refused.text


def test_sending_queues_one_letter_that_reaches_the_server_with_its_attachment(
    app: Any, customer: tuple[Client, int], smtp: Any
) -> None:
    anna, customer_id = customer
    page = anna.get(f"/mail/compose?doctype=Customer&id={customer_id}")
    response = send(anna, {
        "doctype": "Customer", "id": customer_id, "account": the_box(page.text),
        "to": "Buyer <buyer@romashka.ru>", "cc": "boss@romashka.ru",
        "subject": "Our offer", "text": "Please find the offer attached.",
    }, files=[("offer.pdf", b"%PDF-1.4 offer"), ("prices.csv", b"a;b\n1;2\n")])  # fmt: skip
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/customer/{customer_id}")
    card = anna.get(f"/customer/{customer_id}")
    assert "Queued for sending" in card.text
    assert count(app) == 1
    drain(app)
    drain(app)
    assert len(smtp.messages) == 1
    got = smtp.messages[0]
    assert got["Subject"] == "Our offer" and got["Cc"] == "boss@romashka.ru"
    files = {part.get_filename(): part.get_content() for part in got.iter_attachments()}
    assert files == {"offer.pdf": b"%PDF-1.4 offer", "prices.csv": "a;b\n1;2\n"} or files == {
        "offer.pdf": b"%PDF-1.4 offer", "prices.csv": b"a;b\n1;2\n"}  # fmt: skip
    card = anna.get(f"/customer/{customer_id}")
    assert "Our offer" in card.text  # in the related letters and on the timeline
    state = app.extensions["crm"]
    with app.app_context():
        letter = state.db.session.execute(
            sa.select(state.models.table("EmailMessage"))
        ).one()._mapping  # fmt: skip
    assert (letter["status"], letter["customer_id"], letter["doctype"]) == (
        "sent", customer_id, "Customer",
    )  # fmt: skip
    assert letter["interaction_id"] is not None
    page = anna.get(f"/email_message/{letter['id']}")
    assert page.status_code == 200
    assert 'data-status="sent"' in page.text
    assert f'href="/mail/attachment/{letter["id"]}/0"' in page.text and "offer.pdf" in page.text
    assert f"/mail/compose?reply_to={letter['id']}" in page.text


@pytest.mark.parametrize(
    ("field", "data"),
    [
        ("subject", {"subject": "Hi\r\nBcc: everyone@example.com"}),
        ("to", {"to": "not an address"}),
        ("to", {"to": ""}),
        ("cc", {"cc": "boss@@romashka"}),
    ],
)
def test_bad_input_is_a_form_error_beside_its_field_and_nothing_is_written(
    app: Any, customer: tuple[Client, int], field: str, data: dict[str, str]
) -> None:
    anna, customer_id = customer
    page = anna.get(f"/mail/compose?doctype=Customer&id={customer_id}")
    typed = {"doctype": "Customer", "id": customer_id, "account": the_box(page.text),
             "to": "buyer@romashka.ru", "subject": "Offer", "text": "My typed text"}  # fmt: skip
    response = send(anna, {**typed, **data})
    assert response.status_code == 422
    assert f'data-error="{field}"' in response.text
    assert "My typed text" in response.text  # what was typed is kept
    assert count(app) == 0


def test_an_oversized_attachment_is_refused(app_of: Any, smtp: Any) -> None:
    app = app_of(max_attachments=1024)
    anna = Client(app, "anna")
    customer_id = create(anna, "customer", name="Romashka LLC", email="buyer@romashka.ru")
    page = anna.get(f"/mail/compose?doctype=Customer&id={customer_id}")
    response = send(anna, {"doctype": "Customer", "id": customer_id, "account": the_box(page.text),
                           "to": "buyer@romashka.ru", "subject": "Big", "text": "."},
                    files=[("big.bin", b"x" * 4096)])  # fmt: skip
    assert response.status_code == 422
    assert 'data-error="attachments"' in response.text and "1 KB" in response.text
    assert count(app) == 0
    assert smtp.messages == []


def test_nobody_writes_about_a_record_they_may_not_read_nor_from_anothers_mailbox(
    app: Any, customer: tuple[Client, int]
) -> None:
    anna, customer_id = customer
    boris = Client(app, "boris")
    assert boris.get(f"/mail/compose?doctype=Customer&id={customer_id}").status_code == 404
    page = anna.get(f"/mail/compose?doctype=Customer&id={customer_id}")
    box = the_box(page.text)
    refused = send(boris, {"doctype": "Customer", "id": customer_id, "account": box,
                           "to": "x@example.com", "subject": "Hi", "text": "."})  # fmt: skip
    assert refused.status_code == 404
    state = app.extensions["crm"]
    admin = Client(app, "admin")
    boris_id = _user_id(app, "boris")
    personal = create(admin, "email_account", name="Boris", address="boris@romashka.example",
                      owner=boris_id, smtp_host="127.0.0.1", smtp_port=2525,
                      smtp_security="none")  # fmt: skip
    for_heads = create(admin, "email_account", name="Heads", address="heads@romashka.example",
                       role="sales_head", smtp_host="127.0.0.1", smtp_port=2525,
                       smtp_security="none")  # fmt: skip
    page = anna.get(f"/mail/compose?doctype=Customer&id={customer_id}")
    assert "boris@romashka.example" not in page.text and "heads@romashka.example" not in page.text
    own = create(boris, "customer", name="B")
    assert "boris@romashka.example" in boris.get(f"/mail/compose?doctype=Customer&id={own}").text
    for account in (personal, for_heads):
        response = send(anna, {"doctype": "Customer", "id": customer_id, "account": account,
                               "to": "x@example.com", "subject": "Hi", "text": "."})  # fmt: skip
        assert response.status_code == 403
        assert 'data-error="account"' in response.text
    assert count(app) == 0
    del state


def _user_id(app: Any, username: str) -> int:
    state = app.extensions["crm"]
    users = state.models.table("User")
    with app.app_context():
        return int(
            state.db.session.execute(
                sa.select(users.c.id).where(users.c.username == username)
            ).scalar_one()
        )


def test_a_reply_answers_the_other_side_keeps_the_thread_and_says_re_once(
    app: Any, customer: tuple[Client, int], smtp: Any
) -> None:
    anna, customer_id = customer
    state = app.extensions["crm"]
    with app.app_context():
        from engine.api import Documents

        session = state.db.session
        docs = Documents(state.models, session, _user_id(app, "anna"), ["manager"], state.pm,
                         username="anna", trusted=True)  # fmt: skip
        incoming = docs.create("EmailMessage", {
            "direction": "in", "status": "received", "from_address": "Buyer <buyer@romashka.ru>",
            "to": "crm@romashka.example", "subject": "RE: Our offer", "text": "Thanks!\nHow much?",
            "message_id": "<q1@romashka.ru>", "references": "<o1@romashka.example>",
            "customer": customer_id, "doctype": "Customer", "doc_id": customer_id,
            "user": _user_id(app, "anna"),
        })  # fmt: skip
        incoming.thread = incoming.id
        session.commit()
        incoming_id = incoming.id
    page = anna.get(f"/mail/compose?reply_to={incoming_id}")
    assert page.status_code == 200
    assert field_value(page.text, "to") == "Buyer &lt;buyer@romashka.ru&gt;"
    assert field_value(page.text, "subject") == "Re: Our offer"
    assert "&gt; How much?" in page.text
    response = send(anna, {"reply_to": incoming_id, "account": the_box(page.text),
                           "to": "buyer@romashka.ru", "subject": "Re: Our offer",
                           "text": "10 000 roubles."})  # fmt: skip
    assert response.status_code == 302, re.findall(
        r'(?:data-error="|crm-form-error">)[^<]*', response.text
    )
    assert response.headers["Location"].endswith(f"/customer/{customer_id}")
    drain(app)
    got = smtp.messages[-1]
    assert got["In-Reply-To"] == "<q1@romashka.ru>"
    assert got["References"] == "<o1@romashka.example> <q1@romashka.ru>"
    with app.app_context():
        table = state.models.table("EmailMessage")
        reply = state.db.session.execute(
            sa.select(table).where(table.c.direction == "out")
        ).one()._mapping  # fmt: skip
    assert (reply["thread"], reply["customer_id"]) == (incoming_id, customer_id)
    boris = Client(app, "boris")
    assert boris.get(f"/mail/compose?reply_to={incoming_id}").status_code == 404


def test_a_failed_letter_shows_the_servers_answer(app: Any, customer: tuple[Client, int]) -> None:
    anna, customer_id = customer
    state = app.extensions["crm"]
    with app.app_context():
        table = state.models.table("EmailMessage")
        now = clock.now()
        letter_id = state.db.session.execute(
            sa.insert(table).values(
                direction="out", status="failed", subject="Lost", to="nobody@example.com",
                error="550 5.1.1 No such user here", user_id=_user_id(app, "anna"),
                customer_id=customer_id, version=1, created_at=now, updated_at=now,
            ).returning(table.c.id)
        ).scalar_one()  # fmt: skip
        state.db.session.commit()
    page = anna.get(f"/email_message/{letter_id}")
    assert 'data-status="failed"' in page.text
    assert "The server refused the letter:" in page.text
    assert "550 5.1.1 No such user here" in page.text


def test_the_form_needs_its_csrf_token(app: Any, customer: tuple[Client, int]) -> None:
    anna, customer_id = customer
    page = anna.get(f"/mail/compose?doctype=Customer&id={customer_id}")
    response = anna.client.post("/mail/compose", data={
        "doctype": "Customer", "id": customer_id, "account": the_box(page.text),
        "to": "buyer@romashka.ru", "subject": "Hi", "text": ".",
    })  # fmt: skip
    assert response.status_code == 400
    assert count(app) == 0
