"""Letters out: a letter is written as an EmailMessage (status ``queued``)
together with a ``mail.send`` job, in the transaction of the page that
writes it; the job hands it to the mailbox's SMTP server.

Delivery: at most one SMTP delivery per letter. The job sends only a letter
that is still ``queued`` and marks it ``sent`` in the transaction that marks
the job done. A temporary refusal (4xx, no connection) leaves the letter
``queued`` and queues the next attempt after a growing wait; a permanent one
(5xx) marks it ``failed`` with the server's answer, which the user reads on
the letter. The one window left is a worker killed between the server's
"250 OK" and that commit: the retry then sends the letter again with the
same ``Message-ID``, which mail clients show once.
"""

from __future__ import annotations

import datetime as dt
import mimetypes
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid
from typing import Any

from email_validator import EmailNotValidError, validate_email

from engine.api import (
    USER,
    Documents,
    JobContext,
    JobError,
    ValidationFailed,
    enqueue,
    gettext,
    ref_links,
    system_documents,
)

from . import accounts, files
from .smtp import Connections, SendFailed

MESSAGE = "EmailMessage"
SEND_JOB = "mail.send"
#: attempts of a temporary refusal before the letter counts as failed
MAX_ATTEMPTS = 8
RETRY_BASE = 60.0  # seconds before the second attempt; doubles each time
RETRY_CAP = 6 * 3600.0
#: ref fields of EmailMessage that are not about the letter's subject
NOT_LINKS = {"account", "user", "interaction"}


@dataclass
class Attachment:
    filename: str
    content_type: str
    data: bytes


# --- checking what a person typed ------------------------------------------------------------


def no_newlines(value: str | None, field: str, errors: dict[str, str]) -> None:
    """A header must be one line: CR or LF would let the text add headers."""
    if value and ("\r" in value or "\n" in value):
        errors[field] = gettext("must be one line (no line breaks)")


def addresses(text: str | None, field: str, errors: dict[str, str]) -> list[str]:
    """The addresses of a To or Cc line, each checked; ``errors[field]`` says
    which one is wrong."""
    if not text:
        return []
    if "\r" in text or "\n" in text:
        errors[field] = gettext("must be one line (no line breaks)")
        return []
    found: list[str] = []
    for name, address in getaddresses([text.replace(";", ",")]):
        if not address and not name:
            continue
        try:
            found.append(validate_email(address, check_deliverability=False).normalized)
        except EmailNotValidError:
            errors[field] = gettext("%(address)s is not an email address", address=address or name)
            return []
    return found


def normalized(address: str) -> str:
    """An address as it is compared: lower case, no spaces."""
    return address.strip().lower()


# --- writing a letter --------------------------------------------------------------------------


def links(registry: Any, doctype: Any, doc: Any) -> dict[str, Any]:
    """The ref fields a message about ``doc`` fills in (``engine.api.ref_links``)."""
    return ref_links(registry, MESSAGE, doctype, doc, NOT_LINKS)


def queue(
    docs: Documents,
    *,
    account_id: int | None,
    to: str,
    subject: str,
    text: str,
    cc: str | None = None,
    html: str | None = None,
    attachments: Sequence[Attachment] = (),
    about: tuple[Any, Any] | None = None,
    reply_to: Any = None,
    extra: Mapping[str, Any] | None = None,
    to_client: bool = True,
) -> Any:
    """Write a letter and queue it, in ``docs``' transaction, on behalf of
    ``docs``' principal; the new EmailMessage. ``about`` is the ``(doctype,
    record)`` it is written from, ``reply_to`` the EmailMessage it answers
    (the thread's headers follow); ``to_client=False`` (a notification to
    the CRM's own users) keeps it off the customer's links and timeline. Bad
    input raises ValidationFailed, by field, before anything is written."""
    registry, session = docs.registry, docs.session
    errors: dict[str, str] = {}
    to_list = addresses(to, "to", errors)
    if not to_list and "to" not in errors:
        errors["to"] = gettext("is required")
    cc_list = addresses(cc, "cc", errors)
    no_newlines(subject, "subject", errors)
    limit = int(accounts.settings_of(registry).get("max_attachments") or 0)
    total = sum(len(a.data) for a in attachments)
    if total > limit:
        errors["attachments"] = gettext(
            "the attachments take %(size)s, more than the %(limit)s a letter may carry",
            size=size_text(total), limit=size_text(limit),
        )  # fmt: skip
    for a in attachments:
        no_newlines(a.filename, "attachments", errors)
    try:
        account = accounts.load(session, docs.models, registry, account_id)
    except accounts.AccountError as exc:
        errors["account"] = str(exc)
        account = None
    if account is not None and account.smtp is None:
        errors["account"] = gettext("this mailbox has no SMTP server to send through")
    if account is not None:
        row = session.get(docs.models.cls(accounts.ACCOUNT), account.id)
        if row is None or not accounts.may_use(row, docs.principal):
            errors["account"] = gettext("you may not send from this mailbox")
    if errors:
        raise ValidationFailed(errors)
    assert account is not None
    values: dict[str, Any] = {
        "direction": "out",
        "status": "queued",
        "account": account.id,
        "from_address": account.sender,
        "to": ", ".join(to_list),
        "cc": ", ".join(cc_list) or None,
        "subject": subject or "",
        "text": text or "",
        "html": html,
        "message_id": make_msgid(domain=account.address.rpartition("@")[2] or "crm"),
        "attachments": [
            {"filename": a.filename, "content_type": a.content_type, "size": len(a.data),
             "sha256": files.store(registry, a.data)}
            for a in attachments
        ],
    }  # fmt: skip
    if docs.principal.user_id is not None:
        values["user"] = docs.principal.user_id
    if about is not None:
        doctype, doc = about
        values |= {"doctype": doctype.name, "doc_id": doc.id}
        if to_client:
            values |= links(registry, doctype, doc)
    if reply_to is not None:
        values["in_reply_to"] = reply_to.message_id
        chain = [*(reply_to.references or "").split(), reply_to.message_id or ""]
        values["references"] = " ".join(x for x in chain if x)[-9000:] or None
        values["thread"] = reply_to.thread or reply_to.id
        for name in ("doctype", "doc_id", *_link_names(registry)):
            if values.get(name) is None and getattr(reply_to, name, None) is not None:
                values[name] = getattr(reply_to, name)
    values |= dict(extra or {})
    writer = Documents.for_principal(docs.models, session, docs.principal, docs.pm, trusted=True)
    message = writer.create(MESSAGE, values)
    if message.thread is None:
        message.thread = message.id
    enqueue(session, SEND_JOB, {"message": message.id}, key=f"{SEND_JOB}.{message.id}.1")
    return message


def _link_names(registry: Any) -> list[str]:
    message = registry.documents.get(MESSAGE)
    if message is None:
        return []
    return [
        f.name
        for f in message.fields.values()
        if f.type == "ref" and f.name not in NOT_LINKS and f.to != USER
    ]


def size_text(n: int) -> str:
    if n >= 1024 * 1024:
        megabytes = round(n / 1024 / 1024, 1)
        return gettext("%(n)s MB", n=megabytes)
    return gettext("%(n)s KB", n=max(1, n // 1024))


# --- the letter as MIME ------------------------------------------------------------------------


def mime(registry: Any, row: Any, headers: Mapping[str, str] | None = None) -> EmailMessage:
    """The EmailMessage record as the message the SMTP server gets."""
    message = EmailMessage()
    message["From"] = row.from_address
    message["To"] = row.to
    if row.cc:
        message["Cc"] = row.cc
    message["Subject"] = row.subject or ""
    message["Date"] = format_datetime(_aware(row.sent_at or row.created_at))
    message["Message-ID"] = row.message_id
    if row.in_reply_to:
        message["In-Reply-To"] = row.in_reply_to
    if row.references:
        message["References"] = row.references
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(row.text or "")
    if row.html:
        message.add_alternative(row.html, subtype="html")
    for a in row.attachments or ():
        data = files.read(registry, a.sha256)
        if data is None:
            raise JobError(
                gettext("the attachment %(name)s is missing", name=a.filename), retry=False
            )
        kind = a.content_type or mimetypes.guess_type(a.filename)[0] or "application/octet-stream"
        main, _, sub = kind.partition("/")
        message.add_attachment(
            data, maintype=main, subtype=sub or "octet-stream", filename=a.filename
        )
    return message


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def recipients(row: Any) -> list[str]:
    return [a for _, a in getaddresses([row.to or "", row.cc or ""]) if a]


def all_recipients(message: EmailMessage) -> list[str]:
    """Everyone a MIME message goes to: To, Cc and Bcc."""
    lines = [str(message.get(h) or "") for h in ("To", "Cc", "Bcc")]
    return [a for _, a in getaddresses(lines) if a]


def connections(registry: Any) -> Connections:
    """This configuration's pool of SMTP connections, in this process."""
    pool = registry.extensions.get("mail.connections")
    if pool is None:
        pool = registry.extensions.setdefault("mail.connections", Connections())
    return pool


# --- the job -----------------------------------------------------------------------------------


def retry_after(attempt: int) -> dt.timedelta:
    return dt.timedelta(seconds=min(RETRY_CAP, RETRY_BASE * 2 ** max(0, attempt - 1)))


def send_job(ctx: JobContext, payload: Mapping[str, Any]) -> Any:
    """``mail.send``: ``{message: id}``. Sends a queued letter once."""
    docs = system_documents(ctx)
    row = docs.get(MESSAGE, int(payload.get("message") or 0))
    if row is None or row.status != "queued":
        return None  # deleted, or sent by an earlier attempt: nothing to do
    registry = ctx.registry
    try:
        account = accounts.load(ctx.session, ctx.models, registry, row.account_id)
        if account.smtp is None:
            raise SendFailed(gettext("this mailbox has no SMTP server to send through"), False)
        row.sent_at = ctx.now()
        message = mime(registry, row)
        connections(registry).send(account.smtp, message, account.address, recipients(row))
    except accounts.AccountError as exc:
        return _failed(docs, row, str(exc))
    except SendFailed as failed:
        row.attempts = (row.attempts or 0) + 1
        if failed.temporary and row.attempts < MAX_ATTEMPTS:
            row.error = failed.reply
            row.sent_at = None
            enqueue(
                ctx.session, SEND_JOB, {"message": row.id},
                key=f"{SEND_JOB}.{row.id}.{row.attempts + 1}",
                run_after=ctx.now() + retry_after(row.attempts),
            )  # fmt: skip
            return {"retry": row.attempts + 1, "error": failed.reply}
        return _failed(docs, row, failed.reply)
    row.status, row.error = "sent", None
    row.attempts = (row.attempts or 0) + 1
    from . import interactions

    interactions.record(docs, row)
    return {"sent": row.message_id}


def _failed(docs: Documents, row: Any, reply: str) -> dict[str, str]:
    row.status, row.error, row.sent_at = "failed", reply[:500], None
    return {"failed": reply}
