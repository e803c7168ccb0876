"""Small pieces every part of the service (and its callers) uses: the audit
columns, how messages name a thing, comparing and emptiness of values, the
names an expression uses."""

from __future__ import annotations

import datetime as dt
import functools
from decimal import Decimal
from typing import Any

from jinja2 import meta

from engine import expressions
from engine.registry import Label

#: columns every document has; the engine fills them, nobody writes them
AUDIT = ("id", "created_at", "created_by", "updated_at", "updated_by", "version")


NUMBERS = ("integer", "decimal", "money")


#: how deep ``{{ customer }}`` in a title may follow refs to other titles
MAX_TITLE_DEPTH = 3


def quoted(label: Label | str, name: str | None = None, locale: str | None = None) -> str:
    """How messages name a thing: its label, and its name when that differs,
    so the user recognises the form and the consultant finds the YAML."""
    text = label.get(locale) if isinstance(label, Label) else str(label)
    return f"“{text}” ({name})" if name and name != text else f"“{text}”"


def aware(value: dt.datetime) -> dt.datetime:
    """SQLite hands timezone-aware columns back naive; they were stored in UTC."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def same(a: Any, b: Any) -> bool:
    if isinstance(a, dt.datetime) and isinstance(b, dt.datetime):
        return aware(a) == aware(b)
    return bool(a == b)


def empty(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, (list, tuple)) and not value)


@functools.lru_cache(maxsize=4096)
def names_used(source: str, template: bool = False) -> frozenset[str]:
    """The free names of an expression or template (fields, ``doc``, ``user``)."""
    text = source if template else "{{ (" + source + ") }}"
    return frozenset(meta.find_undeclared_variables(expressions.ENV.parse(text)))


class _Invalid:
    """Marks a value that failed to normalize (None is a valid value)."""


INVALID: Any = _Invalid()


def jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return aware(value).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value
