"""Every hook a plugin may implement, grouped by lifecycle.

A plugin is a module (or object) with functions named like these, decorated
with ``engine.hookspecs.hookimpl``. Hooks that collect contributions return a
list; hooks marked *first result* stop at the first plugin that answers.
docs/plugins.md documents each one; tests/test_hookspecs.py keeps the two
in step.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from engine.errors import Problem
    from engine.fieldtypes import FieldType
    from engine.registry import DocType, Registry

hookspec = pluggy.HookspecMarker("crm")
hookimpl = pluggy.HookimplMarker("crm")


# --- startup -----------------------------------------------------------------


@hookspec(historic=True)
def crm_add_hookspecs(pm: Any) -> None:
    """Called once as the plugin is registered, with the plugin manager: a
    plugin that offers hooks of its own to other plugins adds their specs
    here, ``pm.add_hookspecs(my_plugin.hookspecs)``."""


@hookspec
def crm_startup(app: Any, registry: Registry) -> None:
    """Called once when an app for a configuration has been built, before it
    serves a request. Open connections or register signal handlers here."""


# --- metadata ----------------------------------------------------------------


@hookspec
def crm_metadata_layers() -> list[tuple[str, Path]]:
    """Return the metadata layers this plugin brings, as ``(layer name,
    folder)`` pairs. Layers load after the base and before the config's own
    files, in the order the config lists its plugins."""


@hookspec
def crm_field_types() -> list[FieldType]:
    """Return extra field types (``engine.fieldtypes.FieldType``) that metadata
    may then use by name. A name that is already taken is a check error."""


@hookspec
def crm_settings_schema() -> Any:
    """Return the marshmallow schema (a class or an instance) of this plugin's
    settings, the map under its name in config.yaml's ``plugins:``. The
    loader validates them like the engine's own sections (every wrong setting
    is a problem at its ``file:line:col``) and keeps what the schema loads as
    ``registry.plugins[name]``. Return None for a plugin without settings."""


@hookspec
def crm_sections() -> dict[str, str]:
    """Return the top-level sections of metadata files this plugin interprets,
    as ``{section: what one entry is called}`` (``{"tickets": "ticket"}``).
    Their entries reach the plugin as ``registry.section(name)``."""


@hookspec
def crm_report_kinds(registry: Registry) -> list[Any]:
    """Return the report kinds (``engine.api.ReportKind`` subclasses or
    instances) this plugin serves in this configuration: a report whose
    ``type:`` is a kind's ``name`` is checked, run and drilled by it, and
    served as a page, files and JSON like the engine's own (docs/reports.md).
    Return none when the plugin is not enabled in ``registry``."""


@hookspec
def crm_check(registry: Registry, pm: Any) -> list[Problem]:
    """Check the sections this plugin interprets and return problems with
    their YAML locations. Called by ``crm check`` and at every start-up.
    ``pm`` is the plugin manager, to ask what the other enabled plugins offer."""


# --- documents ---------------------------------------------------------------


@hookspec
def crm_document_created(session: Any, doctype: DocType, doc: Any, user: Any, docs: Any) -> None:
    """Called after a document is inserted, inside its transaction: whatever
    the plugin writes commits or rolls back with it. ``docs`` is the
    transaction's ``engine.documents.Documents`` (its models, user and clock):
    write other records through it, so they are validated and audited too."""


@hookspec
def crm_document_updated(
    session: Any,
    doctype: DocType,
    doc: Any,
    user: Any,
    changes: dict[str, tuple[Any, Any]],
    docs: Any,
) -> None:
    """Called after a document is updated, inside its transaction. ``changes``
    maps each changed field to ``(old, new)``."""


@hookspec
def crm_document_deleted(session: Any, doctype: DocType, doc: Any, user: Any, docs: Any) -> None:
    """Called before a document is deleted, inside its transaction."""


@hookspec
def crm_timeline_sources(models: Any, doctype: DocType, doc_id: int, principal: Any) -> list[Any]:
    """Return SQL selects of entries for the timeline of one record (a
    customer's card shows everything about the customer). Each select has
    the columns ``at`` (datetime), ``kind`` (text), ``doctype`` (text),
    ``doc_id`` (integer) and ``detail`` (text or NULL), and applies the
    principal's read access itself; the engine unions them, newest first."""


# --- statuses ----------------------------------------------------------------


@hookspec
def crm_before_transition(
    session: Any, doctype: DocType, doc: Any, source: str | None, target: str, user: Any, docs: Any
) -> str | None:
    """Called when the metadata rules allow a transition. Return a message to
    veto it (shown to the user with the other reasons), or None to allow."""


@hookspec
def crm_transition_vetoes(
    session: Any, doctype: DocType, doc: Any, targets: list[str], user: Any, docs: Any
) -> dict[str, str] | None:
    """For display (the record page's buttons): the moves among ``targets``
    that crm_before_transition would veto, target → message, all in one call."""


@hookspec
def crm_status_changed(
    session: Any, doctype: DocType, doc: Any, source: str | None, target: str, user: Any, docs: Any
) -> None:
    """Called after a transition has been applied and its history row written,
    inside the same transaction."""


# --- communication -----------------------------------------------------------


@hookspec(firstresult=True)
def crm_send_email(message: Any, settings: dict[str, Any]) -> str | None:
    """Deliver one email (an ``email.message.EmailMessage``). Return the
    provider's message id, or None if this plugin does not send email.
    *First result.* Called by the job runner, never inside a web request.
    ``settings`` is the config's ``plugins`` section, every plugin's options
    by plugin name: read your own. The ``Message-ID`` header is derived from
    the outbox's idempotency key: a provider that sees it twice (a worker
    killed between sending and recording) must deliver it once."""


@hookspec(firstresult=True)
def crm_send_sms(to: str, text: str, settings: dict[str, Any], key: str) -> str | None:
    """Deliver one SMS to an E.164 number. Return the provider's message id,
    or None if this plugin does not send SMS. *First result.* ``key`` is the
    outbox's idempotency key: pass it to the provider as the client's
    message reference, so that a repeated attempt is delivered once."""


# --- views -------------------------------------------------------------------


@hookspec
def crm_record_sections(models: Any, doctype: DocType, doc: Any, principal: Any) -> list[Any]:
    """Return extra sections for a record's page, as ``(title, html)`` pairs
    (``html`` a ``markupsafe.Markup`` the plugin has escaped itself): the
    buttons of an open task, where a record stands in a plugin's flow. Called for every record
    page the principal may read; keep it to a query or two."""


@hookspec
def crm_record_actions(doctype: DocType, doc: Any, principal: Any) -> list[Any]:
    """Return actions for a record's header, as ``{"label": ..., "url": ...}``
    items (``icon``: a Font Awesome name, optional): Call, Email, SMS, Plan an
    interaction. ``url`` is a path on this site or a ``tel:``, ``mailto:`` or
    ``sms:`` link; anything else is dropped. Called for every record page the
    principal may read; keep it cheap (no query when you can)."""


@hookspec
def crm_register_views(appbuilder: Any, registry: Registry) -> None:
    """Add views, APIs and menu items to the app (Flask-AppBuilder's
    ``appbuilder.add_view`` and friends)."""


# --- jobs --------------------------------------------------------------------


@hookspec
def crm_jobs() -> dict[str, Any]:
    """Return background jobs this plugin runs, as ``{name: callable}``; the
    job runner calls ``callable(ctx, payload)`` with an
    ``engine.jobs.JobContext`` (its ``session``, ``models``, ``pm``, the
    job's ``key`` and ``attempt``) in a transaction of its own, committed
    together with marking the job done. Raising makes the runner try again
    later, with backoff."""


@hookspec
def crm_schedules() -> list[tuple[str, int]]:
    """Return periodic jobs as ``(job name, every N seconds)`` pairs."""


@hookspec
def crm_worker_services(registry: Registry) -> list[Any]:
    """Return long-running services for ``crm worker`` to run beside the
    jobs: a telephone exchange's event listener, an SMSC connection. Each is
    a callable ``service(stop)`` that works until ``stop`` (a
    ``threading.Event``) is set, then returns. The worker runs each in a
    thread of its own inside the app's context, starts one again (after a
    pause that grows to a minute) when it returns or raises before the
    worker stops, and sets ``stop`` on SIGTERM or Ctrl-C."""
