"""The registry: the checked, immutable description of one configuration.

After loading, nothing re-reads YAML: models, views, the status engine and
plugins all read these dataclasses. Every node keeps the :class:`Loc` it came
from, so that any later error can still point at the consultant's file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from dataclasses import field as dataclass_field  # StageControl has a `field` of its own
from types import MappingProxyType
from typing import Any

from engine.errors import UNKNOWN, Loc

#: Field types of metadata version 1.
FIELD_TYPES = (
    "string", "text", "integer", "decimal", "money", "boolean", "date", "datetime",
    "enum", "ref", "phone", "email", "url", "table",
)  # fmt: skip
#: Columns every document has; a consultant cannot declare fields with these names.
SYSTEM_FIELDS = ("id", "created_at", "created_by", "updated_at", "updated_by", "version")
ACCESS_ACTIONS = ("read", "create", "update", "delete")
#: what ``access: ROLE: fields:`` gives a field, from least to most
FIELD_LEVELS = ("none", "read", "write")
#: In ``access:``, the rule of every role of the configuration that has no rule of its own
#: (a plugin's types use it, since they cannot know the configuration's roles).
EVERYONE = "everyone"
USER = "User"


def frozen_map(items: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(items or {}))


def snake_case(name: str) -> str:
    """``CustomerOrder`` → ``customer_order``: table and REST resource names."""
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()


def _no_preference() -> str | None:
    return None


#: the language the reader chose (engine.i18n: the signed-in user's in a
#: request, None elsewhere): a label that has it speaks it, whatever language
#: the caller asked for; one that has not answers as before
preferred_locale: Callable[[], str | None] = _no_preference


@dataclass(frozen=True)
class Label:
    """Human text in several languages; ``str()`` gives the first one."""

    texts: Mapping[str, str]

    @classmethod
    def of(cls, value: Any, fallback: str) -> Label:
        if isinstance(value, Mapping):
            return cls(frozen_map({str(k): str(v) for k, v in value.items()}))
        if value is None:
            return cls(frozen_map({"": fallback}))
        return cls(frozen_map({"": str(value)}))

    def get(self, locale: str | None = None) -> str:
        if locale:
            chosen = preferred_locale()
            if chosen and chosen in self.texts:
                return self.texts[chosen]
        if locale and locale in self.texts:
            return self.texts[locale]
        if "" in self.texts:
            return self.texts[""]
        if "en" in self.texts:
            return self.texts["en"]
        return next(iter(self.texts.values()), "")

    def merged(self, later: Label) -> Label:
        return Label(frozen_map({**self.texts, **later.texts}))

    def __str__(self) -> str:
        return self.get()


@dataclass(frozen=True)
class RefWhere:
    """``where:`` of a ref: which records it may point to. ``same`` maps a
    field of the target to the field of this record it must equal
    (``{customer: customer}``: the Interest's customer is the deal's);
    ``conditions`` maps a field (or dotted path) of the target to a filter
    condition with constants, written as in segments (``{stage: {nin: [won,
    lost]}}``). ``owner`` is the type the ref belongs to."""

    owner: str
    same: Mapping[str, str]
    conditions: Mapping[str, Any]
    loc: Loc = UNKNOWN

    @property
    def depends(self) -> tuple[str, ...]:
        """The fields of this record the choice depends on, in order."""
        return tuple(dict.fromkeys(self.same.values()))


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    loc: Loc = UNKNOWN
    layer: str = ""
    label: Label = Label(frozen_map())
    required: bool = False
    default: Any = None
    unique: bool = False
    #: ``unique: warn``: no unique index; a form warns of a record holding the
    #: same value (with a link) and saves anyway once confirmed
    unique_warn: bool = False
    index: bool = False
    help: Label | None = None
    readonly: bool = False
    hidden: bool = False
    min: Any = None
    max: Any = None
    compute: str | None = None
    max_length: int | None = None
    pattern: str | None = None
    digits: int | None = None
    places: int | None = None
    #: enum: key → label, in order
    values: Mapping[str, Label] = field(default_factory=frozen_map)
    #: ref: the target type's name (or ``User``)
    to: str | None = None
    #: table: the child row's fields, in order
    fields: Mapping[str, Field] = field(default_factory=frozen_map)
    #: set by the engine for fields it creates (status field, numbering)
    system: bool = False
    #: ref: the records it may point to (``where:``), see :class:`RefWhere`
    where: RefWhere | None = None

    @property
    def stored(self) -> bool:
        return self.type != "table"

    @property
    def column(self) -> str:
        """The database column: ``customer_id`` for a ref, the field's name otherwise."""
        return f"{self.name}_id" if self.type == "ref" else self.name


@dataclass(frozen=True)
class RequireNext:
    """A state that demands at least ``min`` new ``document`` records in the
    same step. ``link`` maps each field of a new record that is filled in from
    this one to the field of this record it takes, or to ``SELF``, the record
    itself: ``{customer: buyer, property: self}``."""

    document: str
    min: int
    link: Mapping[str, str]
    loc: Loc = UNKNOWN


#: in ``RequireNext.link``: the record itself rather than one of its fields
SELF = "self"


@dataclass(frozen=True)
class Editable:
    """What may still be changed in a state (``editable:`` of a state):
    ``fields`` (None: every field, empty: none) by ``roles`` (empty: anyone)."""

    fields: tuple[str, ...] | None
    roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class State:
    name: str
    label: Label
    loc: Loc = UNKNOWN
    final: bool = False
    outcome: str | None = None
    require: tuple[str, ...] = ()
    require_next: RequireNext | None = None
    #: None: the default — everything in a state that is not final, nothing in a final one
    editable: Editable | None = None
    #: the state this one follows in the stage order (``after:``), as written
    after: str | None = None

    def editable_by(self, roles: frozenset[str] | set[str], admin: bool = False) -> Any:
        """The fields a user with these roles may change in this state:
        None for all of them, else a tuple (maybe empty)."""
        e = self.editable
        if e is None:
            return () if self.final else None
        if e.roles and not admin and not set(e.roles) & set(roles):
            return ()
        return e.fields


@dataclass(frozen=True)
class Transition:
    sources: tuple[str, ...]  # "*" means any state
    targets: tuple[str, ...]
    loc: Loc = UNKNOWN
    roles: tuple[str, ...] = ()
    when: str | None = None

    def matches(self, source: str | None, target: str) -> bool:
        return target in self.targets and ("*" in self.sources or source in self.sources)


#: how records of a kind move between states (``statuses.control``)
PROCESS, MANUAL, FREE = "process", "manual", "free"


@dataclass(frozen=True)
class StageControl:
    """``statuses: control:``: which value of an enum field (the deal's
    ``kind``) means which stage control, and the states a kind shows."""

    field: str
    #: values moved only by their route map: no move by hand
    process: tuple[str, ...] = ()
    #: values whose states change freely: any state to any state, no gates
    free: tuple[str, ...] = ()
    #: value → the states records of it go through (default: every state)
    stages: Mapping[str, tuple[str, ...]] = dataclass_field(default_factory=frozen_map)
    loc: Loc = UNKNOWN

    def of(self, value: str | None) -> str:
        if value in self.process:
            return PROCESS
        if value in self.free:
            return FREE
        return MANUAL


@dataclass(frozen=True)
class Statuses:
    field: str
    initial: str
    #: in the declared order: a state's ``after:`` places it after another one
    states: Mapping[str, State]
    transitions: tuple[Transition, ...]
    loc: Loc = UNKNOWN
    control: StageControl | None = None

    @property
    def free(self) -> bool:
        """No transitions listed: any state may go to any other."""
        return not self.transitions


@dataclass(frozen=True)
class Numbering:
    prefix: str
    width: int
    field: str = "number"


@dataclass(frozen=True)
class ListSpec:
    columns: tuple[str, ...]
    search: tuple[str, ...] = ()
    filters: tuple[str, ...] = ()
    order: str = "-created_at"
    loc: Loc = UNKNOWN

    @property
    def order_field(self) -> str:
        return self.order.lstrip("-+")

    @property
    def descending(self) -> bool:
        return self.order.startswith("-")


@dataclass(frozen=True)
class FormSection:
    label: Label
    fields: tuple[str, ...]


@dataclass(frozen=True)
class Access:
    read: bool | str = False
    create: bool | str = False
    update: bool | str = False
    delete: bool | str = False
    loc: Loc = UNKNOWN
    #: field → ``none``, ``read`` or ``write`` (a field not named: ``write``)
    fields: Mapping[str, str] = field(default_factory=frozen_map)

    def rule(self, action: str) -> bool | str:
        return getattr(self, action)


@dataclass(frozen=True)
class DocType:
    name: str
    loc: Loc
    layer: str
    label: Label
    fields: Mapping[str, Field]
    title: str | None = None
    owner: str | None = None
    #: the navigation group it is listed under (None: Sales with statuses, else Directory)
    menu: Label | None = None
    numbering: Numbering | None = None
    statuses: Statuses | None = None
    list: ListSpec | None = None
    form: tuple[FormSection, ...] = ()
    views: Mapping[str, Mapping[str, Any]] = field(default_factory=frozen_map)
    access: Mapping[str, Access] = field(default_factory=frozen_map)
    #: where each piece was extended by a later layer: name → Loc
    builtin: bool = False

    def access_of(self, role: str, roles: Mapping[str, Any]) -> Access | None:
        """The rule ``role`` follows: its own when ``access`` names it, else the
        ``everyone`` rule when it is one of the configuration's ``roles``."""
        if role == EVERYONE:
            return None
        named = self.access.get(role)
        if named is not None or role not in roles:
            return named
        return self.access.get(EVERYONE)

    @property
    def table(self) -> str:
        return "ab_user" if self.name == USER else snake_case(self.name)

    @property
    def resource(self) -> str:
        return snake_case(self.name)

    def child_table(self, field_name: str) -> str:
        return f"{self.table}__{field_name}"

    @property
    def history_table(self) -> str:
        return f"{self.table}__history"


@dataclass(frozen=True)
class Role:
    name: str
    label: Label
    loc: Loc = UNKNOWN


@dataclass(frozen=True)
class Segment:
    name: str
    document: str
    label: Label
    filter: Mapping[str, Any]
    loc: Loc = UNKNOWN


@dataclass(frozen=True)
class Report:
    name: str
    type: str
    document: str
    options: Mapping[str, Any]
    loc: Loc = UNKNOWN


@dataclass(frozen=True)
class Card:
    """One card of a dashboard (docs/reports.md, "Dashboards"): a ``count`` or
    ``sum`` of a type's records matching ``filter``, or a ``report`` shown as
    a KPI, its chart or a small table. ``spec`` is the card as written (with
    locations) for the checks' messages."""

    name: str
    #: count, sum or report
    what: str
    #: the document type (count, sum) or the report's name (report)
    target: str
    label: Label | None
    filter: Mapping[str, Any]
    #: the summed field (sum)
    summed: str | None = None
    #: the report's parameters (report): period, manager, department, kind, segment, options
    params: Mapping[str, Any] = field(default_factory=frozen_map)
    #: how a report card shows: kpi, chart or table
    show: str = "kpi"
    #: the column of a report's table a KPI shows (else the first number of its totals)
    value: str | None = None
    #: good, bad, warn or none: how a non-zero number is coloured
    tone: str = "none"
    spec: Mapping[str, Any] = field(default_factory=frozen_map)
    loc: Loc = UNKNOWN


@dataclass(frozen=True)
class Dashboard:
    """A home page for the users of some roles: its cards in declared order."""

    name: str
    label: Label
    roles: tuple[str, ...]
    cards: tuple[Card, ...]
    #: which dashboard a user with several roles opens on: the lowest order, then declared order
    order: int = 0
    spec: Mapping[str, Any] = field(default_factory=frozen_map)
    loc: Loc = UNKNOWN


@dataclass(frozen=True)
class Section:
    """One named entry of a section that a plugin interprets (``crm_sections``):
    kept as loaded YAML, with locations, for the plugin's own reading and checks."""

    name: str
    body: Any
    loc: Loc = UNKNOWN


@dataclass(frozen=True)
class Registry:
    name: str
    locale: str
    documents: Mapping[str, DocType]
    roles: Mapping[str, Role]
    segments: Mapping[str, Segment]
    reports: Mapping[str, Report]
    #: every enabled plugin's settings by plugin name, as its settings schema loaded them
    plugins: Mapping[str, Mapping[str, Any]]
    layers: tuple[str, ...]
    database: str
    #: the home pages by name (``dashboards:``), in declared order
    dashboards: Mapping[str, Dashboard] = field(default_factory=frozen_map)
    #: the sections plugins interpret (``crm_sections``): section → entry name → Section
    sections: Mapping[str, Mapping[str, Section]] = field(default_factory=frozen_map)
    settings: Mapping[str, Any] = field(default_factory=frozen_map)
    #: the job runner's settings, the config's `jobs:` map (engine/jobs.py)
    jobs: Mapping[str, Any] = field(default_factory=frozen_map)
    #: sign-in and sessions, the config's `security:` map (engine/sessions.py)
    security: Mapping[str, Any] = field(default_factory=frozen_map)
    #: how big a file an import reads, the config's `imports:` map (engine/transfer/readers.py)
    imports: Mapping[str, Any] = field(default_factory=frozen_map)
    #: each plugin's settings as written (a map that knows where each key is)
    #: and where they start, for a plugin's own checks (``engine.api.setting_loc``)
    plugin_yaml: Mapping[str, tuple[Any, Loc]] = field(default_factory=frozen_map)
    #: what plugins derive from this configuration once (their parsed sections),
    #: by a key of their own; it lives and dies with the registry
    extensions: dict[str, Any] = field(
        default_factory=dict, init=False, compare=False, repr=False, hash=False
    )

    def section(self, name: str) -> Mapping[str, Section]:
        """The entries of a plugin's section (empty when no file has it)."""
        return self.sections.get(name, frozen_map())

    def doc(self, name: str) -> DocType:
        return self.documents[name]

    def field_path(self, doctype: str, path: str) -> list[Field]:
        """Follow a dotted name (``manager.department``) through refs; KeyError if broken."""
        fields: list[Field] = []
        current = self.documents[doctype]
        parts = path.split(".")
        for i, part in enumerate(parts):
            f = current.fields[part]
            fields.append(f)
            if i < len(parts) - 1:
                if f.type != "ref" or f.to is None:
                    raise KeyError(part)
                current = self.documents[f.to]
        return fields
