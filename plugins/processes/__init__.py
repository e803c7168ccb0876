"""Processes: route maps, tasks, automations and notifications.

Turned on with ``plugins: {processes: {}}`` in a config. It interprets the
``processes`` and ``automations`` sections (definitions.py reads and checks
them, with the settings of settings.py), runs them inside the transaction of the save that sets them off
(runtime.py), and brings its document types — Task, ProcessInstance,
Notification — as the metadata layer ``processes`` (metadata/).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.api import Problem, Registry, hookimpl

from . import hookspecs, runtime
from .definitions import SECTIONS, definitions_for
from .settings import ProcessesSettings

METADATA = Path(__file__).parent / "metadata"
CHANNELS = ["user"]


def _runtime(docs: Any) -> runtime.Runtime | None:
    if docs is None or "processes" not in docs.registry.plugins:
        return None
    return runtime.Runtime(docs, definitions_for(docs.registry, docs.pm))


# --- metadata --------------------------------------------------------------------------


@hookimpl
def crm_metadata_layers() -> list[tuple[str, Path]]:
    return [("processes", METADATA)] if METADATA.is_dir() else []


@hookimpl
def crm_add_hookspecs(pm: Any) -> None:
    pm.add_hookspecs(hookspecs)


@hookimpl
def crm_settings_schema() -> Any:
    return ProcessesSettings


@hookimpl
def crm_sections() -> dict[str, str]:
    return dict(SECTIONS)


@hookimpl
def crm_check(registry: Registry, pm: Any) -> list[Any]:
    defs = definitions_for(registry, pm)
    return [*defs.problems, *_unsteered(registry, defs)]


def _unsteered(registry: Registry, defs: Any) -> list[Problem]:
    """A kind under ``statuses.control.process`` moves only by a process: some
    enabled process must set its status field, or its records never move."""
    problems = []
    for d in registry.documents.values():
        c = d.statuses.control if d.statuses is not None else None
        if c is None or not c.process or d.statuses is None:
            continue
        field = d.statuses.field
        if any(
            p.document == d.name and any(field in s.set for s in p.steps.values())
            for p in defs.processes.values()
        ):
            continue
        kinds = ", ".join(f"`{k}`" for k in c.process)
        problems.append(
            Problem(
                c.loc,
                f"`statuses.control` of `{d.name}`: {kinds} move only through a process, "
                f"but no enabled process sets `{d.name}.{field}`; give them one, or write "
                "`control: {process: []}` to let people move them by hand",
            )
        )
    return problems


@hookimpl
def crm_notification_channels() -> list[str]:
    return list(CHANNELS)


# --- documents and statuses ---------------------------------------------------------------


@hookimpl
def crm_document_created(doctype: Any, doc: Any, docs: Any) -> None:
    rt = _runtime(docs)
    if rt is not None:
        rt.created(doctype, doc)


@hookimpl
def crm_document_updated(doctype: Any, doc: Any, changes: Any, docs: Any) -> None:
    rt = _runtime(docs)
    if rt is not None:
        rt.updated(doctype, doc, changes)


@hookimpl
def crm_document_deleted(doctype: Any, doc: Any, docs: Any) -> None:
    rt = _runtime(docs)
    if rt is not None:
        rt.deleted(doctype, doc)


@hookimpl
def crm_before_transition(
    session: Any, doctype: Any, doc: Any, target: str, docs: Any
) -> str | None:
    if doctype.name == runtime.TASK and target == "done" and getattr(doc, "outcomes", None):
        if session.info.get(runtime.COMPLETING) != doc.id:
            choices = ", ".join(doc.outcomes.split(","))
            return f"this task is completed with an outcome: {choices}"
        return None
    rt = _runtime(docs)
    return rt.steered(doctype, doc) if rt is not None else None


@hookimpl
def crm_transition_vetoes(
    session: Any, doctype: Any, doc: Any, targets: list[str], docs: Any
) -> dict[str, str] | None:
    """What crm_before_transition would say, for the record page's buttons:
    one query for the record's running instances, whatever the targets."""
    if doctype.name == runtime.TASK and "done" in targets and getattr(doc, "outcomes", None):
        choices = ", ".join(doc.outcomes.split(","))
        return {"done": f"this task is completed with an outcome: {choices}"}
    rt = _runtime(docs)
    why = rt.steered(doctype, doc) if rt is not None else None
    return dict.fromkeys(targets, why) if why else None


@hookimpl
def crm_status_changed(doctype: Any, doc: Any, target: str, docs: Any) -> None:
    rt = _runtime(docs)
    if rt is None:
        return
    if doctype.name == runtime.TASK and target == "done":
        if doc.done_at is None:  # moved to done by hand, not through complete()
            doc.done_at = docs.now()
        rt.task_done(doc)
    if doctype.name == runtime.INSTANCE and target == "cancelled":
        rt.close(doc)  # cancelled by a person: its tasks go with it
    rt.status_changed(doctype, doc, target)


# --- jobs ------------------------------------------------------------------------------------


@hookimpl
def crm_jobs() -> dict[str, Any]:
    from . import tasks

    return {"processes.resume": tasks.resume_job, "processes.deadlines": tasks.deadlines_job}


@hookimpl
def crm_schedules() -> list[tuple[str, int]]:
    return [("processes.deadlines", 60)]


# --- the timeline ------------------------------------------------------------------------------


@hookimpl
def crm_timeline_sources(models: Any, doctype: Any, doc_id: int, principal: Any) -> list[Any]:
    from . import tasks

    if "processes" not in models.registry.plugins:
        return []
    return tasks.timeline_sources(
        models, definitions_for(models.registry), doctype, doc_id, principal
    )


# --- views ---------------------------------------------------------------------------------------


@hookimpl
def crm_register_views(appbuilder: Any, registry: Registry) -> None:
    if "processes" not in registry.plugins:
        return
    from . import views

    views.register(appbuilder, registry)


@hookimpl
def crm_record_sections(models: Any, doctype: Any, doc: Any, principal: Any) -> list[Any]:
    if "processes" not in models.registry.plugins:
        return []
    from . import views

    return views.record_sections(models, definitions_for(models.registry), doctype, doc, principal)
