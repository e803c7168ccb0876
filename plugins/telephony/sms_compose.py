"""Writing an SMS from a record: the "Send SMS" action on every type with a
phone field (read from the metadata), the compose page (the number among
the record's phones, a template for the type, the text with its count of
characters and parts) and, on a message's own page, where it stands.

The SMS goes out through :func:`sms.queue`, which checks what was typed;
its refusals come back to the form as errors beside their fields (422), and
nothing is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from flask import Blueprint, abort, flash, jsonify, redirect, request
from flask_appbuilder import BaseView, expose
from markupsafe import Markup

from engine import api
from engine.api import USER, ValidationFailed, gettext, login_required

from . import lookup, numbers, sms

FIELDS = ("number", "text")


def phone_fields(d: Any) -> list[Any]:
    return [f for f in d.fields.values() if f.type == "phone" and not f.compute]


def senders(registry: Any) -> frozenset[str]:
    """The types with the "Send SMS" action: those with a phone field, but
    the plugin's own and users; read once per configuration."""
    found = registry.extensions.get("telephony.sms.types")
    if found is None:
        found = frozenset(
            name
            for name, d in registry.documents.items()
            if name not in lookup.OWN and name != USER and not getattr(d, "builtin", False)
            and phone_fields(d)
        )  # fmt: skip
        registry.extensions["telephony.sms.types"] = found
    return found


def compose_url(doctype: str, doc_id: int) -> str:
    return "/telephony/sms?" + urlencode({"doctype": doctype, "id": doc_id})


def _may_send(registry: Any, principal: Any) -> bool:
    return sms.MESSAGE in registry.documents and api.allowed(
        registry, principal, sms.MESSAGE, "read"
    )


def record_actions(doctype: Any, doc: Any, principal: Any) -> list[Any]:
    if doc is None or getattr(doc, "id", None) is None:
        return []
    registry = api.crm().registry
    if "telephony" not in registry.plugins or doctype.name not in senders(registry):
        return []
    if not _may_send(registry, principal):
        return []
    if not any(getattr(doc, f.column, None) for f in phone_fields(doctype)):
        return []
    return [{"label": gettext("Send SMS"), "url": compose_url(doctype.name, doc.id),
             "icon": "fa-commenting"}]  # fmt: skip


def record_sections(models: Any, doctype: Any, doc: Any, principal: Any) -> list[Any]:
    """On a message's page: its status, and the provider's answer when it failed."""
    if doctype.name != sms.MESSAGE or doc is None:
        return []
    status = doctype.fields["status"]
    label = status.values.get(doc.status) if status.values else None
    text = label.get(api.locale()) if label is not None else str(doc.status)
    css = {"sent": "info", "delivered": "success", "queued": "warning", "failed": "danger"}
    parts = [
        Markup('<p class="crm-sms-status"><span class="label label-{}" data-status="{}">{}</span>'
               "</p>").format(css.get(doc.status, "default"), doc.status, text)
    ]  # fmt: skip
    if doc.status == "failed" and doc.error:
        parts.append(
            Markup('<div class="alert alert-danger crm-sms-error"><b>{}</b> {}</div>').format(
                gettext("The SMS was not delivered:"), doc.error
            )
        )
    return [(gettext("SMS"), Markup("").join(parts))]


# --- the page ----------------------------------------------------------------------------------


def _record(args: Mapping[str, Any]) -> tuple[Any, Any]:
    """The record of the request the user may read; 404 otherwise."""
    state = api.crm()
    registry = state.registry
    d = registry.documents.get(str(args.get("doctype") or ""))
    if d is None or d.name not in senders(registry):
        abort(404, gettext("There is no such record"))
    doc_id = api.valid_id(args.get("id"))
    doc = api.db_session().get(state.models.cls(d.name), doc_id) if doc_id is not None else None
    if doc is None or not api.may_touch(state.models, api.principal(), d.name, "read", doc):
        abort(404, gettext("There is no such record"))
    if not _may_send(registry, api.principal()):
        abort(403, gettext("You may not send SMS"))
    return d, doc


def record_numbers(d: Any, doc: Any) -> list[dict[str, str]]:
    """The record's phones: ``{value, label}`` (its field's label and the number)."""
    out = []
    seen = set()
    for f in phone_fields(d):
        value = getattr(doc, f.column, None)
        if value and value not in seen:
            seen.add(value)
            label = f.label.get(api.locale()) if f.label is not None else f.name
            out.append({"value": str(value), "label": f"{numbers.shown(value)} · {label}"})
    return out


def templates(doctype: str) -> list[dict[str, Any]]:
    """The active templates for this type or any."""
    state = api.crm()
    if not api.allowed(state.registry, api.principal(), sms.TEMPLATE, "read"):
        return []
    cls = state.models.cls(sms.TEMPLATE)
    rows = api.db_session().execute(
        sa.select(cls.id, cls.name, cls.doctype)
        .where(cls.active.is_(True), sa.or_(cls.doctype.is_(None), cls.doctype == "",
                                            cls.doctype == doctype))
        .order_by(cls.name)
        .limit(500)
    ).all()  # fmt: skip
    return [{"id": r.id, "label": r.name} for r in rows]


class SmsComposeView(BaseView):
    route_base = "/telephony"
    default_view = "compose"

    @expose("/sms", methods=["GET"])
    @login_required
    def compose(self) -> Any:
        d, doc = _record(request.args)
        phones = record_numbers(d, doc)
        values = {"number": phones[0]["value"] if phones else "", "text": ""}
        return self._page(d, doc, phones, values, {})

    @expose("/sms", methods=["POST"])
    @login_required
    def send(self) -> Any:
        d, doc = _record(request.form)
        phones = record_numbers(d, doc)
        values = {name: str(request.form.get(name) or "") for name in FIELDS}
        values["text"] = values["text"].replace("\r\n", "\n")
        errors: dict[str, str] = {}
        if values["number"] not in {p["value"] for p in phones}:
            errors["number"] = gettext("choose one of the record's numbers")
        session = api.db_session()
        if not errors:
            try:
                sms.queue(api.request_documents(), values["number"], values["text"], about=(d, doc))
                session.commit()
            except ValidationFailed as exc:
                session.rollback()
                errors = {k: str(v) for k, v in exc.errors.items()}
        if errors:
            if any(k not in FIELDS for k in errors):
                errors[""] = "; ".join(f"{k}: {v}" for k, v in errors.items() if k not in FIELDS)
            return self._page(d, doc, phones, values, errors), 422
        flash(gettext("The SMS is queued for sending"), "success")
        return redirect(f"/{d.resource}/{doc.id}")

    @expose("/sms/template", methods=["GET"])
    @login_required
    def template(self) -> Any:
        """``{text, encoding, length, segments}`` of a template filled in over the record."""
        state = api.crm()
        who = api.principal()
        if not _may_send(state.registry, who) or not api.allowed(
            state.registry, who, sms.TEMPLATE, "read"
        ):
            return api.json_error(403, gettext("You may not read SMS templates"))
        template_id = api.valid_id(request.args.get("template"))
        row = None
        if template_id is not None:
            row = api.db_session().get(state.models.cls(sms.TEMPLATE), template_id)
        if row is None or not row.active:
            return api.json_error(404, gettext("There is no such template"))
        d = state.registry.documents.get(str(request.args.get("doctype") or ""))
        doc_id = api.valid_id(request.args.get("id"))
        doc = None
        if d is not None and doc_id is not None:
            doc = api.db_session().get(state.models.cls(d.name), doc_id)
        if doc is None or not api.may_touch(state.models, who, d.name, "read", doc):
            return api.json_error(404, gettext("There is no such record"))
        try:
            text = sms.render_text(api.request_documents(), row.text or "", d, doc)
        except Exception as exc:
            return api.json_error(
                422, gettext("the template %(name)s cannot be filled in: %(error)s",
                             name=row.name, error=str(exc)),
            )  # fmt: skip
        found = sms.size(text)
        return jsonify({"text": text, "encoding": found.encoding, "length": found.length,
                        "segments": found.segments})  # fmt: skip

    def _page(self, d: Any, doc: Any, phones: list[dict[str, str]], values: Mapping[str, Any],
              errors: Mapping[str, str]) -> Any:  # fmt: skip
        try:
            title = api.request_documents().title(d.name, doc, as_read=True) or f"#{doc.id}"
        except Exception:
            title = f"#{doc.id}"
        found = sms.size(str(values.get("text") or ""))
        return self.render_template(
            "telephony/sms_compose.html", d=d, doc=doc, phones=phones, values=values,
            errors=errors, templates=templates(d.name), record_title=title,
            record_label=d.label.get(api.locale()), back=f"/{d.resource}/{doc.id}", size=found,
            max_segments=sms.MAX_SEGMENTS,
        )  # fmt: skip


def register(appbuilder: Any, registry: Any) -> None:
    from flask import current_app

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if "telephony_sms_assets" not in app.blueprints:
        app.register_blueprint(
            Blueprint("telephony_sms_assets", __name__, template_folder="templates",
                      static_folder="static", static_url_path="/telephony-sms-static")
        )  # fmt: skip
    appbuilder.add_view_no_menu(SmsComposeView())
