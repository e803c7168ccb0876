"""What a user sees of calls: the call button beside every phone, the call's
progress, the caller card and the call log's recording.

- Every page loads ``phones.js`` (``crm.page_scripts``). It asks
  ``/telephony/me`` once (the user's extension, or why there is none, and
  the CSRF token its posts carry) and puts a call button beside every
  element marked ``data-phone="+E164"`` — the engine marks the phone fields
  of record pages, lists and related lists so; the caller card does too.
- A click posts ``{number}`` to ``/telephony/call`` (:func:`placing.place`
  for the user) and follows the Call through ``/telephony/calls/<id>``: the
  user's own calls only, under the Call type's read rule.
- The caller card: while the tab is visible the script asks
  ``/telephony/ringing`` every 0.3 s — an indexed look at the user's
  incoming calls ringing in the last :data:`RINGING_WINDOW` — and opens
  the card of a new one (with the answer, or from ``/telephony/card/<id>``). The card shows what the Call was
  matched to, and the matched record's open deals and Interests and last
  interactions, each through the user's read rule: a record the user may
  not read is not shown, only the number.
- The simulator's page (phones_simulator.py) when the simulator is on.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from flask import Blueprint, jsonify, render_template, request
from flask_appbuilder import BaseView, expose
from flask_wtf.csrf import generate_csrf
from markupsafe import Markup

from engine import api
from engine.api import USER, HandledError, gettext, login_required

from . import lookup, numbers, placing, settings

HERE = Path(__file__).parent
CALL = "Call"
SCRIPT = "/telephony-static/telephony/phones.js"
#: an incoming call older than this no longer opens a card
RINGING_WINDOW = dt.timedelta(minutes=2)
#: rows of each kind the card shows
CARD_ROWS = 5
#: the types whose open records the card lists, when they exist and refer to the caller's
OPEN_TYPES = ("Deal", "Interest")
#: the type whose last records the card lists as the history
HISTORY_TYPE = "Interaction"

JOBS: dict[str, Any] = {}
SCHEDULES: list[tuple[str, int]] = []


def check(registry: Any) -> list[Any]:
    return []


# --- helpers -----------------------------------------------------------------------------------


def _own_call(call_id: int) -> Any:
    """The user's own Call with that id that they may read, or None."""
    state = api.crm()
    who = api.principal()
    if who.user_id is None or CALL not in state.registry.documents:
        return None
    model = state.models.cls(CALL)
    query = sa.select(model).where(
        model.id == call_id,
        model.user_id == who.user_id,
        api.where(state.models, who, CALL, "read"),
    )
    return api.db_session().execute(query).scalars().first()


def _iso(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).isoformat()


def _label(d: Any, field: str, value: Any) -> str:
    f = d.fields.get(field)
    found = f.values.get(value) if f is not None and f.values and value is not None else None
    return found.get(api.locale()) if found is not None else str(value or "")


def progress(call: Any) -> dict[str, Any]:
    """A Call as the page follows it."""
    d = api.crm().registry.documents[CALL]
    ended = call.ended_at is not None
    return {
        "id": call.id,
        "status": call.status,
        "status_label": _label(d, "status", call.status),
        "direction": call.direction,
        "number": call.number,
        "shown": numbers.shown(call.number),
        "answered": call.answered_at is not None,
        "ended": ended,
        "duration": call.duration,
        "started_at": _iso(call.started_at),
        "answered_at": _iso(call.answered_at),
        "ended_at": _iso(call.ended_at),
        "url": f"/{d.resource}/{call.id}",
    }


def _title(d: Any, obj: Any) -> str:
    try:
        text = api.request_documents().title(d.name, obj, as_read=True).strip()
    except HandledError:
        text = ""
    return text or f"{d.label.get(api.locale())} #{obj.id}"


def _readable(doctype: str | None, doc_id: int | None) -> Any:
    """The record, when the user may read it; else None (nothing about it is shown)."""
    state = api.crm()
    d = state.registry.documents.get(doctype or "")
    if d is None or doc_id is None or d.builtin:
        return None
    model = state.models.cls(d.name)
    query = sa.select(model).where(
        model.id == doc_id, api.where(state.models, api.principal(), d.name, "read")
    )
    return api.db_session().execute(query).scalars().first()


def _ref_to(d: Any, target: str) -> Any:
    return next(
        (f for f in d.fields.values() if f.type == "ref" and f.to == target and f.stored), None
    )


def _open_rows(anchor: Any, anchor_obj: Any) -> list[dict[str, Any]]:
    """The open deals and Interests of the caller's record (those that exist and
    refer to its type), newest first, each through the user's read rule."""
    state = api.crm()
    registry = state.registry
    who = api.principal()
    out: list[dict[str, Any]] = []
    for name in OPEN_TYPES:
        d = registry.documents.get(name)
        if d is None or not api.allowed(registry, who, name, "read"):
            continue
        ref = _ref_to(d, anchor.name)
        if ref is None:
            continue
        model = state.models.cls(name)
        query = sa.select(model).where(
            getattr(model, ref.column) == anchor_obj.id, api.where(state.models, who, name, "read")
        )
        if d.statuses is not None:
            finals = [s for s, state_ in d.statuses.states.items() if state_.final]
            if finals:
                query = query.where(getattr(model, d.statuses.field).notin_(finals))
        rows = api.db_session().execute(query.order_by(model.id.desc()).limit(CARD_ROWS)).scalars()
        for obj in rows:
            state_name = getattr(obj, d.statuses.field) if d.statuses else None
            state_ = d.statuses.states.get(state_name) if d.statuses and state_name else None
            out.append({
                "type": d.label.get(api.locale()), "title": _title(d, obj),
                "state": state_.label.get(api.locale()) if state_ else "",
                "url": f"/{d.resource}/{obj.id}",
            })  # fmt: skip
    return out


def _history(anchor: Any, anchor_obj: Any) -> list[dict[str, Any]]:
    """The last interactions with the caller's record, through the user's read rule."""
    state = api.crm()
    registry = state.registry
    who = api.principal()
    d = registry.documents.get(HISTORY_TYPE)
    if d is None or not api.allowed(registry, who, d.name, "read"):
        return []
    ref = _ref_to(d, anchor.name)
    if ref is None:
        return []
    model = state.models.cls(d.name)
    when = next((f for f in d.fields.values() if f.type in ("datetime", "date") and f.stored), None)
    order = getattr(model, when.column) if when is not None else model.created_at
    query = (
        sa.select(model)
        .where(
            getattr(model, ref.column) == anchor_obj.id,
            api.where(state.models, who, d.name, "read"),
        )
        .order_by(order.desc().nulls_last() if when is not None else order.desc(), model.id.desc())
        .limit(CARD_ROWS)
    )
    out = []
    tz = api.company_tz()
    for obj in api.db_session().execute(query).scalars():
        moment = getattr(obj, when.column) if when is not None else obj.created_at
        day = "%d.%m.%Y" if api.locale() == "ru" else "%Y-%m-%d"  # as the engine's pages write it
        if isinstance(moment, dt.datetime):
            text = api.local_time(moment, tz).strftime(f"{day} %H:%M")
        else:
            text = moment.strftime(day) if moment is not None else ""
        state_name = getattr(obj, d.statuses.field) if d.statuses else None
        state_ = d.statuses.states.get(state_name) if d.statuses and state_name else None
        out.append({
            "when": text, "kind": _label(d, "kind", getattr(obj, "kind", None)) if "kind" in d.fields else "",
            "title": _title(d, obj), "state": state_.label.get(api.locale()) if state_ else "",
            "url": f"/{d.resource}/{obj.id}",
        })  # fmt: skip
    return out


def _new_record_url(number: str | None) -> tuple[str, str] | None:
    """The form for a new caller's record, with the number filled in: the first
    type callers are looked up in that belongs to no other (a customer) and
    that the user may create; (url, the type's label)."""
    if not number:
        return None
    state = api.crm()
    registry = state.registry
    types = lookup.phone_fields(registry, settings.of(registry))
    for name, fields in types.items():
        d = registry.documents[name]
        if lookup._parent(registry, d, types) is not None:
            continue
        if not api.allowed(registry, api.principal(), name, "create"):
            continue
        return f"/{d.resource}/add?{urlencode({fields[0]: number})}", d.label.get(api.locale())
    return None


def card(call: Any) -> dict[str, Any]:
    """What the caller card shows of a call, within the user's read rules."""
    registry = api.crm().registry
    party = _readable(call.doctype, call.doc_id)
    out: dict[str, Any] = {
        "call": call, "number": call.number, "shown": numbers.shown(call.number) or "—",
        "party": None, "parent": None, "open": [], "history": [], "create": None,
        "keeps_history": False,
        "matched": bool(call.doctype and call.doc_id),
    }  # fmt: skip
    if party is None:
        if not out["matched"]:
            out["create"] = _new_record_url(call.number)
        return out
    d = registry.documents[call.doctype]
    out["party"] = {"type": d.label.get(api.locale()), "title": _title(d, party),
                    "url": f"/{d.resource}/{party.id}"}  # fmt: skip
    anchor, anchor_obj = d, party
    # a contact person's customer: the record their deals and history hang on
    types = lookup.phone_fields(registry, settings.of(registry))
    parent_ref = lookup._parent(registry, d, types) if d.name in types else None
    if parent_ref is not None:
        parent = _readable(parent_ref.to, getattr(party, parent_ref.column, None))
        if parent is not None:
            pd = registry.documents[parent_ref.to]
            out["parent"] = {"type": pd.label.get(api.locale()), "title": _title(pd, parent),
                             "url": f"/{pd.resource}/{parent.id}"}  # fmt: skip
            anchor, anchor_obj = pd, parent
    out["open"] = _open_rows(anchor, anchor_obj)
    out["history"] = _history(anchor, anchor_obj)
    kept = registry.documents.get(HISTORY_TYPE)
    out["keeps_history"] = kept is not None and _ref_to(kept, anchor.name) is not None
    return out


# --- the endpoints -----------------------------------------------------------------------------


class PhonesView(BaseView):
    route_base = "/telephony"
    default_view = "me"

    @expose("/me", methods=["GET"])
    @login_required
    def me(self) -> Any:
        """The user's extension (or why there is none) and the token posts carry."""
        state = api.crm()
        docs = api.request_documents()
        extension = placing.extension_of(docs, api.principal().user_id)
        body: dict[str, Any] = {"extension": extension, "csrf": generate_csrf()}
        if extension is None:
            body["reason"] = gettext(
                "You have no phone extension: an administrator sets it on your user."
            )
        body["may_read_calls"] = api.allowed(state.registry, api.principal(), CALL, "read")
        return jsonify(body)

    @expose("/call", methods=["POST"])
    @login_required
    def call(self) -> Any:
        """``{number}`` → ring the user's extension, then the number: the Call."""
        body = api.json_body()
        if not isinstance(body, dict):
            return body
        number = body.get("number")
        if not isinstance(number, str) or not number.strip():
            return api.json_error(422, gettext("Give the number to call."))
        session = api.db_session()
        who = api.principal()
        if who.user_id is None:
            return api.json_error(401, gettext("Sign in to call."))
        from .api import system_documents

        try:
            made = placing.place(system_documents(session), who.user_id, number.strip()[:64])
            session.commit()
        except HandledError as exc:
            session.rollback()
            return api.json_error(422, str(exc))
        found = _own_call(made.id)
        if found is None:  # placed, but the type's rules hide it from the user
            return jsonify({"id": made.id, "status": made.status}), 201
        return jsonify(progress(found)), 201

    @expose("/calls/<int:call_id>", methods=["GET"])
    @login_required
    def call_progress(self, call_id: int) -> Any:
        found = _own_call(call_id)
        if found is None:
            return api.json_error(404, gettext("There is no such call"))
        return jsonify(progress(found))

    @expose("/ringing", methods=["GET"])
    @login_required
    def ringing(self) -> Any:
        """The user's incoming calls ringing now (an indexed look: the user's
        ringing calls of the last two minutes)."""
        state = api.crm()
        who = api.principal()
        if who.user_id is None or CALL not in state.registry.documents:
            return jsonify({"calls": [], "cards": {}})
        table = state.models.table(CALL)
        since = api.clock.now() - RINGING_WINDOW
        query = (
            sa.select(table.c.id)
            .where(
                table.c.status == "ringing",
                table.c.user_id == who.user_id,
                table.c.direction == "in",
                table.c.started_at >= since,
                table.c.ended_at.is_(None),
                api.where(state.models, who, CALL, "read", table),
            )
            .order_by(table.c.id.desc())
            .limit(3)
        )
        ids = list(api.db_session().execute(query).scalars())
        # a call the page has not shown yet comes with its card: one request, not two
        seen = {int(x) for x in request.args.get("seen", "").split(",")[:50] if x.isdigit()}
        cards = {}
        for call_id in ids:
            if call_id not in seen:
                found = _own_call(call_id)
                if found is not None:
                    cards[str(call_id)] = render_template("telephony/card.html", **card(found))
        return jsonify({"calls": ids, "cards": cards})

    @expose("/card/<int:call_id>", methods=["GET"])
    @login_required
    def card(self, call_id: int) -> Any:
        found = _own_call(call_id)
        if found is None:
            return api.json_error(404, gettext("There is no such call"))
        data = card(found)
        html = render_template("telephony/card.html", **data)
        return jsonify({"id": found.id, "status": found.status, "html": html})


# --- the Call's own page -----------------------------------------------------------------------


def record_actions(doctype: Any, doc: Any, principal: Any) -> list[Any]:
    return []


def record_sections(models: Any, doctype: Any, doc: Any, principal: Any) -> list[Any]:
    """On a Call's page: its recording, to play."""
    if doctype.name != CALL or doc is None or not getattr(doc, "recording", None):
        return []
    url = str(doc.recording)
    if not url.startswith(("https://", "http://", "/")):
        return []
    html = Markup(
        '<audio class="crm-call-recording" controls preload="none" src="{}"></audio>'
        '<p><a class="crm-call-recording-link" href="{}" target="_blank" rel="noopener">{}</a></p>'
    ).format(url, url, gettext("Open the recording"))
    return [(gettext("Recording"), html)]


# --- wiring ------------------------------------------------------------------------------------


def register(appbuilder: Any, registry: Any) -> None:
    from flask import current_app

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if "telephony_phones" not in app.blueprints:
        app.register_blueprint(
            Blueprint("telephony_phones", __name__, template_folder="templates",
                      static_folder="static", static_url_path="/telephony-static")
        )  # fmt: skip
    appbuilder.add_view_no_menu(PhonesView())
    state = app.extensions["crm"]
    if SCRIPT not in state.page_scripts:
        state.page_scripts.append(SCRIPT)
    if "simulator" in registry.plugins:
        from . import phones_simulator

        phones_simulator.register(appbuilder, registry)


__all__ = ["USER", "card", "progress", "register"]
