"""The metadata reference (docs/metadata-reference.md), generated from the schemas.

Every marshmallow schema of :mod:`engine.schema` is a section of the
reference; its keys, their value types, choices and ranges are read from the
schema itself, so the reference cannot drift from what ``crm check`` accepts.
What a schema cannot say — what a key means, its default, where the object is
written and a short example — is kept here, beside the schemas, in
:data:`SECTIONS` (or in a field's ``metadata={"doc": ...}``, which wins).
``tests/test_docs_reference.py`` fails when a schema key has no description,
a section no example, or the checked-in file differs from this output.

Regenerate the file after changing a schema::

    python -m engine.reference --write
"""

from __future__ import annotations

import argparse
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path

from marshmallow import Schema, validate
from marshmallow import fields as mf
from sqlalchemy.dialects import postgresql

from engine import schema as S
from engine.fieldtypes import CORE_TYPES, FieldType
from engine.registry import Field

OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "metadata-reference.md"
COMMAND = "python -m engine.reference --write"


@dataclass(frozen=True)
class Key:
    """One key of a schema: what it means, and its default when it has one."""

    doc: str
    default: str = ""


@dataclass(frozen=True)
class Section:
    """What the reference says about one schema."""

    title: str
    #: where such an object is written, e.g. ``documents: NAME:`` in a metadata file
    where: str
    intro: str
    keys: dict[str, Key]
    #: a short YAML example; ``at`` is the dotted path of the object the schema checks
    example: str
    at: str = ""
    #: a map key (``MapOf``) → the schema that checks each of its entries
    entries: dict[str, str] = field(default_factory=dict)
    #: a map key → where its entries are documented when no core schema checks them
    elsewhere: dict[str, str] = field(default_factory=dict)


SECTIONS: dict[str, Section] = {
    "ConfigSchema": Section(
        "config.yaml",
        "`config.yaml` in the configuration folder",
        "Who the configuration is for, which layers and plugins it uses and where its "
        "data lives. `${NAME}` is replaced by the environment variable `NAME` (a missing "
        "one is an error at its line); only this file reads the environment, never a "
        "metadata file. A variable named like a secret (`SECRET`, `PASSWORD`, `TOKEN`, "
        "`KEY`...) is read only in `database` and the plugins' settings, and "
        "`CRM_SECRET_KEY` never.",
        {
            "name": Key("The company's name, shown in the page header."),
            "locale": Key("The language of the user interface and of labels.", "`en`"),
            "region": Key(
                "The default country of phone numbers, two letters.", "`RU` for `ru`, else `US`"
            ),
            "timezone": Key(
                "The company's clock: dates and times are typed and shown in it, relative "
                "dates in filters are days of it.",
                "`UTC`",
            ),
            "layers": Key(
                "Layers under your own files: `[base]` or `[]` (built from scratch).", "`[base]`"
            ),
            "plugins": Key(
                "Each key turns a plugin on; its value is the plugin's settings (`{}` for none)."
            ),
            "database": Key(
                "An SQLAlchemy URL. `CRM_DATABASE_URL` overrides it; a relative SQLite path "
                "is taken from the configuration folder.",
                "`sqlite:///instance/crm.db`",
            ),
            "settings": Key("Free-form settings that plugins and reports read (`mail_from`, ...)."),
            "jobs": Key("The background job runner, see [jobs](#jobs)."),
            "security": Key("Sign-in and sessions, see [security](#security)."),
            "limits": Key("Limits on what users type, see [limits](#limits)."),
            "imports": Key("How big a file an import reads, see [imports](#imports)."),
        },
        """\
name: Romashka LLC
locale: ru
region: RU
timezone: Europe/Moscow
layers: [base]
plugins:
  processes: {}
database: sqlite:///instance/romashka.db
settings:
  mail_from: "Romashka <crm@romashka.ru>"
jobs: {runner: in-process}
""",
        elsewhere={
            "plugins": "[processes.md](processes.md), `plugins/mail/README.md` and "
            "`plugins/telephony/README.md`"
        },
    ),
    "JobsSchema": Section(
        "jobs",
        "`jobs:` in config.yaml",
        "How background jobs (email, SMS, the plugins' jobs) are run; see [jobs.md](jobs.md).",
        {
            "runner": Key(
                "`in-process`: `crm run` runs them itself; `external`: a separate `crm worker`.",
                "`in-process`",
            ),
            "interval": Key("Seconds an idle runner waits before it looks again.", "`5`"),
            "lease": Key(
                "Seconds a runner that stopped answering holds its job before another may "
                "take it over (renewed while the job runs).",
                "`300`",
            ),
            "max_attempts": Key("Attempts before a failing job is given up.", "`8`"),
            "budget": Key(
                "Seconds one attempt of a job may run; a job past it is stopped and failed "
                "for good (a job may declare its own).",
                "`1800`",
            ),
        },
        """\
jobs: {runner: external, interval: 2, lease: 600, max_attempts: 5, budget: 3600}
""",
        at="jobs",
    ),
    "SecuritySchema": Section(
        "security",
        "`security:` in config.yaml",
        "How sign-in is limited and how sessions are kept. Logout, a new password, "
        "deactivation and a change of roles end every session and token of the user.",
        {
            "https": Key(
                "The product is served over HTTPS: cookies are `Secure` and pages send HSTS.",
                "`false`",
            ),
            "proxies": Key(
                "How many reverse proxies stand in front: their `X-Forwarded-For` and "
                "`X-Forwarded-Proto` are trusted for the client's address and the scheme.",
                "`0`",
            ),
            "redis": Key(
                "A Redis URL for the sign-in counters, shared by all workers; "
                "`CRM_REDIS_URL` sets it too. Without it each worker counts in memory.",
            ),
            "account_limit": Key(
                "Failed sign-ins per account before it is refused for the rest of the window.",
                "`5 per 15 minutes; 20 per day`",
            ),
            "address_limit": Key(
                "Failed sign-ins per client address before it is refused.",
                "`30 per 15 minutes; 200 per day`",
            ),
            "password_min_length": Key("The shortest password a user may set.", "`10`"),
        },
        """\
security: {https: true, proxies: 1, redis: "redis://localhost:6379/0"}
""",
        at="security",
    ),
    "LimitsSchema": Section(
        "limits",
        "`limits:` in config.yaml",
        "Limits on what users write, so that one form or one import cannot fill the database.",
        {
            "text_length": Key(
                "The most characters a `text` field takes when it sets no `max_length` of its "
                "own; a longer value is refused with the field named.",
                "`100000`",
            ),
        },
        """\
limits: {text_length: 20000}
""",
        at="limits",
    ),
    "ImportsSchema": Section(
        "imports",
        "`imports:` in config.yaml",
        "How big a file `crm import` and the import page read. A file beyond a limit "
        "is refused before it is read, with a message that names the limit; split it "
        "into smaller files.",
        {
            "max_rows": Key("Rows of data in one file, the header not counted.", "`1000000`"),
            "max_columns": Key("Columns of one row.", "`200`"),
            "max_cell": Key("Characters of one cell (a table field's cell too).", "`32768`"),
            "max_megabytes": Key(
                "Megabytes of the file once unpacked: a CSV file as it is, an XLSX "
                "workbook's parts together.",
                "`200`",
            ),
        },
        """\
imports: {max_rows: 200000, max_megabytes: 50}
""",
        at="imports",
    ),
    "FileSchema": Section(
        "A metadata file",
        "any `*.yaml` file of a layer, except `config.yaml`",
        "A metadata file holds any of these sections; the layers' files are merged in "
        "order: the base, the plugins' layers, then your own files by name.",
        {
            "needs": Key(
                "The layers this file builds on: it counts only when the configuration "
                "loads them, and is skipped otherwise."
            ),
            "documents": Key("Document types by name; a name that exists extends that type."),
            "attributes": Key("More fields for an existing type, by type name (`User` too)."),
            "roles": Key("Roles by name."),
            "segments": Key("Named filters of a type's records, offered on its list."),
            "reports": Key("Reports by name."),
            "dashboards": Key(
                "Home pages by name, each for some roles; a name that exists adds, replaces "
                "or removes its cards."
            ),
        },
        """\
roles:
  manager: {label: {en: Manager, ru: Менеджер}}
attributes:
  Customer:
    loyalty_card: {type: string, index: true}
segments:
  vip: {document: Customer, label: VIP, filter: {segment: A}}
""",
        entries={
            "needs": "NeedsSchema",
            "documents": "DocumentSchema",
            "attributes": "FieldSchema",
            "roles": "RoleSchema",
            "segments": "SegmentSchema",
            "reports": "ReportSchema",
            "dashboards": "DashboardSchema",
        },
    ),
    "DocumentSchema": Section(
        "A document type",
        "`documents: NAME:` in a metadata file",
        "A type of record: its table, form, list, REST resource and stage logic. Every "
        "record also has `id`, `created_at`, `created_by`, `updated_at`, `updated_by` "
        "and `version`.",
        {
            "label": Key("The type's name for people.", "the type's name"),
            "menu": Key(
                "The group of the navigation it is listed under, as a label "
                "(`{en: Mail, ru: Почта}`); types with the same group are listed together.",
                "Sales for a type with statuses, else Directory",
            ),
            "numbering": Key("An automatic number field, see [numbering](#numbering)."),
            "title": Key(
                "A template that names a record in lists, refs and cards "
                '(`"{{ number }} {{ customer }}"`).',
                "the type's label and the id",
            ),
            "owner": Key(
                "The ref-to-User field that says whose record it is (access `own`); "
                "set once, a later layer may not change it."
            ),
            "fields": Key("The fields by name, see [a field](#a-field)."),
            "list": Key("The list page, see [list](#list)."),
            "form": Key("The form's layout, see [form](#form).", "every field, in order"),
            "views": Key("Kanban and calendar, see [views](#views)."),
            "access": Key("What each role may do, by role name, see [access](#access)."),
            "statuses": Key("States and transitions, see [statuses](#statuses)."),
        },
        """\
documents:
  Deal:
    label: {en: Deal, ru: Сделка}
    numbering: {prefix: "D-", width: 6}
    title: "{{ number }} {{ customer }}"
    owner: manager
    fields:
      customer: {type: ref, to: Customer, required: true}
      amount:   {type: money}
      manager:  {type: ref, to: User, default: current_user}
""",
        at="documents.Deal",
        entries={"fields": "FieldSchema", "access": "AccessSchema"},
    ),
    "FieldSchema": Section(
        "A field",
        "`documents: TYPE: fields: NAME:`, `attributes: TYPE: NAME:`, "
        "or inside a `table` field's `fields:`",
        "One field; `type` is one of the [field types](#field-types). An option whose "
        "meaning starts with a type's name belongs to that type only.",
        {
            "type": Key("The [field type](#field-types)."),
            "label": Key("The field's name for people.", "the name, `loss_reason` → Loss reason"),
            "required": Key("It must be filled in.", "`false`"),
            "default": Key(
                "The value of a new record: a literal, or `today`, `now`, `current_user`. "
                "It is the column's server default too.",
            ),
            "unique": Key(
                "`true`: no two records may hold the same value (a unique index; a duplicate "
                "is refused at the field, naming and linking the record that holds it). "
                "`warn`: no index; a form saving a value another record holds shows "
                '"this INN already belongs to …" with a link beside the field and saves '
                'on "Save anyway"; REST saves and lists it under `warnings`. Records a '
                "merge archived are not counted. Emails compare case-insensitively, phones "
                "as E.164. Not for a table's rows (`warn`).",
                "`false`",
            ),
            "index": Key("Give the column an index.", "`false`"),
            "help": Key("A hint under the input."),
            "readonly": Key("Shown, never editable.", "`false`"),
            "hidden": Key("Not shown at all.", "`false`"),
            "min": Key("The smallest value (numbers, dates, strings)."),
            "max": Key("The largest value (numbers, dates, strings)."),
            "compute": Key(
                "An expression whose result is stored on every save; the field is then read-only."
            ),
            "max_length": Key("`string`: the most characters.", "`255`"),
            "pattern": Key("`string`: a regular expression the whole value must match."),
            "digits": Key("`decimal`: the digits in all.", "`18`"),
            "places": Key("`decimal`: the digits after the point.", "`4`"),
            "values": Key("`enum`: a list of values, or a map value → label. The value is stored."),
            "to": Key("`ref`: the type it refers to, or `User`."),
            "where": Key(
                "`ref`: the records it may point to, a map of the target's fields to a "
                "field of this record they must equal (`{customer: customer}`: the "
                "Interest's customer is the deal's) or to a filter condition "
                "with constants (`{stage: {nin: [won, lost]}}`). The picker offers only "
                "those (an empty field of this record narrows nothing) and a save of "
                "another one is refused at the field (see the consultant's guide, "
                "[Ref constraints](consultant-guide.md#ref-constraints))."
            ),
            "fields": Key("`table`: the fields of a row (a row cannot hold another table)."),
        },
        """\
documents:
  Deal:
    fields:
      amount: {type: money, min: 0, label: {en: Amount, ru: Сумма}, help: Without VAT}
""",
        at="documents.Deal.fields.amount",
        entries={"fields": "FieldSchema"},
    ),
    "NumberingSchema": Section(
        "numbering",
        "`documents: TYPE: numbering:`",
        "Numbers records `D-000001`, `D-000002`, ... in a read-only, unique string field.",
        {
            "prefix": Key("The text before the number."),
            "width": Key("The digits of the number, padded with zeros."),
            "field": Key("The field that holds the number.", "`number`"),
        },
        """\
documents:
  Deal:
    numbering: {prefix: "D-", width: 6}
""",
        at="documents.Deal.numbering",
    ),
    "ListSchema": Section(
        "list",
        "`documents: TYPE: list:`",
        "The list page of the type (and its CSV export).",
        {
            "columns": Key("The fields shown as columns."),
            "search": Key("The fields the search box looks in."),
            "filters": Key("The fields offered as filters above the list."),
            "order": Key("The sort field; a leading `-` sorts descending.", "`-created_at`"),
        },
        """\
documents:
  Deal:
    list:
      columns: [number, customer, stage, amount, manager]
      search: [number]
      filters: [stage, manager]
      order: -amount
""",
        at="documents.Deal.list",
    ),
    "FormSchema": Section(
        "form",
        "`documents: TYPE: form:`",
        "The form's sections; a field in no section is not on the form and cannot be posted.",
        {"sections": Key("The sections in order, see [a form section](#a-form-section).")},
        """\
documents:
  Deal:
    form:
      sections:
        - {label: Main, fields: [customer, amount, manager]}
        - {label: Lines, fields: [lines]}
""",
        at="documents.Deal.form",
    ),
    "SectionSchema": Section(
        "A form section",
        "an item of `documents: TYPE: form: sections:`",
        "One titled group of inputs.",
        {
            "label": Key("The section's title.", "none"),
            "fields": Key("The fields in it, in order."),
        },
        """\
documents:
  Deal:
    form:
      sections:
        - {label: {en: Main, ru: Основное}, fields: [customer, amount]}
""",
        at="documents.Deal.form.sections.0",
    ),
    "ViewsSchema": Section(
        "views",
        "`documents: TYPE: views:`",
        "Boards beside the list, each at its own page (see [pages.md](pages.md)).",
        {
            "kanban": Key("A board of cards, see [kanban](#kanban)."),
            "calendar": Key("A calendar, see [calendar](#calendar)."),
        },
        """\
documents:
  Deal:
    views:
      kanban: {by: stage, amount: amount}
      calendar: {date: planned_close, owner: manager}
""",
        at="documents.Deal.views",
    ),
    "KanbanSchema": Section(
        "kanban",
        "`documents: TYPE: views: kanban:`",
        "A column per value of an enum (usually the status field), with its count and "
        "sum; dragging a card makes the transition under the same rules as the form.",
        {
            "by": Key("The enum or status field whose values are the columns."),
            "amount": Key("A number field summed per column."),
        },
        """\
documents:
  Deal:
    views:
      kanban: {by: stage, amount: amount}
""",
        at="documents.Deal.views.kanban",
    ),
    "CalendarSchema": Section(
        "calendar",
        "`documents: TYPE: views: calendar:`",
        "Records on a month or week calendar by a date, with counts per owner.",
        {
            "date": Key("The date or datetime field that places a record on a day."),
            "owner": Key("The ref-to-User field counted per person and filtered by."),
            "end": Key("The field where an entry ends (a datetime or date)."),
            "load": Key(
                "The entries are a person's work: every calendar marked `load` counts them "
                "into each day's load.",
                "`false`",
            ),
        },
        """\
documents:
  Interaction:
    views:
      calendar: {date: planned_at, owner: manager, load: true}
""",
        at="documents.Interaction.views.calendar",
    ),
    "AccessSchema": Section(
        "access",
        "`documents: TYPE: access: ROLE:`",
        "What a role may do with the type's records. `everyone` in place of a role "
        "gives its rule to every role of the configuration that the type does not "
        "name; a named role's rule replaces it whole. A role with no rule on a type "
        "cannot see it; administrators may do everything. A later layer replaces a "
        "role's rule.",
        {
            "read": Key("`true`/`all`, `own` (the `owner` is the user) or `false`.", "`false`"),
            "create": Key("`true` or `false`.", "`false`"),
            "update": Key("`true`/`all`, `own` or `false`.", "`false`"),
            "delete": Key("`true`/`all`, `own` or `false`.", "`false`"),
            "fields": Key(
                "Field → `none` (hidden: not shown, filtered, sorted, searched, exported, "
                "imported or summed), `read` (shown, never changed) or `write`; a column of "
                "a table's rows is `table.column` (`lines.price`). A user with "
                "several roles gets the most generous level; a role that names no fields "
                "sees them all. The owner, the status, the number, the fields of the title "
                "and the kanban's and calendar's fields may not be `none`; a computed field "
                "is hidden with a field it is computed from. See "
                "[security.md](security.md#field-access).",
                "every field `write`",
            ),
        },
        """\
documents:
  Deal:
    access:
      manager: {read: own, create: true, update: own, fields: {discount: read, cost: none}}
""",
        at="documents.Deal.access.manager",
    ),
    "StatusesSchema": Section(
        "statuses",
        "`documents: TYPE: statuses:`",
        "States and the moves between them. The status field is made for you from the "
        "states: do not declare it. Every move is kept in the type's history.",
        {
            "field": Key("The name of the status field.", "`status`"),
            "initial": Key(
                "The state of a new record; needed in the layer that first defines the statuses."
            ),
            "states": Key("The states by name, see [a state](#a-state)."),
            "transitions": Key(
                "The allowed moves, see [a transition](#a-transition).",
                "none: any state may go to any other",
            ),
            "control": Key(
                "How records move by the value of an enum field (the deal's kind), see "
                "[stage control](#stage-control); a later layer changes it key by key.",
                "every record by the transitions",
            ),
        },
        """\
documents:
  Deal:
    statuses:
      field: stage
      initial: new
      states:
        new: {label: New}
        won: {label: Won, final: true, outcome: won}
      transitions:
        - {from: new, to: won, roles: [sales_head]}
""",
        at="documents.Deal.statuses",
        entries={"states": "StateSchema"},
    ),
    "StateSchema": Section(
        "A state",
        "`documents: TYPE: statuses: states: NAME:`",
        "One state; a later layer may relabel it and add `require`d fields.",
        {
            "label": Key("The state's name for people.", "its name"),
            "final": Key("No move leaves it.", "`false`"),
            "editable": Key(
                "What may still be changed in a record in this state, by forms, the API and "
                "imports alike (moves out of it still work): `true`; `false`; a list of "
                "fields (only these); or `{roles: [...], fields: [...]}` — those roles may "
                "change those fields (all of them without `fields`), nobody else anything. "
                "Computed fields follow the fields they are computed from; a record that "
                "may not be fully changed cannot be deleted either.",
                "`false` in a final state, `true` in any other",
            ),
            "outcome": Key("What ending here means to reports; needs `final: true`."),
            "require": Key("Fields that must be filled to enter the state."),
            "require_next": Key(
                "New planned records demanded in the same move, see [require_next](#require_next)."
            ),
            "after": Key(
                "The state this one follows in the stage order (kanban columns, funnels, "
                "the form's buttons): a later layer's state takes its place among the "
                "base's instead of coming after the final ones. Final states are shown last.",
                "after the states declared before it",
            ),
        },
        """\
documents:
  Deal:
    statuses:
      states:
        lost: {label: Lost, final: true, outcome: lost, require: [loss_reason],
               editable: {roles: [sales_head], fields: [loss_reason]}}
""",
        at="documents.Deal.statuses.states.lost",
    ),
    "ControlSchema": Section(
        "stage control",
        "`documents: TYPE: statuses: control:`",
        "Which value of an enum field means which stage control. A `process` value's "
        "records are moved only by their route map (the processes plugin's; nobody moves "
        "them by hand, and `crm check` wants an enabled process that sets the status); a "
        "`free` value's records are status only: anyone who may edit one moves it from any "
        "state to any state, with no transitions, roles, `when`, `require` or "
        "`require_next`; every other value (`manual`) moves by the transitions.",
        {
            "field": Key("The enum field (not the status) whose value picks the control."),
            "process": Key("Values moved only through their process.", "none"),
            "free": Key("Values whose states change freely.", "none"),
            "stages": Key(
                "Value → the states its records go through, with the initial one: the "
                "kanban and funnels show that kind by these, and a move elsewhere is refused.",
                "every state",
            ),
        },
        """\
documents:
  Deal:
    statuses:
      control:
        field: kind
        process: [typical]
        free: [simple]
        stages: {typical: [new, qualification, proposal, contract, won, lost]}
""",
        at="documents.Deal.statuses.control",
    ),
    "EditableSchema": Section(
        "editable by role",
        "`documents: TYPE: statuses: states: NAME: editable:` as a map",
        "Who may still change a record in the state; anyone else may change nothing in it.",
        {
            "roles": Key("The roles that may (an admin always may)."),
            "fields": Key("The fields they may change.", "every field"),
        },
        """\
documents:
  Deal:
    statuses:
      states:
        won: {final: true, editable: {roles: [sales_head], fields: [note]}}
""",
        at="documents.Deal.statuses.states.won.editable",
    ),
    "RequireNextSchema": Section(
        "require_next",
        "`documents: TYPE: statuses: states: NAME: require_next:`",
        "Entering the state demands new records of another type in the same step (the "
        "next planned contact, for instance); nothing is saved without them.",
        {
            "document": Key("The type of the records to create."),
            "min": Key("How many at least.", "`1`"),
            "link": Key(
                "How the new records are tied to this one. A name: the ref both types share "
                "(the new record's ref to this type, or to a record this one also refers "
                "to). A map, when the names differ: each key a ref of the new record, each "
                "value a field of this one or `self`, e.g. "
                "`{customer: buyer, property: self}`. The form of the move asks for "
                "each new record's required fields and dates, and shows it filled in with "
                "what it takes from this one: the link and the refs both types have (the "
                "customer, the contact person, the manager)."
            ),
        },
        """\
documents:
  Interaction:
    statuses:
      states:
        done: {final: true, outcome: done, require_next: {document: Interaction, link: customer}}
""",
        at="documents.Interaction.statuses.states.done.require_next",
    ),
    "TransitionSchema": Section(
        "A transition",
        "an item of `documents: TYPE: statuses: transitions:`",
        "An allowed move. With no `transitions` at all any state may go to any other.",
        {
            "from_": Key('A state, a list of states, or `"*"` for any.'),
            "to": Key("A state or a list of states."),
            "roles": Key("Only these roles may make the move.", "every role that may update"),
            "when": Key("An expression over the record that must be true."),
        },
        """\
documents:
  Deal:
    statuses:
      transitions:
        - {from: [new, proposal], to: won, roles: [sales_head], when: "amount > 0"}
""",
        at="documents.Deal.statuses.transitions.0",
    ),
    "RoleSchema": Section(
        "A role",
        "`roles: NAME:` in a metadata file",
        "A role users are given; `crm migrate` makes it and its permissions.",
        {"label": Key("The role's name for people.", "its name")},
        """\
roles:
  sales_head: {label: {en: Head of sales, ru: Руководитель отдела продаж}}
""",
        at="roles.sales_head",
    ),
    "NeedsSchema": Section(
        "needs",
        "`needs:` at the top of a metadata file",
        "A file that builds on another layer's types (a plugin's content for the base "
        "`Deal`, say) names that layer; without it loaded the file is skipped, so a "
        "configuration may have a type of the same name of its own.",
        {"layers": Key("The layers that must be loaded: `base` or an enabled plugin's.")},
        """\
needs: {layers: [base]}
""",
        at="needs",
    ),
    "SegmentSchema": Section(
        "A segment",
        "`segments: NAME:` in a metadata file",
        "A named filter, offered on the type's list (`?segment=NAME`, see "
        "[pages.md](pages.md)) and usable by reports and plugins.",
        {
            "document": Key("The type it filters."),
            "label": Key("Its name for people.", "its name"),
            "filter": Key(
                "A filter in the filter language (see the consultant's guide, "
                "[Filters](consultant-guide.md#filters))."
            ),
        },
        """\
segments:
  big_open: {document: Deal, label: Big open deals, filter: {stage: [new, proposal], amount: {gte: 1000000}}}
""",
        at="segments.big_open",
    ),
    "ReportSchema": Section(
        "A report",
        "`reports: NAME:` in a metadata file",
        "A report, served at `/reports/NAME` and `/api/v1/reports/NAME` "
        "([reports.md](reports.md)); besides the keys below it takes the options its type "
        "reads (the funnel: `amount`), and `crm check` refuses any other key.",
        {
            "type": Key("The report's type: a kind the engine or an enabled plugin serves."),
            "document": Key("The type it reports on."),
            "label": Key("Its name for people.", "its name"),
            "roles": Key(
                "The roles that see it (besides, they must read the type and every field "
                "it reads).",
                "every role that may read the type and the fields it reads",
            ),
            "filter": Key("Only the records matching this filter count.", "every record"),
        },
        """\
reports:
  funnel: {type: funnel, document: Deal, amount: amount, roles: [sales_head]}
""",
        at="reports.funnel",
    ),
    "DashboardSchema": Section(
        "A dashboard",
        "`dashboards: NAME:` in a metadata file",
        "The home page of the users of some roles (see [reports.md](reports.md#dashboards)): "
        "number cards in a strip, then charts and tables. A user with several roles opens on "
        "the first dashboard that names one of them (by `order`, then as declared) and may "
        "switch to the others; an administrator may open every one. A later layer's entry "
        "of the same name changes the label, roles and order, adds cards, replaces a card of "
        "the same name, and removes one written as `NAME: null`.",
        {
            "label": Key("Its name for people.", "its name"),
            "roles": Key("The roles that open on it, or `everyone`; needed once over all layers."),
            "order": Key("Which of several dashboards a user opens on: the lowest first.", "0"),
            "cards": Key("Its cards by name, in the order shown."),
        },
        """\
dashboards:
  sales:
    label: {en: My day, ru: Мой день}
    roles: [manager]
    cards:
      overdue: {count: Interaction, filter: {status: planned, planned_at: {lt: now}, manager: current_user}, tone: bad}
      plan: {report: sales_plan, params: {manager: me, period: month}}
""",
        at="dashboards.sales",
        entries={"cards": "CardSchema"},
    ),
    "CardSchema": Section(
        "A dashboard card",
        "`cards: NAME:` of a dashboard",
        "Exactly one of `count`, `sum` or `report`. A `count` or `sum` card is one SQL "
        "aggregate of the records the user may read that its `filter` matches, and opens the "
        "type's list filtered to exactly those records (`?filter=`). A `report` card runs the "
        "report and shows a number, its chart or a small table, and opens the report's page "
        "with the same parameters. A card of a type or report the user may not read is left "
        "out; a report this installation does not serve shows as not available.",
        {
            "count": Key("The type whose records it counts."),
            "sum": Key("The type whose records' `field` it adds up."),
            "report": Key("The report it shows, by name (`reports:`)."),
            "field": Key("The number field a `sum` card adds up."),
            "filter": Key(
                "Which records a `count` or `sum` card takes, in the filter language "
                "([Filters](consultant-guide.md#filters)); `current_user`, `today`, `now`, "
                "`-7d` are read when the page is shown.",
                "all the user may read",
            ),
            "params": Key(
                "A report card's parameters: `period` (today, week, month, quarter, year), "
                "`manager: me`, `department: mine`, `kind`, `segment`, and the options of "
                "the report's type.",
                "period: month",
            ),
            "show": Key("How a report card shows: a number, its chart or a table.", "kpi"),
            "value": Key(
                "The column of the report's table a `kpi` card shows.",
                "the first number of its totals row",
            ),
            "label": Key("Its title.", "the type's or the report's name"),
            "tone": Key("The colour of a number other than zero: `bad` for what is late.", "none"),
        },
        """\
cards:
  pipeline: {sum: Deal, field: amount, filter: {stage: {nin: [won, lost]}, manager: current_user}, label: {en: My pipeline, ru: Мои сделки в работе}}
""",
        at="cards.pipeline",
    ),
}

#: what each core field type is for; a new type needs a line here
FIELD_TYPES: dict[str, str] = {
    "string": "One line of text, trimmed.",
    "text": "Any amount of text.",
    "integer": "A whole number.",
    "decimal": "A number with a fixed number of places; a comma is taken as the point.",
    "money": "An amount of money, two places.",
    "boolean": "Yes or no; `yes/no`, `true/false`, `да/нет`, `1/0` are accepted from forms and files.",
    "date": "A day: `2026-12-31` or `31.12.2026`; default `today`.",
    "datetime": "A moment, stored in UTC and shown on the company's clock; default `now`.",
    "enum": "One of `values`; the value is stored, labels are accepted as input.",
    "ref": "A record of another type (`to`), or a `User`; the column is `NAME_id`, indexed, "
    "a foreign key; default `current_user` for a ref to User.",
    "phone": "A phone number, stored as E.164 (`+74951234567`), read with the config's `region`.",
    "email": "An email address, checked and normalized.",
    "url": "A web address starting with `http://` or `https://`.",
    "inn": "A Russian taxpayer number: 10 digits (a company) or 12 (a person), check digits verified.",
    "table": "Rows with their own `fields`, in a child table `TYPE__FIELD`, kept in order.",
}  # fmt: skip


def schemas() -> list[type[Schema]]:
    """Every schema of the metadata language, in the order engine.schema defines them."""
    found = [
        cls
        for _, cls in inspect.getmembers(S, inspect.isclass)
        if issubclass(cls, Schema)
        and cls.__module__ == S.__name__
        and cls not in (S.Strict, S.SettingsSchema)  # bases, not sections
    ]
    return sorted(found, key=lambda cls: inspect.getsourcelines(cls)[1])


def key_name(name: str, f: mf.Field) -> str:
    return f.data_key or name


def missing() -> list[str]:
    """Schemas without a section and keys without a description, as ``Schema.key``."""
    out: list[str] = []
    for cls in schemas():
        section = SECTIONS.get(cls.__name__)
        if section is None:
            out.append(cls.__name__)
            continue
        for name, f in cls._declared_fields.items():
            if not f.metadata.get("doc") and name not in section.keys:
                out.append(f"{cls.__name__}.{name}")
    out += [f"field type {t.name}" for t in CORE_TYPES if t.name not in FIELD_TYPES]
    return out


def _anchor(title: str) -> str:
    return "#" + "".join(c for c in title.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def _choices(f: mf.Field) -> str:
    for v in f.validators:
        if isinstance(v, validate.OneOf):
            return ", ".join(f"`{c}`" for c in v.choices)
        if isinstance(v, validate.Range):
            if v.min is None or v.max is None:
                return f"at least {v.min:g}" if v.max is None else f"at most {v.max:g}"
            return f"{v.min:g} to {v.max:g}"
        if isinstance(v, validate.Length) and v.equal is not None:
            return f"{v.equal} letters"
    return ""


_KINDS: dict[type[mf.Field], str] = {
    S.Text: "text",
    S.StrictBool: "`true` or `false`",
    S.Int: "whole number",
    S.Number: "number or date",
    S.Seconds: "seconds",
    S.LabelField: "label: text, or `{en: ..., ru: ...}`",
    S.Names: "name or list of names",
    S.NameList: "list of names",
    S.MapOf: "map",
    S.AnyValue: "any value",
    S.AccessRule: "`true`, `false`, `own` or `all`",
}


def _kind(f: mf.Field, section: Section, key: str) -> str:
    if isinstance(f, mf.Nested):
        return f"map: [{_title(f.schema)}]({_anchor(_title(f.schema))})"
    if isinstance(f, mf.List) and isinstance(f.inner, mf.Nested):
        return f"list of [{_title(f.inner.schema).lower()}]({_anchor(_title(f.inner.schema))})"
    kind = next((k for cls, k in _KINDS.items() if type(f) is cls), "") or _said(type(f))
    if isinstance(f, S.MapOf) and key in section.entries:
        target = SECTIONS[section.entries[key]].title
        kind = f"map: name → [{target.lower()}]({_anchor(target)})"
    elif isinstance(f, S.MapOf) and key in section.elsewhere:
        kind = f"map, see {section.elsewhere[key]}"
    choices = _choices(f)
    return f"{kind}: {choices}" if choices else kind


def _said(cls: type) -> str:
    """A value type the table above does not know: its docstring's first line says it."""
    doc = (cls.__doc__ or "").strip().splitlines()
    if doc and cls.__doc__ != mf.Field.__doc__:
        return doc[0].rstrip(".")
    return cls.__name__


def _title(schema: Schema | type[Schema]) -> str:
    name = schema.__name__ if isinstance(schema, type) else type(schema).__name__
    return SECTIONS[name].title


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _section(cls: type[Schema]) -> list[str]:
    s = SECTIONS[cls.__name__]
    lines = [f"### {s.title}", "", f"Written as {s.where}. {s.intro}", ""]
    lines += ["| key | value | required | default | meaning |", "|---|---|---|---|---|"]
    for name, f in cls._declared_fields.items():
        key = key_name(name, f)
        entry = s.keys.get(name, Key(""))
        doc = f.metadata.get("doc") or entry.doc
        lines.append(
            f"| `{key}` | {_cell(_kind(f, s, key))} | {'yes' if f.required else ''} "
            f"| {_cell(entry.default)} | {_cell(doc)} |"
        )
    lines += ["", "```yaml", s.example.rstrip("\n"), "```", ""]
    return lines


def _column(ft: FieldType) -> str:
    column = ft.column(Field("field", ft.name))
    if ft.name == "table":
        return "a child table"
    if ft.name == "ref":
        return "INTEGER (`NAME_id`)"
    return str(column.compile(dialect=postgresql.dialect()))


def _field_types() -> list[str]:
    lines = [
        "### Field types",
        "",
        "Every type takes the options of [a field](#a-field) whose meaning starts with no "
        "type's name; `min` and `max` apply to the types marked ordered. Plugins add their own "
        "types through the `crm_field_types` hook (see [plugins.md](plugins.md)).",
        "",
        "| type | column (PostgreSQL) | its own options | ordered | meaning |",
        "|---|---|---|---|---|",
    ]
    for ft in CORE_TYPES:
        options = ", ".join(f"`{o}`" for o in sorted(ft.options))
        lines.append(
            f"| `{ft.name}` | {_column(ft)} | {options} | {'yes' if ft.ordered else ''} "
            f"| {_cell(FIELD_TYPES.get(ft.name, ''))} |"
        )
    return [*lines, ""]


def _extending() -> list[str]:
    from engine.loader import MERGEABLE, SWITCH_ON

    mergeable = ", ".join(f"`{k}`" for k in sorted(MERGEABLE))
    switch = ", ".join(f"`{k}`" for k in sorted(SWITCH_ON))
    return [
        "## Extending a field of a lower layer",
        "",
        "A field that the base layer or a plugin defines is changed under `documents:`, "
        "by writing the field again with only what changes; its `type` may be left out. "
        f"A later layer may change {mergeable}; it may switch on {switch} but not off "
        "(`unique` goes from `false` to `warn` to `true`, never back); "
        "it may add enum `values` and table `fields`. Anything else — the type, `to`, "
        "`max_length`, `digits`, `places`, `compute` — may not change, and a field may "
        "not be removed (hide it with `hidden: true`): each is an error that names both "
        "places. `attributes:` is for new fields.",
        "",
        "```yaml",
        EXTEND_EXAMPLE.rstrip("\n"),
        "```",
        "",
    ]


#: the example of extending a base field; the test loads it over the base layer
EXTEND_EXAMPLE = """\
documents:
  Customer:
    fields:
      source:
        required: true
        label: {en: Where they heard of us}
        values: {partner: {en: Partner, ru: Партнёр}}   # one more value
"""

HEADER = f"""\
# Metadata reference

<!-- Generated by `{COMMAND}` from engine/schema.py and engine/fieldtypes.py;
     do not edit by hand: change the schema or engine/reference.py and regenerate. -->

Every key `crm check` accepts, section by section: the value it takes, whether
it is required, its default and what it does, with a short example. The
consultant's guide ([consultant-guide.md](consultant-guide.md)) explains how
the pieces work together; route maps and automations (the `processes` plugin)
are described in [processes.md](processes.md).

This file is generated from the engine's schemas: after changing one, run
`{COMMAND}`.
"""


def render() -> str:
    lines = [HEADER, "## Sections", ""]
    found = {cls.__name__: cls for cls in schemas()}
    # the order of SECTIONS (config.yaml first), then any schema it does not know yet
    for name in [*(n for n in SECTIONS if n in found), *(n for n in found if n not in SECTIONS)]:
        if name in SECTIONS:
            lines += _section(found[name])
    lines += _field_types()
    lines += _extending()
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.reference", description=__doc__)
    parser.add_argument("--write", action="store_true", help=f"write {OUTPUT.name}")
    args = parser.parse_args(argv)
    gaps = missing()
    if gaps:
        print("no description for: " + ", ".join(gaps), file=sys.stderr)
        return 1
    text = render()
    if args.write:
        OUTPUT.write_text(text, encoding="utf-8")
        print(f"wrote {OUTPUT}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
