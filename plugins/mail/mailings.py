"""Mailings (newsletters): the Mailing record's page — progress bar and
counts while it runs, preview over a real record, a test letter to oneself,
"Start now", "Schedule", "Cancel" — and the jobs that start and send them
(delivery.py), with unsubscribe links (unsubscribe.py).

Only a user who may update a mailing may start, schedule, cancel it or send
a test of it; one who may read it sees its progress and preview.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request
from flask_appbuilder import BaseView, expose
from markupsafe import Markup

from engine import api
from engine.api import HandledError, ValidationFailed, gettext, login_required

from . import delivery, outbox, unsubscribe
from .delivery import MAILING, RECIPIENT, StartError

#: background jobs of this part, by name (crm_jobs)
JOBS: dict[str, Any] = {
    delivery.BATCH_JOB: delivery.batch_job,
    delivery.START_JOB: delivery.start_job,
}
#: periodic jobs of this part, as (job name, every N seconds) (crm_schedules)
SCHEDULES: list[tuple[str, int]] = [(delivery.START_JOB, delivery.START_EVERY)]

COUNTED = ("sent", "failed", "bounced", "unsubscribed", "skipped")


def _resource(registry: Any) -> str:
    return str(registry.documents[MAILING].resource)


def progress(mailing: Any, registry: Any) -> dict[str, Any]:
    """What the page's bar shows: counts by status and the share done."""
    total = int(mailing.total or 0)
    counts = {name: int(getattr(mailing, name) or 0) for name in COUNTED}
    to_send = max(0, total - counts["skipped"])
    done = min(to_send, counts["sent"] + counts["failed"] + counts["bounced"]
               + counts["unsubscribed"])  # fmt: skip
    if mailing.status == "done":
        done = to_send
    states = registry.documents[MAILING].statuses.states
    state = states.get(mailing.status)
    return {
        "id": mailing.id, "status": mailing.status,
        "status_label": state.label.get(api.locale()) if state is not None else mailing.status,
        "total": total, "queued": max(0, to_send - done), **counts,
        "percent": 100 if to_send == 0 and mailing.status == "done"
        else (round(100 * done / to_send) if to_send else 0),
        "running": mailing.status in ("scheduled", "sending"),
    }  # fmt: skip


def _load(mailing_id: int, action: str) -> Any:
    """The mailing the reader may ``action``; 404 when they may not read it, 403 when not act."""
    state = api.crm()
    who = api.principal()
    row = (
        api.db_session().get(state.models.cls(MAILING), mailing_id)
        if api.valid_id(mailing_id) else None
    )  # fmt: skip
    if row is None or not api.may_touch(state.models, who, MAILING, "read", row):
        abort(404)
    if action != "read" and not api.may_touch(state.models, who, MAILING, action, row):
        abort(403)
    return row


def _back(row: Any) -> Any:
    return redirect(f"/{_resource(api.crm().registry)}/{row.id}")


def _base_url() -> str:
    settings = api.crm().registry.plugins.get("mail") or {}
    return str(settings.get("public_url") or request.host_url).rstrip("/")


class MailingActionsView(BaseView):
    route_base = "/mailings"
    default_view = "progress_json"

    @expose("/<int:mailing_id>/progress.json")
    @login_required
    def progress_json(self, mailing_id: int) -> Any:
        row = _load(mailing_id, "read")
        return jsonify(progress(row, api.crm().registry))

    @expose("/<int:mailing_id>/preview")
    @login_required
    def preview(self, mailing_id: int) -> Any:
        row = _load(mailing_id, "read")
        state = api.crm()
        docs = api.request_documents()
        recipient = None
        wanted = request.args.get("recipient", type=int)
        if wanted is not None:
            recipient = api.db_session().get(state.models.cls(RECIPIENT), wanted) if api.valid_id(
                wanted) else None  # fmt: skip
            if recipient is None or recipient.mailing_id != row.id:
                abort(404)
        letter, error = None, None
        try:
            letter = delivery.preview(docs, row, recipient)
        except StartError as exc:
            error = str(exc)
        except HandledError as exc:
            error = str(exc)
        return self.render_template(
            "mail/mailing_preview.html", mailing=row, letter=letter, error=error,
            back=f"/{_resource(state.registry)}/{row.id}",
        )  # fmt: skip

    @expose("/<int:mailing_id>/start", methods=["POST"])
    @login_required
    def start(self, mailing_id: int) -> Any:
        row = _load(mailing_id, "update")
        state = api.crm()
        session = api.db_session()
        try:
            found = delivery.start(session, state.models, row, now=api.clock.now(),
                                   principal=api.principal(), base_url=_base_url())  # fmt: skip
            session.commit()
        except StartError as exc:
            session.rollback()
            flash(str(exc), "danger")
            return _back(row)
        flash(gettext("The mailing has started: %(n)s recipients",
                      n=found.get("queued", 0)), "success")  # fmt: skip
        return _back(row)

    @expose("/<int:mailing_id>/schedule", methods=["POST"])
    @login_required
    def schedule(self, mailing_id: int) -> Any:
        row = _load(mailing_id, "update")
        session = api.db_session()
        if row.status != "draft":
            flash(gettext("Only a draft can be scheduled"), "danger")
            return _back(row)
        try:
            # the filter is checked now, not when nobody is looking
            delivery.recipients_insert(api.crm().models, row, api.principal(), api.clock.now())
        except StartError as exc:
            flash(str(exc), "danger")
            return _back(row)
        row.status = "scheduled"
        row.version = (row.version or 0) + 1
        session.commit()
        flash(gettext("The mailing is scheduled"), "success")
        return _back(row)

    @expose("/<int:mailing_id>/cancel", methods=["POST"])
    @login_required
    def cancel(self, mailing_id: int) -> Any:
        row = _load(mailing_id, "update")
        session = api.db_session()
        if row.status not in ("draft", "scheduled", "sending"):
            flash(gettext("This mailing is over already"), "danger")
            return _back(row)
        row.status = "cancelled"
        row.finished_at = api.clock.now().replace(tzinfo=None)
        row.version = (row.version or 0) + 1
        session.commit()
        flash(gettext("The mailing is cancelled; the batch in flight still goes out"), "success")
        return _back(row)

    @expose("/<int:mailing_id>/test", methods=["POST"])
    @login_required
    def test(self, mailing_id: int) -> Any:
        row = _load(mailing_id, "update")
        state = api.crm()
        session = api.db_session()
        docs = api.request_documents()
        to = delivery.user_address(session, state.models, api.principal().user_id)
        if not to:
            flash(gettext("Your user has no email address to send a test to"), "danger")
            return _back(row)
        try:
            letter = delivery.preview(docs, row)
            outbox.queue(docs, account_id=row.account_id, to=to,
                         subject=gettext("[Test] %(subject)s", subject=letter.subject),
                         text=letter.text, html=letter.html)  # fmt: skip
            session.commit()
        except (StartError, HandledError) as exc:
            session.rollback()
            flash(str(exc), "danger")
            return _back(row)
        except ValidationFailed as exc:
            session.rollback()
            flash("; ".join(f"{k}: {v}" for k, v in exc.errors.items()), "danger")
            return _back(row)
        flash(gettext("A test letter is on its way to %(address)s", address=to), "success")
        return _back(row)


# --- the record's page -------------------------------------------------------------------------


def record_sections(models: Any, doctype: Any, doc: Any, principal: Any) -> list[Any]:
    """The Mailing page's section: progress, counts and its buttons."""
    if doctype.name != MAILING or doc is None:
        return []
    registry = models.registry
    may_update = api.may_touch(models, principal, MAILING, "update", doc)
    html = render_template(
        "mail/mailing_section.html", mailing=doc, p=progress(doc, registry), may_update=may_update
    )
    return [(gettext("Sending"), Markup(html))]  # noqa: S704 - an autoescaped template


def record_actions(doctype: Any, doc: Any, principal: Any) -> list[Any]:
    """This part's buttons in a record's header."""
    if doctype.name != MAILING or doc is None or getattr(doc, "id", None) is None:
        return []
    return [{"label": gettext("Preview"), "url": f"/mailings/{doc.id}/preview", "icon": "eye"}]


def register(appbuilder: Any, registry: Any) -> None:
    """Add this part's pages to the app."""
    from flask import current_app

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    app.register_blueprint(
        Blueprint("mail_mailings_assets", __name__, template_folder="templates",
                  static_folder="static", static_url_path="/mail-mailings-static")
    )  # fmt: skip
    appbuilder.add_view_no_menu(MailingActionsView())
    unsubscribe.register(appbuilder, app)
