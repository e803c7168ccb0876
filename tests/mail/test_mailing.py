"""Mailings: recipients taken in one statement (deduplicated, without the
unsubscribed and invalid addresses), letters in batches through a real SMTP
server with RFC 8058 unsubscribe headers, 5xx per recipient, the rate limit,
cancelling, the progress the page polls, preview and a test letter."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

from engine.api import Documents, clock

from .test_mailing_helpers import counts_of, make_mailing, statements, system_docs


def _customers(docs: Documents, emails: list[str | None]) -> None:
    for n, email in enumerate(emails):
        docs.create("Customer", {"name": f"Customer {n}", "email": email, "segment": "A"})


def test_starting_takes_the_recipients_in_one_statement_deduplicated_without_stopped_addresses(
    mail_app: Any, login: Any
) -> None:
    app = mail_app()
    state = app.extensions["crm"]
    with app.app_context():
        session = state.db.session
        docs = system_docs(app, session)
        _customers(docs, ["a@x.ru", " A@X.ru ", "b@x.ru", "", None, "gone@x.ru", "bad@x.ru",
                          "c@x.ru"])  # fmt: skip
        docs.create("Unsubscribe", {"address": "Gone@x.ru"})
        bounced = state.models.table("BouncedAddress")
        session.execute(sa.insert(bounced).values(address="bad@x.ru", invalid=True, version=1,
                                                  hard_bounces=3))  # fmt: skip
        mailing_id = make_mailing(docs, filter_="{segment: A}").id
        session.commit()
    client = login(app, "admin")
    with statements(app) as seen:
        response = client.client.post(f"/mailings/{mailing_id}/start",
                                      data={"csrf_token": client.csrf})  # fmt: skip
    assert response.status_code == 302
    inserts = [s for s in seen if s.lstrip().upper().startswith("INSERT INTO MAILING_RECIPIENT")]
    assert len(inserts) == 1
    assert len(seen) < 25  # a fixed number, whatever the number of customers
    with app.app_context():
        session = state.db.session
        r = state.models.table("MailingRecipient")
        rows = session.execute(sa.select(r.c.address, r.c.status).order_by(r.c.id)).all()
        assert sorted(rows) == [("a@x.ru", "queued"), ("b@x.ru", "queued"),
                                ("bad@x.ru", "skipped"), ("c@x.ru", "queued"),
                                ("gone@x.ru", "skipped")]  # fmt: skip
        m = session.get(state.models.cls("Mailing"), mailing_id)
        assert (m.status, m.total, m.skipped) == ("sending", 5, 2)
        assert m.started_at is not None


def test_a_mailing_is_delivered_in_batches_with_unsubscribe_headers(
    mail_app: Any, smtp: Any, run_jobs: Any, login: Any
) -> None:
    app = mail_app(batch=2)
    state = app.extensions["crm"]
    with app.app_context():
        session = state.db.session
        docs = system_docs(app, session)
        _customers(docs, [f"c{n}@x.ru" for n in range(5)])
        mailing_id = make_mailing(docs, filter_="segment: A").id
        session.commit()
    client = login(app, "admin")
    client.client.post(f"/mailings/{mailing_id}/start", data={"csrf_token": client.csrf})
    run_jobs(app)
    assert sorted(m["To"] for m in smtp.messages) == [f"c{n}@x.ru" for n in range(5)]
    letter = smtp.messages[0]
    assert letter["Subject"] == "News for Customer 0"
    assert "Dear Customer 0" in letter.get_body().get_content()
    assert letter["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = letter["List-Unsubscribe"]
    assert link.startswith("<http://localhost/mail/unsubscribe/") and link.endswith(">")
    with app.app_context():
        session = state.db.session
        m = session.get(state.models.cls("Mailing"), mailing_id)
        assert (m.status, m.sent, m.failed, m.total) == ("done", 5, 0, 5)
        assert m.finished_at is not None
        r = state.models.table("MailingRecipient")
        ids = session.execute(sa.select(r.c.message_id).order_by(r.c.id)).scalars().all()
        assert sorted(ids) == sorted(m["Message-ID"] for m in smtp.messages)
    body = client.get(f"/mailings/{mailing_id}/progress.json").get_json()
    assert (body["status"], body["percent"], body["sent"], body["queued"]) == ("done", 100, 5, 0)


def test_a_permanent_refusal_fails_one_recipient_and_the_rest_goes_out(
    mail_app: Any, smtp: Any, run_jobs: Any, login: Any
) -> None:
    original = type(smtp).handle_RCPT if hasattr(type(smtp), "handle_RCPT") else None

    async def handle_RCPT(self: Any, server: Any, session: Any, envelope: Any, address: str,
                          options: Any) -> str:  # fmt: skip
        if address.startswith("nobody"):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    type(smtp).handle_RCPT = handle_RCPT
    try:
        app = mail_app()
        state = app.extensions["crm"]
        with app.app_context():
            session = state.db.session
            docs = system_docs(app, session)
            _customers(docs, ["a@x.ru", "nobody@x.ru", "b@x.ru"])
            mailing_id = make_mailing(docs, filter_="segment: A").id
            session.commit()
        client = login(app, "admin")
        client.client.post(f"/mailings/{mailing_id}/start", data={"csrf_token": client.csrf})
        run_jobs(app)
    finally:
        if original is None:
            del type(smtp).handle_RCPT
        else:
            type(smtp).handle_RCPT = original
    assert sorted(m["To"] for m in smtp.messages) == ["a@x.ru", "b@x.ru"]
    with app.app_context():
        session = state.db.session
        assert counts_of(app, session, mailing_id) == {"sent": 2, "failed": 1}
        r = state.models.table("MailingRecipient")
        error = session.execute(sa.select(r.c.error).where(r.c.status == "failed")).scalar_one()
        assert error == "550 5.1.1 No such user here"
        m = session.get(state.models.cls("Mailing"), mailing_id)
        assert (m.status, m.sent, m.failed) == ("done", 2, 1)


def test_the_rate_limit_delays_the_next_batch_instead_of_sleeping(
    mail_app: Any, smtp: Any, run_jobs: Any, login: Any
) -> None:
    app = mail_app(rate_limit=2)
    state = app.extensions["crm"]
    with app.app_context():
        session = state.db.session
        docs = system_docs(app, session)
        _customers(docs, [f"c{n}@x.ru" for n in range(5)])
        mailing_id = make_mailing(docs, filter_="segment: A").id
        session.commit()
    client = login(app, "admin")
    client.client.post(f"/mailings/{mailing_id}/start", data={"csrf_token": client.csrf})
    run_jobs(app)
    assert len(smtp.messages) == 2
    later = clock.now() + dt.timedelta(seconds=61)
    with clock.use(lambda: later):
        run_jobs(app)
    assert len(smtp.messages) == 4
    much_later = later + dt.timedelta(seconds=61)
    with clock.use(lambda: much_later):
        run_jobs(app)
    assert len(smtp.messages) == 5
    body = client.get(f"/mailings/{mailing_id}/progress.json").get_json()
    assert body["status"] == "done"


def test_a_cancelled_mailing_stops_after_the_batch_in_flight(
    mail_app: Any, smtp: Any, run_jobs: Any, login: Any
) -> None:
    app = mail_app(rate_limit=2)
    state = app.extensions["crm"]
    with app.app_context():
        session = state.db.session
        docs = system_docs(app, session)
        _customers(docs, [f"c{n}@x.ru" for n in range(5)])
        mailing_id = make_mailing(docs, filter_="segment: A").id
        session.commit()
    client = login(app, "admin")
    client.client.post(f"/mailings/{mailing_id}/start", data={"csrf_token": client.csrf})
    run_jobs(app)
    assert len(smtp.messages) == 2
    page = client.client.post(f"/mailings/{mailing_id}/cancel", data={"csrf_token": client.csrf})
    assert page.status_code == 302
    later = clock.now() + dt.timedelta(minutes=10)
    with clock.use(lambda: later):
        run_jobs(app)
    assert len(smtp.messages) == 2
    body = client.get(f"/mailings/{mailing_id}/progress.json").get_json()
    assert (body["status"], body["sent"], body["queued"]) == ("cancelled", 2, 3)


def test_a_bad_filter_is_a_message_on_the_page_not_a_500(mail_app: Any, login: Any) -> None:
    app = mail_app()
    state = app.extensions["crm"]
    with app.app_context():
        session = state.db.session
        docs = system_docs(app, session)
        bad_yaml = make_mailing(docs, filter_="{segment: [A").id
        no_field = make_mailing(docs, filter_="{colour: red}").id
        no_segment = make_mailing(docs, filter_="", segment="nowhere").id
        session.commit()
    client = login(app, "admin")
    for mailing_id, text in [(bad_yaml, "not valid YAML"), (no_field, "colour"),
                             (no_segment, "no segment nowhere")]:  # fmt: skip
        for action in ("start", "schedule"):
            response = client.client.post(f"/mailings/{mailing_id}/{action}",
                                          data={"csrf_token": client.csrf}, follow_redirects=True)  # fmt: skip
            assert response.status_code == 200
            assert text in response.text
        with app.app_context():
            m = state.db.session.get(state.models.cls("Mailing"), mailing_id)
            assert (m.status, m.total) == ("draft", 0)


def test_the_page_shows_progress_preview_and_sends_a_test_to_me(
    mail_app: Any, smtp: Any, run_jobs: Any, login: Any
) -> None:
    app = mail_app()
    state = app.extensions["crm"]
    with app.app_context():
        session = state.db.session
        docs = system_docs(app, session)
        _customers(docs, ["first@x.ru", "second@x.ru"])
        mailing_id = make_mailing(docs, filter_="segment: A").id
        session.commit()
    client = login(app, "admin")
    page = client.get(f"/mailing/{mailing_id}")
    assert page.status_code == 200
    assert 'class="progress-bar crm-mailing-bar"' in page.text
    assert "Start now" in page.text and "Send a test to me" in page.text
    preview = client.get(f"/mailings/{mailing_id}/preview")
    assert "News for Customer 0" in preview.text and "Dear Customer 0" in preview.text
    sent = client.client.post(f"/mailings/{mailing_id}/test", data={"csrf_token": client.csrf},
                              follow_redirects=True)  # fmt: skip
    assert "admin@example.org" in sent.text
    run_jobs(app)
    assert [m["To"] for m in smtp.messages] == ["admin@example.org"]
    assert smtp.messages[0]["Subject"] == "[Test] News for Customer 0"
    with app.app_context():
        m = state.db.session.get(state.models.cls("Mailing"), mailing_id)
        assert m.status == "draft"  # a test starts nothing


@pytest.mark.parametrize("action", ["start", "cancel", "test", "schedule"])
def test_only_who_may_update_the_mailing_may_act_on_it(
    mail_app: Any, login: Any, action: str
) -> None:
    app = mail_app()
    state = app.extensions["crm"]
    with app.app_context():
        session = state.db.session
        docs = system_docs(app, session)
        mailing_id = make_mailing(docs, filter_="segment: A").id
        session.commit()
    client = login(app, "manager")
    response = client.client.post(f"/mailings/{mailing_id}/{action}",
                                  data={"csrf_token": client.csrf})  # fmt: skip
    assert response.status_code == 403  # a manager reads mailings, a marketer runs them
    assert client.get(f"/mailings/{mailing_id}/progress.json").status_code == 200
    with app.app_context():
        m = state.db.session.get(state.models.cls("Mailing"), mailing_id)
        assert m.status == "draft"


def test_a_scheduled_mailing_starts_when_its_time_comes(
    mail_app: Any, smtp: Any, run_jobs: Any, login: Any
) -> None:
    app = mail_app(public_url="https://crm.romashka.example")
    state = app.extensions["crm"]
    at = clock.now() + dt.timedelta(hours=2)
    with app.app_context():
        session = state.db.session
        docs = system_docs(app, session)
        _customers(docs, ["a@x.ru"])
        mailing_id = make_mailing(docs, filter_="segment: A", scheduled_at=at).id
        session.commit()
    client = login(app, "admin")
    client.client.post(f"/mailings/{mailing_id}/schedule", data={"csrf_token": client.csrf})
    run_jobs(app)
    assert smtp.messages == []
    later = at + dt.timedelta(minutes=1)
    with clock.use(lambda: later):
        run_jobs(app)
        run_jobs(app)
    assert [m["To"] for m in smtp.messages] == ["a@x.ru"]
    assert smtp.messages[0]["List-Unsubscribe"].startswith(
        "<https://crm.romashka.example/mail/unsubscribe/"
    )


def test_a_letter_written_as_bytes_reads_back_with_its_cyrillic_subject_and_html() -> None:
    import email
    import email.policy

    from plugins.mail.delivery import raw_letter

    data = raw_letter(
        {"From": "=?utf-8?b?0KDQvtC80LDRiNC60LA=?= <crm@romashka.example>", "To": "a@x.ru",
         "Subject": "Весенние новости для ООО «Вектор» " * 3, "Message-ID": "<m.1.2@x>",
         "List-Unsubscribe": "<https://crm.example/mail/unsubscribe/abc>"},
        "Здравствуйте!\n.\nНовости.", "<p>Здравствуйте!</p>",
    )  # fmt: skip
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert message["Subject"] == ("Весенние новости для ООО «Вектор» " * 3).strip()
    assert str(message["From"]) == "Ромашка <crm@romashka.example>"
    assert message.get_body(("plain",)).get_content() == "Здравствуйте!\n.\nНовости."
    assert message.get_body(("html",)).get_content() == "<p>Здравствуйте!</p>"
    assert message["List-Unsubscribe"] == "<https://crm.example/mail/unsubscribe/abc>"


def test_cancelling_during_a_batch_lets_it_finish_once_and_stops(
    mail_app: Any, smtp: Any, run_jobs: Any, login: Any
) -> None:
    """The mailing is cancelled (its record saved) while a batch is with the
    server: the batch is marked as sent, not failed and sent again."""
    app = mail_app(batch=2)
    state = app.extensions["crm"]
    with app.app_context():
        session = state.db.session
        docs = system_docs(app, session)
        _customers(docs, [f"c{n}@x.ru" for n in range(5)])
        mailing_id = make_mailing(docs, filter_="segment: A").id
        session.commit()
    client = login(app, "admin")
    client.client.post(f"/mailings/{mailing_id}/start", data={"csrf_token": client.csrf})
    original = type(smtp).handle_DATA
    cancelled: list[bool] = []

    async def cancel_on_first(self: Any, server: Any, session: Any, envelope: Any) -> str:
        if not cancelled:
            cancelled.append(True)
            engine = sa.create_engine(state.registry.database)
            with engine.begin() as conn:
                conn.execute(sa.text("UPDATE mailing SET status = 'cancelled', "
                                     "version = version + 1 WHERE id = :id"), {"id": mailing_id})  # fmt: skip
            engine.dispose()
        return await original(self, server, session, envelope)

    type(smtp).handle_DATA = cancel_on_first
    try:
        run_jobs(app)
        later = clock.now() + dt.timedelta(hours=2)
        with clock.use(lambda: later):
            run_jobs(app)
    finally:
        type(smtp).handle_DATA = original
    assert len(smtp.messages) == 2 and smtp.dropped == 0
    body = client.get(f"/mailings/{mailing_id}/progress.json").get_json()
    assert (body["status"], body["sent"], body["queued"]) == ("cancelled", 2, 3)
    with app.app_context():
        assert counts_of(app, state.db.session, mailing_id) == {"sent": 2, "queued": 3}


def test_a_segment_of_the_metadata_narrowed_by_the_mailings_filter(
    mail_app: Any, smtp: Any, run_jobs: Any, login: Any
) -> None:
    app = mail_app(metadata="segments:\n  big: {document: Customer, filter: {segment: A}}\n")
    state = app.extensions["crm"]
    with app.app_context():
        session = state.db.session
        docs = system_docs(app, session)
        _customers(docs, ["a@x.ru", "b@x.ru"])
        docs.create("Customer", {"name": "Small", "email": "small@x.ru", "segment": "C"})
        mailing_id = make_mailing(
            docs, segment="big", doctype=None, filter_="{email: {contains: b}}"
        ).id
        session.commit()
    client = login(app, "admin")
    client.client.post(f"/mailings/{mailing_id}/start", data={"csrf_token": client.csrf})
    run_jobs(app)
    assert [m["To"] for m in smtp.messages] == ["b@x.ru"]
