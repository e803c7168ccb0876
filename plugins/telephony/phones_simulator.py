"""The simulator's page, ``/telephony/simulator`` (when the ``simulator``
provider is on): "Ring me" rings an incoming call into the user's own
extension from a number typed, or from a customer's phone (a known caller),
then Answer, Hang up or Miss it. Each button reports an ordinary call event
through ``plugins.telephony.api.report``, as a real exchange's listener or
webhook would: the caller card, the call log, the interaction and the
call-back task follow from it the same way.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from flask import flash, redirect, request
from flask_appbuilder import BaseView, expose

from engine import api
from engine.api import gettext, lazy_gettext, login_required, menu_label

from . import lookup, numbers, placing, settings
from .api import Event, report

PROVIDER = "simulator"
CALL = "Call"
PAGE = "/telephony/simulator/"
#: the simulated calls the page lists
RECENT = 10


def _extension() -> str | None:
    return placing.extension_of(api.request_documents(), api.principal().user_id)


def known_number(registry: Any) -> str | None:
    """A phone of a record the user may read, picked at random (by a random
    id, an index look: no scan of the table)."""
    import random

    state = api.crm()
    session = api.db_session()
    types = lookup.phone_fields(registry, settings.of(registry))
    for name, fields in types.items():
        if lookup._parent(registry, registry.documents[name], types) is not None:
            continue
        table = state.models.table(name)
        seen = api.where(state.models, api.principal(), name, "read", table)
        has_phone = table.c[fields[0]].isnot(None)
        low, high = session.execute(
            sa.select(sa.func.min(table.c.id), sa.func.max(table.c.id)).where(seen, has_phone)
        ).one()
        if low is None:
            continue
        pick = random.randint(int(low), int(high))  # a demo's pick, not a secret
        for condition in (table.c.id >= pick, table.c.id < pick):
            found = session.execute(
                sa.select(table.c[fields[0]])
                .where(condition, seen, has_phone)
                .order_by(table.c.id)
                .limit(1)
            ).scalar()
            if found:
                return str(found)
    return None


def _own_simulated(call_id: int) -> Any:
    state = api.crm()
    model = state.models.cls(CALL)
    query = sa.select(model).where(
        model.id == call_id, model.user_id == api.principal().user_id, model.provider == PROVIDER
    )
    return api.db_session().execute(query).scalars().first()


class SimulatorView(BaseView):
    route_base = "/telephony/simulator"
    default_view = "page"

    @expose("/", methods=["GET"])
    @login_required
    def page(self) -> Any:
        state = api.crm()
        registry = state.registry
        model = state.models.cls(CALL)
        who = api.principal()
        calls = []
        if who.user_id is not None:
            query = (
                sa.select(model)
                .where(model.user_id == who.user_id, model.provider == PROVIDER,
                       model.direction == "in")
                .order_by(model.id.desc())
                .limit(RECENT)
            )  # fmt: skip
            d = registry.documents[CALL]
            tz = api.company_tz()
            stamp = "%d.%m.%Y %H:%M:%S" if api.locale() == "ru" else "%Y-%m-%d %H:%M:%S"
            for c in api.db_session().execute(query).scalars():
                status = d.fields["status"].values.get(c.status)
                calls.append({
                    "id": c.id, "number": numbers.shown(c.number) or "—", "status": c.status,
                    "status_label": status.get(api.locale()) if status else c.status,
                    "started": api.local_time(c.started_at, tz).strftime(stamp)
                    if c.started_at else "",
                    "answered": c.answered_at is not None, "ended": c.ended_at is not None,
                    "url": f"/{d.resource}/{c.id}",
                })  # fmt: skip
        return self.render_template(
            "telephony/simulator.html", extension=_extension(), calls=calls,
            number=request.args.get("number", ""),
        )  # fmt: skip

    @expose("/ring", methods=["POST"])
    @login_required
    def ring(self) -> Any:
        """Ring an incoming call into the user's extension."""
        registry = api.crm().registry
        extension = _extension()
        if extension is None:
            flash(gettext("You have no phone extension: an administrator sets it on your user."),
                  "danger")  # fmt: skip
            return redirect(PAGE), 303
        typed = str(request.form.get("number") or "").strip()[:64]
        if request.form.get("known"):
            typed = known_number(registry) or ""
            if not typed:
                flash(gettext("There is no record with a phone you may read."), "warning")
                return redirect(PAGE), 303
        number = numbers.normalize(typed, settings.of(registry)["region"])
        if number is None:
            flash(gettext("%(number)s is not a phone number.", number=typed or "—"), "danger")
            return redirect(PAGE), 303
        session = api.db_session()
        report(
            Event(provider=PROVIDER, call_id=f"sim-in-{uuid.uuid4().hex}", kind="ringing",
                  direction="in", number=number, extension=extension,
                  raw={"simulated": True, "number": number, "extension": extension}),
            session=session,
        )  # fmt: skip
        session.commit()
        flash(gettext("%(number)s is ringing on your extension %(extension)s.",
                      number=numbers.shown(number), extension=extension), "info")  # fmt: skip
        return redirect(PAGE), 303

    @expose("/<int:call_id>/<action>", methods=["POST"])
    @login_required
    def act(self, call_id: int, action: str) -> Any:
        """Answer, hang up or miss one of the user's simulated calls."""
        if action not in ("answer", "hangup", "miss"):
            return api.json_error(404, gettext("There is no such action"))
        call = _own_simulated(call_id)
        if call is None:
            return api.json_error(404, gettext("There is no such call"))
        if call.ended_at is not None:
            flash(gettext("The call has ended already."), "warning")
            return redirect(PAGE), 303
        if action == "miss" and call.answered_at is not None:
            action = "hangup"  # an answered call is not missed: it ends
        kind = {"answer": "answered", "hangup": "hangup", "miss": "hangup"}[action]
        session = api.db_session()
        report(
            Event(provider=PROVIDER, call_id=call.call_id, kind=kind,
                  status="missed" if action == "miss" else None,
                  event_id=f"{call.call_id}:{action}", raw={"simulated": True, "action": action}),
            session=session,
        )  # fmt: skip
        session.commit()
        return redirect(PAGE), 303


def register(appbuilder: Any, registry: Any) -> None:
    appbuilder.add_view_no_menu(SimulatorView())
    if CALL in registry.documents:
        category, category_label = api.menu_group(registry.documents[CALL])
        appbuilder.add_link(
            "crm:telephony_simulator", href=PAGE,
            label=menu_label(lazy_gettext("Ring me (simulator)")),
            category=category, category_label=category_label,
        )  # fmt: skip
