"""Unsubscribing: the link of a received letter opens a page without login
in the configuration's language; its button, or a mail client's RFC 8058
one-click POST (no CSRF token, no session), records the address once; a
forged or broken token is refused and writes nothing."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from plugins.mail import unsubscribe

from .test_mailing_helpers import make_mailing, system_docs


def _sent_mailing(app: Any, smtp: Any, run_jobs: Any, login: Any, emails: list[str]) -> int:
    state = app.extensions["crm"]
    with app.app_context():
        session = state.db.session
        docs = system_docs(app, session)
        for n, email in enumerate(emails):
            docs.create("Customer", {"name": f"Customer {n}", "email": email, "segment": "A"})
        mailing_id = int(make_mailing(docs, filter_="segment: A").id)
        session.commit()
    client = login(app, "admin")
    client.client.post(f"/mailings/{mailing_id}/start", data={"csrf_token": client.csrf})
    run_jobs(app)
    return mailing_id


def _link(message: Any) -> str:
    return str(message["List-Unsubscribe"]).strip("<>").replace("http://localhost", "")


def _state(app: Any, mailing_id: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]], int]:
    state = app.extensions["crm"]
    with app.app_context():
        session = state.db.session
        r, u = state.models.table("MailingRecipient"), state.models.table("Unsubscribe")
        recipients = session.execute(sa.select(r.c.address, r.c.status).order_by(r.c.address)).all()
        gone = session.execute(sa.select(u.c.address, u.c.reason)).all()
        m = session.get(state.models.cls("Mailing"), mailing_id)
        return [tuple(x) for x in recipients], [tuple(x) for x in gone], m.unsubscribed


def test_the_link_shows_a_page_and_its_button_unsubscribes_once(
    mail_app: Any, smtp: Any, run_jobs: Any, login: Any
) -> None:
    app = mail_app()
    mailing_id = _sent_mailing(app, smtp, run_jobs, login, ["A@x.ru", "b@x.ru"])
    letter = next(m for m in smtp.messages if m["To"] == "a@x.ru")
    anonymous = app.test_client()
    page = anonymous.get(_link(letter))
    assert page.status_code == 200
    assert "a@x.ru" in page.text and "Unsubscribe" in page.text
    for _ in range(2):  # the second click changes nothing
        done = anonymous.post(_link(letter))
        assert done.status_code == 200
        assert "You are unsubscribed" in done.text
    recipients, gone, count = _state(app, mailing_id)
    assert recipients == [("a@x.ru", "unsubscribed"), ("b@x.ru", "sent")]
    assert gone == [("a@x.ru", "link")]
    assert count == 1


def test_one_click_post_works_without_csrf_or_login(
    mail_app: Any, smtp: Any, run_jobs: Any, login: Any
) -> None:
    app = mail_app()
    mailing_id = _sent_mailing(app, smtp, run_jobs, login, ["a@x.ru", "b@x.ru"])
    letter = next(m for m in smtp.messages if m["To"] == "b@x.ru")
    response = app.test_client().post(
        _link(letter), data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )  # fmt: skip
    assert response.status_code == 200
    recipients, gone, count = _state(app, mailing_id)
    assert recipients == [("a@x.ru", "sent"), ("b@x.ru", "unsubscribed")]
    assert gone == [("b@x.ru", "one_click")]
    assert count == 1
    # the next mailing leaves the address out
    with app.app_context():
        state = app.extensions["crm"]
        docs = system_docs(app, state.db.session)
        again = make_mailing(docs, filter_="segment: A").id
        state.db.session.commit()
    client = login(app, "admin")
    client.client.post(f"/mailings/{again}/start", data={"csrf_token": client.csrf})
    before = len(smtp.messages)
    run_jobs(app)
    assert [m["To"] for m in smtp.messages[before:]] == ["a@x.ru"]


def test_a_forged_or_broken_token_is_refused_and_writes_nothing(
    mail_app: Any, smtp: Any, run_jobs: Any, login: Any
) -> None:
    app = mail_app()
    mailing_id = _sent_mailing(app, smtp, run_jobs, login, ["a@x.ru", "b@x.ru"])
    letter = next(m for m in smtp.messages if m["To"] == "a@x.ru")
    good = _link(letter)
    recipient_id = unsubscribe.read_token(app.config["SECRET_KEY"], good.rsplit("/", 1)[1])
    assert recipient_id is not None
    forged = unsubscribe.make_token("another-secret", recipient_id[0], "b@x.ru")
    anonymous = app.test_client()
    for url in [good[:-3] + "abc", f"/mail/unsubscribe/{forged}", "/mail/unsubscribe/x"]:
        for method in ("get", "post"):
            response = getattr(anonymous, method)(url, data={"List-Unsubscribe": "One-Click"})
            assert response.status_code == 400
            assert "This unsubscribe link is not valid" in response.text
    recipients, gone, count = _state(app, mailing_id)
    assert recipients == [("a@x.ru", "sent"), ("b@x.ru", "sent")]
    assert gone == [] and count == 0
