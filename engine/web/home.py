"""The home page: the user's dashboard (engine/dashboards.py) when a
``dashboards:`` entry names one of their roles; otherwise what the user has
open, where to start, what to create.

Per document type with states and an owner that the user may read: how many
of their own records are still open (not in a final state), linked to the
list filtered on them when the list has that filter. One count query per
such type, under the access rules. A user with nothing open is told what to
do next: create a record.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from flask import request
from flask_appbuilder import IndexView, expose

from engine import access, clock, dashboards
from engine.web import formatting
from engine.web.base import crm, db_session, locale, principal


def open_counts() -> list[dict[str, Any]]:
    state, who = crm(), principal()
    registry = state.registry
    out: list[dict[str, Any]] = []
    if who.user_id is None:
        return out
    for d in registry.documents.values():
        if d.builtin or d.statuses is None or not d.owner:
            continue
        if not access.allowed(registry, who, d.name, "read"):
            continue
        table = state.models.table(d.name)
        owner = table.c[d.fields[d.owner].column]
        status = table.c[d.fields[d.statuses.field].column]
        finals = [n for n, s in d.statuses.states.items() if s.final]
        query = (
            sa.select(sa.func.count())
            .select_from(table)
            .where(owner == who.user_id, status.not_in(finals) if finals else sa.true())
            .where(access.where(state.models, who, d.name, "read"))
        )
        count = db_session().execute(query).scalar_one()
        filters = d.list.filters if d.list else ()
        href = f"/{d.resource}/" + (
            f"?{urlencode({'f_' + d.owner: who.user_id})}" if d.owner in filters else ""
        )
        out.append({"label": d.label.get(locale()), "count": count, "href": href})
    return out


def creatable() -> list[dict[str, str]]:
    state, who = crm(), principal()
    return [
        {"label": d.label.get(locale()), "href": f"/{d.resource}/add"}
        for d in state.registry.documents.values()
        if not d.builtin and access.allowed(state.registry, who, d.name, "create")
    ]


class HomeView(IndexView):
    """Flask-AppBuilder's index page, made the user's starting point."""

    @expose("/")
    def index(self) -> Any:
        from flask_login import current_user

        if not current_user.is_authenticated:
            return self.render_template("crm/home.html", counts=[], create=[], my_sales=False)
        from engine.web.views import first_board

        state, who = crm(), principal()
        board = dashboards.choose(state.registry, who, request.args.get("dashboard"))
        if board is not None:
            env = dashboards.Env(
                state.models, db_session(), who, formatting.company_tz(), clock.now(), locale()
            )
            shown = dashboards.cards(env, board)
            return self.render_template(
                "crm/dashboard.html", board=board, cards=shown,
                small=[c for c in shown if not c.wide], wide=[c for c in shown if c.wide],
                boards=dashboards.available(state.registry, who), locale=locale(),
                create=creatable()[:8], my_sales=first_board() is not None,
            )  # fmt: skip
        return self.render_template(
            "crm/home.html", counts=open_counts(), create=creatable()[:8],
            my_sales=first_board() is not None,
        )  # fmt: skip
