"""Tasks: completing one with an outcome, deadlines, and their timeline entries."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from engine import api
from engine.api import (
    USER,
    Documents,
    HandledError,
    NotFound,
    StatusEngine,
    ValidationFailed,
    entry_select,
)

from .runtime import COMPLETING, NOTIFICATION, TASK, Runtime

#: overdue tasks one deadline run handles before it queues the next run
DEADLINE_BATCH = 500


class AlreadyClosed(HandledError):
    """The task is no longer open (completed twice, or cancelled): 409."""


def outcomes_of(task: Any) -> list[str]:
    return [o for o in (task.outcomes or "").split(",") if o]


def complete(
    docs: Documents, task_id: int, outcome: str | None, expected_version: int | None = None
) -> Any:
    """Complete a task with an outcome, in the caller's transaction; the
    process it belongs to goes on in the same transaction. A task that is
    no longer open is refused (AlreadyClosed): completing twice advances once."""
    models = docs.models
    cls = models.cls(TASK)
    stmt = sa.select(cls).where(cls.id == task_id).execution_options(populate_existing=True)
    if docs.session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    task = docs.session.execute(stmt).scalar_one_or_none()
    if task is None:
        raise NotFound(api.gettext("there is no task #%(id)s", id=task_id))
    if task.status == "cancelled" and getattr(task, "reason", None):
        raise AlreadyClosed(api.gettext("the task was cancelled: %(reason)s", reason=task.reason))
    if task.status != "open":
        users = models.table(USER)
        who = docs.session.execute(
            sa.select(users.c.username).where(users.c.id == task.updated_by_id)
        ).scalar()
        when = task.done_at or task.updated_at
        state = api.gettext("done") if task.status == "done" else task.status
        raise AlreadyClosed(
            api.gettext("the task is already %(state)s", state=state)
            + (
                api.gettext(" with the outcome `%(outcome)s`", outcome=task.outcome)
                if task.outcome
                else ""
            )
            + (api.gettext(" by %(who)s", who=who) if who else "")
            + (api.gettext(" at %(when)s UTC", when=format(when, "%Y-%m-%d %H:%M")) if when else "")
        )
    docs.check_version(docs.registry.documents[TASK], task, expected_version)
    choices = outcomes_of(task)
    outcome = (outcome or "").strip() or None
    if choices and outcome not in choices:
        raise ValidationFailed(
            {"outcome": api.gettext("choose one of: %(choices)s", choices=", ".join(choices))}
        )
    if not choices and outcome is not None and len(outcome) > 64:
        raise ValidationFailed({"outcome": api.gettext("at most 64 characters")})
    trusted = Documents(
        models, docs.session, docs.principal.user_id, docs.principal.roles, docs.pm,
        now=docs.now, username=docs.principal.username, trusted=True,
    )  # fmt: skip
    docs.session.info[COMPLETING] = task.id
    try:
        StatusEngine(trusted).apply(
            TASK, task, "done", fields={"outcome": outcome, "done_at": trusted.now()}
        )
    finally:
        docs.session.info.pop(COMPLETING, None)
    return task


# --- jobs ---------------------------------------------------------------------------------


def _now(ctx: Any) -> Any:
    """The runner's clock (tests move it), else the real one."""
    return ctx.now() if callable(getattr(ctx, "now", None)) else api.clock.now()


def _system_docs(ctx: Any) -> Documents:
    return Documents(
        ctx.models, ctx.session, None, ["Admin"], ctx.pm, username="system", trusted=True,
        now=lambda: _now(ctx),
    )  # fmt: skip


def _runtime(ctx: Any) -> Runtime:
    from . import definitions_for

    return Runtime(_system_docs(ctx), definitions_for(ctx.registry, ctx.pm))


def resume_job(ctx: Any, payload: dict[str, Any]) -> None:
    """A wait step's time has come."""
    _runtime(ctx).resume(int(payload["instance"]), int(payload["token"]), str(payload["step"]))


def _department_heads(models: Any) -> tuple[sa.Table, sa.Column[Any], sa.Column[Any]] | None:
    """The users' departments, the users' column pointing at them and the
    departments' head, when the config has them as the base layer does (a user
    attribute `department` that refers to a type with a `head` user); else None."""
    documents = models.registry.documents
    dept = documents[USER].fields.get("department")
    if dept is None or dept.type != "ref" or not dept.stored or dept.to not in documents:
        return None
    head = documents[dept.to].fields.get("head")
    if head is None or head.type != "ref" or head.to != USER or not head.stored:
        return None
    table = models.table(dept.to)
    return table, models.table(USER).c[dept.column], table.c[head.column]


def deadlines_job(ctx: Any, payload: dict[str, Any]) -> None:
    """Mark open tasks past their due time overdue, once each, and tell the
    assignee and the head of the assignee's department."""
    docs = _system_docs(ctx)
    now = _now(ctx)
    tasks = ctx.models.table(TASK)
    users = ctx.models.table(USER)
    rows = ctx.session.execute(
        sa.select(tasks.c.id, tasks.c.title, tasks.c.assignee_id, tasks.c.doctype, tasks.c.doc_id)
        .where(tasks.c.status == "open", tasks.c.due < now, tasks.c.overdue.is_(False))
        .order_by(tasks.c.due, tasks.c.id)
        .limit(DEADLINE_BATCH)
    ).all()
    heads: dict[int, int | None] = {}
    departments = _department_heads(ctx.models) if rows else None
    if departments is not None:
        depts, dept_col, head_col = departments
        ids = {r.assignee_id for r in rows if r.assignee_id is not None}
        for uid, head in ctx.session.execute(
            sa.select(users.c.id, head_col)
            .join(depts, depts.c.id == dept_col)
            .where(users.c.id.in_(ids))
        ):
            heads[uid] = head
    for r in rows:
        marked = ctx.session.execute(
            tasks.update()
            .where(tasks.c.id == r.id, tasks.c.overdue.is_(False))
            .values(overdue=True)
        )
        if not marked.rowcount:
            continue
        people = [r.assignee_id, heads.get(r.assignee_id)]
        # stored text: written in the company's language
        with api.speaking(ctx.registry.locale):
            text = api.gettext("Overdue: %(title)s", title=r.title)
        for uid in dict.fromkeys(p for p in people if p is not None):
            docs.create(
                NOTIFICATION,
                {"recipient": uid, "text": text, "doctype": TASK, "doc_id": r.id},
            )
    if len(rows) == DEADLINE_BATCH:
        # more are overdue: the next batch at once, not in a minute

        api.enqueue(ctx.session, "processes.deadlines", {}, key=f"deadlines:{now.isoformat()}")


# --- timeline ---------------------------------------------------------------------------------


def timeline_sources(
    models: Any, defs: Any, doctype: Any, doc_id: int, principal: Any
) -> list[Any]:
    """Tasks about this record, and about the records of process documents
    that refer to it (a deal's tasks on its customer's card)."""
    if TASK not in models.registry.documents:
        return []
    tasks = models.table(TASK)
    readable = api.where(models, principal, TASK)
    about = [sa.and_(tasks.c.doctype == doctype.name, tasks.c.doc_id == doc_id)]
    registry = models.registry
    for name in sorted({p.document for p in defs.processes.values()}):
        d = registry.documents[name]
        table = models.table(name)
        for f in d.fields.values():
            if f.type == "ref" and f.to == doctype.name and not f.system:
                about.append(
                    sa.and_(
                        tasks.c.doctype == name,
                        tasks.c.doc_id.in_(
                            sa.select(table.c.id).where(
                                table.c[f.column] == doc_id,
                                # a task of a record the user may not read says it exists
                                api.where(models, principal, name),
                            )
                        ),
                    )
                )
    where = sa.and_(readable, sa.or_(*about))
    # the detail is what the timeline's last column shows, in the reader's language
    given, done_word = api.gettext("assigned"), api.gettext("done")
    cancelled_word = api.gettext("cancelled")
    created = entry_select(tasks.c.created_at, "task", TASK, tasks.c.id, sa.literal(given)).where(
        where
    )
    outcome = sa.func.coalesce(
        sa.literal(f"{done_word}: ") + tasks.c.outcome, sa.literal(done_word)
    )
    done = entry_select(tasks.c.done_at, "task_done", TASK, tasks.c.id, outcome).where(
        where, tasks.c.done_at.is_not(None)
    )
    cancelled = entry_select(
        tasks.c.updated_at,
        "task_cancelled",
        TASK,
        tasks.c.id,
        sa.func.coalesce(
            sa.literal(f"{cancelled_word}: ") + tasks.c.reason, sa.literal(cancelled_word)
        ),
    ).where(where, tasks.c.status == "cancelled")
    return [created, done, cancelled]


__all__ = ["AlreadyClosed", "complete", "deadlines_job", "outcomes_of", "resume_job"]
