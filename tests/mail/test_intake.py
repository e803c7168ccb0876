"""Mail in from a real IMAP server (Dovecot): letters appended to the
mailbox are synced by the job, matched to customers and contact persons,
threaded, kept on the timeline, and shown on the unsorted and thread pages;
bounces mark the letter and the address."""

from __future__ import annotations

import datetime as dt
import sys
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.api import Documents, clock, enqueue
from engine.testing import drain
from plugins.mail import accounts, imap, outbox

# tests/mail is no package and pytest imports in importlib mode: the fixture module by path
sys.path.insert(0, str(Path(__file__).parent))
from imap_server import ImapServer, imap_settings, needed

OWN = "crm@romashka.example"


@pytest.fixture
def server() -> Iterator[ImapServer]:
    with needed() as found:
        yield found


def _state(app: Any) -> Any:
    return app.extensions["crm"]


def docs_of(
    app: Any, username: str = "manager", roles: tuple[str, ...] = ("manager",)
) -> Documents:
    state = _state(app)
    session = state.db.session
    users = state.models.table("User")
    user_id = session.execute(
        sa.select(users.c.id).where(users.c.username == username)
    ).scalar_one()
    return Documents(state.models, session, user_id, roles, state.pm, username=username)


def sync(app: Any) -> None:
    """Queue a sync of the configuration's mailbox and run it (and what it queues)."""
    state = _state(app)
    with app.app_context():
        session = state.db.session
        account_id = accounts.ensure_config_account(session, state.models, state.registry)
        enqueue(session, imap.SYNC_JOB, {"account": account_id}, key=uuid.uuid4().hex)
        session.commit()
    drain(app)


def letter(
    sender: str, subject: str, text: str = "Hello", *, to: str = OWN, message_id: str | None = None,
    in_reply_to: str | None = None, html: str | None = None,
    attachments: tuple[tuple[str, str, bytes], ...] = (), later: int = 1,
) -> bytes:  # fmt: skip
    """A letter as a mail client writes it, dated ``later`` minutes from now."""
    m = EmailMessage()
    m["From"] = sender
    m["To"] = to
    m["Subject"] = subject
    m["Date"] = format_datetime(clock.now() + dt.timedelta(minutes=later))
    m["Message-ID"] = message_id or f"<{uuid.uuid4().hex}@mail.example>"
    if in_reply_to:
        m["In-Reply-To"] = in_reply_to
        m["References"] = in_reply_to
    m.set_content(text)
    if html:
        m.add_alternative(html, subtype="html")
    for name, kind, data in attachments:
        main, _, sub = kind.partition("/")
        m.add_attachment(data, maintype=main, subtype=sub, filename=name)
    return m.as_bytes()


def rows(app: Any, where: Any = None) -> list[Any]:
    state = _state(app)
    table = state.models.table("EmailMessage")
    with app.app_context():
        query = sa.select(table).order_by(table.c.id)
        if where is not None:
            query = query.where(where(table))
        return list(state.db.session.execute(query).all())


def customer_with_contact(app: Any) -> tuple[int, int]:
    with app.app_context():
        docs = docs_of(app)
        customer = docs.create("Customer", {"name": "Romashka LLC", "email": "buyer@romashka.ru"})
        contact = docs.create("ContactPerson", {"customer": customer.id, "name": "Ivan Petrov",
                                                "email": "Ivan@romashka.ru"})  # fmt: skip
        docs.session.commit()
        return customer.id, contact.id


def test_replies_are_threaded_matched_and_kept_on_the_timeline(
    mail_app: Any, server: ImapServer, login: Any
) -> None:
    app = mail_app(imap=imap_settings(server))
    customer_id, contact_id = customer_with_contact(app)
    with app.app_context():
        docs = docs_of(app)
        d = _state(app).registry.documents["Customer"]
        ours = outbox.queue(docs, account_id=None, to="buyer@romashka.ru", subject="Our offer",
                            text="Please see our offer.", about=(d, docs.get("Customer", customer_id)))  # fmt: skip
        docs.session.commit()
        our_id, our_message_id = ours.id, ours.message_id
    drain(app)
    page = b"<html><body><p>Thanks!</p><img src='https://tracker.example/p.gif' alt='logo'><script>alert(1)</script></body></html>"
    server.append(letter("Buyer <Buyer@Romashka.RU>", "Re: Our offer", "Thanks, we agree.",
                         in_reply_to=our_message_id, html=page.decode(),
                         attachments=(("договор.pdf", "application/pdf", b"%PDF-1.4 contract"),)))  # fmt: skip
    # a reply whose mail client dropped In-Reply-To: joined by its subject
    server.append(letter("buyer@romashka.ru", "RE[2]: Fwd: Our offer", "One more question",
                         later=60))  # fmt: skip
    server.append(letter("Ivan Petrov <ivan@romashka.ru>", "Invoice", "Where is the invoice?"))
    server.append(letter("stranger@unknown.example", "Hello there", "Who are you?"))
    sync(app)
    got = {r.subject: r for r in rows(app)}
    assert set(got) == {
        "Our offer",
        "Re: Our offer",
        "RE[2]: Fwd: Our offer",
        "Invoice",
        "Hello there",
    }
    reply, late, invoice, stranger = (got[s] for s in ("Re: Our offer", "RE[2]: Fwd: Our offer",
                                                        "Invoice", "Hello there"))  # fmt: skip
    assert (reply.direction, reply.status, reply.thread, reply.customer_id) == (
        "in",
        "received",
        our_id,
        customer_id,
    )
    assert reply.from_address == "Buyer <Buyer@Romashka.RU>"
    assert late.thread == our_id and late.customer_id == customer_id
    assert (invoice.customer_id, invoice.contact_id, invoice.thread) == (
        customer_id,
        contact_id,
        invoice.id,
    )
    assert stranger.customer_id is None and stranger.user_id is None
    with app.app_context():
        manager = docs_of(app)
        assert reply.user_id == manager.user_id
        assert "<script" not in reply.html and "Thanks!" in reply.html
        interaction = manager.session.execute(
            sa.select(_state(app).models.table("Interaction")).where(
                _state(app).models.table("Interaction").c.id == reply.interaction_id)
        ).one()  # fmt: skip
        assert (interaction.kind, interaction.status, interaction.customer_id) == (
            "email",
            "done",
            customer_id,
        )
        notes = _state(app).models.table("Notification")
        texts = (
            manager.session.execute(
                sa.select(notes.c.text).where(notes.c.recipient_id == manager.user_id)
            )
            .scalars()
            .all()
        )
        assert any("Re: Our offer" in t for t in texts)
    # the manager reads the conversation: remote images hidden until asked, attachments as downloads
    client = login(app, "manager")
    page_html = client.get(f"/mail/thread/{reply.id}").text
    assert (
        page_html.index("Please see our offer.")
        < page_html.index("Thanks!")
        < page_html.index("One more question")
    )
    assert "tracker.example" not in page_html and "Show images" in page_html
    assert "<script>alert" not in page_html
    assert f"/mail/compose?reply_to={late.id}" in page_html
    assert "tracker.example/p.gif" in client.get(f"/mail/thread/{reply.id}?images=1").text
    download = client.get(f"/mail/attachment/{reply.id}/0")
    assert download.status_code == 200 and download.data == b"%PDF-1.4 contract"
    assert download.headers["Content-Disposition"].startswith("attachment;")
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    # the stranger's letter is not the manager's to read
    assert client.get(f"/mail/thread/{stranger.id}").status_code == 404
    assert client.get(f"/mail/attachment/{stranger.id}/0").status_code == 404
    # a second sync imports nothing again
    sync(app)
    assert len(rows(app)) == 5


def test_unsorted_mail_is_filed_under_a_customer_in_two_clicks(
    mail_app: Any, server: ImapServer, login: Any
) -> None:
    app = mail_app(imap=imap_settings(server))
    customer_id, _ = customer_with_contact(app)
    first = letter("New Client <new@client.example>", "Prices?", "What are your prices?")
    first_id = first.split(b"Message-ID: ")[1].split(b"\n")[0].strip().decode()
    server.append(first)
    server.append(letter("new@client.example", "Re: Prices?", "Hello again?", in_reply_to=first_id))
    sync(app)
    head = login(app, "sales_head")
    page = head.get("/mail/unsorted/").text
    assert "Prices?" in page and "Re: Prices?" in page and 'data-to="Customer"' in page
    assert "Unsorted mail" in head.get("/").text
    unsorted = rows(app)
    first_row = next(r for r in unsorted if r.subject == "Prices?")
    # a customer that does not exist, or a bad id, is refused with a message
    for bad in ("999999", "x", ""):
        answer = head.post_form("/mail/unsorted/", {}) if False else None
        del answer
        response = head.client.post(f"/mail/unsorted/{first_row.id}/link",
                                    data={"csrf_token": head.csrf, "customer": bad})  # fmt: skip
        assert response.status_code == 302
    assert all(r.customer_id is None for r in rows(app))
    response = head.client.post(f"/mail/unsorted/{first_row.id}/link",
                                data={"csrf_token": head.csrf, "customer": str(customer_id)})  # fmt: skip
    assert response.status_code == 302
    linked = rows(app)
    assert {r.customer_id for r in linked} == {customer_id}
    assert all(r.interaction_id is not None for r in linked)
    assert "Prices?" not in head.get("/mail/unsorted/").text
    # a manager who may not read a letter cannot file it
    assert login(app, "manager").client.post(
        f"/mail/unsorted/{first_row.id}/link", data={"customer": str(customer_id)}
    ).status_code in (400, 404)


def test_charsets_malformed_and_huge_letters(
    mail_app: Any, server: ImapServer, monkeypatch: Any
) -> None:
    app = mail_app(imap=imap_settings(server))
    koi8 = (b"From: =?koi8-r?B?8s/NwdvLwQ==?= <koi@romashka.ru>\r\nTo: crm@romashka.example\r\n"
            b"Subject: =?koi8-r?B?8NLJ18XU?=\r\nMessage-ID: <koi8@x>\r\n"
            b"Content-Type: text/plain; charset=koi8-r\r\n\r\n" + "Привет".encode("koi8-r") + b"\r\n")  # fmt: skip
    raw8 = (b"From: sender@example.org\r\nTo: crm@romashka.example\r\nSubject: "
            + "Счёт на оплату".encode("cp1251")
            + b"\r\nMessage-ID: <cp1251@x>\r\nContent-Type: text/plain; charset=windows-1251\r\n\r\n"
            + "Оплатите, пожалуйста".encode("cp1251") + b"\r\n")  # fmt: skip
    broken = (b"From: <<<not an address\r\nSubject: =?utf-8?B?broken?=\r\nDate: yesterday\r\n"
              b"Content-Type: multipart/mixed; boundary=\"nowhere\"\r\n\r\n--elsewhere\r\nno end")  # fmt: skip
    huge = letter("big@example.org", "Scans", "See the scans",
                  attachments=(("scan.bin", "application/octet-stream", b"\x00\x01" * 3_000_000),))  # fmt: skip
    for raw in (koi8, raw8, broken, huge):
        server.append(raw)
    sync(app)
    got = {r.message_id: r for r in rows(app)}
    assert len(got) == 4
    assert got["<koi8@x>"].subject == "Привет" and "Ромашка" in got["<koi8@x>"].from_address
    assert got["<koi8@x>"].text.strip() == "Привет"
    assert got["<cp1251@x>"].subject == "Счёт на оплату"
    assert got["<cp1251@x>"].text.strip() == "Оплатите, пожалуйста"
    big = next(r for r in got.values() if r.subject == "Scans")
    assert big.size > 6_000_000 and big.text.strip() == "See the scans"
    state = _state(app)
    with app.app_context():
        table = state.models.metadata.tables[
            state.registry.documents["EmailMessage"].child_table("attachments")
        ]
        sizes = (
            state.db.session.execute(sa.select(table.c.size).where(table.c.parent_id == big.id))
            .scalars()
            .all()
        )
    assert sizes == [6_000_000]
    # a letter larger than the limit is kept by its headers only
    monkeypatch.setattr(imap, "MAX_MESSAGE", 1_000_000)
    server.append(letter("big@example.org", "Even larger", "x",
                         attachments=(("b.bin", "application/octet-stream", b"y" * 2_000_000),)))  # fmt: skip
    sync(app)
    larger = next(r for r in rows(app) if r.subject == "Even larger")
    assert "too large" in larger.text and larger.size > 2_000_000


def test_a_sync_that_dies_before_its_commit_imports_every_letter_once(
    mail_app: Any, server: ImapServer, monkeypatch: Any
) -> None:
    app = mail_app(imap=imap_settings(server))
    server.append_many([letter("a@example.org", f"Letter {n}") for n in range(5)])
    monkeypatch.setattr(imap, "CHUNK", 2)
    calls: list[int] = []
    real = imap.commit

    def dies_on_the_second(session: Any) -> None:
        calls.append(1)
        if len(calls) >= 2:
            raise RuntimeError("killed between fetch and commit")
        real(session)

    monkeypatch.setattr(imap, "commit", dies_on_the_second)
    sync(app)
    assert sorted(r.subject for r in rows(app)) == ["Letter 0", "Letter 1"]
    monkeypatch.setattr(imap, "commit", real)
    sync(app)
    subjects = sorted(r.subject for r in rows(app))
    assert subjects == [f"Letter {n}" for n in range(5)]


def test_uidvalidity_change_and_one_letter_in_two_folders(
    mail_app: Any, server: ImapServer
) -> None:
    app = mail_app(imap=imap_settings(server, folders=["INBOX", "Archive"]))
    same = letter("a@example.org", "In both folders")
    server.append(same)
    server.append(same, "Archive")
    server.append(letter("a@example.org", "Archived"), "Archive")
    sync(app)
    assert sorted(r.subject for r in rows(app)) == ["Archived", "In both folders"]
    state = _state(app)
    with app.app_context():
        table = state.models.metadata.tables[
            state.registry.documents["EmailAccount"].child_table("folders")
        ]
        before = {r.folder: r.uidvalidity for r in state.db.session.execute(sa.select(table))}
    server.reset_uidvalidity("Archive")
    server.append(letter("a@example.org", "After the rebuild"), "Archive")
    sync(app)
    assert sorted(r.subject for r in rows(app)) == [
        "After the rebuild",
        "Archived",
        "In both folders",
    ]
    with app.app_context():
        after = {r.folder: r.uidvalidity for r in state.db.session.execute(sa.select(table))}
    assert after["INBOX"] == before["INBOX"] and after["Archive"] != before["Archive"]


def dsn(original_id: str, recipient: str, status: str, *, headers_only: bool = False) -> bytes:
    original = (f"From: {OWN}\r\nTo: {recipient}\r\nSubject: Our offer\r\n"
                f"Message-ID: {original_id}\r\n\r\nThe offer\r\n")  # fmt: skip
    boundary = "BOUNDARY42"
    returned = (f"Content-Type: text/rfc822-headers\r\n\r\n{original.split(chr(13) + chr(10) + chr(13) + chr(10))[0]}\r\n"
                if headers_only else f"Content-Type: message/rfc822\r\n\r\n{original}")  # fmt: skip
    return (
        f"From: Mail Delivery System <MAILER-DAEMON@mx.example>\r\nTo: {OWN}\r\n"
        f"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <{uuid.uuid4().hex}@mx.example>\r\n"
        f"Date: {format_datetime(clock.now())}\r\n"
        f'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: {'failed' if status.startswith('5') else 'delayed'}\r\n"
        f"Status: {status}\r\nDiagnostic-Code: smtp; 550 {status} User unknown\r\n\r\n"
        f"--{boundary}\r\n{returned}\r\n--{boundary}--\r\n"
    ).encode()


def test_bounces_mark_the_letter_the_recipient_and_after_the_limit_the_address(
    mail_app: Any, server: ImapServer
) -> None:
    app = mail_app(imap=imap_settings(server), bounce_limit=2)
    with app.app_context():
        docs = docs_of(app)
        first = outbox.queue(
            docs, account_id=None, to="nobody@romashka.ru", subject="One", text="."
        )
        second = outbox.queue(
            docs, account_id=None, to="nobody@romashka.ru", subject="Two", text="."
        )
        docs.session.commit()
        ids = {first.id: first.message_id, second.id: second.message_id}
    drain(app)
    state = _state(app)
    with app.app_context():
        system = Documents(state.models, state.db.session, None, ["Admin"], state.pm,
                           username="system", trusted=True)  # fmt: skip
        account_id = accounts.ensure_config_account(system.session, state.models, state.registry)
        template = system.create("EmailTemplate", {"name": "News", "subject": "News", "body": "."})
        mailing = system.create("Mailing", {"name": "December", "account": account_id,
                                            "template": template.id, "doctype": "Customer"})  # fmt: skip
        system.create("MailingRecipient", {"mailing": mailing.id, "address": "later@romashka.ru",
                                           "status": "sent", "message_id": "<mailing-1@romashka.example>"})  # fmt: skip
        system.session.commit()
        mailing_id = mailing.id
    (a, a_mid), (b, b_mid) = ids.items()
    server.append(dsn(a_mid, "nobody@romashka.ru", "5.1.1"))
    server.append(
        dsn("<mailing-1@romashka.example>", "later@romashka.ru", "4.2.2", headers_only=True)
    )
    sync(app)
    with app.app_context():
        recipient = state.db.session.execute(
            sa.select(state.models.table("MailingRecipient"))
        ).one()
        mailings = state.models.table("Mailing")
        counted = state.db.session.execute(
            sa.select(mailings.c.bounced).where(mailings.c.id == mailing_id)
        ).scalar_one()
    assert (recipient.status, counted) == ("bounced", 1) and "4.2.2" in recipient.error
    got = {r.id: r for r in rows(app)}
    assert (got[a].status, got[b].status) == ("failed", "sent")
    assert "5.1.1" in got[a].error and "User unknown" in got[a].error
    bounced = state.models.table("BouncedAddress")
    with app.app_context():
        found = {r.address: r for r in state.db.session.execute(sa.select(bounced))}
    assert (found["nobody@romashka.ru"].hard_bounces, found["nobody@romashka.ru"].invalid) == (
        1,
        False,
    )
    assert (found["later@romashka.ru"].soft_bounces, found["later@romashka.ru"].hard_bounces) == (
        0 + 1,
        0,
    )
    server.append(dsn(b_mid, "nobody@romashka.ru", "5.1.1", headers_only=True))
    sync(app)
    with app.app_context():
        found = {r.address: r for r in state.db.session.execute(sa.select(bounced))}
    assert (found["nobody@romashka.ru"].hard_bounces, found["nobody@romashka.ru"].invalid) == (
        2,
        True,
    )
    # the reports themselves are no customer's mail: not in the unsorted list
    reports = rows(app, lambda t: t.c.bounce.is_(True))
    assert len(reports) == 3


def test_a_refused_login_is_written_on_the_mailbox_and_tried_again(
    mail_app: Any, server: ImapServer
) -> None:
    app = mail_app(imap=imap_settings(server, password="wrong"))
    server.append(letter("a@example.org", "Waiting"))
    sync(app)
    state = _state(app)
    table = state.models.table("EmailAccount")
    with app.app_context():
        account = state.db.session.execute(sa.select(table)).one()
    assert account.sync_error and "login" in account.sync_error.lower()
    assert account.synced_at is None and rows(app) == []


def test_the_schedule_queues_one_sync_per_mailbox_when_its_turn_comes(
    mail_app: Any, server: ImapServer
) -> None:
    app = mail_app(imap=imap_settings(server), sync_every=120)
    server.append(letter("a@example.org", "First"))
    drain(app)  # the schedule's first round: the due job queues the mailbox's sync, which runs
    assert [r.subject for r in rows(app)] == ["First"]
    state = _state(app)
    table = state.models.table("EmailAccount")
    with app.app_context():
        session = state.db.session
        account = session.execute(sa.select(table)).one()
        assert account.synced_at is not None and account.sync_error is None
        now = clock.now()
        # while one sync of the mailbox is queued, another is not
        assert imap.queue_sync(session, account.id, account.sync_tried_at, now) is not None
        assert imap.queue_sync(session, account.id, account.sync_tried_at, now) is None
        session.rollback()
    server.append(letter("a@example.org", "Second"))

    def due() -> None:
        with app.app_context():
            enqueue(state.db.session, imap.DUE_JOB, {}, key=uuid.uuid4().hex)
            state.db.session.commit()
        drain(app)

    due()  # sync_every (120 s) has not passed yet
    assert [r.subject for r in rows(app)] == ["First"]
    with clock.use(lambda: dt.datetime.now(dt.UTC) + dt.timedelta(seconds=121)):
        due()
    assert [r.subject for r in rows(app)] == ["First", "Second"]


def test_a_letter_the_database_refuses_is_kept_bare_and_the_rest_come_in(
    mail_app: Any, server: ImapServer, monkeypatch: Any
) -> None:
    from plugins.mail import interactions

    app = mail_app(imap=imap_settings(server))
    customer_with_contact(app)
    real = interactions.record

    def refuses(docs: Any, row: Any) -> Any:
        if row.subject == "Poison":
            raise RuntimeError("refused")
        return real(docs, row)

    monkeypatch.setattr(interactions, "record", refuses)
    server.append(letter("buyer@romashka.ru", "Poison", "bad"))
    server.append(letter("buyer@romashka.ru", "Fine", "good"))
    forwarded = EmailMessage()
    forwarded["From"] = "buyer@romashka.ru"
    forwarded["To"] = OWN
    forwarded["Subject"] = "Fwd: the contract"
    forwarded["Message-ID"] = "<fwd@romashka.ru>"
    forwarded.set_content("See below")
    forwarded.add_attachment(_inner())
    server.append(forwarded.as_bytes())
    sync(app)
    got = {r.subject: r for r in rows(app)}
    assert got["Fine"].customer_id is not None and got["Fine"].interaction_id is not None
    assert got["Poison"].customer_id is None and "could not be read" in got["Poison"].text
    state = _state(app)
    with app.app_context():
        table = state.models.metadata.tables[
            state.registry.documents["EmailMessage"].child_table("attachments")
        ]
        files = state.db.session.execute(
            sa.select(table.c.filename, table.c.content_type).where(
                table.c.parent_id == got["Fwd: the contract"].id
            )
        ).all()
    assert [tuple(f) for f in files] == [("message.eml", "message/rfc822")]
    assert got["Fwd: the contract"].text.strip() == "See below"


def _inner() -> EmailMessage:
    inner = EmailMessage()
    inner["From"] = "lawyer@romashka.ru"
    inner["Subject"] = "The contract"
    inner.set_content("Signed.")
    return inner
