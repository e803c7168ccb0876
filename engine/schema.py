"""Marshmallow schemas for every section of the metadata language.

Each schema checks one level of a YAML object: known keys, value shapes and
types. The walker in :mod:`engine.loader` calls them level by level and turns
their messages into ``file:line:col`` problems; the semantic checks that need
the whole configuration live in :mod:`engine.checks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, validate
from marshmallow import fields as mf

from engine.errors import Loc, Problem, did_you_mean
from engine.yamlload import LList, LMap


class StrictBool(mf.Field):
    """``true``/``false`` only: ``"yes"`` or ``1`` is a mistake, not a boolean."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError("must be true or false")
        return value


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


class LabelField(mf.Field):
    """A plain string, or a map language → text."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            return value
        if (
            isinstance(value, Mapping)
            and value
            and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        ):
            return value
        raise ValidationError("must be text, or a map of language → text such as {en: Deal}")


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


class AnyValue(mf.Field):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        return value


class Strict(Schema):
    class Meta:
        unknown = RAISE


class FieldSchema(Strict):
    type = Text(required=True)
    label = LabelField()
    required = StrictBool()
    default = AnyValue(allow_none=True)
    unique = StrictBool()
    index = StrictBool()
    help = LabelField()
    readonly = StrictBool()
    hidden = StrictBool()
    min = Number()
    max = Number()
    compute = Text()
    max_length = Int(validate=validate.Range(min=1, max=10_000))
    pattern = Text()
    digits = Int(validate=validate.Range(min=1, max=38))
    places = Int(validate=validate.Range(min=0, max=20))
    values = AnyValue()
    to = Text()
    fields = MapOf()


class NumberingSchema(Strict):
    prefix = Text(required=True)
    width = Int(required=True, validate=validate.Range(min=1, max=20))
    field = Text()


class ListSchema(Strict):
    columns = NameList(required=True)
    search = NameList()
    filters = NameList()
    order = Text()


class SectionSchema(Strict):
    label = LabelField()
    fields = NameList(required=True)


class FormSchema(Strict):
    sections = mf.List(mf.Nested(SectionSchema), required=True)


class KanbanSchema(Strict):
    by = Text(required=True)
    amount = Text()


class CalendarSchema(Strict):
    date = Text(required=True)
    owner = Text()
    end = Text()


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


class RequireNextSchema(Strict):
    document = Text(required=True)
    min = Int(validate=validate.Range(min=1, max=100))
    link = Text(required=True)


class StateSchema(Strict):
    label = LabelField()
    final = StrictBool()
    outcome = Text(validate=validate.OneOf(["won", "lost", "cancelled", "done"]))
    require = NameList()
    require_next = mf.Nested(RequireNextSchema)


class TransitionSchema(Strict):
    # "from" is a Python keyword: the schema reads it through data_key.
    from_ = Names(required=True, data_key="from")
    to = Names(required=True)
    roles = NameList()
    when = Text()


class StatusesSchema(Strict):
    field = Text()
    initial = Text(required=True)
    states = MapOf(required=True)
    transitions = mf.List(mf.Nested(TransitionSchema))


class DocumentSchema(Strict):
    label = LabelField()
    numbering = mf.Nested(NumberingSchema)
    title = Text()
    owner = Text()
    fields = MapOf()
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


class FileSchema(Strict):
    documents = MapOf()
    attributes = MapOf()
    roles = MapOf()
    processes = MapOf()
    automations = MapOf()
    segments = MapOf()
    reports = MapOf()


class ConfigSchema(Strict):
    name = Text(required=True)
    locale = Text(validate=validate.OneOf(["ru", "en"]))
    region = Text(validate=validate.Length(equal=2))
    timezone = Text()
    layers = NameList()
    plugins = MapOf()
    database = Text()
    settings = MapOf()


def check(schema: Schema, data: Any, loc: Loc, what: str) -> list[Problem]:
    """Validate one level of YAML; messages come back with the YAML's location."""
    if not isinstance(data, Mapping):
        return [Problem(loc, f"{what} must be a map of keys")]
    try:
        schema.load(dict(data))
    except ValidationError as exc:
        return _problems(schema, exc.messages, data, loc)
    return []


def _problems(schema: Schema, messages: Any, data: Any, loc: Loc) -> list[Problem]:
    out: list[Problem] = []
    if isinstance(messages, list):
        for m in messages:
            if isinstance(m, str):
                out.append(Problem(loc, m))
            else:
                out.extend(_problems(schema, m, data, loc))
        return out
    if not isinstance(messages, Mapping):
        return [Problem(loc, str(messages))]
    known = [f.data_key or name for name, f in schema.fields.items()] if schema else []
    for key, value in messages.items():
        if isinstance(data, LMap) and key in data:
            key_loc, val_loc = data.key_loc(key), data.value_loc(key)
        elif isinstance(data, LList) and isinstance(key, int):
            key_loc = val_loc = data.item_loc(key)
        else:
            key_loc = val_loc = loc
        if value == ["Unknown field."]:
            out.append(Problem(key_loc, f"unknown key `{key}`{did_you_mean(key, known)}"))
            continue
        if value == ["Missing data for required field."]:
            out.append(Problem(loc, f"`{key}` is required"))
            continue
        sub_schema = None
        child = (
            data.get(key)
            if isinstance(data, Mapping)
            else (
                data[key]
                if isinstance(data, list) and isinstance(key, int) and key < len(data)
                else None
            )
        )
        if schema is not None and key in schema.fields:
            f = schema.fields[key]
        else:
            f = next(
                (f for f in (schema.fields.values() if schema else []) if f.data_key == key), None
            )
        if isinstance(f, mf.Nested):
            sub_schema = f.schema
        elif isinstance(f, mf.List) and isinstance(f.inner, mf.Nested):
            sub_schema = f.inner.schema
            if isinstance(value, Mapping):
                for index, item_messages in value.items():
                    item = child[index] if isinstance(child, list) and index < len(child) else None
                    item_loc = child.item_loc(index) if isinstance(child, LList) else val_loc
                    out.extend(_problems(sub_schema, item_messages, item, item_loc))
                continue
        if isinstance(value, list) and all(isinstance(m, str) for m in value):
            for m in value:
                out.append(Problem(val_loc, f"`{key}` {_lower(m)}"))
        else:
            out.extend(_problems(sub_schema, value, child, val_loc))
    return out


def _lower(message: str) -> str:
    message = message.rstrip(".")
    if message.startswith("must"):
        return message
    return message[:1].lower() + message[1:]
