"""A mailing's life: starting it (its recipients taken in one statement),
sending it batch by batch, finishing it.

Starting (:func:`start`) writes every recipient of the segment or filter in
ONE ``INSERT INTO mailing_recipient ... SELECT``: one row per normalized
address (lower case, trimmed; empty addresses left out), the first record of
an address standing for it. Addresses that unsubscribed or bounce for good
are written too, as ``skipped``, so the mailing shows whom it left out and
why nobody asks later. The mailing becomes ``sending`` and its first batch
job is queued in the same transaction.

Sending (:func:`batch_job`, ``mail.mailing.batch``): one job sends one batch
of ``queued`` recipients over one SMTP connection, marks them in a few
UPDATEs (one per outcome) and queues the next batch in the same transaction,
so that the batch's marks and the next job commit together. A worker killed
mid-batch commits nothing of it: the job is taken over when its lease runs
out and sends the batch again — with the same Message-IDs, derived from the
mailing and the recipient — so the duplicates of a crash are bounded by one
batch. A per-account rate limit delays the next batch (``run_after``)
instead of sleeping. A cancelled mailing stops after the batch in flight.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import smtplib
from collections.abc import Mapping
from email.header import Header
from email.utils import format_datetime, formataddr, make_msgid
from typing import Any

import sqlalchemy as sa
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from sqlalchemy.orm import object_session

from engine.api import (
    USER,
    HandledError,
    JobContext,
    JobError,
    Principal,
    compile_filter,
    enqueue,
    find_segment,
    gettext,
    render,
    system_documents,
    where,
)

from . import accounts, lettering, outbox, unsubscribe
from .smtp import SendFailed, classify

MAILING = "Mailing"
RECIPIENT = "MailingRecipient"
UNSUBSCRIBE = "Unsubscribe"
BOUNCED = "BouncedAddress"
BATCH_JOB = "mail.mailing.batch"
START_JOB = "mail.mailing.start"
#: seconds between two looks for scheduled mailings that are due
START_EVERY = 30
#: temporary refusals of one batch in a row before its first letter counts as failed
MAX_TEMPORARY = 8
RETRY_BASE = 60.0


class StartError(HandledError):
    """A mailing that cannot start as it is set up; ``field`` is the form's field to blame."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


# --- what a mailing is sent to -------------------------------------------------------------


def parse_filter(text: str | None) -> dict[str, Any]:
    """The Mailing's ``filter`` (YAML or JSON, as a segment's filter); StartError if it is not a map."""
    if not text or not text.strip():
        return {}
    try:
        spec = YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where_ = f" (line {mark.line + 1})" if mark is not None else ""
        raise StartError(
            gettext("the filter is not valid YAML%(where)s", where=where_), "filter"
        ) from exc
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise StartError(gettext("a filter is a map of field → condition"), "filter")
    return dict(spec)


def audience(
    registry: Any, models: Any, mailing: Any, principal: Principal | None = None
) -> tuple[Any, dict[str, Any], Any]:
    """(document type, filter spec, address field) of a mailing; StartError when wrong."""
    spec: dict[str, Any] = {}
    doctype = mailing.doctype or None
    if mailing.segment:
        # a consultant's segment, or a user's saved one the starting user may
        # use: the same records as the list ?segment= shows them
        segment = find_segment(models, object_session(mailing), mailing.segment, principal)
        if segment is None:
            raise StartError(
                gettext("there is no segment %(name)s", name=mailing.segment), "segment"
            )
        doctype = segment.document
        spec.update(segment.filter)
    spec.update(parse_filter(mailing.filter))
    if not doctype:
        raise StartError(gettext("name a segment or the type of the recipients"), "doctype")
    d = registry.documents.get(doctype)
    if d is None:
        raise StartError(gettext("there is no document type %(name)s", name=doctype), "doctype")
    field = d.fields.get(mailing.address_field or "email")
    if field is None or field.type not in ("email", "string"):
        raise StartError(
            gettext("%(type)s has no address field %(field)s",
                    type=doctype, field=mailing.address_field or "email"),
            "address_field",
        )  # fmt: skip
    return d, spec, field


def recipients_insert(
    models: Any, mailing: Any, principal: Principal | None, now: dt.datetime, ordered: bool = True
) -> sa.Insert:
    """The one statement that writes a mailing's recipients (see the module's
    doc), in address order: every index of the recipients then grows at its
    end. SQLite's GROUP BY already gives that order (``ordered=False`` spares
    it a second sort); PostgreSQL's hashed one does not."""
    registry = models.registry
    d, spec, field = audience(registry, models, mailing, principal)
    table = models.table(d.name)
    try:
        condition = compile_filter(models, d.name, spec, now=now, principal=principal,
                                   user_id=principal.user_id if principal else None)  # fmt: skip
    except ValueError as exc:  # FilterError
        raise StartError(
            gettext("the filter is wrong: %(error)s", error=str(exc)), "filter"
        ) from exc
    if principal is not None:
        condition = sa.and_(condition, where(models, principal, d.name, "read"))
    address = sa.func.lower(sa.func.trim(table.c[field.column]))
    unsub = models.table(UNSUBSCRIBE)
    bounced = models.table(BOUNCED)
    first = (
        sa.select(address.label("address"), sa.func.min(table.c.id).label("doc_id"))
        .where(condition, table.c[field.column].is_not(None), address != "")
        .group_by(address)
        .subquery("first")
    )
    status = sa.case(
        (
            sa.or_(
                first.c.address.in_(sa.select(sa.func.lower(sa.func.trim(unsub.c.address)))),
                first.c.address.in_(
                    sa.select(sa.func.lower(sa.func.trim(bounced.c.address))).where(
                        bounced.c.invalid.is_(True)
                    )
                ),
            ),
            "skipped",
        ),
        else_="queued",
    )
    recipients = models.table(RECIPIENT)
    select = sa.select(
        sa.literal(mailing.id), first.c.address, sa.literal(d.name), first.c.doc_id, status,
        sa.literal(1), sa.literal(now), sa.literal(now),
    )  # fmt: skip
    if ordered:
        select = select.order_by(first.c.address)
    return sa.insert(recipients).from_select(
        ["mailing_id", "address", "doctype", "doc_id", "status", "version", "created_at",
         "updated_at"],
        select,
    )  # fmt: skip


def counts(session: Any, models: Any, mailing_id: int) -> dict[str, int]:
    """Recipients by status, in one grouped query."""
    r = models.table(RECIPIENT)
    rows = session.execute(
        sa.select(r.c.status, sa.func.count())
        .where(r.c.mailing_id == mailing_id)
        .group_by(r.c.status)
    ).all()
    return {str(status): int(n) for status, n in rows}


def start(
    session: Any,
    models: Any,
    mailing: Any,
    *,
    now: dt.datetime,
    principal: Principal | None = None,
    base_url: str | None = None,
) -> dict[str, int]:
    """Start ``mailing`` (draft or scheduled) in the caller's transaction:
    its recipients, ``sending``, ``started_at``, ``total``, and the first
    batch queued. Recipients that the ``principal`` may not read are left
    out (None: the engine's own start of a scheduled mailing, as its owner).
    StartError when it cannot start."""
    if mailing.status not in ("draft", "scheduled"):
        raise StartError(gettext("only a draft or scheduled mailing can start"))
    if mailing.template_id is None:
        raise StartError(gettext("choose a template"), "template")
    if principal is None:
        principal = owner_principal(mailing)
    ordered = session.get_bind().dialect.name != "sqlite"
    insert = recipients_insert(models, mailing, principal, now, ordered)
    total = int(session.connection().execute(insert).rowcount)
    r = models.table(RECIPIENT)
    if total < 0:  # a driver that does not count an INSERT ... SELECT
        total = int(
            session.execute(
                sa.select(sa.func.count()).where(r.c.mailing_id == mailing.id)
            ).scalar_one()
        )
    skipped = int(
        session.execute(
            sa.select(sa.func.count()).where(r.c.status == "skipped", r.c.mailing_id == mailing.id)
        ).scalar_one()
    )
    found = {"queued": total - skipped, "skipped": skipped}
    mailing.status = "sending"
    mailing.started_at = now
    mailing.total = total
    mailing.skipped = skipped
    mailing.sent = mailing.failed = mailing.bounced = mailing.unsubscribed = 0
    enqueue(
        session, BATCH_JOB, {"mailing": mailing.id, "after": 0, "base": base_url, "n": 1},
        key=f"{BATCH_JOB}.{mailing.id}.1",
    )  # fmt: skip
    return found


def owner_principal(mailing: Any) -> Principal | None:
    """The mailing's owner as a principal (their read rule picks the
    recipients), or None (everyone) when there is no owner to ask."""
    if mailing.owner_id is None:
        return None
    try:
        from flask import current_app

        user = current_app.appbuilder.sm.get_user_by_id(mailing.owner_id)  # type: ignore[attr-defined]
    except (RuntimeError, AttributeError):
        return None
    if user is None:
        return None
    return Principal(user.id, user.username, frozenset(r.name for r in user.roles))


def start_job(ctx: JobContext, payload: Mapping[str, Any]) -> Any:
    """``mail.mailing.start`` (every 30 s): start the scheduled mailings that are due."""
    if MAILING not in ctx.registry.documents:
        return None
    cls = ctx.models.cls(MAILING)
    now = ctx.now()
    due = ctx.session.execute(
        sa.select(cls).where(
            cls.status == "scheduled",
            sa.or_(cls.scheduled_at.is_(None), cls.scheduled_at <= now.replace(tzinfo=None)),
        ).order_by(cls.id).limit(50)
    ).scalars()  # fmt: skip
    started, refused = [], {}
    base = outbox_base(ctx.registry)
    for mailing in list(due):
        try:
            with ctx.session.begin_nested():
                start(ctx.session, ctx.models, mailing, now=now, base_url=base)
            started.append(mailing.id)
        except StartError as exc:
            # it cannot start as it is: back to draft, with the reason in the log
            mailing.status = "draft"
            refused[mailing.id] = str(exc)
    return {"started": started, "refused": refused}


def outbox_base(registry: Any) -> str | None:
    return accounts.settings_of(registry).get("public_url") or None


# --- sending -------------------------------------------------------------------------------


def _naive(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=None) if value.tzinfo is not None else value


def batch_size(registry: Any, account: accounts.Account) -> int:
    size = int(accounts.settings_of(registry).get("batch") or 200)
    if account.rate_limit:
        size = min(size, int(account.rate_limit))
    return max(1, size)


def _add(session: Any, models: Any, mailing_id: int, **more: int) -> None:
    """Add to a mailing's counts in SQL (see :func:`finish`)."""
    m = models.table(MAILING)
    values = {name: sa.func.coalesce(m.c[name], 0) + n for name, n in more.items() if n}
    if values:
        session.execute(sa.update(m).where(m.c.id == mailing_id).values(values))


def batch_job(ctx: JobContext, payload: Mapping[str, Any]) -> Any:
    """``mail.mailing.batch``: ``{mailing, after, base, n, retry?}``. Sends
    the next batch of queued recipients whose id is past ``after``."""
    session, models, registry = ctx.session, ctx.models, ctx.registry
    mailing = session.get(models.cls(MAILING), int(payload.get("mailing") or 0))
    if mailing is None or mailing.status != "sending":
        return {"stopped": getattr(mailing, "status", None)}
    started = ctx.now()
    try:
        account = accounts.load(session, models, registry, mailing.account_id)
    except accounts.AccountError as exc:
        raise JobError(str(exc)) from exc
    if account.smtp is None:
        raise JobError(gettext("this mailbox has no SMTP server to send through"))
    size = batch_size(registry, account)
    r = models.table(RECIPIENT)
    after = int(payload.get("after") or 0)
    rows = session.execute(
        sa.select(r.c.id, r.c.address, r.c.doctype, r.c.doc_id)
        .where(r.c.id > after, r.c.mailing_id == mailing.id, r.c.status == "queued")
        .order_by(r.c.id)
        .limit(size)
    ).all()  # fmt: skip
    if not rows:
        finish(session, models, mailing.id, started)
        return {"done": mailing.id}
    sender = Sender(ctx, mailing, account, payload.get("base"))
    sent, failed, temporary = sender.send(rows)
    now = ctx.now()
    if sent:
        ids = [rid for rid, _ in sent]
        session.execute(
            sa.update(r).where(r.c.id.in_(ids)).values(
                status="sent", sent_at=_naive(now), updated_at=_naive(now), error=None,
                message_id=sender.message_id_sql(r.c.id), version=r.c.version + 1,
            )
        )  # fmt: skip
    for rid, reply in failed:
        session.execute(
            sa.update(r).where(r.c.id == rid).values(
                status="failed", error=reply[:500], updated_at=_naive(now), version=r.c.version + 1
            )
        )  # fmt: skip
    _add(session, models, mailing.id, sent=len(sent), failed=len(failed))
    progress = (mailing.sent or 0) + (mailing.failed or 0) + len(sent) + len(failed)
    last = max([rid for rid, _ in sent] + [rid for rid, _ in failed] + [after])
    retry = int(payload.get("retry") or 0)
    n = int(payload.get("n") or 1) + 1
    nxt: dict[str, Any] = {
        "mailing": mailing.id,
        "after": last,
        "base": payload.get("base"),
        "n": n,
    }
    if temporary is not None:
        retry += 1
        if retry >= MAX_TEMPORARY:  # the server keeps refusing this one: it fails, the rest goes on
            stuck = next(rid for rid, *_ in rows if rid > last)
            session.execute(
                sa.update(r).where(r.c.id == stuck).values(status="failed", error=temporary[:500])
            )
            _add(session, models, mailing.id, failed=1)
            nxt |= {"after": stuck}
            retry = 0
        run_after = now + dt.timedelta(seconds=min(3600.0, RETRY_BASE * 2 ** max(0, retry - 1)))
        if retry:
            nxt["retry"] = retry
    elif len(rows) < size:  # the last batch: nothing is left to queue
        finish(session, models, mailing.id, now)
        ctx.report(progress, (mailing.total or 0) - (mailing.skipped or 0))
        return {"sent": len(sent), "failed": len(failed), "done": mailing.id}
    elif account.rate_limit:
        done = len(sent) + len(failed)
        run_after = started + dt.timedelta(seconds=60.0 * done / account.rate_limit)
    else:
        run_after = now
    enqueue(session, BATCH_JOB, nxt, key=f"{BATCH_JOB}.{mailing.id}.{n}", run_after=run_after)
    ctx.report(progress, (mailing.total or 0) - (mailing.skipped or 0))
    return {"sent": len(sent), "failed": len(failed), "temporary": temporary}


def finish(session: Any, models: Any, mailing_id: int, now: dt.datetime) -> None:
    """The last batch: ``done``, ``finished_at`` and the counts as they are —
    unless the mailing was cancelled meanwhile (it stays cancelled). Written
    in SQL, not through the record's version: a user saving the mailing
    meanwhile must not make the batch fail and go out again."""
    found = counts(session, models, mailing_id)
    m = models.table(MAILING)
    # a recipient who unsubscribed after the letter reached them was sent it too
    sent = found.get("sent", 0) + _unsubscribed_after_sending(session, models, mailing_id)
    session.execute(
        sa.update(m).where(m.c.id == mailing_id).values(
            total=sum(found.values()), sent=sent, failed=found.get("failed", 0),
            bounced=found.get("bounced", 0), unsubscribed=found.get("unsubscribed", 0),
            skipped=found.get("skipped", 0),
        )
    )  # fmt: skip
    session.execute(
        sa.update(m).where(m.c.id == mailing_id, m.c.status == "sending")
        .values(status="done", finished_at=_naive(now))
    )  # fmt: skip


def _unsubscribed_after_sending(session: Any, models: Any, mailing_id: int) -> int:
    r = models.table(RECIPIENT)
    return int(
        session.execute(
            sa.select(sa.func.count()).where(
                r.c.mailing_id == mailing_id, r.c.status == "unsubscribed",
                r.c.message_id.is_not(None),
            )
        ).scalar_one()
    )  # fmt: skip


class Sender:
    """One batch's letters: the template compiled once, the batch's records
    read in one query, one SMTP connection."""

    def __init__(self, ctx: JobContext, mailing: Any, account: accounts.Account, base: Any):
        self.ctx = ctx
        self.mailing = mailing
        self.account = account
        self.docs = system_documents(ctx)
        self.template = ctx.session.get(ctx.models.cls(lettering.TEMPLATE), mailing.template_id)
        if self.template is None:
            raise JobError(gettext("the mailing's template no longer exists"), retry=False)
        self.secret = unsubscribe.secret_key()
        self.tokens = unsubscribe.Tokens(self.secret)
        t = self.template
        self.sources = (t.subject or "", t.body or "", t.html or "")
        self.all_sources = "\n".join(self.sources)
        # the same Message-ID for a recipient every time it is sent: a resend
        # after a crash is one letter to a server that drops repeats
        self.mid_tag = hashlib.sha256(f"{self.secret}:{mailing.id}".encode()).hexdigest()[:8]
        self.base = str(base or outbox_base(ctx.registry) or "http://localhost").rstrip("/")
        self.domain = account.address.rpartition("@")[2] or "crm"
        self.date = format_datetime(ctx.now())
        self.sender = formataddr((account.sender_name or "", account.address), "utf-8")

    def records(self, rows: list[Any]) -> dict[int, tuple[Any, Any]]:
        by_type: dict[str, list[int]] = {}
        for row in rows:
            if row.doctype and row.doc_id is not None:
                by_type.setdefault(row.doctype, []).append(int(row.doc_id))
        out: dict[int, tuple[Any, Any]] = {}
        for name, ids in by_type.items():
            d = self.ctx.registry.documents.get(name)
            if d is None:
                continue
            cls = self.ctx.models.cls(name)
            for obj in self.ctx.session.execute(sa.select(cls).where(cls.id.in_(ids))).scalars():
                out[obj.id] = (d, obj)
        return out

    def letter(self, row: Any, record: tuple[Any, Any] | None) -> tuple[str, bytes]:
        """(Message-ID, the letter as the server gets it)."""
        d, doc = record if record is not None else (None, None)
        rendered = self.render(d, doc)
        token = self.tokens.make(row.id, row.address)
        mid = f"<mailing.{self.mailing.id}.{row.id}.{self.mid_tag}@{self.domain}>"  # as below
        headers = {
            "From": self.sender,
            "To": row.address,
            "Subject": rendered.subject,
            "Date": self.date,
            "Message-ID": mid,
            "List-Unsubscribe": f"<{self.base}/mail/unsubscribe/{token}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "Precedence": "bulk",
        }
        return mid, raw_letter(headers, rendered.text, rendered.html)

    def message_id_sql(self, recipient_id: Any) -> Any:
        """The Message-ID of :meth:`letter` as SQL over the recipient's id:
        a batch marks its letters in one plain UPDATE."""
        prefix = f"<mailing.{self.mailing.id}."
        suffix = f".{self.mid_tag}@{self.domain}>"
        return sa.literal(prefix) + sa.cast(recipient_id, sa.String) + sa.literal(suffix)

    def render(self, d: Any, doc: Any) -> lettering.Letter:
        """The template over one record: one context for subject, text and
        HTML (each template compiled once, by the engine's cache)."""
        if d is None or doc is None:
            return lettering.render_template(self.docs, self.template)
        try:
            view = self.docs.view(d, doc)
            context = self.docs.expression_context(view, d.fields, self.all_sources, template=True)
            subject, text, html = (render(s, context) if s else "" for s in self.sources)
        except Exception as exc:
            raise HandledError(
                gettext("the template %(name)s cannot be filled in: %(error)s",
                        name=self.template.name, error=str(exc))
            ) from exc  # fmt: skip
        return lettering.Letter(" ".join(subject.split()), text, html or None)

    def send(
        self, rows: list[Any]
    ) -> tuple[list[tuple[int, str]], list[tuple[int, str]], str | None]:
        """(sent: (id, Message-ID)), (failed: (id, answer)), the temporary
        refusal that stopped the batch or None."""
        records = self.records(rows)
        sent: list[tuple[int, str]] = []
        failed: list[tuple[int, str]] = []
        pool = outbox.connections(self.ctx.registry)
        assert self.account.smtp is not None
        try:
            with pool.connection(self.account.smtp) as conn:
                for i, row in enumerate(rows):
                    try:
                        mid, data = self.letter(row, records.get(int(row.doc_id or 0)))
                    except HandledError as exc:
                        failed.append((row.id, str(exc)))
                        continue
                    try:
                        try:
                            conn.sendmail(self.account.address, [row.address], data)
                        except (smtplib.SMTPException, OSError) as exc:
                            raise classify(exc) from exc
                    except SendFailed as refused:
                        if refused.temporary:
                            if refused.reply.startswith("no connection"):
                                raise
                            return sent, failed, refused.reply
                        failed.append((row.id, refused.reply))
                        continue
                    sent.append((row.id, mid))
                    if i % 50 == 49:
                        self.ctx.checkpoint()
        except SendFailed as lost:  # no connection, or lost mid-batch: try again later
            return sent, failed, lost.reply
        return sent, failed, None


def _header(name: str, value: str) -> str:
    if value.isascii() and "\r" not in value and "\n" not in value:
        return f"{name}: {value}"
    one_line = " ".join(value.split())
    if one_line.isascii():
        return f"{name}: {one_line}"
    return (
        f"{name}: {Header(one_line, 'utf-8', header_name=name).encode(linesep=chr(13) + chr(10))}"
    )


def _body(text: str) -> str:
    return base64.encodebytes(text.encode("utf-8")).decode("ascii").replace("\n", "\r\n")


def raw_letter(headers: dict[str, str], text: str, html: str | None) -> bytes:
    """A letter's bytes, written directly: the ``email`` package's header
    objects cost more than the rest of a mailing's letter together. UTF-8
    text in base64, an HTML alternative when there is one; headers encoded
    by RFC 2047 when they are not ASCII."""
    lines = [_header(name, value) for name, value in headers.items()]
    lines.append("MIME-Version: 1.0")
    plain = 'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: base64'
    if not html:
        return ("\r\n".join(lines) + "\r\n" + plain + "\r\n\r\n" + _body(text)).encode("ascii")
    boundary = "=_" + make_msgid("alt")[1:-1].replace("@", ".")
    parts = [
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
        "",
        f"--{boundary}",
        plain,
        "",
        _body(text),
        f"--{boundary}",
        'Content-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: base64',
        "",
        _body(html),
        f"--{boundary}--",
        "",
    ]
    return ("\r\n".join(lines) + "\r\n" + "\r\n".join(parts)).encode("ascii")


def preview(docs: Any, mailing: Any, recipient: Any = None) -> lettering.Letter:
    """The mailing's letter over a real record: the given recipient's, else
    the first record its segment or filter picks."""
    registry, models, session = docs.registry, docs.models, docs.session
    template = session.get(models.cls(lettering.TEMPLATE), mailing.template_id)
    if template is None:
        raise StartError(gettext("choose a template"), "template")
    d, spec, field = audience(registry, models, mailing, docs.principal)
    cls = models.cls(d.name)
    if recipient is not None and recipient.doc_id is not None:
        doc = session.get(models.cls(recipient.doctype or d.name), recipient.doc_id)
    else:
        try:
            condition = compile_filter(models, d.name, spec, principal=docs.principal,
                                       user_id=docs.principal.user_id)  # fmt: skip
        except ValueError as exc:
            raise StartError(
                gettext("the filter is wrong: %(error)s", error=str(exc)), "filter"
            ) from exc
        table = models.table(d.name)
        condition = sa.and_(condition, where(models, docs.principal, d.name, "read"),
                            table.c[field.column].is_not(None))  # fmt: skip
        doc = session.execute(sa.select(cls).where(condition).order_by(cls.id).limit(1)).scalar()
    return lettering.render_template(docs, template, d if doc is not None else None, doc)


def user_address(session: Any, models: Any, user_id: int | None) -> str | None:
    if user_id is None:
        return None
    users = models.table(USER)
    return session.execute(sa.select(users.c.email).where(users.c.id == user_id)).scalar()
