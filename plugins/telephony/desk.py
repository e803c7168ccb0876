"""The telemarketing desk: a Campaign's Start button and progress on its
page, and the operator's desk (``/desk/<campaign>``) — next target, script,
questionnaire, result codes, the Call button, call-backs. The rules are in
campaigns.py; this module is the web around them.

Who works a campaign: its operators (the ``operators`` table) and anyone who
may update it. Starting it takes the right to update it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, abort, flash, jsonify, redirect, render_template
from flask_appbuilder import BaseView, expose
from markupsafe import Markup

from engine import api
from engine.api import HandledError, gettext, login_required

from . import campaigns, numbers, placing
from .campaigns import CAMPAIGN, TARGET, DeskError

JOBS: dict[str, Any] = {}
SCHEDULES: list[tuple[str, int]] = []


def check(registry: Any) -> list[Any]:
    return []


def _resource(registry: Any, doctype: str = CAMPAIGN) -> str:
    return str(registry.documents[doctype].resource)


def _campaign(campaign_id: int) -> Any:
    state = api.crm()
    return (
        api.db_session().get(state.models.cls(CAMPAIGN), campaign_id)
        if api.valid_id(campaign_id) else None
    )  # fmt: skip


def may_work(models: Any, session: Any, principal: Any, campaign: Any) -> bool:
    """An operator of the campaign, or one who may update it."""
    if api.may_touch(models, principal, CAMPAIGN, "update", campaign):
        return True
    return campaigns.is_operator(session, models, campaign.id, principal.user_id)


def _workable(campaign_id: int, as_json: bool = True) -> Any:
    """The campaign the user may work; else a 404 / 403 (JSON for the desk's calls)."""
    state = api.crm()
    who = api.principal()
    row = _campaign(campaign_id)
    if row is None or not api.may_touch(state.models, who, CAMPAIGN, "read", row):
        if as_json:
            return api.json_error(404, gettext("There is no such campaign"))
        abort(404)
    if not may_work(state.models, api.db_session(), who, row):
        if as_json:
            return api.json_error(403, gettext("You are not an operator of this campaign"))
        abort(403)
    return row


def _target_view(docs: Any, campaign: Any, target_id: int | None) -> dict[str, Any] | None:
    if target_id is None:
        return None
    state = api.crm()
    row = docs.session.get(state.models.cls(TARGET), target_id)
    if row is None:
        return None
    registry = state.registry
    d = registry.documents.get(row.doctype or "")
    link = f"/{d.resource}/{row.doc_id}" if d is not None and row.doc_id else None
    script, script_error = "", None
    doc = (
        docs.session.get(state.models.cls(d.name), row.doc_id)
        if d is not None and row.doc_id
        else None
    )
    if campaign.script:
        try:
            if doc is not None:
                view = docs.view(d, doc)
                context = docs.expression_context(view, d.fields, campaign.script, template=True)
            else:
                context = {"doc": None, "now": docs.now(), "user": docs.user_view()}
            script = str(api.render(campaign.script, context))
        except Exception as exc:
            script_error = str(exc)[:500]
    return {
        "id": row.id, "name": row.name or "—", "number": row.number,
        "shown": numbers.shown(row.number), "link": link, "status": row.status,
        "attempts": int(row.attempts or 0), "comment": row.comment or "",
        "callback_at": api.local_time(row.callback_at, api.company_tz()).strftime("%d.%m.%Y %H:%M")
        if row.callback_at else None,
        "call": row.call_id, "script": script, "script_error": script_error,
    }  # fmt: skip


def desk_state(campaign: Any, target_id: int | None) -> dict[str, Any]:
    """What the desk shows: the campaign's state, the target held, my counts."""
    state = api.crm()
    docs = api.request_documents()
    session = api.db_session()
    me = _me()
    return {
        "campaign": campaign.id,
        "closed": campaigns.closed_because(state.registry, campaign, api.clock.now()),
        "target": _target_view(docs, campaign, target_id),
        "mine": campaigns.by_status(session, state.models, campaign.id, me),
    }


def _me() -> int:
    """The request's user (pages here are for logged-in users only)."""
    return int(api.principal().user_id or 0)


def _error(exc: HandledError) -> Any:
    status = getattr(exc, "status", 400)
    field = getattr(exc, "field", None)
    extra = {"field": field} if field else {}
    return api.json_error(status, str(exc), **extra)


def _body() -> Any:
    body = api.json_body()
    return body


class DeskView(BaseView):
    route_base = "/desk"
    default_view = "index"

    @expose("/")
    @login_required
    def index(self) -> Any:
        """The running campaigns I may work."""
        state = api.crm()
        session = api.db_session()
        who = api.principal()
        model = state.models.cls(CAMPAIGN)
        table = state.models.table(CAMPAIGN)
        operators = state.models.metadata.tables[
            state.registry.documents[CAMPAIGN].child_table("operators")
        ]
        import sqlalchemy as sa

        mine = sa.or_(
            api.where(state.models, who, CAMPAIGN, "update"),
            table.c.id.in_(
                sa.select(operators.c.parent_id).where(operators.c.user_id == who.user_id)
            ),
        )
        found = (
            session.execute(
                sa.select(model)
                .where(
                    table.c.status.in_(("running", "paused")),
                    mine,
                    api.where(state.models, who, CAMPAIGN, "read"),
                )
                .order_by(table.c.id.desc())
                .limit(200)
            )
            .scalars()
            .all()
        )
        return self.render_template("telephony/desk_index.html", campaigns=found)

    @expose("/<int:campaign_id>")
    @login_required
    def desk(self, campaign_id: int) -> Any:
        row = _workable(campaign_id, as_json=False)
        state = api.crm()
        session = api.db_session()
        questions = campaigns.rows_of(session, state.models, row.id, "questions")
        for q in questions:
            q["options"] = campaigns.choices(q)
        results = campaigns.rows_of(session, state.models, row.id, "results")
        held = campaigns.current(session, state.models, row.id, _me(),
                                 api.clock.now())  # fmt: skip
        return self.render_template(
            "telephony/desk.html", campaign=row, questions=questions, results=results,
            initial=desk_state(row, held),
            back=f"/{_resource(state.registry)}/{row.id}",
        )  # fmt: skip

    @expose("/<int:campaign_id>/state.json")
    @login_required
    def state_json(self, campaign_id: int) -> Any:
        row = _workable(campaign_id)
        if not hasattr(row, "id"):
            return row
        held = campaigns.current(api.db_session(), api.crm().models, row.id,
                                 _me(), api.clock.now())  # fmt: skip
        return jsonify(desk_state(row, held))

    @expose("/<int:campaign_id>/next", methods=["POST"])
    @login_required
    def next(self, campaign_id: int) -> Any:
        row = _workable(campaign_id)
        if not hasattr(row, "id"):
            return row
        state = api.crm()
        session = api.db_session()
        me = _me()
        now = api.clock.now()
        closed = campaigns.closed_because(state.registry, row, now)
        if closed:
            return api.json_error(409, closed)
        held = campaigns.current(session, state.models, row.id, me, now)
        if held is None:
            held = campaigns.claim(session, state.models, row.id, me, now)
            session.commit()
        return jsonify(desk_state(row, held))

    @expose("/<int:campaign_id>/targets/<int:target_id>/result", methods=["POST"])
    @login_required
    def result(self, campaign_id: int, target_id: int) -> Any:
        row = _workable(campaign_id)
        if not hasattr(row, "id"):
            return row
        body = _body()
        if not isinstance(body, dict):
            return body
        session = api.db_session()
        try:
            status = campaigns.finish(
                api.request_documents(), row, target_id, code=body.get("code"),
                answers=body.get("answers"), comment=body.get("comment"), now=api.clock.now(),
            )  # fmt: skip
            session.commit()
        except DeskError as exc:
            session.rollback()
            return _error(exc)
        except HandledError as exc:
            session.rollback()
            return api.json_error(400, str(exc))
        return jsonify({"status": status, **desk_state(row, None)})

    @expose("/<int:campaign_id>/targets/<int:target_id>/callback", methods=["POST"])
    @login_required
    def callback(self, campaign_id: int, target_id: int) -> Any:
        row = _workable(campaign_id)
        if not hasattr(row, "id"):
            return row
        body = _body()
        if not isinstance(body, dict):
            return body
        moment = _moment(body.get("at"))
        if moment is None:
            return api.json_error(400, gettext("Give the time to call back"), field="callback_at")
        session = api.db_session()
        try:
            campaigns.call_back(api.request_documents(), row, target_id, at=moment,
                                comment=body.get("comment"), now=api.clock.now())  # fmt: skip
            session.commit()
        except DeskError as exc:
            session.rollback()
            return _error(exc)
        return jsonify({"status": "callback", **desk_state(row, None)})

    @expose("/<int:campaign_id>/targets/<int:target_id>/call", methods=["POST"])
    @login_required
    def call(self, campaign_id: int, target_id: int) -> Any:
        row = _workable(campaign_id)
        if not hasattr(row, "id"):
            return row
        state = api.crm()
        session = api.db_session()
        docs = api.request_documents()
        me = _me()
        try:
            target = campaigns._held(session, state.models, row.id, target_id, me)
            if not target.number:
                raise DeskError(gettext("This target has no number"))
            made = placing.place(campaigns.trusted(docs), me, target.number)
            campaigns.attach_call(docs, row, target_id, made.id)
            session.commit()
        except DeskError as exc:
            session.rollback()
            return _error(exc)
        except HandledError as exc:
            session.rollback()
            return api.json_error(400, str(exc))
        return jsonify({"call": made.id, "status": made.status})

    @expose("/calls/<int:call_id>.json")
    @login_required
    def call_json(self, call_id: int) -> Any:
        state = api.crm()
        made = (
            api.db_session().get(state.models.cls("Call"), call_id)
            if api.valid_id(call_id)
            else None
        )
        if made is None or not api.may_touch(state.models, api.principal(), "Call", "read", made):
            return api.json_error(404, gettext("There is no such call"))
        d = state.registry.documents["Call"]
        label = d.fields["status"].values.get(made.status) if d.fields["status"].values else None
        return jsonify({
            "call": made.id, "status": made.status,
            "label": api.label_of(label, state.registry) if label is not None else made.status,
            "ended": made.ended_at is not None, "duration": made.duration,
        })  # fmt: skip


def _moment(value: Any) -> dt.datetime | None:
    """A time typed in the desk (``YYYY-MM-DDTHH:MM`` on the company's clock, or with an offset)."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=api.company_tz())
    return moment.astimezone(dt.UTC)


class CampaignActionsView(BaseView):
    route_base = "/campaigns"
    default_view = "start"

    @expose("/<int:campaign_id>/start", methods=["POST"])
    @login_required
    def start(self, campaign_id: int) -> Any:
        state = api.crm()
        who = api.principal()
        row = _campaign(campaign_id)
        if row is None or not api.may_touch(state.models, who, CAMPAIGN, "read", row):
            abort(404)
        if not api.may_touch(state.models, who, CAMPAIGN, "update", row):
            abort(403)
        session = api.db_session()
        back = redirect(f"/{_resource(state.registry)}/{row.id}")
        try:
            found = campaigns.start(session, state.models, row, now=api.clock.now(), principal=who)
            session.commit()
        except DeskError as exc:
            session.rollback()
            flash(str(exc), "danger")
            return back
        flash(gettext("The campaign has started: %(n)s targets, %(m)s without a phone skipped",
                      n=found["total"], m=found["skipped"]), "success")  # fmt: skip
        return back


# --- the record's page -------------------------------------------------------------------------


def progress(models: Any, session: Any, campaign: Any) -> dict[str, Any]:
    """Counts by status, per operator and per result code (GROUP BY queries)."""
    import sqlalchemy as sa

    statuses = campaigns.by_status(session, models, campaign.id)
    per_operator: dict[Any, dict[str, int]] = {}
    for operator, status, n in campaigns.by_operator(session, models, campaign.id):
        per_operator.setdefault(operator, {})[status] = n
    users = models.table(api.USER)
    names = {}
    if per_operator:
        found = session.execute(
            sa.select(users.c.id, users.c.first_name, users.c.last_name, users.c.username).where(
                users.c.id.in_([k for k in per_operator if k is not None])
            )
        )
        names = {
            r.id: (f"{r.first_name or ''} {r.last_name or ''}".strip() or r.username) for r in found
        }
    results = campaigns.rows_of(session, models, campaign.id, "results")
    labels = {str(r["code"]): r["label"] for r in results}
    counted = campaigns.by_result(session, models, campaign.id)
    return {
        "statuses": statuses,
        "operators": [
            (names.get(k, f"#{k}"), v)
            for k, v in sorted(per_operator.items(), key=lambda kv: str(names.get(kv[0], "")))
        ],
        "results": [(code, labels.get(code, code), n) for code, n in sorted(counted.items())],
    }


def record_sections(models: Any, doctype: Any, doc: Any, principal: Any) -> list[Any]:
    if doctype.name != CAMPAIGN or doc is None or getattr(doc, "id", None) is None:
        return []
    session = api.db_session()
    html = render_template(
        "telephony/campaign_section.html", campaign=doc, p=progress(models, session, doc),
        may_update=api.may_touch(models, principal, CAMPAIGN, "update", doc),
        may_work=may_work(models, session, principal, doc),
    )  # fmt: skip
    return [(gettext("Calling"), Markup(html))]  # noqa: S704 - an autoescaped template


def record_actions(doctype: Any, doc: Any, principal: Any) -> list[Any]:
    if doctype.name != CAMPAIGN or doc is None or getattr(doc, "id", None) is None:
        return []
    if doc.status not in ("running", "paused"):
        return []
    return [{"label": gettext("Operator's desk"), "url": f"/desk/{doc.id}", "icon": "phone"}]


def register(appbuilder: Any, registry: Any) -> None:
    from flask import current_app

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    app.register_blueprint(
        Blueprint("telephony_desk_assets", __name__, template_folder="templates",
                  static_folder="static", static_url_path="/telephony-desk-static")
    )  # fmt: skip
    appbuilder.add_view_no_menu(DeskView())
    appbuilder.add_view_no_menu(CampaignActionsView())
