"""Writing a letter from a record: the "Send email" action on every type a
letter can be about, the compose page (mailbox, template, To, Cc, subject,
text, attachments) and a reply to a letter (``?reply_to=``).

Which types get the action is read from the metadata: the types the
EmailMessage's link fields refer to (the base layer's customer, contact
person, Interest and deal, or a config's own) that have an ``email`` field
or refer to a type that has one. A letter goes out through
:func:`outbox.queue`, which checks what was typed; its refusals come back to
the form as errors beside their fields, and nothing is written.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from flask import Blueprint, abort, flash, jsonify, redirect, request
from flask_appbuilder import BaseView, expose
from markupsafe import Markup

from engine import api
from engine.api import USER, HandledError, ValidationFailed, gettext, login_required

from . import accounts, lettering, outbox

HERE = Path(__file__).parent
MESSAGE = outbox.MESSAGE
ACCOUNT = accounts.ACCOUNT
TEMPLATE = lettering.TEMPLATE
#: the plugin's own types: a letter is not written "about" them from their page
OWN_TYPES = {"EmailAccount", "EmailMessage", "EmailTemplate", "Mailing", "MailingRecipient",
             "Unsubscribe", "BouncedAddress"}  # fmt: skip
#: the form's fields, in the order a person fills them in
FIELDS = ("account", "to", "cc", "subject", "text")
QUOTE_LIMIT = 20_000  # characters of the quoted letter in a reply


# --- which records a letter can be written from ---------------------------------------------


def _email_field(d: Any) -> Any | None:
    """The type's address field: the one named ``email``, else its first of type email."""
    own = d.fields.get("email")
    if own is not None and own.type in ("email", "string"):
        return own
    return next((f for f in d.fields.values() if f.type == "email"), None)


def _via(registry: Any, d: Any) -> list[Any]:
    """The ref fields of ``d`` that lead to a type with an address, in field order."""
    return [
        f
        for f in d.fields.values()
        if f.type == "ref"
        and f.to != USER
        and f.to in registry.documents
        and _email_field(registry.documents[f.to]) is not None
    ]


def senders(registry: Any) -> frozenset[str]:
    """The types with the "Send email" action, read once per configuration."""
    found = registry.extensions.get("mail.compose.types")
    if found is None:
        message = registry.documents.get(MESSAGE)
        targets = set()
        if message is not None:
            targets = {
                f.to
                for f in message.fields.values()
                if f.type == "ref" and f.name not in outbox.NOT_LINKS and f.to != USER
            }
        found = frozenset(
            name
            for name, d in registry.documents.items()
            if name not in OWN_TYPES
            and name != USER
            and (
                (name in targets and (_email_field(d) is not None or _via(registry, d)))
                or (_email_field(d) is not None and d.fields.get("email") is not None)
            )
        )
        registry.extensions["mail.compose.types"] = found
    return found


def compose_url(doctype: str, doc_id: int) -> str:
    return "/mail/compose?" + urlencode({"doctype": doctype, "id": doc_id})


def reply_url(message_id: int) -> str:
    return "/mail/compose?" + urlencode({"reply_to": message_id})


def attachment_url(message_id: int, index: int) -> str:
    """Where a letter's attachment is downloaded (served by the inbox part)."""
    return f"/mail/attachment/{message_id}/{index}"


def record_actions(doctype: Any, doc: Any, principal: Any) -> list[Any]:
    """The "Send email" action on a record a letter can be about; "Reply" on a letter."""
    if doc is None or getattr(doc, "id", None) is None:
        return []
    registry = api.crm().registry
    if MESSAGE not in registry.documents or not api.allowed(registry, principal, MESSAGE, "create"):
        return []
    if doctype.name == MESSAGE:
        if doc.status in ("received", "sent", "failed"):
            return [{"label": gettext("Reply"), "url": reply_url(doc.id), "icon": "fa-reply"}]
        return []
    if doctype.name not in senders(registry):
        return []
    return [
        {"label": gettext("Send email"), "url": compose_url(doctype.name, doc.id),
         "icon": "fa-envelope"}
    ]  # fmt: skip


# --- what the form offers ---------------------------------------------------------------------


def mailboxes(session: Any, models: Any, registry: Any, who: Any) -> list[dict[str, Any]]:
    """The mailboxes ``who`` may send from (``accounts.may_use``: active ones
    that are shared or theirs, open to everyone or to one of their roles; all
    of them for an administrator) that can send: the configuration's own
    first, then their personal ones."""
    rows = [
        r for r in accounts.usable(session, models, registry, who) if r.from_config or r.smtp_host
    ]
    rows.sort(key=lambda r: (not r.from_config, r.owner_id != who.user_id, r.name))
    return [
        {"id": r.id, "label": f"{r.name} <{r.address}>" if r.address else r.name,
         "personal": r.owner_id is not None}
        for r in rows
    ]  # fmt: skip


def templates(session: Any, models: Any, doctype: str | None, lang: str) -> list[dict[str, Any]]:
    """The active templates for this type or any, in the reader's language first."""
    cls = models.cls(TEMPLATE)
    kinds = [cls.doctype.is_(None), cls.doctype == ""]
    if doctype:
        kinds.append(cls.doctype == doctype)
    rows = session.execute(
        sa.select(cls.id, cls.name, cls.locale, cls.doctype)
        .where(cls.active.is_(True), sa.or_(*kinds))
        .limit(500)
    ).all()
    rows.sort(key=lambda r: (r.locale not in (lang, None), r.locale != lang, not r.doctype, r.name))
    return [{"id": r.id, "label": f"{r.name} ({r.locale})" if r.locale else r.name} for r in rows]


def address_of(session: Any, models: Any, registry: Any, d: Any, doc: Any) -> str:
    """The record's address, or the address of what it refers to (its
    contact person's, its customer's): the letter's To."""
    own = _email_field(d)
    if own is not None and getattr(doc, own.column, None):
        return str(getattr(doc, own.column))
    for f in _via(registry, d):
        target_id = getattr(doc, f.column, None)
        if target_id is None:
            continue
        target = registry.documents[f.to]
        column = _email_field(target).column  # type: ignore[union-attr]
        table = models.table(target.name)
        found = session.execute(
            sa.select(table.c[column]).where(table.c.id == target_id)
        ).scalar_one_or_none()
        if found:
            return str(found)
    return ""


def _reply_subject(subject: str | None) -> str:
    subject = (subject or "").strip()
    while subject[:3].lower() in ("re:", " re "):
        subject = subject[3:].strip()
    return f"Re: {subject}" if subject else "Re:"


def _quote(row: Any) -> str:
    when = row.sent_at or row.created_at
    who = row.from_address or ""
    stamp = api.local_time(when, api.company_tz()).strftime("%d.%m.%Y %H:%M") if when else ""
    head = gettext("On %(date)s, %(who)s wrote:", date=stamp, who=who)
    body = (row.text or "")[:QUOTE_LIMIT]
    quoted = "\n".join("> " + line if line else ">" for line in body.splitlines())
    return f"\n\n{head}\n{quoted}\n"


# --- the pages ---------------------------------------------------------------------------------


class Target:
    """What a letter is about: the record (or None) and the letter it answers."""

    def __init__(self, d: Any, doc: Any, reply: Any) -> None:
        self.d, self.doc, self.reply = d, doc, reply

    @property
    def about(self) -> tuple[Any, Any] | None:
        return (self.d, self.doc) if self.doc is not None else None

    def back(self) -> str:
        if self.doc is not None:
            return f"/{self.d.resource}/{self.doc.id}"
        if self.reply is not None:
            return f"/{api.crm().registry.documents[MESSAGE].resource}/{self.reply.id}"
        return "/"

    def hidden(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.reply is not None:
            out["reply_to"] = self.reply.id
        elif self.doc is not None:
            out |= {"doctype": self.d.name, "id": self.doc.id}
        return out


def _readable(d: Any, raw_id: Any) -> Any:
    """The record of type ``d`` with that id that the user may read, or None."""
    state = api.crm()
    doc_id = api.valid_id(raw_id)
    if doc_id is None:
        return None
    doc = api.db_session().get(state.models.cls(d.name), doc_id)
    if doc is None or not api.may_touch(state.models, api.principal(), d.name, "read", doc):
        return None
    return doc


def _target(args: Mapping[str, Any]) -> Target:
    """The record and letter of the request; 404 for what the user may not read."""
    registry = api.crm().registry
    reply = None
    if args.get("reply_to"):
        reply = _readable(registry.documents[MESSAGE], args.get("reply_to"))
        if reply is None:
            abort(404, gettext("There is no such letter"))
        d = registry.documents.get(reply.doctype or "")
        doc = _readable(d, reply.doc_id) if d is not None and reply.doc_id else None
        return Target(d if doc is not None else None, doc, reply)
    d = registry.documents.get(str(args.get("doctype") or ""))
    if d is None or d.name not in senders(registry):
        abort(404, gettext("There is no such record"))
    doc = _readable(d, args.get("id"))
    if doc is None:
        abort(404, gettext("There is no such record"))
    return Target(d, doc, None)


def _by_field(found: Mapping[str, Any]) -> dict[str, str]:
    """The errors by the form's fields; those of other fields (a link the
    record no longer allows) as one message above the form."""
    shown = {*FIELDS, "attachments"}
    out = {k: str(v) for k, v in found.items() if k in shown}
    rest = [f"{k}: {v}" for k, v in found.items() if k not in shown]
    if rest:
        out[""] = "; ".join(rest)
    return out


def _may_write() -> None:
    state = api.crm()
    if not api.allowed(state.registry, api.principal(), MESSAGE, "create"):
        abort(403, gettext("You may not write letters"))


class ComposeView(BaseView):
    route_base = "/mail"
    default_view = "compose"

    @expose("/compose", methods=["GET"])
    @login_required
    def compose(self) -> Any:
        target = _target(request.args)
        _may_write()
        state = api.crm()
        session = api.db_session()
        boxes = mailboxes(session, state.models, state.registry, api.principal())
        values: dict[str, Any] = {"account": boxes[0]["id"] if boxes else None, "cc": "",
                                  "subject": "", "text": "", "to": ""}  # fmt: skip
        if target.reply is not None:
            r = target.reply
            values["to"] = r.from_address if r.direction == "in" else r.to
            values["subject"] = _reply_subject(r.subject)
            values["text"] = _quote(r)
            if r.account_id in {b["id"] for b in boxes}:
                values["account"] = r.account_id
        elif target.doc is not None:
            values["to"] = address_of(session, state.models, state.registry, target.d, target.doc)
        session.commit()  # the configuration's mailbox, when it was made just now
        return self._page(target, boxes, values, {})

    @expose("/compose", methods=["POST"])
    @login_required
    def send(self) -> Any:
        target = _target(request.form)
        _may_write()
        state = api.crm()
        session = api.db_session()
        who = api.principal()
        boxes = mailboxes(session, state.models, state.registry, who)
        values = {name: str(request.form.get(name) or "") for name in FIELDS}
        # a browser sends a textarea's lines ended by CR LF: the letter keeps plain lines
        values["text"] = values["text"].replace("\r\n", "\n")
        errors: dict[str, str] = {}
        status = 422
        account_id = api.valid_id(values["account"])
        if account_id is None or account_id not in {b["id"] for b in boxes}:
            errors["account"] = gettext("choose a mailbox you may send from")
            status = 403 if account_id is not None else 422  # another's mailbox, or none
        files = [f for f in request.files.getlist("attachments") if f and f.filename]
        attachments = []
        for f in files:
            data = f.read()
            name = Path(f.filename or "file").name[:255] or "file"
            kind = (
                f.mimetype
                if f.mimetype and f.mimetype != "application/octet-stream"
                else (mimetypes.guess_type(name)[0] or "application/octet-stream")
            )
            attachments.append(outbox.Attachment(name, kind, data))
        if not errors:
            try:
                outbox.queue(
                    api.request_documents(), account_id=account_id, to=values["to"],
                    cc=values["cc"] or None, subject=values["subject"], text=values["text"],
                    attachments=attachments, about=target.about, reply_to=target.reply,
                )  # fmt: skip
                session.commit()
            except ValidationFailed as exc:
                session.rollback()
                errors = _by_field(exc.errors)
            except HandledError as exc:
                session.rollback()
                errors = {"": str(exc)}
        if errors:
            if files:
                errors.setdefault(
                    "attachments_again", gettext("attach the files again before sending")
                )
            return self._page(target, boxes, values, errors), status
        flash(gettext("Queued for sending"), "success")
        return redirect(target.back())

    @expose("/compose/template", methods=["GET"])
    @login_required
    def template(self) -> Any:
        """``{subject, text}`` of a template filled in over the record."""
        state = api.crm()
        who = api.principal()
        if not api.allowed(state.registry, who, MESSAGE, "create"):
            return api.json_error(403, gettext("You may not write letters"))
        if not api.allowed(state.registry, who, TEMPLATE, "read"):
            return api.json_error(403, gettext("You may not read email templates"))
        template_id = api.valid_id(request.args.get("template"))
        row = None
        if template_id is not None:
            row = api.db_session().get(state.models.cls(TEMPLATE), template_id)
        if row is None or not api.may_touch(state.models, who, TEMPLATE, "read", row):
            return api.json_error(404, gettext("There is no such template"))
        d = state.registry.documents.get(str(request.args.get("doctype") or ""))
        doc = None
        if d is not None and request.args.get("id"):
            doc = _readable(d, request.args.get("id"))
            if doc is None:
                return api.json_error(404, gettext("There is no such record"))
        try:
            letter = lettering.render_template(
                api.request_documents(), row, d if doc is not None else None, doc
            )
        except HandledError as exc:
            return api.json_error(422, str(exc))
        return jsonify({"subject": letter.subject, "text": letter.text})

    def _page(self, target: Target, boxes: list[dict[str, Any]], values: Mapping[str, Any],
              errors: Mapping[str, str]) -> Any:  # fmt: skip
        state = api.crm()
        d = target.d
        title = None
        if target.doc is not None and d is not None:
            title = _title(d, target.doc)
        session = api.db_session()
        limit = int(accounts.settings_of(state.registry).get("max_attachments") or 0)
        may_templates = api.allowed(state.registry, api.principal(), TEMPLATE, "read")
        return self.render_template(
            "mail/compose.html", target=target, boxes=boxes, values=values, errors=errors,
            templates=templates(session, state.models, d.name if d else None, api.locale())
            if may_templates else [],
            record_title=title, record_label=d.label.get(api.locale()) if d is not None else None,
            hidden=target.hidden(), limit=outbox.size_text(limit),
        )  # fmt: skip


def _title(d: Any, doc: Any) -> str:
    try:
        return api.request_documents().title(d.name, doc, as_read=True) or f"#{doc.id}"
    except HandledError:  # a title that cannot be shown: the record's number
        return f"#{doc.id}"


# --- the letter's own page ---------------------------------------------------------------------


def record_sections(models: Any, doctype: Any, doc: Any, principal: Any) -> list[Any]:
    """On a letter's page: where it stands, the server's answer when it
    failed, its attachments to download."""
    if doctype.name != MESSAGE or doc is None:
        return []
    status = doctype.fields["status"]
    label = status.values.get(doc.status) if status.values else None
    text = label.get(api.locale()) if label is not None else str(doc.status)
    css = {"sent": "success", "received": "info", "queued": "warning", "failed": "danger"}
    parts = [
        Markup(
            '<p class="crm-mail-status"><span class="label label-{}" data-status="{}">{}</span>'
        ).format(css.get(doc.status, "default"), doc.status, text)
    ]
    if doc.status == "queued" and doc.error:
        parts.append(Markup(' <span class="text-muted">{}: {}</span>').format(
            gettext("the server asked to try later"), doc.error))  # fmt: skip
    parts.append(Markup("</p>"))
    if doc.status == "failed" and doc.error:
        parts.append(Markup('<div class="alert alert-danger crm-mail-error"><b>{}</b> {}</div>')
                     .format(gettext("The server refused the letter:"), doc.error))  # fmt: skip
    files = list(doc.attachments or ())
    if files:
        items = Markup("").join(
            Markup('<li><a class="crm-mail-attachment" href="{}" download>{}</a> '
                   '<span class="text-muted small">{}</span></li>')
            .format(attachment_url(doc.id, i), a.filename, outbox.size_text(int(a.size or 0)))
            for i, a in enumerate(files)
        )  # fmt: skip
        parts.append(Markup('<ul class="list-unstyled crm-mail-attachments">{}</ul>').format(items))
    return [(gettext("Letter"), Markup("").join(parts))]


# --- wiring ------------------------------------------------------------------------------------


def register(appbuilder: Any, registry: Any) -> None:
    """Add this part's pages to the app."""
    from flask import current_app

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if "mail_compose_assets" not in app.blueprints:
        app.register_blueprint(
            Blueprint("mail_compose_assets", __name__, template_folder="templates",
                      static_folder="static", static_url_path="/mail-static")
        )  # fmt: skip
    appbuilder.add_view_no_menu(ComposeView())
