"""The quality check's own pages, where a user acts on what a ``quality``
report finds (docs/reports.md, "The quality check of the client base"):

- ``/quality/``: the quality reports the user may open;
- ``/quality/<report>/``: every problem group with its count;
- ``/quality/<report>/<group>``: the group's records (a duplicates group by
  its clusters, each with a link to the merge page), a page at a time, with
  a form per record to fix the group's fields in place and a form to give
  the selected records (or the whole group, at most ``ASSIGN_CAP`` at once)
  to a manager.

Every read runs under the report's narrowing (the user's read rule); every
write goes through the documents service after the same access checks as an
edit form (``engine.web.writes``), so it is validated, version-checked and
audited (``updated_by``, ``updated_at``, the version, the update hooks).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from flask import abort, flash, redirect, request, url_for
from flask_appbuilder import BaseView, expose
from flask_login import login_required

from engine import access, clock
from engine.documents import NotFound, StaleVersion, ValidationFailed
from engine.errors import HandledError
from engine.fieldtypes import valid_id
from engine.i18n import gettext, lazy_gettext, ngettext
from engine.registry import USER, DocType, Report
from engine.reports import Context, Params, ReportError
from engine.reports.quality import ASSIGN_CAP, BY_KEY, Queries, available
from engine.web import forms, writes
from engine.web.base import crm, db_session, error_page, locale, principal
from engine.web.fetch import clean, documents
from engine.web.formatting import company_tz, shown

CLUSTERS_PAGE = 20
RECORDS_PAGE = 50
#: request parameters that override a quality report's options for one request
OVERRIDES = ("days", "similarity", "block")


def quality_reports() -> list[Report]:
    """The quality reports the user may open: of a type they may read, and
    for their roles when the report names roles."""
    state, me = crm(), principal()
    out = []
    for r in state.registry.reports.values():
        if r.type != "quality" or r.document not in state.registry.documents:
            continue
        if not access.allowed(state.registry, me, r.document, "read"):
            continue
        roles = r.options.get("roles")
        if roles and not me.admin and not set(roles) & set(me.roles):
            continue
        out.append(r)
    return out


def _report(name: str) -> Report:
    for r in quality_reports():
        if r.name == name:
            return r
    abort(404)


def _label(r: Report) -> str:
    label = r.options.get("label")
    if isinstance(label, dict):
        return str(label.get(locale()) or label.get("en") or next(iter(label.values()), r.name))
    return str(label or r.name)


def _queries(r: Report) -> Queries:
    state = crm()
    now = clock.now()
    today = clock.today(company_tz())
    extra = {k: clean(request.args.get(k), 20) for k in OVERRIDES if request.args.get(k)}
    ctx = Context(state.models, db_session(), principal(), company_tz(), now)
    return Queries(ctx, r, Params(today, today, extra=extra))


def _offset() -> int:
    try:
        return min(max(0, int(request.args.get("offset", 0))), 1_000_000)
    except ValueError:
        return 0


class QualityView(BaseView):
    route_base = "/quality"
    default_view = "index"

    @expose("/")
    @login_required
    def index(self) -> Any:
        reports = quality_reports()
        if not reports:
            abort(403 if principal().user_id is not None else 401)
        return self.render_template(
            "crm/quality_index.html", reports=[(r, _label(r)) for r in reports]
        )

    @expose("/<name>/")
    @login_required
    def overview(self, name: str) -> Any:
        r = _report(name)
        try:
            q = _queries(r)
            groups = [
                {
                    "group": g,
                    "count": q.count(g.key),
                    "clusters": q.cluster_count(g.key) if g.duplicates else None,
                }
                for g in available(q.s)
            ]
        except ReportError as exc:
            db_session().rollback()
            return error_page(400, str(exc))
        return self.render_template(
            "crm/quality.html", report=r, title=_label(r), groups=groups, setup=q.s,
            args=request.args.to_dict(), bounces="BouncedAddress" in crm().registry.documents,
        )  # fmt: skip

    @expose("/<name>/<group>")
    @login_required
    def group(self, name: str, group: str) -> Any:
        return self._group_page(name, group)

    def _group_page(
        self,
        name: str,
        group: str,
        errors: dict[int, dict[str, str]] | None = None,
        posted: dict[int, dict[str, str]] | None = None,
        alert: str | None = None,
        status: int = 200,
    ) -> Any:
        r = _report(name)
        try:
            q = _queries(r)
            g = BY_KEY.get(group)
            if g is None or g not in available(q.s):
                abort(404)
            offset = _offset()
            session = db_session()
            if g.duplicates:
                clusters = q.clusters(group, offset, CLUSTERS_PAGE)
                total = q.cluster_count(group)
                page_size = CLUSTERS_PAGE
            else:
                sub = q.ids(group).subquery()
                ids = list(session.execute(
                    sa.select(sub.c.id).order_by(sub.c.id).offset(offset).limit(RECORDS_PAGE)
                ).scalars())  # fmt: skip
                clusters = [("", ids)] if ids else []
                total = q.count(group)
                page_size = RECORDS_PAGE
        except ReportError as exc:
            db_session().rollback()
            return error_page(400, str(exc))
        d = access.restricted(crm().registry, principal(), q.s.d)
        records = _records(d, q, group, [i for _, ids in clusters for i in ids])
        html = self.render_template(
            "crm/quality_group.html", report=r, title=_label(r), grp=g, group=group, d=d,
            clusters=clusters, records=records, total=total, offset=offset, page_size=page_size,
            columns=_columns(d, q), errors=errors or {}, posted=posted or {}, alert=alert,
            can_assign=_may_assign(d), cap=ASSIGN_CAP, args=request.args.to_dict(),
            label=lambda f: f.label.get(locale()),
        )  # fmt: skip
        return html, status

    @expose("/<name>/<group>/fix/<int:obj_id>", methods=["POST"])
    @login_required
    def fix(self, name: str, group: str, obj_id: int) -> Any:
        """One field of one record, as an edit form would save it."""
        r = _report(name)
        q = _queries(r)
        g = BY_KEY.get(group)
        if g is None or g not in available(q.s):
            abort(404)
        d = access.restricted(crm().registry, principal(), q.s.d)
        field = clean(request.form.get("field"), 100)
        obj = _updatable(d, obj_id)
        if field not in _fixable(d, q, group, obj):
            abort(403)
        raw = clean(request.form.get("value"), 1000).strip()
        version = request.form.get("_version", type=int)
        posted = {obj_id: {field: raw}}
        if version is None:
            message = gettext("The form did not say which version of the record it edits; reload it")  # fmt: skip
            return self._group_page(name, group, {obj_id: {field: message}}, posted, status=409)
        saved, errs = writes.update(d, obj, {field: raw or None}, version)
        if errs:
            status = 409 if "_version" in errs else 422
            message = errs.get(field) or next(iter(errs.values()))
            return self._group_page(name, group, {obj_id: {field: message}}, posted, status=status)
        flash(gettext("Saved: %(record)s", record="#" + str(saved.id)), "success")
        return redirect(_back(name, group))

    @expose("/<name>/<group>/assign", methods=["POST"])
    @login_required
    def assign(self, name: str, group: str) -> Any:
        """Give the selected records of the group (or all of it, at most
        ``ASSIGN_CAP``) to a manager: each through the documents service, in
        one transaction; a refusal of one leaves them all as they were."""
        r = _report(name)
        q = _queries(r)
        g = BY_KEY.get(group)
        if g is None or g not in available(q.s):
            abort(404)
        d = access.restricted(crm().registry, principal(), q.s.d)
        if not _may_assign(d):
            abort(403)
        assert d.owner
        state, session = crm(), db_session()
        manager = valid_id(request.form.get("manager"))
        users = state.models.table(USER)
        target = (
            session.execute(
                sa.select(users.c.id, users.c.first_name, users.c.last_name).where(
                    users.c.id == manager, users.c.active.is_(True)
                )
            ).first()
            if manager is not None
            else None
        )
        if target is None:
            return self._group_page(
                name, group, alert=gettext("Choose an active user to assign"), status=422
            )
        table = state.models.table(d.name)
        members = q.ids(group).subquery()
        stmt = (
            sa.select(table.c.id)
            .where(table.c.id.in_(sa.select(members.c.id)))
            .where(access.where(state.models, principal(), d.name, "update"))
            .order_by(table.c.id)
        )
        if request.form.get("scope") != "all":
            picked = {valid_id(v) for v in request.form.getlist("ids")} - {None}
            if not picked:
                return self._group_page(
                    name, group, alert=gettext("Select the records to assign"), status=422
                )
            if len(picked) > ASSIGN_CAP:
                picked = set(sorted(i for i in picked if i is not None)[:ASSIGN_CAP])
            stmt = stmt.where(table.c.id.in_(picked))
        ids = list(session.execute(stmt.limit(ASSIGN_CAP + 1)).scalars())
        more = len(ids) > ASSIGN_CAP
        ids = ids[:ASSIGN_CAP]
        cls = state.models.cls(d.name)
        objs = session.execute(sa.select(cls).where(cls.id.in_(ids)).order_by(cls.id)).scalars()
        changed = 0
        owner_col = d.fields[d.owner].column
        try:
            for obj in objs:
                if getattr(obj, owner_col) == target.id:
                    continue
                refused = writes.rule_errors(d, {d.owner: target.id}, obj)
                if refused:
                    raise HandledError(f"#{obj.id}: {next(iter(refused.values()))}")
                documents().update(d.name, obj, {d.owner: target.id})
                changed += 1
            session.commit()
        except ValidationFailed as exc:
            session.rollback()
            first = next(iter(exc.errors.items()))
            return self._group_page(name, group, alert=f"{first[0]}: {first[1]}", status=422)
        except (StaleVersion, NotFound, HandledError) as exc:
            session.rollback()
            return self._group_page(name, group, alert=str(exc), status=422)
        who = " ".join(p for p in (target.first_name, target.last_name) if p)
        flash(
            ngettext(
                "%(num)d record assigned to %(who)s", "%(num)d records assigned to %(who)s",
                changed, who=who,
            ),
            "success",
        )  # fmt: skip
        if more:
            flash(
                gettext(
                    "At most %(cap)s records are assigned at once: assign the rest again",
                    cap=ASSIGN_CAP,
                ),
                "warning",
            )
        return redirect(_back(name, group))


def _back(name: str, group: str) -> str:
    args = {k: v for k, v in request.args.items() if k in (*OVERRIDES, "offset")}
    url = url_for("QualityView.group", name=name, group=group)
    return url + (f"?{urlencode(args)}" if args else "")


def _may_assign(d: DocType) -> bool:
    """May the user give records of the type to another user at all?"""
    me, registry = principal(), crm().registry
    if not d.owner or d.owner not in d.fields:
        return False
    f = d.fields[d.owner]
    return (
        access.rule(registry, me, d.name, "update") is not False
        and access.rule(registry, me, d.name, "read") is True
        and forms.settable(f, d)
    )


def _updatable(d: DocType, obj_id: int) -> Any:
    state = crm()
    cls = state.models.cls(d.name)
    obj = db_session().execute(
        sa.select(cls).where(cls.id == obj_id, access.where(state.models, principal(), d.name, "update"))
    ).scalar_one_or_none()  # fmt: skip
    if obj is None:
        abort(404)
    return obj


def _fixable(d: DocType, q: Queries, group: str, obj: Any) -> list[str]:
    """The group's fields the user may change on this record."""
    locked = forms.locked_fields(d, obj)
    return [
        n for n in q.s.fields(group)
        if n in d.fields and forms.settable(d.fields[n], d) and n not in locked
    ]  # fmt: skip


def _columns(d: DocType, q: Queries) -> list[str]:
    s = q.s
    names = [s.name, s.inn, *s.phones, *s.emails, s.owner]
    return [n for n in dict.fromkeys(names) if n and n in d.fields]


def _records(d: DocType, q: Queries, group: str, ids: list[int]) -> dict[int, dict[str, Any]]:
    """The page's records by id: shown values, version, fields to fix, in
    two statements (the records, their owners' names)."""
    if not ids:
        return {}
    state = crm()
    cls = state.models.cls(d.name)
    objs = (
        db_session()
        .execute(sa.select(cls).where(cls.id.in_(ids), access.where(state.models, principal(), d.name, "read")))
        .scalars()
        .all()
    )  # fmt: skip
    owners: dict[int, str] = {}
    if q.s.owner and q.s.owner in d.fields:
        col = d.fields[q.s.owner].column
        wanted = {getattr(o, col) for o in objs} - {None}
        if wanted:
            users = state.models.table(USER)
            owners = {
                row.id: " ".join(p for p in (row.first_name, row.last_name) if p) or row.username
                for row in db_session().execute(
                    sa.select(users.c.id, users.c.first_name, users.c.last_name, users.c.username)
                    .where(users.c.id.in_(wanted))
                )
            }  # fmt: skip
    columns = _columns(d, q)
    out = {}
    for obj in objs:
        values = {}
        raw = {}
        for n in columns:
            f = d.fields[n]
            value = getattr(obj, f.column)
            raw[n] = "" if value is None else str(value)
            if n == q.s.owner:
                values[n] = owners.get(value, "") if value is not None else ""
            else:
                values[n] = shown(f, value) if value not in (None, "") else ""
        may = access.may_touch(state.models, principal(), d.name, "update", obj)
        out[obj.id] = {
            "obj": obj, "values": values, "raw": raw,
            "fix": _fixable(d, q, group, obj) if may else [],
        }  # fmt: skip
    return out


def register_quality(appbuilder: Any, state: Any) -> None:
    """The quality pages and their menu item (under Reports), when the
    configuration has a quality report."""
    if not any(r.type == "quality" for r in state.registry.reports.values()):
        return
    from engine.web.views import menu_label

    appbuilder.add_view_no_menu(QualityView())
    appbuilder.add_link(
        "crm:quality", href="/quality/", label=menu_label(lazy_gettext("Base quality")),
        category="crm:reports", category_label=menu_label(lazy_gettext("Reports")),
        cond=lambda: bool(quality_reports()),
    )  # fmt: skip
