"""Import in the browser: a form to upload a CSV or XLSX file, a background
job that imports it, and a page with a progress bar that polls the job.

The upload is stored under the config's ``instance/imports`` with a random
name (never the user's), the job ``crm.import`` (engine/transfer/) is
queued in the request's transaction, and the user is sent to the job's
page. The job runs as the user who uploaded the file, with their access
rules and defaults; only they (or an admin) see its page and status: for
anyone else it does not exist (404).
"""

from __future__ import annotations

import json
import re
from typing import Any

import sqlalchemy as sa
from flask import Response, abort, current_app, jsonify, redirect, request, url_for
from flask_appbuilder import expose
from flask_login import login_required

from engine import access, jobs, transfer
from engine.fieldtypes import MAX_ID
from engine.i18n import gettext
from engine.registry import USER, DocType, Field
from engine.web.base import crm, db_session, locale, principal
from engine.web.fetch import clean

#: imports of this user and type listed on the form, newest first
RECENT = 5
#: how often the progress page asks for the job's status (milliseconds)
POLL_MS = 700


def _key_prefix(d: DocType, user_id: int | None) -> str:
    """The start of the idempotency key of a user's imports of ``d``; the
    rest is the upload's random name, so each upload is one job."""
    return f"import:{d.name}:{user_id}:"


def column_help(d: DocType) -> list[dict[str, str]]:
    """One line per column a file of ``d`` may have: its name, label and what goes in."""
    registry = crm().registry
    out = []
    for f in transfer.exported_fields(d):
        out.append({"name": f.name, "label": f.label.get(locale()), "what": _what(registry, d, f)})
    return out


def _type_names() -> dict[str, str]:
    """What a column of each core type holds, as the import page says it."""
    return {
        "string": gettext("text"),
        "text": gettext("long text"),
        "integer": gettext("a whole number"),
        "decimal": gettext("a number such as 1234.50"),
        "money": gettext("an amount such as 1234.50"),
        "boolean": gettext("true or false"),
        "date": gettext("a date such as 2026-03-02"),
        "datetime": gettext("a date and time such as 2026-03-02 14:30"),
        "phone": gettext("a phone number"),
        "email": gettext("an email address"),
        "url": gettext("a web address"),
        "inn": gettext("a taxpayer number (INN)"),
    }


def _what(registry: Any, d: DocType, f: Field) -> str:
    if f.compute:
        return gettext("computed: the column is ignored")
    if d.numbering is not None and f.name == d.numbering.field:
        example = f"{d.numbering.prefix}{1:0{d.numbering.width}d}"
        return gettext("%(example)s; empty: the next number", example=example)
    if d.statuses is not None and f.name == d.statuses.field:
        return gettext(
            "%(states)s; empty: %(initial)s",
            states=", ".join(d.statuses.states),
            initial=d.statuses.initial,
        )
    if f.type == "ref":
        target = f.to or USER
        key = transfer.key_field(registry, target)
        label = registry.documents[target].label.get(locale())
        if key is None:
            text = f"{label}: #id"
        else:
            text = gettext(
                "%(document)s by %(key)s (%(name)s); or a column %(field)s.field",
                document=label,
                key=key.label.get(locale()),
                name=key.name,
                field=f.name,
            )
    elif f.type == "table":
        text = gettext("a JSON list of rows")
    elif f.type == "enum":
        text = ", ".join(f.values)
    else:
        text = _type_names().get(f.type, f.type)
    if f.required:
        text += gettext("; required")
    return text


class ImportMixin:
    """The import pages of a document type's view (``DocumentView``)."""

    @property
    def d(self) -> DocType:  # the view's document type
        raise NotImplementedError

    @property
    def view_name(self) -> str:
        raise NotImplementedError

    def _may_create(self) -> None:
        if not access.allowed(crm().registry, principal(), self.d.name, "create"):
            abort(403 if principal().user_id is not None else 401)

    # -- the form --------------------------------------------------------------

    @expose("/import", methods=["GET", "POST"])
    @login_required
    def import_form(self) -> Any:
        """GET: the form; POST: store the file, queue ``crm.import``, go to its page."""
        d = self.d
        self._may_create()
        if request.method == "GET":
            return self._import_page({}, {})
        form = {
            "format": clean(request.form.get("format"), 10),
            "mode": "partial" if request.form.get("mode") == "partial" else "all",
        }
        upload = request.files.get("file")
        filename = re.split(r"[\\/]", clean(upload.filename if upload else "", 255))[-1]
        given = form["format"] if form["format"] in transfer.FORMATS else None
        fmt = given or filename.rsplit(".", 1)[-1].lower()
        problem = None
        if not upload or not filename:
            problem = gettext("Choose a file")
        elif fmt not in transfer.FORMATS:
            problem = gettext("A CSV or XLSX file, please")
        if upload is None or problem:
            return self._import_page(form, {"file": problem or ""}), 400
        path = transfer.new_upload(crm().registry, fmt)
        try:
            upload.save(path)
            if path.stat().st_size == 0:
                path.unlink()
                problem = gettext("The file is empty")
                return self._import_page(form, {"file": problem}), 400
            me = principal()
            payload = {
                "doctype": d.name, "file": path.name, "user_id": me.user_id,
                "all_or_nothing": form["mode"] != "partial", "name": filename,
                "locale": locale(),  # the job speaks the uploader's language
            }  # fmt: skip
            key = _key_prefix(d, me.user_id) + path.stem
            job_id = jobs.enqueue(db_session(), transfer.IMPORT_JOB, payload, key=key)
            db_session().commit()
        except BaseException:
            db_session().rollback()
            path.unlink(missing_ok=True)
            raise
        return redirect(url_for(f"{self.view_name}.import_progress", job_id=job_id))

    def _import_page(self, form: dict[str, str], errors: dict[str, str]) -> Any:
        d = self.d
        return self.render_template(  # type: ignore[attr-defined]
            "crm/import.html", d=d, view=self.view_name, form=form, errors=errors,
            columns=column_help(d), recent=self._recent(),
            limit_mb=(current_app.config.get("MAX_CONTENT_LENGTH") or 0) // (1024 * 1024),
        )  # fmt: skip

    def _recent(self) -> list[dict[str, Any]]:
        """The user's latest imports of this type, for a page they left."""
        t = jobs.OUTBOX
        mine = t.c.key.startswith(_key_prefix(self.d, principal().user_id), autoescape=True)
        query = (
            sa.select(t.c.id, t.c.state, t.c.payload, t.c.result)
            .where(t.c.job == transfer.IMPORT_JOB, mine)
            .order_by(t.c.id.desc())
            .limit(RECENT)
        )
        rows = db_session().execute(query).all()
        out = []
        for r in rows:
            result = json.loads(r.result) if r.result else None
            out.append({
                "id": r.id, "state": r.state, "name": json.loads(r.payload).get("name", ""),
                "created": result.get("created") if result else None,
                "ok": result.get("ok") if result else None,
            })  # fmt: skip
        return out

    @expose("/import/template.csv")
    @login_required
    def import_template(self) -> Any:
        """An empty file with the header row: the names ``crm export`` writes."""
        d = self.d
        self._may_create()
        state = crm()
        header = next(transfer.export_rows(state.models, db_session(), d.name, "csv"))
        # only the columns the user may import (the type as they see it)
        rights = access.field_rights(state.registry, principal(), d.name)
        header = [name for name in header if rights.writable(name)]
        response = Response(b"".join(transfer.csv_file([header])), mimetype="text/csv")
        response.headers["Content-Disposition"] = f'attachment; filename="{d.resource}.csv"'
        return response

    # -- the job's page and status -------------------------------------------------

    def _import_job(self, job_id: int) -> dict[str, Any]:
        """The job's payload, if it is an import of this type by this user
        (or the user is an admin); 404 otherwise, whichever it is."""
        if not 0 < job_id <= MAX_ID:
            abort(404)
        t = jobs.OUTBOX
        query = sa.select(t.c.job, t.c.payload).where(t.c.id == job_id)
        row = db_session().execute(query).one_or_none()
        if row is None or row.job != transfer.IMPORT_JOB:
            abort(404)
        payload: dict[str, Any] = json.loads(row.payload)
        me = principal()
        if payload.get("doctype") != self.d.name or (
            payload.get("user_id") != me.user_id and not me.admin
        ):
            abort(404)
        return payload

    @expose("/import/<int:job_id>")
    @login_required
    def import_progress(self, job_id: int) -> Any:
        payload = self._import_job(job_id)
        d = self.d
        return self.render_template(  # type: ignore[attr-defined]
            "crm/import_progress.html", d=d, view=self.view_name, job_id=job_id,
            name=payload.get("name", ""), status=status_of(job_id), poll_ms=POLL_MS,
        )  # fmt: skip

    @expose("/import/<int:job_id>/status")
    @login_required
    def import_status(self, job_id: int) -> Any:
        self._import_job(job_id)
        response = jsonify(status_of(job_id))
        response.headers["Cache-Control"] = "no-store"
        return response


def status_of(job_id: int) -> dict[str, Any]:
    """What the page shows: the job's state and progress, and when it has
    finished the import's result (``created``, ``errors`` with line and
    field) or why it failed (``failure``). The error of a crashed attempt
    (an exception, a database's message) is for admins; others are told
    that there was one."""
    s = jobs.status(db_session(), job_id)
    error = s["error"]
    if error and not principal().admin:
        error = gettext("the job failed (job #%(id)s); an administrator can see why", id=job_id)
    result = s["result"] if isinstance(s["result"], dict) else {}
    finished = s["state"] in (jobs.DONE, jobs.DEAD)
    done, total = s["done"] or 0, s["total"]
    if finished:
        done = total = result.get("rows", done)
        percent = 100
    elif total:
        percent = min(99, 100 * done // total)
    else:
        percent = 0
    failure = result.get("failure")
    if s["state"] == jobs.DEAD:
        failure = error or gettext("the import failed")
    return {
        "state": s["state"],
        "finished": finished,
        "done": done,
        "total": total,
        "percent": percent,
        "message": s["message"] or "",
        # a failed attempt that will be tried again
        "retrying": error if s["state"] == jobs.PENDING and s["attempts"] else None,
        "ok": (bool(result.get("ok")) and failure is None) if finished else None,
        "rows": result.get("rows"),
        "created": result.get("created"),
        "bad_rows": result.get("bad_rows"),
        "all_or_nothing": result.get("all_or_nothing"),
        "errors": result.get("errors", []),
        "more_errors": result.get("more_errors", 0),
        "warnings": result.get("warnings", []),
        "failure": failure,
    }
