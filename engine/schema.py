"""Marshmallow schemas for every section of the metadata language.

Each schema checks one level of a YAML object: known keys, value shapes and
types. The walker in :mod:`engine.loader` calls them level by level and turns
their messages into ``file:line:col`` problems; the semantic checks that need
the whole configuration live in :mod:`engine.checks`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, validate
from marshmallow import fields as mf

from engine.errors import Loc, Problem, did_you_mean
from engine.yamlload import LList, LMap

# MARSHMALLOW_NAMES: metadata keys `fields` and `load` are declared as marshmallow
# fields of the same name. marshmallow collects declared fields from the class
# and each schema instance sets its own `fields`, so this works; its type stubs
# only know the Schema attributes of those names, hence the ignores below.


class StrictBool(mf.Field):
    """``true``/``false`` only: ``"yes"`` or ``1`` is a mistake, not a boolean."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError("must be true or false")
        return value


class UniqueOption(mf.Field):
    """``unique``: ``true`` (refused, a unique index), ``false`` or ``warn``
    (a warning with a link to the record that holds the value)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool | str:
        if isinstance(value, bool) or value == "warn":
            return value
        raise ValidationError("must be true, false or warn")


class Text(mf.Field):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        if not isinstance(value, str):
            raise ValidationError("must be text")
        return value


class Int(mf.Field):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("must be a whole number")
        return value


class Number(mf.Field):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValidationError("must be a number or a date")
        return value


class Seconds(mf.Field):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError("must be a number of seconds")
        return value


class LabelField(mf.Field):
    """A plain string, or a map language → text."""

    refusal = "must be text, or a map of language → text such as {en: Deal}"

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            return value
        if (
            isinstance(value, Mapping)
            and value
            and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        ):
            return value
        raise ValidationError(self.refusal)


class Names(mf.Field):
    """One name or a list of names."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        raise ValidationError("must be a name or a list of names")


class NameList(mf.Field):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        raise ValidationError("must be a list of names")


class MapOf(mf.Field):
    """A map whose entries the walker checks one by one."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, Mapping):
            raise ValidationError("must be a map of names")
        return value


class WhereMap(mf.Field):
    """``where:`` of a ref: target field → a field of this record, or a filter condition."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if (
            isinstance(value, Mapping)
            and value
            and all(isinstance(k, str) for k in value)
            and all(isinstance(v, (str, Mapping)) for v in value.values())
        ):
            return value
        raise ValidationError(
            "must be a map of the target's fields to fields of this record or to "
            "conditions, e.g. {customer: customer, stage: {nin: [won, lost]}}"
        )


class AnyValue(mf.Field):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        return value


def _range(low: float, high: float) -> validate.Range:
    return validate.Range(min=low, max=high, error="must be between {min} and {max}, not {input}")


def _one_of(*choices: str) -> validate.OneOf:
    return validate.OneOf(choices, error="must be one of {choices}, not `{input}`")


class Strict(Schema):
    class Meta:
        unknown = RAISE


class SettingsSchema(Strict):
    """The base of a plugin's settings schema (``crm_settings_schema``): an
    unknown key is refused with the closest known one as a hint, and a field's
    ``ValidationError`` becomes one problem at the setting's place (for a list,
    ``{index: [message]}`` places it at that item)."""


#: the values config.yaml read from the environment, while plugin settings are loaded
ENV_VALUES: ContextVar[frozenset[str]] = ContextVar("ENV_VALUES", default=frozenset())


class Secret(mf.String):
    """A password, token or key in a plugin's settings: accepted only as a
    ``${NAME}`` reference to an environment variable, never as the value
    itself, so that no secret sits in a configuration's files. The engine
    tells the schema which values came from the environment (``ENV_VALUES``,
    set while a plugin's settings are loaded)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if text not in ENV_VALUES.get():
            raise ValidationError(
                "is a secret: write it as `${NAME}`, an environment variable that holds it, "
                "not the value itself"
            )
        return text


class FieldSchema(Strict):
    type = Text(required=True)
    label = LabelField()
    required = StrictBool()
    default = AnyValue(allow_none=True)
    unique = UniqueOption()
    index = StrictBool()
    help = LabelField()
    readonly = StrictBool()
    hidden = StrictBool()
    min = Number()
    max = Number()
    compute = Text()
    max_length = Int(validate=_range(1, 10_000))
    pattern = Text()
    digits = Int(validate=_range(1, 38))
    places = Int(validate=_range(0, 20))
    values = AnyValue()
    to = Text()
    where = WhereMap()
    fields = MapOf()  # type: ignore[assignment]  # see MARSHMALLOW_NAMES


class NumberingSchema(Strict):
    prefix = Text(required=True)
    width = Int(required=True, validate=_range(1, 20))
    field = Text()


class ListSchema(Strict):
    columns = NameList(required=True)
    search = NameList()
    filters = NameList()
    order = Text()


class SectionSchema(Strict):
    label = LabelField()
    fields = NameList(required=True)  # type: ignore[assignment]  # see MARSHMALLOW_NAMES


class FormSchema(Strict):
    sections = mf.List(mf.Nested(SectionSchema), required=True)


class KanbanSchema(Strict):
    by = Text(required=True)
    amount = Text()


class CalendarSchema(Strict):
    date = Text(required=True)
    owner = Text()
    end = Text()
    #: the entries are a person's work: they add to the day's load on every
    #: other calendar marked ``load`` too (interactions, tasks)
    load = StrictBool()  # type: ignore[assignment]  # see MARSHMALLOW_NAMES


class ViewsSchema(Strict):
    kanban = mf.Nested(KanbanSchema)
    calendar = mf.Nested(CalendarSchema)


class AccessRule(mf.Field):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool) or value in ("own", "all"):
            return value
        raise ValidationError("must be true, false, own or all")


class AccessSchema(Strict):
    read = AccessRule()
    create = AccessRule()
    update = AccessRule()
    delete = AccessRule()
    #: field → none/read/write; `crm check` verifies the names and levels
    fields = MapOf()  # type: ignore[assignment]  # see MARSHMALLOW_NAMES


class NextLink(LabelField):
    """a field name, or a map: field of the next document → field of this one (or `self`)"""

    refusal = (
        "must be a field name, or a map of the next document's fields to this one's "
        "(or `self`), e.g. {customer: buyer, property: self}"
    )


class RequireNextSchema(Strict):
    document = Text(required=True)
    min = Int(validate=_range(1, 100))
    link = NextLink(required=True)


class EditableSchema(Strict):
    roles = NameList(required=True)
    fields = NameList()  # type: ignore[assignment]  # see MARSHMALLOW_NAMES


class Editable(mf.Field):
    """what a user may still change in a state: true, false, a list of fields,
    or {roles: [...], fields: [...]}"""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        if isinstance(value, Mapping):
            return EditableSchema().load(value)
        raise ValidationError(
            "must be true, false, a list of fields, or {roles: [...], fields: [...]}"
        )


class StateSchema(Strict):
    label = LabelField()
    final = StrictBool()
    editable = Editable()
    outcome = Text(validate=_one_of("won", "lost", "cancelled", "done"))
    require = NameList()
    require_next = mf.Nested(RequireNextSchema)
    after = Text()


class TransitionSchema(Strict):
    # "from" is a Python keyword: the schema reads it through data_key.
    from_ = Names(required=True, data_key="from")
    to = Names(required=True)
    roles = NameList()
    when = Text()


class ControlSchema(Strict):
    # required once all layers are merged; `crm check` says so
    field = Text()
    process = NameList()
    free = NameList()
    #: value → list of states; `crm check` verifies the names
    stages = MapOf()


class StatusesSchema(Strict):
    field = Text()
    # required of the layer that first defines the statuses; the loader checks that
    initial = Text()
    states = MapOf()
    transitions = mf.List(mf.Nested(TransitionSchema))
    control = mf.Nested(ControlSchema)


class DocumentSchema(Strict):
    label = LabelField()
    menu = LabelField()
    numbering = mf.Nested(NumberingSchema)
    title = Text()
    owner = Text()
    fields = MapOf()  # type: ignore[assignment]  # see MARSHMALLOW_NAMES
    list = mf.Nested(ListSchema)
    form = mf.Nested(FormSchema)
    views = mf.Nested(ViewsSchema)
    access = MapOf()
    statuses = mf.Nested(StatusesSchema)


class RoleSchema(Strict):
    label = LabelField()


class SegmentSchema(Strict):
    document = Text(required=True)
    label = LabelField()
    filter = MapOf(required=True)


class ReportSchema(Schema):
    """Reports take options by type; the report's own check reads them."""

    class Meta:
        unknown = "include"

    type = Text(required=True)
    document = Text(required=True)
    label = LabelField()
    roles = NameList()
    filter = MapOf()


class DashboardSchema(Strict):
    """A home page for some roles (``dashboards: NAME:``); a later layer's entry
    of the same name adds or replaces cards by name, and ``NAME: null`` removes one."""

    label = LabelField()
    roles = NameList()
    order = Int()
    cards = MapOf()


class CardSchema(Strict):
    """One card of a dashboard: exactly one of ``count``, ``sum``, ``report``."""

    count = Text()
    sum = Text()
    report = Text()
    field = Text()
    filter = MapOf()
    params = MapOf()
    show = Text(validate=_one_of("kpi", "chart", "table"))
    value = Text()
    label = LabelField()
    tone = Text(validate=_one_of("good", "bad", "warn", "none"))


class NeedsSchema(Strict):
    """``needs:`` of a metadata file: it counts only when these layers are loaded."""

    layers = NameList(required=True)


class FileSchema(Strict):
    """A metadata file: the engine's sections; the loader adds the plugins' (``crm_sections``)."""

    needs = mf.Nested(NeedsSchema)
    documents = MapOf()
    attributes = MapOf()
    roles = MapOf()
    segments = MapOf()
    reports = MapOf()
    dashboards = MapOf()


class JobsSchema(Strict):
    """The job runner (docs/jobs.md)."""

    runner = Text(validate=_one_of("in-process", "external"))
    interval = Seconds(validate=_range(0.1, 3600))
    lease = Int(validate=_range(1, 86_400))
    max_attempts = Int(validate=_range(1, 100))
    budget = Int(validate=_range(1, 86_400))


def _rate_limits(value: str) -> None:
    from limits import parse_many

    try:
        parse_many(value)
    except ValueError:
        raise ValidationError(
            f"must read like `5 per 15 minutes; 20 per day`, not `{value}`"
        ) from None


class SecuritySchema(Strict):
    """Sign-in and sessions (engine/sessions.py)."""

    https = StrictBool()
    proxies = Int(validate=_range(0, 10))
    redis = Text()
    account_limit = Text(validate=_rate_limits)
    address_limit = Text(validate=_rate_limits)
    password_min_length = Int(validate=_range(6, 128))


class LimitsSchema(Strict):
    """Limits on what users write (docs/security.md)."""

    text_length = Int(validate=_range(1, 10_000_000))


class ImportsSchema(Strict):
    """How big a file an import reads (engine/transfer/readers.py ``Limits``)."""

    max_rows = Int(validate=_range(1, 100_000_000))
    max_columns = Int(validate=_range(1, 16_384))
    max_cell = Int(validate=_range(1, 64 * 1024 * 1024))
    max_megabytes = Int(validate=_range(1, 100_000))


class ConfigSchema(Strict):
    name = Text(required=True)
    locale = Text(validate=_one_of("ru", "en"))
    region = Text(
        validate=validate.Length(equal=2, error="must be two letters such as RU, not `{input}`")
    )
    timezone = Text()
    layers = NameList()
    plugins = MapOf()
    database = Text()
    settings = MapOf()
    jobs = mf.Nested(JobsSchema)
    security = mf.Nested(SecuritySchema)
    limits = mf.Nested(LimitsSchema)
    imports = mf.Nested(ImportsSchema)


@functools.cache
def _instance(cls: type[Schema]) -> Schema:
    return cls()


def check(schema: Schema | type[Schema], data: Any, loc: Loc, what: str) -> list[Problem]:
    """Validate one level of YAML; messages come back with the YAML's location.

    Given a class, one instance of it serves every check: a marshmallow schema
    keeps no state between loads, and making one deep-copies its declared
    fields (half of a configuration's loading time, once per field and state).

    ``what`` names the thing for the consultant (``the field `Deal.amount```);
    messages about nested maps and list items extend it (```views.kanban` of
    the document type `Deal```, ``transition 2 of ...``).
    """
    if isinstance(schema, type):
        schema = _instance(schema)
    if not isinstance(data, Mapping):
        return [Problem(loc, f"{what} must be a map of keys, not {_kind(data)}")]
    try:
        schema.load(dict(data))
    except ValidationError as exc:
        return _problems(schema, exc.messages, data, loc, what, "")
    return []


def _kind(value: Any) -> str:
    """How a wrong value is named in a message: short, and never a whole document."""
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, (int, float)):
        return f"the number `{value}`"
    if isinstance(value, Mapping):
        return "a map"
    text = str(value)
    return f"`{text[:40]}…`" if len(text) > 40 else f"`{text}`"


def _field_of(schema: Schema | None, key: Any) -> mf.Field | None:
    if schema is None:
        return None
    if key in schema.fields and schema.fields[key].data_key in (None, key):
        return schema.fields[key]
    return next((f for f in schema.fields.values() if f.data_key == key), None)


def _inside(what: str, path: str) -> str:
    return f"`{path}` of {what}" if path else what


def _problems(
    schema: Schema | None, messages: Any, data: Any, loc: Loc, what: str, path: str
) -> list[Problem]:
    """marshmallow's nested messages → problems at the keys and values they are about.

    ``what`` is the top-level thing; ``path`` the dotted keys below it.
    """
    here = _inside(what, path)
    if isinstance(messages, list):
        out: list[Problem] = []
        for m in messages:
            if isinstance(m, str):
                out.append(Problem(loc, f"{here} {_lower(m)}"))
            else:
                out.extend(_problems(schema, m, data, loc, what, path))
        return out
    if not isinstance(messages, Mapping):
        return [Problem(loc, f"{here}: {messages}")]
    known = [f.data_key or name for name, f in schema.fields.items()] if schema else []
    out = []
    for key, value in messages.items():
        if key == "_schema":
            out.append(Problem(loc, f"{here} must be a map of keys, not {_kind(data)}"))
            continue
        if isinstance(data, LMap) and key in data:
            key_loc, val_loc = data.key_loc(key), data.value_loc(key)
        elif isinstance(data, LList) and isinstance(key, int) and 0 <= key < len(data):
            # an item of a list: its message stands at the item
            out += [Problem(data.item_loc(key), f"{here}: {_lower(m)}") for m in _strings(value)]
            continue
        else:
            key_loc = val_loc = loc
        if value == ["Unknown field."]:
            out.append(Problem(key_loc, f"unknown key `{key}` in {here}{did_you_mean(key, known)}"))
            continue
        if value == ["Missing data for required field."]:
            out.append(Problem(loc, f"{here} needs `{key}`"))
            continue
        child = data.get(key) if isinstance(data, Mapping) else None
        f = _field_of(schema, key)
        sub_path = f"{path}.{key}" if path else str(key)
        if isinstance(f, mf.List) and isinstance(f.inner, mf.Nested) and isinstance(value, Mapping):
            items = child if isinstance(child, list) else []
            singular = str(key)[:-1] if str(key).endswith("s") else str(key)
            for index, item_messages in value.items():
                item = items[index] if isinstance(index, int) and index < len(items) else None
                item_loc = child.item_loc(index) if isinstance(child, LList) else val_loc
                item_what = f"{singular} {index + 1} of {_inside(what, path)}"
                out.extend(_problems(f.inner.schema, item_messages, item, item_loc, item_what, ""))
            continue
        if isinstance(value, list) and all(isinstance(m, str) for m in value):
            for m in value:
                out.append(Problem(val_loc, f"{here}: `{key}` {_message(m, f, child)}"))
            continue
        sub_schema = f.schema if isinstance(f, mf.Nested) else None
        out.extend(_problems(sub_schema, value, child, val_loc, what, sub_path))
    return out


def _strings(messages: Any) -> list[str]:
    """marshmallow's messages for one item, flattened to text."""
    if isinstance(messages, str):
        return [messages]
    if isinstance(messages, Mapping):
        return [m for v in messages.values() for m in _strings(v)]
    return [m for v in messages for m in _strings(v)] if isinstance(messages, list) else []


def _message(message: str, f: mf.Field | None, value: Any) -> str:
    """One of marshmallow's messages, reworded; with a hint for a misspelt choice."""
    if message == "Not a valid list.":
        return f"must be a list, not {_kind(value)}"
    if message == "Field may not be null.":
        return "must not be empty"
    if message == "Invalid input type.":
        return f"must be a map of keys, not {_kind(value)}"
    for v in getattr(f, "validators", []):
        if isinstance(v, validate.OneOf) and isinstance(value, str):
            return _lower(message) + did_you_mean(value, [str(c) for c in v.choices])
    return _lower(message)


def _lower(message: str) -> str:
    message = message.rstrip(".")
    if message.startswith("must"):
        return message
    return message[:1].lower() + message[1:]
