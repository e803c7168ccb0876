"""The background import (the job ``crm.import``) of a file uploaded on a web page."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from engine.access import Principal
from engine.models import Models
from engine.registry import USER, Registry
from engine.transfer.formats import (
    BATCH,
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
    ru = ctx.registry.locale == "ru"

    def report(done: int, total: int | None) -> None:
        if not done and not total:
            message = "читаем файл…" if ru else "reading the file…"
        else:
            of = f" {'из' if ru else 'of'} {total}" if total else ""
            message = f"{done}{of} {'строк' if ru else 'rows'}"
        ctx.report(done, total, message)

    try:
        principal = principal_of(ctx.session, ctx.models, payload.get("user_id"))
        if principal is None:
            out["failure"] = "the user who uploaded the file is not an active user any more"
        elif not path.is_file():
            out["failure"] = "the uploaded file is gone: upload it again"
        else:
            report(0, None)
            with open(path, "rb") as fh:
                result = import_(
                    ctx.models, ctx.session, doctype, fh, name.rsplit(".", 1)[1],
                    principal=principal, all_or_nothing=all_or_nothing, progress=report,
                    batch=JOB_BATCH, now=ctx.now(),
                )  # fmt: skip
            report(result.rows, result.rows)
            out.update(result.as_json())
    except TransferError as exc:
        out["failure"] = str(exc)
    except BaseException:
        if ctx.attempt >= JOB_ATTEMPTS:
            path.unlink(missing_ok=True)  # given up: nobody will read it
        raise
    # deleted when the job's transaction commits (the job is done); a worker
    # that loses its lease rolls back and leaves the file to the next one
    sa.event.listen(ctx.session, "after_commit", lambda _: path.unlink(missing_ok=True))
    return out


import_job.max_attempts = JOB_ATTEMPTS  # type: ignore[attr-defined]
