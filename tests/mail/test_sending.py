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
