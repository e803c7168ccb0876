"""Mail in: the IMAP sync's jobs (imap.py), the "Unsorted mail" page where a
letter that matched nobody is filed under a customer in two clicks, the
thread view of a conversation, and attachments served as downloads.

Every page shows only the letters its reader may read (``where``) and
offers only the customers they may read.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from flask import Blueprint, Response, abort, flash, redirect, request
from flask_appbuilder import BaseView, expose

from engine import api
from engine.api import (
    Documents,
    HandledError,
    ValidationFailed,
    gettext,
    lazy_gettext,
    login_required,
    menu_label,
)

from . import files, imap, interactions, matching, sanitize
from .outbox import MESSAGE

#: background jobs of this part, by name (crm_jobs)
JOBS: dict[str, Any] = {imap.SYNC_JOB: imap.sync_job, imap.DUE_JOB: imap.due_job}
#: periodic jobs of this part, as (job name, every N seconds) (crm_schedules)
SCHEDULES: list[tuple[str, int]] = [(imap.DUE_JOB, imap.TICK)]
PAGE = 100


def register(appbuilder: Any, registry: Any) -> None:
    """Add this part's pages to the app."""
    from flask import current_app

    if MESSAGE not in registry.documents:
        return
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if "mail_inbox_templates" not in app.blueprints:
        app.register_blueprint(
            Blueprint("mail_inbox_templates", __name__, template_folder="templates")
        )
    appbuilder.add_view_no_menu(UnsortedView())
    appbuilder.add_view_no_menu(ThreadView())
    if matching.primary(registry) is not None:
        category, category_label = api.menu_group(registry.documents[MESSAGE])
        appbuilder.add_link(
            "crm:mail_unsorted", href="/mail/unsorted/",
            label=menu_label(lazy_gettext("Unsorted mail")),
            category=category, category_label=category_label,
            cond=lambda: api.allowed(registry, api.principal(), MESSAGE, "read"),
        )  # fmt: skip


def record_actions(doctype: Any, doc: Any, principal: Any) -> list[Any]:
    """This part's buttons in a record's header: a letter's conversation."""
    if getattr(doctype, "name", None) != MESSAGE or doc is None or getattr(doc, "id", None) is None:
        return []
    return [
        {"label": gettext("Conversation"), "url": f"/mail/thread/{doc.id}", "icon": "fa-comments"}
    ]


# --- helpers ----------------------------------------------------------------------------------


def _readable(models: Any, who: Any) -> Any:
    return api.where(models, who, MESSAGE)


def _message_or_404(message_id: Any) -> Any:
    state = api.crm()
    who = api.principal()
    ident = api.valid_id(message_id)
    if ident is None or not api.allowed(state.registry, who, MESSAGE, "read"):
        abort(404)
    obj = api.db_session().get(state.models.cls(MESSAGE), ident)
    if obj is None or not api.may_touch(state.models, who, MESSAGE, "read", obj):
        abort(404)
    return obj


def _moment(value: dt.datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    pattern = "%d.%m.%Y %H:%M" if api.locale() == "ru" else "%Y-%m-%d %H:%M"
    return api.local_time(value, api.company_tz()).strftime(pattern)


def _titles(doctype: str, ids: set[int]) -> dict[int, tuple[str, str | None]]:
    """id → (title, link) of the records of ``doctype`` the reader may read."""
    state = api.crm()
    d = state.registry.documents.get(doctype)
    if d is None or not ids or not api.allowed(state.registry, api.principal(), doctype, "read"):
        return {}
    table = state.models.table(doctype)
    name = next((f for f in ("name", "title", "full_name", "last_name") if f in table.c), None)
    cols = [table.c.id] + ([table.c[name]] if name else [])
    rows = (
        api.db_session()
        .execute(
            sa.select(*cols).where(
                table.c.id.in_(sorted(ids)), api.where(state.models, api.principal(), doctype)
            )
        )
        .all()
    )
    return {
        r[0]: (str(r[1]) if name and r[1] else f"#{r[0]}", f"/{d.resource}/{r[0]}") for r in rows
    }


# --- Unsorted mail ------------------------------------------------------------------------------


class UnsortedView(BaseView):
    route_base = "/mail/unsorted"
    default_view = "index"

    @expose("/")
    @login_required
    def index(self) -> Any:
        state = api.crm()
        registry, models = state.registry, state.models
        who = api.principal()
        main = matching.primary(registry)
        if main is None or not api.allowed(registry, who, MESSAGE, "read"):
            abort(404)
        table = models.table(MESSAGE)
        d = registry.documents[MESSAGE]
        column = table.c[d.fields[main].column]
        target = registry.documents[d.fields[main].to]
        unsorted = sa.and_(
            _readable(models, who), column.is_(None), table.c.direction == "in",
            sa.or_(table.c.bounce.is_(None), table.c.bounce.is_(False)),
        )  # fmt: skip
        rows = api.db_session().execute(
            sa.select(table.c.id, table.c.sent_at, table.c.from_address, table.c.subject,
                      table.c.thread, table.c.size)
            .where(unsorted)
            .order_by(table.c.sent_at.desc(), table.c.id.desc())
            .limit(PAGE)
        ).all()  # fmt: skip
        items = [
            {"id": r.id, "at": _moment(r.sent_at), "from": r.from_address or "",
             "subject": r.subject or gettext("(no subject)")}
            for r in rows
        ]  # fmt: skip
        may_pick = api.allowed(registry, who, target.name, "read")
        lookup = f"/{target.resource}/lookup"
        return self.render_template(
            "mail/inbox_unsorted.html", items=items, may_pick=may_pick, target=target.name,
            lookup=lookup, target_label=api.label_of(target.label, registry), field=main,
            page=PAGE,
        )  # fmt: skip

    @expose("/<message_id>/link", methods=["POST"])
    @login_required
    def link(self, message_id: str) -> Any:
        back = request.form.get("next") or "/mail/unsorted/"
        if not back.startswith("/") or back.startswith("//"):
            back = "/mail/unsorted/"
        error = link_message(message_id, request.form.get("customer"))
        if error is None:
            flash(gettext("The letter is filed under the customer"), "success")
        else:
            flash(error, "danger")
        return redirect(back)


def link_message(message_id: Any, target_id: Any) -> str | None:
    """File an unsorted letter (and its thread's other unsorted letters)
    under a record of the main target type; None, or what went wrong."""
    state = api.crm()
    registry, models = state.registry, state.models
    session = api.db_session()
    who = api.principal()
    main = matching.primary(registry)
    obj = _message_or_404(message_id)
    if main is None:
        abort(404)
    d = registry.documents[MESSAGE]
    target = registry.documents[d.fields[main].to]
    ident = api.valid_id(target_id)
    record = session.get(models.cls(target.name), ident) if ident is not None else None
    if record is None or not api.may_touch(models, who, target.name, "read", record):
        return gettext("Choose a customer you may see")
    if getattr(obj, d.fields[main].column) is not None:
        return gettext("This letter is already filed")
    table = models.table(MESSAGE)
    column = table.c[d.fields[main].column]
    thread = obj.thread or obj.id
    others = session.execute(
        sa.select(table.c.id).where(
            table.c.thread == thread, column.is_(None), table.c.id != obj.id, _readable(models, who)
        ).order_by(table.c.id).limit(500)
    ).scalars().all()  # fmt: skip
    owner = matching.owners(session, models, registry, target.name, [record.id]).get(record.id)
    writer = Documents.for_principal(models, session, who, state.pm, trusted=True)
    try:
        for row in [obj, *(session.get(models.cls(MESSAGE), i) for i in others)]:
            if row is None:
                continue
            values: dict[str, Any] = {main: record.id}
            if "user" in d.fields and row.user_id is None and owner is not None:
                values["user"] = owner
            writer.update(MESSAGE, row, values)
            interactions.record(writer, row)
        session.commit()
    except (ValidationFailed, HandledError) as exc:
        session.rollback()
        errors = getattr(exc, "errors", None)
        return "; ".join(f"{k}: {v}" for k, v in errors.items()) if errors else str(exc)
    return None


# --- the thread view -------------------------------------------------------------------------------


class ThreadView(BaseView):
    route_base = "/mail"
    default_view = "thread"

    @expose("/thread/<message_id>")
    @login_required
    def thread(self, message_id: str) -> Any:
        state = api.crm()
        registry, models = state.registry, state.models
        who = api.principal()
        obj = _message_or_404(message_id)
        d = registry.documents[MESSAGE]
        rights = api.field_rights(registry, who, MESSAGE)
        table = models.table(MESSAGE)
        thread = obj.thread or obj.id
        rows = api.db_session().execute(
            sa.select(table).where(
                sa.or_(table.c.thread == thread, table.c.id == obj.id), _readable(models, who)
            ).order_by(table.c.sent_at.is_(None), table.c.sent_at, table.c.id).limit(500)
        ).all()  # fmt: skip
        show_images = request.args.get("images") == "1"
        files_by = _attachments([r.id for r in rows]) if rights.readable("attachments") else {}
        main = matching.primary(registry)
        main_col = d.fields[main].column if main else None
        linked = _titles(d.fields[main].to, {r._mapping[main_col] for r in rows if r._mapping[main_col]}) if main_col else {}  # fmt: skip
        messages = []
        hidden_images = False
        for r in rows:
            html = r.html if rights.readable("html") else None
            if html and not show_images and sanitize.has_remote_images(html):
                hidden_images = True
                html = sanitize.without_remote_images(html)
            elif html:
                html = sanitize.clean(html)
            messages.append({
                "id": r.id, "at": _moment(r.sent_at), "from": r.from_address or "",
                "to": r.to or "", "cc": r.cc or "", "subject": r.subject or gettext("(no subject)"),
                "incoming": r.direction == "in", "status": r.status, "error": r.error,
                "text": r.text if rights.readable("text") else "", "html": html,
                "files": files_by.get(r.id, []),
                "linked": linked.get(r._mapping[main_col]) if main_col else None,
                "current": r.id == obj.id,
            })  # fmt: skip
        last = messages[-1]["id"] if messages else obj.id
        subject = messages[0]["subject"] if messages else (obj.subject or "")
        return self.render_template(
            "mail/thread.html", messages=messages, subject=subject, reply_to=last,
            hidden_images=hidden_images, show_images=show_images, here=obj.id,
            record_url=f"/{d.resource}/{obj.id}",
        )  # fmt: skip

    @expose("/attachment/<message_id>/<int:index>")
    @login_required
    def attachment(self, message_id: str, index: int) -> Any:
        state = api.crm()
        obj = _message_or_404(message_id)
        if not api.field_rights(state.registry, api.principal(), MESSAGE).readable("attachments"):
            abort(404)
        found = list(
            obj.attachments or ()
        )  # in their order (the rows' idx), as the page lists them
        if not 0 <= index < len(found):
            abort(404)
        a = found[index]
        data = files.read(state.registry, a.sha256 or "")
        if data is None:
            abort(404)
        name = (a.filename or "attachment").replace('"', "")
        ascii_name = name.encode("ascii", "replace").decode().replace("?", "_")
        response = Response(data, mimetype="application/octet-stream")
        response.headers["Content-Disposition"] = (
            f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
        response.headers["Cache-Control"] = "private, no-store"
        return response


def _attachments(ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    state = api.crm()
    if not ids:
        return {}
    d = state.registry.documents[MESSAGE]
    table = state.models.metadata.tables[d.child_table("attachments")]
    rows = api.db_session().execute(
        sa.select(table.c.parent_id, table.c.idx, table.c.id, table.c.filename, table.c.size)
        .where(table.c.parent_id.in_(ids)).order_by(table.c.parent_id, table.c.idx, table.c.id)
    ).all()  # fmt: skip
    out: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        items = out.setdefault(r.parent_id, [])
        items.append({"name": r.filename or "attachment", "size": r.size or 0,
                      "url": f"/mail/attachment/{r.parent_id}/{len(items)}"})  # fmt: skip
    return out
