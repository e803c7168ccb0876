"""A person's work: "My tasks", the team's tasks, overdue ones; completing a
task with an outcome (a form and ``POST /api/v1/task/<id>/complete``); in-app
notifications with an unread counter in the navbar."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Response, abort, flash, jsonify, redirect, request, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.api import BaseApi
from markupsafe import Markup

from engine import api
from engine.api import (
    USER,
    HandledError,
    NotFound,
    Registry,
    StaleVersion,
    ValidationFailed,
    gettext,
    login_required,
)

from .definitions import outcome_label
from .runtime import INSTANCE, NOTIFICATION, TASK
from .tasks import AlreadyClosed, complete, outcomes_of

HERE = Path(__file__).parent
PAGE = 100
TABS = ("mine", "team", "overdue")


def _web() -> Any:
    """The request's helpers (engine.api): principal, session, locale, the app's state."""
    return api


def _documents() -> Any:
    return api.request_documents()


def _doc_link(registry: Registry, doctype: str | None, doc_id: int | None) -> str | None:
    d = registry.documents.get(doctype or "")
    if d is None or doc_id is None:
        return None
    return f"/{d.resource}/{doc_id}"


# --- tasks ---------------------------------------------------------------------------


def task_rows(where: Any, limit: int = PAGE) -> list[dict[str, Any]]:
    """Open tasks with their assignee's name, in one statement."""
    base = _web()
    models = base.crm().models
    tasks = models.table(TASK)
    users = models.table(USER)
    instances = models.table(INSTANCE)
    stmt = (
        sa.select(tasks.c.id, tasks.c.title, tasks.c.due, tasks.c.status, tasks.c.outcomes,
                  tasks.c.overdue, tasks.c.doctype, tasks.c.doc_id, tasks.c.version, tasks.c.step,
                  instances.c.process, users.c.first_name, users.c.last_name, users.c.username)
        .select_from(
            tasks.outerjoin(users, users.c.id == tasks.c.assignee_id)
            .outerjoin(instances, instances.c.id == tasks.c.process_id)
        )
        .where(where)
        .order_by(tasks.c.due.is_(None), tasks.c.due, tasks.c.id)
        .limit(limit)
    )  # fmt: skip
    tz = _company_tz()
    registry = base.crm().registry
    # a moment as the reader writes it: 07.12.2026 18:15 in Russian
    moment = "%d.%m.%Y %H:%M" if api.locale() == "ru" else "%Y-%m-%d %H:%M"
    out = []
    for r in base.db_session().execute(stmt):
        due = r.due
        if due is not None and due.tzinfo is None:
            due = due.replace(tzinfo=dt.UTC)
        out.append({
            "id": r.id, "title": r.title, "due": api.local_time(due, tz).strftime(moment) if due else "",
            "late": due is not None and due < api.clock.now(),
            "outcomes": labelled(registry, r.process, r.step, outcomes_of(r)),
            "who": " ".join(p for p in (r.first_name, r.last_name) if p) or r.username or "",
            "link": _doc_link(registry, r.doctype, r.doc_id), "version": r.version,
        })  # fmt: skip
    return out


def labelled(
    registry: Registry, process: str | None, step: str | None, keys: list[str]
) -> list[tuple[str, str]]:
    """(outcome, what its button says) in the config's language."""
    from . import definitions_for

    p = definitions_for(registry).processes.get(process or "")
    found = p.steps.get(step or "") if p is not None else None
    return [(k, outcome_label(found, k, registry.locale)) for k in keys]


def _company_tz() -> Any:
    return api.company_tz()


def tab_filters(models: Any, principal: Any) -> dict[str, Any]:
    tasks = models.table(TASK)
    readable = api.where(models, principal, TASK)
    is_open = tasks.c.status == "open"
    me = principal.user_id
    return {
        "mine": sa.and_(readable, is_open, tasks.c.assignee_id == me),
        "team": sa.and_(readable, is_open, tasks.c.assignee_id != me),
        "overdue": sa.and_(readable, is_open, tasks.c.due < api.clock.now()),
    }


class TasksView(BaseView):
    route_base = "/tasks"
    default_view = "index"

    @expose("/")
    @login_required
    def index(self) -> Any:
        base = _web()
        state = base.crm()
        who = base.principal()
        if not api.allowed(state.registry, who, TASK, "read"):
            abort(403)
        tab = request.args.get("tab", "mine")
        if tab not in TABS:
            abort(400, gettext("`tab` is mine, team or overdue"))
        filters = tab_filters(state.models, who)
        counts_row = base.db_session().execute(
            sa.select(*(sa.func.count().filter(w).label(n) for n, w in filters.items()))
            .select_from(state.models.table(TASK))
            .where(sa.or_(*filters.values()))
        ).one()  # fmt: skip
        counts = dict(counts_row._mapping)
        team_visible = api.rule(state.registry, who, TASK, "read") is True
        return self.render_template(
            "processes/tasks.html", tab=tab, rows=task_rows(filters[tab]), counts=counts,
            tabs=[t for t in TABS if t != "team" or team_visible], page=PAGE,
        )  # fmt: skip

    @expose("/<int:task_id>/complete", methods=["POST"])
    @login_required
    def complete(self, task_id: int) -> Any:
        base = _web()
        back = request.form.get("next") or url_for("TasksView.index")
        if not back.startswith("/") or back.startswith("//"):
            back = url_for("TasksView.index")
        error = _complete(
            task_id, request.form.get("outcome"), request.form.get("version", type=int)
        )
        if error is None:
            flash(gettext("Task completed"), "success")
        else:
            flash(error[1], "danger")
        del base
        return redirect(back)


def _complete(
    task_id: int, outcome: Any, version: int | None
) -> tuple[int, str, dict[str, str]] | None:
    """Complete and commit; None, or (HTTP status, message, field errors)."""
    base = _web()
    state = base.crm()
    session = base.db_session()
    who = base.principal()
    # an id past the 32-bit column names no task (and must not reach the database)
    task = session.get(state.models.cls(TASK), task_id) if api.valid_id(task_id) else None
    if task is None or not api.may_touch(state.models, who, TASK, "read", task):
        return 404, gettext("There is no such task"), {}
    if not api.may_touch(state.models, who, TASK, "update", task):
        return 403, gettext("You may not complete this task"), {}
    if outcome is not None and not isinstance(outcome, str):
        return 400, "`outcome` must be text", {"outcome": "must be text"}
    try:
        complete(_documents(), task_id, outcome, version)
        session.commit()
    except ValidationFailed as exc:
        session.rollback()
        return 422, "; ".join(f"{k}: {v}" for k, v in exc.errors.items()), dict(exc.errors)
    except (AlreadyClosed, StaleVersion) as exc:
        session.rollback()
        return 409, str(exc), {}
    except NotFound as exc:
        session.rollback()
        return 404, str(exc), {}
    except HandledError as exc:
        session.rollback()
        return 422, str(exc), {}
    return None


class TaskActionsApi(BaseApi):
    """``POST /api/v1/task/<id>/complete`` beside the generated Task API."""

    resource_name = "task"
    openapi_spec_tag = "Task"

    @expose("/<int:pk>/complete", methods=["POST"])
    def complete(self, pk: int) -> Response:
        """Complete a task with an outcome; its process goes on.
        ---
        post:
          summary: Complete a task
          parameters:
          - {in: path, name: pk, required: true, schema: {type: integer}}
          requestBody:
            required: true
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    outcome: {type: string, nullable: true}
                    version: {type: integer}
          responses:
            200: {description: The completed task}
            400: {description: Malformed request}
            401: {description: Not logged in}
            403: {description: Not allowed}
            404: {description: No such task}
            409: {description: Already completed or changed meanwhile}
            422: {description: Not a valid outcome}
        """
        from engine.api import api_principal, json_body

        base = _web()
        if api_principal() is None:
            return base.json_error(
                401, gettext("Log in first: a session cookie or an Authorization: Bearer token")
            )
        body = json_body()
        if isinstance(body, Response):
            return body
        version = body.get("version")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            return base.json_error(400, gettext("`version` must be a whole number"))
        error = _complete(pk, body.get("outcome"), version)
        if error is not None:
            status, message, errors = error
            return base.json_error(status, message, **({"errors": errors} if errors else {}))
        task = base.db_session().get(base.crm().models.cls(TASK), pk)
        return jsonify(id=pk, status=task.status, outcome=task.outcome, version=task.version)


# --- notifications ------------------------------------------------------------------------


class NotificationsView(BaseView):
    route_base = "/notifications"
    default_view = "index"

    def _mine(self) -> Any:
        base = _web()
        table = base.crm().models.table(NOTIFICATION)
        who = base.principal()
        if who.user_id is None:
            abort(401)
        return table, table.c.recipient_id == who.user_id

    @expose("/")
    @login_required
    def index(self) -> Any:
        base = _web()
        table, mine = self._mine()
        rows = (
            base.db_session()
            .execute(sa.select(table).where(mine).order_by(table.c.id.desc()).limit(PAGE))
            .all()
        )
        registry = base.crm().registry
        items = [
            {"id": r.id, "text": r.text, "unread": r.read_at is None,
             "at": r.created_at, "link": _doc_link(registry, r.doctype, r.doc_id)}
            for r in rows
        ]  # fmt: skip
        return self.render_template("processes/notifications.html", items=items)

    @expose("/unread")
    @login_required
    def unread(self) -> Any:
        base = _web()
        table, mine = self._mine()
        count = (
            base.db_session()
            .execute(
                sa.select(sa.func.count()).select_from(table).where(mine, table.c.read_at.is_(None))
            )
            .scalar_one()
        )
        return jsonify(count=count)

    @expose("/read", methods=["POST"])
    @login_required
    def read(self) -> Any:
        base = _web()
        table, mine = self._mine()
        raw = request.form.get("id")
        where = [mine, table.c.read_at.is_(None)]
        if raw:
            ident = api.valid_id(raw)
            if ident is None:
                abort(400, gettext("`id` is a notification number"))
            where.append(table.c.id == ident)
        base.db_session().execute(table.update().where(*where).values(read_at=api.clock.now()))
        base.db_session().commit()
        return redirect(url_for("NotificationsView.index"))


# --- the record page ----------------------------------------------------------------------


def record_sections(models: Any, defs: Any, doctype: Any, doc: Any, principal: Any) -> list[Any]:
    """A task's page: a button per outcome (or one "Done") while it is open."""
    if doctype.name != TASK or doc.status != "open":
        return []
    if not api.may_touch(models, principal, TASK, "update", doc):
        return []
    from flask import render_template

    html = render_template(
        "processes/outcomes.html", task=doc,
        outcomes=labelled(models.registry, _process_of(models, doc), doc.step, outcomes_of(doc)),
        next=f"/{doctype.resource}/{doc.id}",
    )  # fmt: skip
    # rendered by the app's autoescaping Jinja: already safe markup
    return [(gettext("Complete the task"), Markup(html))]  # noqa: S704


def _process_of(models: Any, task: Any) -> str | None:
    if task.process_id is None:
        return None
    instances = models.table(INSTANCE)
    return (
        _web()
        .db_session()
        .execute(sa.select(instances.c.process).where(instances.c.id == task.process_id))
        .scalar()
    )


# --- wiring ------------------------------------------------------------------------------------


def register(appbuilder: Any, registry: Registry) -> None:
    from flask import current_app

    from engine.api import lazy_gettext, menu_label

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    # the plugin's templates and scripts, namespaced under processes/
    app.register_blueprint(
        Blueprint("processes_assets", __name__, template_folder="templates",
                  static_folder="static", static_url_path="/processes-static")
    )  # fmt: skip
    appbuilder.add_view_no_menu(TasksView())
    appbuilder.add_view_no_menu(NotificationsView())
    appbuilder.add_link(
        "crm:my_tasks", href="/tasks/", label=menu_label(lazy_gettext("My tasks")),
        category="crm:sales", category_label=menu_label(lazy_gettext("Sales")),
        cond=lambda: api.allowed(registry, _web().principal(), TASK, "read"),
    )  # fmt: skip
    appbuilder.add_link(
        "crm:notifications", href="/notifications/",
        label=menu_label(lazy_gettext("Notifications")),
        category="crm:sales", category_label=menu_label(lazy_gettext("Sales")),
    )  # fmt: skip
    appbuilder.add_api(TaskActionsApi)
    actions = next(v for v in appbuilder.baseviews if isinstance(v, TaskActionsApi))
    if actions.blueprint is not None:
        app.extensions["csrf"].exempt(actions.blueprint)
    state = app.extensions["crm"]
    state.page_scripts.append("/processes-static/notifications.js")
