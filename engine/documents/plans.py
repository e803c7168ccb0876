"""A save worked out in full before anything is written: the plan of a record
and its table rows, and the shape of a type a plan is made for."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.documents.errors import ValidationFailed
from engine.documents.values import AUDIT
from engine.registry import DocType, Field


@dataclass
class RowPlan:
    """One table row as it will be saved; ``obj`` is the row it keeps, if any."""

    obj: Any | None
    values: dict[str, Any]


@dataclass(frozen=True)
class Duplicate:
    """Another record that holds a value a ``unique`` field gets: refused
    (``unique: true``) or warned of (``unique: warn``)."""

    field: str
    doctype: str
    id: int
    title: str
    message: str

    @property
    def url(self) -> str:
        return f"/{_resource(self.doctype)}/{self.id}"

    def as_json(self) -> dict[str, Any]:
        return {"field": self.field, "message": self.message, "id": self.id, "url": self.url,
                "title": self.title}  # fmt: skip


def _resource(doctype: str) -> str:
    from engine.registry import snake_case

    return snake_case(doctype)


@dataclass
class Plan:
    """A save worked out in full before anything is written.

    ``values`` holds every field of the record as it will be (table fields as
    lists of the rows' value dicts, which are also ``rows[...].values``), so an
    expression over the plan sees the record exactly as it is about to be.
    """

    doctype: DocType
    obj: Any | None
    prefix: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, list[RowPlan]] = field(default_factory=dict)
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    #: ``unique: warn`` fields whose value another record holds
    warnings: dict[str, Duplicate] = field(default_factory=dict)
    #: ``unique: true`` fields refused: the record that holds the value
    duplicates: dict[str, Duplicate] = field(default_factory=dict)

    @property
    def creating(self) -> bool:
        return self.obj is None

    def error(self, path: str, message: str) -> None:
        self.errors.setdefault(self.prefix + path, message)

    def has_error(self, path: str) -> bool:
        return self.prefix + path in self.errors

    def raise_errors(self) -> None:
        if self.errors:
            raise ValidationFailed(self.errors, self.duplicates)


@dataclass(frozen=True)
class Shape:
    doctype: DocType
    #: the fields whose values are checked, tables included
    checked: tuple[Field, ...]
    #: (table field, row field) pairs whose values are unique
    unique_children: tuple[tuple[Field, Field], ...]
    #: whether any field or row field is computed
    computes: bool
    #: the names of the fields a plan holds, in order: all but the audit columns
    names: tuple[str, ...]
    #: the table fields
    tables: tuple[Field, ...]

    @classmethod
    def of(cls, d: DocType) -> Shape:
        fields = list(d.fields.values())
        tables = [f for f in fields if f.type == "table"]
        return cls(
            d,
            tuple(f for f in fields if not f.system and f.name not in AUDIT),
            tuple((f, c) for f in tables for c in f.fields.values() if c.unique and not c.compute),
            any(f.compute for f in fields)
            or any(c.compute for f in tables for c in f.fields.values()),
            tuple(f.name for f in fields if f.type == "table" or f.name not in AUDIT),
            tuple(tables),
        )
