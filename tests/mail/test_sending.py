"""Letters out through the outbox to a real SMTP server (aiosmtpd): kept as
an EmailMessage, delivered once, retried on 4xx, failed with the server's
answer on 5xx, and recorded on the customer's timeline as a done
Interaction of kind email."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from engine.api import Documents, ValidationFailed
from plugins.mail import outbox


def _docs(app: Any, session: Any, username: str = "manager") -> Documents:
    state = app.extensions["crm"]
    users = state.models.table("User")
    user_id = session.execute(
        sa.select(users.c.id).where(users.c.username == username)
    ).scalar_one()
    return Documents(state.models, session, user_id, ("manager",), state.pm, username=username)


def _session(app: Any) -> Any:
    return app.extensions["crm"].db.session


def test_a_letter_from_a_customer_reaches_the_server_once_and_lands_on_the_timeline(
    mail_app: Any, smtp: Any, run_jobs: Any
) -> None:
    app = mail_app()
    with app.app_context():
        session = _session(app)
        docs = _docs(app, session)
        customer = docs.create("Customer", {"name": "Romashka LLC", "email": "buyer@romashka.ru"})
        d = app.extensions["crm"].registry.documents["Customer"]
        message = outbox.queue(
            docs, account_id=None, to="Buyer <buyer@romashka.ru>", subject="Our offer",
            text="Dear buyer,\nplease find our offer.", about=(d, customer),
        )  # fmt: skip
        session.commit()
        message_id, row_id, customer_id = message.message_id, message.id, customer.id
    run_jobs(app)
    run_jobs(app)
    assert [m["Message-ID"] for m in smtp.messages] == [message_id]
    got = smtp.messages[0]
    assert got["From"] == "Romashka <crm@romashka.example>"
    assert got["To"] == "buyer@romashka.ru"
    assert "please find our offer" in got.get_body().get_content()
    with app.app_context():
        session = _session(app)
        row = _docs(app, session).get("EmailMessage", row_id)
        assert (row.status, row.customer_id, row.error) == ("sent", customer_id, None)
        interaction = _docs(app, session).get("Interaction", row.interaction_id)
        assert (interaction.kind, interaction.status, interaction.customer_id) == (
            "email", "done", customer_id,
        )  # fmt: skip
        assert "please find our offer" in interaction.result


def test_header_injection_and_bad_addresses_are_refused_before_anything_is_written(
    mail_app: Any, smtp: Any
) -> None:
    app = mail_app()
    with app.app_context():
        session = _session(app)
        docs = _docs(app, session)
        for to, subject, field in [
            ("buyer@romashka.ru", "Hi\r\nBcc: everyone@example.com", "subject"),
            ("buyer@romashka.ru\nBcc: x@example.com", "Hi", "to"),
            ("not an address", "Hi", "to"),
            ("", "Hi", "to"),
        ]:
            try:
                outbox.queue(docs, account_id=None, to=to, subject=subject, text=".")
            except ValidationFailed as exc:
                assert field in exc.errors
            else:
                raise AssertionError(f"{to!r} / {subject!r} was taken")
        big = outbox.Attachment("big.bin", "application/octet-stream", b"x" * 2048)
        try:
            outbox.queue(docs, account_id=None, to="a@example.com", subject="Hi", text=".",
                         attachments=[big])  # fmt: skip
        except ValidationFailed as exc:
            assert "attachments" in exc.errors
        session.rollback()
        assert (
            _docs(app, session)
            .session.execute(
                sa.select(sa.func.count()).select_from(
                    app.extensions["crm"].models.table("EmailMessage")
                )
            )
            .scalar_one()
            == 0
        )


def test_a_temporary_refusal_is_retried_and_a_permanent_one_shows_the_servers_answer(
    mail_app: Any, smtp: Any, run_jobs: Any
) -> None:
    answers = ["451 4.3.0 Try again later", "250 OK"]
    original = type(smtp).handle_DATA

    async def flaky(self: Any, server: Any, session: Any, envelope: Any) -> str:
        answer = answers.pop(0) if answers else "250 OK"
        if answer.startswith("250"):
            return await original(self, server, session, envelope)
        return answer

    type(smtp).handle_DATA = flaky
    try:
        app = mail_app()
        with app.app_context():
            session = _session(app)
            docs = _docs(app, session)
            first = outbox.queue(docs, account_id=None, to="a@example.com", subject="One", text=".")
            session.commit()
            first_id = first.id
        run_jobs(app)
        with app.app_context():
            row = _docs(app, _session(app)).get("EmailMessage", first_id)
            assert (row.status, row.attempts) == ("queued", 1)
            assert row.error.startswith("451")
        import datetime as dt

        from engine.api import clock

        later = clock.now() + dt.timedelta(minutes=5)
        with clock.use(lambda: later):
            run_jobs(app)
        with app.app_context():
            row = _docs(app, _session(app)).get("EmailMessage", first_id)
            assert (row.status, row.error) == ("sent", None)
        assert len(smtp.messages) == 1

        answers[:] = ["550 5.1.1 No such user here"]
        with app.app_context():
            session = _session(app)
            second = outbox.queue(_docs(app, session), account_id=None, to="nobody@example.com",
                                  subject="Two", text=".")  # fmt: skip
            session.commit()
            second_id = second.id
        with clock.use(lambda: later):
            run_jobs(app)
        with app.app_context():
            row = _docs(app, _session(app)).get("EmailMessage", second_id)
            assert row.status == "failed"
            assert row.error == "550 5.1.1 No such user here"
    finally:
        type(smtp).handle_DATA = original


def test_a_personal_or_role_bound_mailbox_is_refused_to_others(mail_app: Any, smtp: Any) -> None:
    app = mail_app()
    with app.app_context():
        session = _session(app)
        state = app.extensions["crm"]
        users = state.models.table("User")
        ids = dict(session.execute(sa.select(users.c.username, users.c.id)).all())
        admin = Documents(
            state.models, session, ids["admin"], ("Admin",), state.pm, username="admin"
        )
        smtp_fields = {"smtp_host": "127.0.0.1", "smtp_port": smtp.port, "smtp_security": "none"}
        personal = admin.create("EmailAccount", {
            "name": "Head's own", "address": "head@romashka.example", "owner": ids["sales_head"], **smtp_fields,
        })  # fmt: skip
        marketing = admin.create("EmailAccount", {
            "name": "Marketing", "address": "news@romashka.example", "role": "marketer", **smtp_fields,
        })  # fmt: skip
        docs = _docs(app, session)  # a manager
        for account in (personal, marketing):
            try:
                outbox.queue(
                    docs, account_id=account.id, to="a@example.com", subject="Hi", text="."
                )
            except ValidationFailed as exc:
                assert exc.errors == {"account": "you may not send from this mailbox"}
            else:
                raise AssertionError(f"the manager sent from {account.name}")
        head = Documents(state.models, session, ids["sales_head"], ("sales_head",), state.pm,
                         username="sales_head")  # fmt: skip
        sent = outbox.queue(
            head, account_id=personal.id, to="a@example.com", subject="Hi", text="."
        )
        assert sent.from_address == "head@romashka.example"


def test_a_mailbox_password_is_an_environment_reference_never_the_password(
    mail_app: Any, smtp: Any, monkeypatch: Any
) -> None:
    app = mail_app()
    with app.app_context():
        session = _session(app)
        state = app.extensions["crm"]
        admin = Documents(state.models, session, None, ("Admin",), state.pm, username="admin")
        try:
            admin.create(
                "EmailAccount",
                {"name": "X", "address": "x@example.com", "smtp_password": "hunter2"},
            )
        except ValidationFailed as exc:
            assert "smtp_password" in exc.errors
        else:
            raise AssertionError("a plain password was stored")
        row = admin.create("EmailAccount", {
            "name": "Sales", "address": "sales@example.com", "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port, "smtp_security": "none", "smtp_username": "crm",
            "smtp_password": "${CRM_TEST_SALES_PASSWORD}",
        })  # fmt: skip
        from plugins.mail import accounts

        monkeypatch.delenv("CRM_TEST_SALES_PASSWORD", raising=False)
        try:
            accounts.from_row(row, {})
        except accounts.AccountError as exc:
            assert str(exc) == "the environment variable CRM_TEST_SALES_PASSWORD is not set"
        monkeypatch.setenv("CRM_TEST_SALES_PASSWORD", "s3cret")
        assert accounts.from_row(row, {}).smtp.password == "s3cret"
