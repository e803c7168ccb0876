"""The background import (the job ``crm.import``) of a file uploaded on a web page."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from engine.access import Principal
from engine.i18n import gettext, speaking
from engine.models import Models
from engine.registry import USER, Registry
from engine.transfer.formats import (
    BATCH,
    MAX_ERRORS,
    TransferError,
    check_format,
)
from engine.transfer.importer import ImportResult, import_

# -- in the background: the import of a file uploaded on a web page ----------------------

IMPORT_JOB = "crm.import"
#: rows between two progress reports of a background import (a batch)
JOB_BATCH = BATCH
#: attempts of a background import: a crashed worker's import runs again
JOB_ATTEMPTS = 3
#: an uploaded file's name in the imports folder: made here, never the user's
_UPLOAD_NAME = re.compile(r"[0-9a-f]{32}\.(csv|xlsx)")


def upload_folder(registry: Registry) -> Path:
    """Where uploaded files wait for their import: the config's ``instance/imports``
    (the web process and ``crm worker`` read the same config, so the same folder)."""
    return Path(registry.settings["config_dir"]) / "instance" / "imports"


def new_upload(registry: Registry, fmt: str) -> Path:
    """A fresh random path in :func:`upload_folder` for an uploaded ``fmt`` file."""
    folder = upload_folder(registry)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder / f"{secrets.token_hex(16)}.{check_format(fmt)}"


def principal_of(session: Session, models: Models, user_id: Any) -> Principal | None:
    """The user with their roles as they are now, as a web page sees them;
    None for a user that is not there or not active."""
    from flask_appbuilder.security.sqla.models import Role, assoc_user_role

    if not isinstance(user_id, int) or isinstance(user_id, bool):
        return None
    users = models.table(USER)
    user = session.execute(
        sa.select(users.c.username, users.c.active).where(users.c.id == user_id)
    ).one_or_none()
    if user is None or not user.active:
        return None
    roles = Role.__table__
    names = session.execute(
        sa.select(roles.c.name)
        .join(assoc_user_role, assoc_user_role.c.role_id == roles.c.id)
        .where(assoc_user_role.c.user_id == user_id)
    ).scalars()
    return Principal(user_id, user.username, frozenset(names))


def import_job(ctx: Any, payload: Mapping[str, Any]) -> dict[str, Any]:
    """``crm.import``, its messages in the language of the user who uploaded the file."""
    with speaking(str(payload.get("locale") or ctx.registry.locale)):
        return _import_job(ctx, payload)


def _import_job(ctx: Any, payload: Mapping[str, Any]) -> dict[str, Any]:
    """``crm.import``: ``{doctype, file, format, user_id, all_or_nothing, name}``.

    Imports the uploaded ``file`` (a name in :func:`upload_folder`) as the
    user who uploaded it, with their access rules and defaults, reporting
    progress every :data:`JOB_BATCH` rows. Bad data is the job's result, not
    its failure: a failed all-or-nothing import writes nothing and ends done
    with ``ok: false`` and every bad row (``errors``: line, field, message),
    as does a file that cannot be read (``failure``); retrying would not
    make the data better. Anything else (the database went away, the worker
    died) is retried. The file is deleted once the job is done or given up."""
    from engine.jobs import JobError

    name = payload.get("file")
    if not isinstance(name, str) or not _UPLOAD_NAME.fullmatch(name):
        raise JobError("the payload names no uploaded file", retry=False)
    path = upload_folder(ctx.registry) / name
    doctype = str(payload.get("doctype") or "")
    all_or_nothing = payload.get("all_or_nothing", True) is not False
    out: dict[str, Any] = {
        **ImportResult(doctype).as_json(),
        "ok": False,
        "file": str(payload.get("name") or name),
        "all_or_nothing": all_or_nothing,
        "failure": None,
    }

    def report(done: int, total: int | None, checking: bool = False) -> None:
        if not done and not total:
            message = gettext("reading the file…")
        elif checking:
            message = (
                gettext("checked %(done)s of %(total)s rows", done=done, total=total)
                if total
                else gettext("checked %(done)s rows", done=done)
            )
        else:
            message = (
                gettext("%(done)s of %(total)s rows", done=done, total=total)
                if total
                else gettext("%(done)s rows", done=done)
            )
        ctx.report(done, total, message)

    try:
        principal = principal_of(ctx.session, ctx.models, payload.get("user_id"))
        if principal is None:
            out["failure"] = gettext(
                "the user who uploaded the file is not an active user any more"
            )
        elif not path.is_file():
            out["failure"] = gettext("the uploaded file is gone: upload it again")
        else:
            report(0, None)
            fmt = name.rsplit(".", 1)[1]

            def run(**kw: Any) -> ImportResult:
                checking = kw.get("write") is False
                with open(path, "rb") as fh:
                    return import_(
                        ctx.models, ctx.session, doctype, fh, fmt, principal=principal,
                        progress=lambda done, total: report(done, total, checking),
                        batch=JOB_BATCH, now=ctx.now(), **kw,
                    )  # fmt: skip

            if ctx.session.get_bind().dialect.name == "sqlite":
                out.update(_in_batches(ctx, run, all_or_nothing))
            else:
                result = run(all_or_nothing=all_or_nothing)
                report(result.rows, result.rows)
                out.update(result.as_json())
    except TransferError as exc:
        out["failure"] = str(exc)
    except JobError as exc:
        if not exc.retry or ctx.attempt >= JOB_ATTEMPTS:
            path.unlink(missing_ok=True)  # failed for good (its budget, say): nobody reads it
        raise
    except BaseException:  # LeaseLost among them: the runner that took over reads the file
        if ctx.attempt >= JOB_ATTEMPTS:
            path.unlink(missing_ok=True)  # given up: nobody will read it
        raise
    # deleted when the job's transaction commits (the job is done); a worker
    # that loses its lease rolls back and leaves the file to the next one
    sa.event.listen(ctx.session, "after_commit", lambda _: path.unlink(missing_ok=True))
    return out


import_job.max_attempts = JOB_ATTEMPTS  # type: ignore[attr-defined]


def _in_batches(ctx: Any, run: Any, all_or_nothing: bool) -> dict[str, Any]:
    """SQLite has one write lock for the whole database: an import holding it
    until its end would keep every page that saves waiting. So each batch is
    committed on its own, and the job's row remembers how far it got (in the
    same transaction), so that a retry goes on from there. An all-or-nothing
    import first reads the whole file without writing: a file with a bad row
    writes nothing and never takes the lock."""
    from engine.jobs import OUTBOX

    def saved() -> dict[str, Any] | None:
        stmt = sa.select(OUTBOX.c.result).where(OUTBOX.c.id == ctx.job_id)
        text = ctx.session.execute(stmt).scalar_one_or_none()
        ctx.session.commit()  # no transaction left open while the file is read
        try:
            found = json.loads(text) if text else None
        except ValueError:
            return None
        return found if isinstance(found, dict) and "resume" in found else None

    def checkpoint(line: int, so_far: ImportResult) -> None:
        mark = {"resume": line, **so_far.as_json()}
        ctx.session.execute(
            OUTBOX.update().where(OUTBOX.c.id == ctx.job_id).values(result=json.dumps(mark))
        )
        ctx.session.commit()

    before = saved()
    if before is None and all_or_nothing:
        checked = run(all_or_nothing=True, write=False)
        if not checked.ok:
            return checked.as_json()
    result = run(all_or_nothing=False, checkpoint=checkpoint,
                 after_line=before["resume"] if before else 0)  # fmt: skip
    out = result.as_json()
    if before is not None:  # the batches an interrupted attempt wrote
        out["rows"] += before["rows"]
        out["created"] += before["created"]
        out["bad_rows"] += before["bad_rows"]
        out["errors"] = [*before["errors"], *out["errors"]][:MAX_ERRORS]
        out["more_errors"] += before["more_errors"]
        out["ok"] = not out["errors"]
    return out
