"""The plugin author's whole surface: everything a plugin may import from the engine.

A plugin (one of ``plugins/``, or an outside distribution)
imports from ``engine.api`` and from nowhere else in ``engine``; a test walks
every import of ``plugins/`` to keep it so. docs/plugins.md documents each
name below. The names are grouped as a plugin meets them: hooks, the checked
configuration, problems, field types, settings, the clock, jobs, access,
documents, expressions, the timeline and the web.
"""

from __future__ import annotations

from typing import Any

from flask_login import login_required as login_required  # a page only for logged-in users

from engine import clock as clock  # the one clock: clock.now(), clock.today(tz), clock.use(...)
from engine.access import Principal as Principal  # who acts: user_id, username, roles
from engine.access import allowed as allowed  # may the principal do an action on a type at all
from engine.access import (
    field_rights as field_rights,  # the fields hidden / read-only to a principal
)
from engine.access import may_touch as may_touch  # may the principal act on this one record
from engine.access import rule as rule  # the access rule of a type and action for a principal
from engine.access import where as where  # the SQL condition of the records a principal may read
from engine.checks import expression_problems as expression_problems  # what is wrong in a formula
from engine.checks import field_path_problem as field_path_problem  # what is wrong in `a.b.c`
from engine.configuration import Configuration as Configuration  # a checked config, built once
from engine.documents import Documents as Documents  # create/update/delete documents, audited
from engine.documents import NotFound as NotFound  # no such record (or not visible)
from engine.documents import StaleVersion as StaleVersion  # someone saved the record meanwhile
from engine.documents import ValidationFailed as ValidationFailed  # field errors, by field name
from engine.errors import HandledError as HandledError  # an error whose message the user reads
from engine.errors import Loc as Loc  # a place in a YAML file: file, line, column
from engine.errors import MetadataError as MetadataError  # problems that stop a config loading
from engine.errors import Problem as Problem  # one mistake in a configuration, at its Loc
from engine.errors import did_you_mean as did_you_mean  # " (did you mean `x`?)" or ""
from engine.expressions import evaluate as evaluate  # the value of a formula over a document
from engine.expressions import render as render  # a `{{ }}` template over a document, as text
from engine.expressions import truthy as truthy  # whether a formula's value counts as true
from engine.fieldtypes import Context as Context  # what a field type's normalize() is given
from engine.fieldtypes import FieldType as FieldType  # a field type: column, normalize, options
from engine.fieldtypes import Invalid as Invalid  # raised by normalize() with the user's message
from engine.fieldtypes import valid_id as valid_id  # a record id (1 to 2**31-1) from text, or None

# a structured filter, written as in a segment ({city: Kazan, email: {set: true}}), as one
# SQL WHERE clause on a type's table; raises FilterError (a ValueError) with a message
from engine.filters import compile_filter as compile_filter
from engine.hookspecs import hookimpl as hookimpl  # marks a plugin's function as a hook
from engine.hookspecs import hookspec as hookspec  # marks a hook a plugin offers other plugins
from engine.i18n import gettext as gettext  # a message in the user's language: gettext("Save")
from engine.i18n import lazy_gettext as lazy_gettext  # the same, translated when shown
from engine.i18n import ngettext as ngettext  # singular/plural by a number, in the user's language
from engine.i18n import (
    speaking as speaking,  # with speaking(locale): messages in that language (stored text)
)
from engine.jobs import JobContext as JobContext  # what a job is called with (session, models...)
from engine.jobs import JobError as JobError  # a job failure not worth retrying
from engine.jobs import enqueue as enqueue  # queue a job in the caller's transaction
from engine.jobs import status as job_status  # a queued job's state and progress, for a page
from engine.names import identifier_problem as identifier_problem  # why a name is no identifier
from engine.registry import USER as USER  # the name of the built-in user type
from engine.registry import DocType as DocType  # a document type: fields, statuses, access
from engine.registry import Field as Field  # a field of a document type
from engine.registry import Label as Label  # text by language: label.get(registry.locale)
from engine.registry import Registry as Registry  # the checked configuration's metadata
from engine.registry import Section as Section  # one named entry of a plugin's own section
from engine.registry import State as State  # a state of a type's statuses
from engine.reports import Chart as Chart  # what a report draws: bars, funnel, columns, lines
from engine.reports import Column as Column  # a column of a report's table: key, label, format
from engine.reports import Context as ReportContext  # what a report kind runs with
from engine.reports import Kind as Kind  # a report type: options, check, run, drill
from engine.reports import Params as Params  # a report request's period, manager, kind, segment
from engine.reports import ReportError as ReportError  # a parameter a report cannot take: a 400
from engine.reports import Result as Result  # a report's table, totals, chart and drillable cells
from engine.reports import Series as Series  # one series of values of a chart
from engine.schema import Secret as Secret  # a setting written only as ${NAME} (a password)
from engine.schema import SettingsSchema as SettingsSchema  # base of a plugin's settings schema
from engine.segments import (
    find as find_segment,  # a segment by name (consultant's or a user's saved one) or None
)
from engine.statuses import StatusEngine as StatusEngine  # moves documents between states
from engine.timeline import entry_select as entry_select  # one timeline select, columns in order
from engine.transfer.export import csv_file as csv_file  # rows → a CSV file, formulas guarded
from engine.web.api import api_principal as api_principal  # a REST caller (session or JWT) or None
from engine.web.api import json_body as json_body  # the request's JSON object, or the 4xx Response
from engine.web.base import crm as crm  # the app's state: registry, models, pm, db, configuration
from engine.web.base import db_session as db_session  # the request's SQLAlchemy session
from engine.web.base import json_error as json_error  # a JSON error Response with a status
from engine.web.base import (
    locale as locale,
)  # the reader's language, "en" or "ru": the user's choice, else the config's
from engine.web.base import principal as principal  # the request's principal (a page's user)
from engine.web.display import local as local_time  # a datetime on the company's clock
from engine.web.fetch import documents as request_documents  # Documents for this request
from engine.web.formatting import company_tz as company_tz  # the company's time zone
from engine.web.views import menu_group as menu_group  # a type's menu group: (category, label)
from engine.web.views import menu_label as menu_label  # a label as the navbar shows it as typed
from engine.yamlload import LList, LMap


def setting_loc(registry: Registry, plugin: str, *keys: Any) -> Loc:
    """Where a plugin's setting is written in config.yaml (``"watch"``, or a
    path of keys and list indexes), for a problem about it; the plugin's own
    entry when the setting is not written."""
    node, loc = registry.plugin_yaml.get(plugin, (None, Loc("config.yaml", 1, 1)))
    for key in keys:
        if isinstance(node, LMap) and key in node:
            node, loc = node[key], node.value_loc(key)
        elif isinstance(node, LList) and isinstance(key, int) and 0 <= key < len(node):
            node, loc = node[key], node.item_loc(key)
        else:
            break
    return loc


def system_documents(ctx: JobContext) -> Documents:
    """The documents service acting as the engine itself, in a job's
    transaction: what a job writes is validated, numbered and audited."""
    return Documents(
        ctx.models, ctx.session, None, ["Admin"], ctx.pm,
        username="system", trusted=True, now=ctx.now,
    )  # fmt: skip


def ref_links(
    registry: Registry, about_type: str, doctype: DocType, doc: Any, skip: Any = ()
) -> dict[str, Any]:
    """The ref fields of ``about_type`` (a letter, an SMS) that a record of it
    about ``doc`` fills in: the field that refers to ``doc``'s type, and those
    ``doc`` itself has (a deal's letter is also its customer's). Fields named
    in ``skip`` and refs to users are left alone."""
    about = registry.documents.get(about_type)
    if about is None or doc is None:
        return {}
    out: dict[str, Any] = {}
    for f in about.fields.values():
        if f.type != "ref" or f.name in skip or f.to == USER:
            continue
        if f.to == doctype.name:
            out[f.name] = doc.id
            continue
        for own in doctype.fields.values():
            if own.type == "ref" and own.to == f.to:
                value = getattr(doc, own.column, None)
                if value is not None:
                    out.setdefault(f.name, value)
                    break
    return out


#: the template every plugin page extends: ``{% extends PAGE_LAYOUT %}`` (the app's chrome)
PAGE_LAYOUT = "appbuilder/base.html"


def label_of(label: Label, registry: Registry) -> str:
    """A label's text in the reader's language when it has it, else in the
    configuration's (``registry.locale``)."""
    return label.get(registry.locale)


__all__ = [
    "PAGE_LAYOUT",
    "USER",
    "Chart",
    "Column",
    "Configuration",
    "Context",
    "DocType",
    "Documents",
    "Field",
    "FieldType",
    "HandledError",
    "Invalid",
    "JobContext",
    "JobError",
    "Kind",
    "Label",
    "Loc",
    "MetadataError",
    "NotFound",
    "Params",
    "Principal",
    "Problem",
    "Registry",
    "ReportContext",
    "ReportError",
    "Result",
    "Secret",
    "Section",
    "Series",
    "SettingsSchema",
    "StaleVersion",
    "State",
    "StatusEngine",
    "ValidationFailed",
    "allowed",
    "api_principal",
    "clock",
    "company_tz",
    "compile_filter",
    "crm",
    "csv_file",
    "db_session",
    "did_you_mean",
    "enqueue",
    "entry_select",
    "evaluate",
    "expression_problems",
    "field_path_problem",
    "field_rights",
    "find_segment",
    "gettext",
    "hookimpl",
    "hookspec",
    "identifier_problem",
    "job_status",
    "json_body",
    "json_error",
    "label_of",
    "lazy_gettext",
    "local_time",
    "locale",
    "login_required",
    "may_touch",
    "menu_group",
    "menu_label",
    "ngettext",
    "principal",
    "ref_links",
    "render",
    "request_documents",
    "rule",
    "setting_loc",
    "speaking",
    "system_documents",
    "truthy",
    "valid_id",
    "where",
]  # fmt: skip
