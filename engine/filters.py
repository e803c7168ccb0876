"""Structured filters → SQL.

``{segment: A, revenue_12m: {gte: 1000000}, manager.department: Sales,
email: {set: true}}`` becomes one SQLAlchemy WHERE clause: comparisons on
indexed columns, dotted names as ``IN (SELECT id ...)`` subqueries through
refs. Never a Python loop over rows. The same code checks a filter at
``crm check`` time, so a typo in a segment is a file:line error.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from engine.errors import Loc, Problem, did_you_mean
from engine.fieldtypes import CORE_TYPES, Context, Invalid
from engine.registry import USER, DocType, Field, Registry

if TYPE_CHECKING:
    from engine.models import Models

OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "nin", "contains", "set", "between")
ORDERED = {"integer", "decimal", "money", "date", "datetime", "string"}
TEXTUAL = {"string", "text", "phone", "email", "url"}
RELATIVE = re.compile(r"^([+-]?\d+)([hdw])$")
_TYPES = {t.name: t for t in CORE_TYPES}


class FilterError(ValueError):
    """A filter given at run time (a list's query string, a REST call) is wrong."""


@dataclass(frozen=True)
class Clause:
    path: str
    op: str
    value: Any


def parse(spec: Mapping[str, Any]) -> list[Clause]:
    clauses: list[Clause] = []
    for path, cond in spec.items():
        if isinstance(cond, Mapping):
            if not cond:
                raise FilterError(f"`{path}`: an empty condition")
            for op, value in cond.items():
                clauses.append(Clause(str(path), str(op), value))
        elif isinstance(cond, list):
            clauses.append(Clause(str(path), "in", cond))
        else:
            clauses.append(Clause(str(path), "eq", cond))
    return clauses


def label_field(d: DocType) -> Field | None:
    """The field a person names a record by: ``name``, its number, or the first text in its title."""
    for name in ("name", "username"):
        if name in d.fields and d.fields[name].type in TEXTUAL:
            return d.fields[name]
    if d.numbering:
        return d.fields[d.numbering.field]
    for name in re.findall(r"{{\s*([A-Za-z_][A-Za-z0-9_]*)", d.title or ""):
        f = d.fields.get(name)
        if f is not None and f.type in TEXTUAL:
            return f
    return None


def _resolve(registry: Registry, d: DocType, path: str) -> list[tuple[DocType, Field]]:
    out: list[tuple[DocType, Field]] = []
    current = d
    parts = path.split(".")
    for i, part in enumerate(parts):
        f = current.fields.get(part)
        if f is None or not f.stored:
            hint = did_you_mean(part, [n for n, x in current.fields.items() if x.stored])
            raise FilterError(f"`{current.name}` has no field `{part}`{hint}")
        out.append((current, f))
        if i < len(parts) - 1:
            if f.type != "ref":
                raise FilterError(
                    f"`{current.name}.{part}` is not a reference, so `{path}` cannot follow it"
                )
            current = registry.documents[f.to or USER]
    return out


def _value(registry: Registry, d: DocType, f: Field, value: Any, op: str) -> Any:
    """A filter value in the column's type; relative dates and `current_user` stay symbolic."""
    if value is None:
        return None
    if f.type in ("date", "datetime") and isinstance(value, str):
        if value in ("today", "now") or RELATIVE.match(value):
            return value
    if f.type == "ref":
        if value == "current_user" and f.to == USER:
            return value
        if isinstance(value, str) and not value.isdigit():
            target = registry.documents[f.to or USER]
            if label_field(target) is None:
                raise FilterError(
                    f"`{target.name}` has no name field to match `{value}` against; use an id"
                )
            return value
    if op == "contains":
        if f.type not in TEXTUAL:
            raise FilterError(f"`contains` applies to text fields, not to the {f.type} `{f.name}`")
        return str(value)
    ftype = _TYPES.get(f.type)
    if ftype is None:
        return value
    try:
        return ftype.normalize(value, f, Context(registry.settings.get("region", "RU")))
    except Invalid as exc:
        raise FilterError(f"`{f.name}`: `{value}` {exc}") from exc


def _validate(registry: Registry, d: DocType, clause: Clause) -> list[tuple[DocType, Field]]:
    chain = _resolve(registry, d, clause.path)
    _, f = chain[-1]
    op, value = clause.op, clause.value
    if op not in OPERATORS:
        raise FilterError(
            f"unknown operator `{op}`{did_you_mean(op, OPERATORS)}; operators are {', '.join(OPERATORS)}"
        )
    if op in ("lt", "lte", "gt", "gte", "between") and f.type not in ORDERED:
        raise FilterError(f"`{op}` does not apply to the {f.type} field `{clause.path}`")
    if op == "set":
        if not isinstance(value, bool):
            raise FilterError(f"`set` takes true or false, not `{value}`")
        return chain
    if op in ("in", "nin"):
        if not isinstance(value, list) or not value:
            raise FilterError(f"`{op}` takes a list of values")
        for v in value:
            _value(registry, d, f, v, op)
        return chain
    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise FilterError("`between` takes two values: [from, to]")
        for v in value:
            _value(registry, d, f, v, op)
        return chain
    if isinstance(value, (list, Mapping)):
        raise FilterError(f"`{op}` takes one value")
    _value(registry, d, f, value, op)
    return chain


def check_filter(registry: Registry, d: DocType, spec: Any, loc: Loc) -> Iterator[Problem]:
    """Problems with a filter written in metadata, located at its YAML."""
    if not isinstance(spec, Mapping):
        yield Problem(loc, "a filter must be a map of field → condition")
        return
    try:
        clauses = parse(spec)
    except FilterError as exc:
        yield Problem(loc, f"filter: {exc}")
        return
    getter = getattr(spec, "key_loc", None)
    for clause in clauses:
        try:
            _validate(registry, d, clause)
        except FilterError as exc:
            yield Problem(getter(clause.path) if getter else loc, f"filter on `{d.name}`: {exc}")


def _relative(value: str, f: Field, now: dt.datetime) -> Any:
    if value == "today":
        moment = now.replace(hour=0, minute=0, second=0, microsecond=0)
    elif value == "now":
        moment = now
    else:
        match = RELATIVE.match(value)
        assert match
        amount, unit = int(match.group(1)), match.group(2)
        moment = now + {"h": dt.timedelta(hours=amount), "d": dt.timedelta(days=amount),
                        "w": dt.timedelta(weeks=amount)}[unit]  # fmt: skip
    return moment.date() if f.type == "date" else moment


def compile_filter(
    models: Models,
    doctype: str,
    spec: Mapping[str, Any],
    user_id: int | None = None,
    now: dt.datetime | None = None,
) -> sa.ColumnElement[bool]:
    """One WHERE clause for ``spec`` on ``doctype``; raises FilterError with a message."""
    registry = models.registry
    d = registry.documents[doctype]
    now = now or dt.datetime.now(dt.UTC)
    conditions = []
    for clause in parse(spec):
        chain = _validate(registry, d, clause)
        conditions.append(_compile_chain(models, chain, clause, user_id, now))
    return sa.and_(sa.true(), *conditions)


def _compile_chain(
    models: Models,
    chain: list[tuple[DocType, Field]],
    clause: Clause,
    user_id: int | None,
    now: dt.datetime,
) -> sa.ColumnElement[bool]:
    (d, f), rest = chain[0], chain[1:]
    column = models.metadata.tables[d.table].c[f.column]
    if not rest:
        return _condition(models, d, f, column, clause, user_id, now)
    target = models.registry.documents[f.to or USER]
    target_table = models.metadata.tables[target.table]
    inner = _compile_chain(models, rest, clause, user_id, now)
    return column.in_(sa.select(target_table.c.id).where(inner))


def _condition(
    models: Models,
    d: DocType,
    f: Field,
    column: Any,
    clause: Clause,
    user_id: int | None,
    now: dt.datetime,
) -> sa.ColumnElement[bool]:
    registry = models.registry
    op = clause.op

    def value(v: Any) -> Any:
        v = _value(registry, d, f, v, op)
        if (
            isinstance(v, str)
            and f.type in ("date", "datetime")
            and (v in ("today", "now") or RELATIVE.match(v))
        ):
            return _relative(v, f, now)
        if f.type == "ref" and v == "current_user":
            return user_id
        return v

    def ref_by_label(v: Any) -> Any:
        target = registry.documents[f.to or USER]
        lf = label_field(target)
        assert lf is not None
        table = models.metadata.tables[target.table]
        return sa.select(table.c.id).where(table.c[lf.column] == v)

    def is_label(v: Any) -> bool:
        return f.type == "ref" and isinstance(v, str) and v != "current_user" and not v.isdigit()

    if op == "set":
        empty = column.is_(None)
        if f.type in TEXTUAL:
            empty = sa.or_(empty, column == "")
        return sa.not_(empty) if clause.value else empty
    if op in ("in", "nin"):
        labels = [v for v in clause.value if is_label(v)]
        ids = [value(v) for v in clause.value if not is_label(v)]
        parts = []
        if ids:
            parts.append(column.in_(ids))
        parts += [column.in_(ref_by_label(v)) for v in labels]
        cond = sa.or_(*parts)
        return sa.not_(cond) if op == "nin" else cond
    if op == "between":
        low, high = (value(v) for v in clause.value)
        return column.between(low, high)
    if op == "contains":
        text = str(clause.value).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return sa.func.lower(column).like(f"%{text.lower()}%", escape="\\")
    if is_label(clause.value):
        cond = column.in_(ref_by_label(clause.value))
        return sa.not_(cond) if op == "ne" else cond
    v = value(clause.value)
    if v is None:
        return column.is_(None) if op == "eq" else column.is_not(None)
    return {
        "eq": lambda: column == v, "ne": lambda: sa.or_(column != v, column.is_(None)),
        "lt": lambda: column < v, "lte": lambda: column <= v,
        "gt": lambda: column > v, "gte": lambda: column >= v,
    }[op]()  # fmt: skip
