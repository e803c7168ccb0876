"""`email` as a channel of notifications and automations: "email the client
when the order ships" passes `crm check` once `mail` is on and delivers
through the outbox (kept as a letter on the customer's timeline); without
`mail` it is refused with a hint to turn it on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from click.testing import CliRunner

from engine.api import Documents, StatusEngine
from engine.cli import main

SHIPPED = """
automations:
  order_shipped:
    on: {document: CustomerOrder, status: shipped}
    when: "doc.customer.email"
    do:
      - notify: {channel: email, to: customer.email, template: order_shipped}
  order_confirmed:
    on: {document: CustomerOrder, status: confirmed}
    do:
      - notify: {channel: email, to: owner, subject: "Order {{ doc.number }} confirmed", text: "Confirmed: {{ doc.number }}"}
"""


def _docs(
    app: Any, session: Any, username: str = "admin", roles: tuple[str, ...] = ("Admin",)
) -> Documents:
    state = app.extensions["crm"]
    users = state.models.table("User")
    user_id = session.execute(
        sa.select(users.c.id).where(users.c.username == username)
    ).scalar_one()
    return Documents(state.models, session, user_id, roles, state.pm, username=username)


def test_the_client_gets_the_templated_letter_when_the_order_ships(
    mail_app: Any, smtp: Any, run_jobs: Any
) -> None:
    app = mail_app(SHIPPED)
    with app.app_context():
        session = app.extensions["crm"].db.session
        docs = _docs(app, session, "manager", ("manager",))
        admin = _docs(app, session)
        admin.create("EmailTemplate", {
            "name": "order_shipped", "doctype": "CustomerOrder", "locale": "en",
            "subject": "Your order {{ doc.number }} has shipped",
            "body": "Dear {{ doc.customer.name }},\nyour order {{ doc.number }} for {{ doc.total }} is on its way.",
        })  # fmt: skip
        customer = docs.create("Customer", {"name": "Romashka LLC", "email": "buyer@romashka.ru"})
        order = docs.create("CustomerOrder", {
            "customer": customer.id, "lines": [{"product": "Tea", "qty": 2, "price": 150}],
        })  # fmt: skip
        StatusEngine(docs).apply("CustomerOrder", order, "confirmed")
        StatusEngine(docs).apply("CustomerOrder", order, "shipped")
        session.commit()
        number, customer_id = order.number, customer.id
    run_jobs(app)
    by_subject = {m["Subject"]: m for m in smtp.messages}
    shipped = by_subject[f"Your order {number} has shipped"]
    assert shipped["To"] == "buyer@romashka.ru"
    assert f"your order {number} for 300" in shipped.get_body().get_content()
    confirmed = by_subject[f"Order {number} confirmed"]
    assert confirmed["To"] == "manager@example.org"  # the owner, at the user's address
    with app.app_context():
        session = app.extensions["crm"].db.session
        messages = app.extensions["crm"].models.cls("EmailMessage")
        rows = {r.subject: r for r in session.execute(sa.select(messages)).scalars()}
        letter = rows[f"Your order {number} has shipped"]
        assert (letter.status, letter.customer_id, letter.doctype) == (
            "sent",
            customer_id,
            "CustomerOrder",
        )
        assert letter.interaction_id is not None  # on the customer's timeline
        note = rows[f"Order {number} confirmed"]
        assert (note.status, note.customer_id, note.interaction_id) == ("sent", None, None)


def test_a_missing_template_stops_the_job_with_its_name(
    mail_app: Any, smtp: Any, run_jobs: Any
) -> None:
    app = mail_app(SHIPPED)
    with app.app_context():
        session = app.extensions["crm"].db.session
        docs = _docs(app, session, "manager", ("manager",))
        customer = docs.create("Customer", {"name": "Romashka LLC", "email": "buyer@romashka.ru"})
        order = docs.create("CustomerOrder", {
            "customer": customer.id, "lines": [{"product": "Tea", "qty": 1, "price": 10}],
        })  # fmt: skip
        StatusEngine(docs).apply("CustomerOrder", order, "confirmed")
        StatusEngine(docs).apply("CustomerOrder", order, "shipped")
        session.commit()
    run_jobs(app)
    with app.app_context():
        session = app.extensions["crm"].db.session
        dead = (
            session.execute(
                sa.text(
                    "SELECT last_error FROM crm_outbox WHERE job = 'notify.email' AND state = 'dead'"
                )
            )
            .scalars()
            .all()
        )
    assert dead == ["there is no active email template named 'order_shipped'"]


def _config(folder: Path, plugins: str) -> Path:
    folder.mkdir()
    (folder / "config.yaml").write_text(
        f"name: Shop\nlocale: en\nlayers: [base]\nplugins:\n{plugins}", encoding="utf-8"
    )
    (folder / "automations.yaml").write_text(
        "automations:\n"
        "  order_shipped:\n"
        "    on: {document: CustomerOrder, status: shipped}\n"
        "    do:\n"
        '      - notify: {channel: email, to: customer.email, subject: "Shipped", text: "{{ doc.number }}"}\n',
        encoding="utf-8",
    )
    return folder


def test_crm_check_takes_the_email_channel_with_mail_and_names_the_plugin_without(
    tmp_path: Path,
) -> None:
    on = _config(tmp_path / "on", "  processes: {}\n  mail: {smtp: {host: localhost}}\n")
    result = CliRunner().invoke(main, ["check", str(on)])
    assert result.exit_code == 0, result.output
    off = _config(tmp_path / "off", "  processes: {}\n")
    result = CliRunner().invoke(main, ["check", str(off)])
    assert result.exit_code == 1
    assert (
        "automations.yaml:5:27: automation `order_shipped`: no enabled plugin delivers the "
        "channel `email`; the `mail` plugin delivers it: add `mail: {}` under `plugins` in "
        "config.yaml"
    ) in result.output


def test_a_wrong_field_as_the_address_is_refused_where_it_is_written(tmp_path: Path) -> None:
    folder = _config(tmp_path / "bad", "  processes: {}\n  mail: {}\n")
    text = (folder / "automations.yaml").read_text(encoding="utf-8")
    (folder / "automations.yaml").write_text(
        text.replace("customer.email", "customer.emial"), encoding="utf-8"
    )
    result = CliRunner().invoke(main, ["check", str(folder)])
    assert result.exit_code == 1
    assert (
        "automations.yaml:5:38: automation `order_shipped`: `to`: `Customer` has no field `emial`"
        in result.output
    )
