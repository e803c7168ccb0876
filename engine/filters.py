"""Structured filters → SQL.

``{segment: A, revenue_12m: {gte: 1000000}, manager.department: Sales,
email: {set: true}}`` becomes one SQLAlchemy WHERE clause: comparisons on
indexed columns, dotted names as ``IN (SELECT id ...)`` subqueries through
refs. Never a Python loop over rows. The same code checks a filter at
``crm check`` time, so a typo in a segment is a file:line error.

Semantics worth knowing:

* ``ne``, ``nin`` and ``set: false`` are exactly "not ``eq``", "not ``in``"
  and "not ``set: true``": an empty value (NULL) matches them. Through a
  dotted name an empty link counts as an empty value, so
  ``manager.department: {ne: Sales}`` also matches deals without a manager.
* ``null`` in ``eq`` or ``in`` matches empty values; ``set`` treats an empty
  string in a text field as not set.
* a ref compared with a non-numeric string matches the target's name field
  (``customer: Romashka``); ``current_user`` is the acting user's id, and
  matches nothing when there is none.
* relative dates (``today``, ``now``, ``-30d``, ``+2w``, ``-6h``) are taken on
  the company's calendar (``timezone`` in config.yaml). On a datetime field a
  day (``today``, ``-30d``, ``2026-01-31``) means the whole day: ``eq`` matches
  any moment of it, ``lte`` and the upper end of ``between`` include it.
* ``between: [a, null]`` is open at the empty end.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa

from engine import access, clock
from engine.access import Principal
from engine.errors import Loc, Problem, a_or_an, did_you_mean
from engine.fieldtypes import CORE_TYPES, MAX_ID, Context, Invalid
from engine.i18n import gettext
from engine.registry import USER, DocType, Field, Registry

if TYPE_CHECKING:
    from engine.models import Models

OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "nin", "contains", "set", "between")
ORDERED = {"integer", "decimal", "money", "date", "datetime", "string"}
TEXTUAL = {"string", "text", "phone", "email", "url"}
RELATIVE = re.compile(r"^([+-]?\d+)([hdw])$")
#: the operator a negative operator negates
NEGATES = {"ne": "eq", "nin": "in"}
_TYPES = {t.name: t for t in CORE_TYPES}
#: how far a relative date (``-30d``) may go: about a thousand years, in hours
RELATIVE_HOURS = 1000 * 366 * 24
_HOURS = {"h": 1, "d": 24, "w": 24 * 7}
_DATE_ONLY = re.compile(r"^\s*(\d{4}-\d{2}-\d{2}|\d{2}\.\d{2}\.\d{4})\s*$")


def escape_like(text: str) -> str:
    """``text`` for a LIKE pattern with ``escape="\\"``: its wildcards match themselves."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class FilterError(ValueError):
    """A filter given at run time (a list's query string, a REST call) is wrong."""


@dataclass(frozen=True)
class Clause:
    path: str
    op: str
    value: Any


def parse(spec: Mapping[str, Any]) -> list[Clause]:
    if not isinstance(spec, Mapping):
        raise FilterError("a filter must be a map of field → condition")
    clauses: list[Clause] = []
    for path, cond in spec.items():
        if isinstance(cond, Mapping):
            if not cond:
                raise FilterError(f"`{path}`: an empty condition")
            for op, value in cond.items():
                clauses.append(Clause(str(path), str(op), value))
        elif isinstance(cond, (list, tuple)):
            clauses.append(Clause(str(path), "in", list(cond)))
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


def user_name(users: Any) -> sa.ColumnElement[str]:
    """A user as people name them, in SQL: first and last name, the login
    when no name is set (``users`` is the User table or an alias of it)."""
    full = sa.func.trim(
        sa.func.coalesce(users.c.first_name, "") + " " + sa.func.coalesce(users.c.last_name, "")
    )
    return sa.func.coalesce(sa.func.nullif(full, ""), users.c.username)


def label_column(d: DocType, table: Any) -> sa.ColumnElement[Any] | None:
    """The SQL expression a record of ``d`` is named by in lists, filters and
    files: a user's name (:func:`user_name`), else the :func:`label_field`."""
    if d.name == USER:
        return user_name(table)
    lf = label_field(d)
    return table.c[lf.column] if lf is not None else None


def _target(registry: Registry, d: DocType, f: Field) -> DocType:
    target = registry.documents.get(f.to or USER)
    if target is None:
        raise FilterError(f"`{d.name}.{f.name}` refers to an unknown type `{f.to}`")
    return target


def resolve_path(registry: Registry, d: DocType, path: str) -> list[tuple[DocType, Field]]:
    """The types and fields a dotted path passes through, or FilterError."""
    out: list[tuple[DocType, Field]] = []
    current = d
    parts = path.split(".")
    for i, part in enumerate(parts):
        f = current.fields.get(part)
        if f is not None and not f.stored:
            raise FilterError(
                f"`{current.name}.{part}` is a table: a filter compares a field of the record"
            )
        if f is None:
            hint = did_you_mean(part, [n for n, x in current.fields.items() if x.stored])
            raise FilterError(f"`{current.name}` has no field `{part}`{hint}")
        out.append((current, f))
        if i < len(parts) - 1:
            if f.type != "ref":
                raise FilterError(
                    f"`{current.name}.{part}` is not a reference, so `{path}` cannot follow it"
                )
            current = _target(registry, current, f)
    return out


def _is_relative(f: Field, value: Any) -> bool:
    return (
        f.type in ("date", "datetime")
        and isinstance(value, str)
        and (value in ("today", "now") or RELATIVE.match(value) is not None)
    )


def _is_label(f: Field, value: Any) -> bool:
    """A ref compared with a name rather than an id."""
    return (
        f.type == "ref"
        and isinstance(value, str)
        and value != "current_user"
        and not value.strip().isdigit()
    )


def _value(registry: Registry, d: DocType, f: Field, value: Any, op: str) -> Any:
    """A filter value in the column's type; relative dates, labels and
    ``current_user`` stay symbolic."""
    if value is None:
        return None
    if _is_relative(f, value):
        match = RELATIVE.match(value)
        if match and (
            len(match.group(1)) > 12
            or abs(int(match.group(1))) * _HOURS[match.group(2)] > RELATIVE_HOURS
        ):
            raise FilterError(
                f"`{f.name}`: `{value}` is too far from today: a relative date goes "
                "at most 1000 years back or ahead"
            )
        return value
    if f.type == "ref":
        if value == "current_user":
            if f.to not in (None, USER):
                raise FilterError(
                    f"`current_user` is a user: `{f.name}` refers to `{f.to}`, not to User"
                )
            return value
        if _is_label(f, value):
            target = _target(registry, d, f)
            if label_field(target) is None:
                raise FilterError(
                    f"`{target.name}` has no name field to match `{value}` against; use an id"
                )
            return value.strip()
    if op == "contains":
        return str(value)
    if isinstance(value, (list, tuple, Mapping)):
        raise FilterError(f"`{f.name}`: `{value}` is not one value")
    mismatch = _kind_mismatch(f, value)
    if mismatch:
        raise FilterError(mismatch)
    ftype = _TYPES.get(f.type)
    if f.type == "datetime" and _date_only(value):
        ftype = _TYPES["date"]  # a whole day: see _Compiler.value
    if ftype is None:
        return value
    try:
        normal = ftype.normalize(value, f, Context(registry.settings.get("region", "RU")))
    except Invalid as exc:
        hint = ", or today, now, -30d, +2w" if f.type in ("date", "datetime") else ""
        raise FilterError(f"`{f.name}`: `{value}` {exc}{hint}") from exc
    except (ArithmeticError, TypeError, ValueError) as exc:  # 1e1000 for money, .inf for a ref
        raise FilterError(f"`{f.name}`: `{value}` is not a valid {f.type} value") from exc
    # the id and the version are 32-bit columns: a larger number must not reach the database
    if f.system and f.type == "integer" and not -MAX_ID - 1 <= normal <= MAX_ID:
        what = "a record id" if f.name == "id" else f"a `{f.name}` number"
        raise FilterError(f"`{f.name}`: `{value}` is not {what} (at most {MAX_ID})")
    return normal


#: what a field of each kind is compared with, for the messages
_TAKES = {
    "integer": "a whole number",
    "decimal": "a number",
    "money": "a number",
}


def _kind_mismatch(f: Field, value: Any) -> str | None:
    """Why ``value``, as written (YAML or JSON), cannot be compared with ``f``:
    a number, a yes/no or a date given to a text field, a yes/no, a date or a
    fraction to a number that takes none. Text is left to the field type, which reads
    numbers and dates written as text the way a form does."""
    if isinstance(value, str) or value is None:
        return None
    if isinstance(value, bool):
        given = f"the yes/no value `{str(value).lower()}`"
    elif isinstance(value, (dt.date, dt.datetime)):
        given = f"the date `{value}`"
    elif isinstance(value, (int, float, decimal.Decimal)):
        given = f"the number `{value}`"
    else:
        given = f"`{value}`"
    if f.type in TEXTUAL - {"phone"}:  # a phone may be written as digits
        takes = "text"
        fits = False
    elif f.type in _TAKES:
        takes = _TAKES[f.type]
        fits = isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool)
        if fits and f.type == "integer" and not isinstance(value, int):
            fits = value == int(value) if math.isfinite(value) else False
    else:
        return None
    if fits:
        return None
    return f"`{f.name}` is {a_or_an(f.type)} field and takes {takes}, not {given}"


def _validate(registry: Registry, d: DocType, clause: Clause) -> list[tuple[DocType, Field]]:
    chain = resolve_path(registry, d, clause.path)
    _, f = chain[-1]
    op, value = clause.op, clause.value
    if op not in OPERATORS:
        raise FilterError(
            f"unknown operator `{op}`{did_you_mean(op, OPERATORS)}; operators are {', '.join(OPERATORS)}"
        )
    if op in ("lt", "lte", "gt", "gte", "between") and f.type not in ORDERED:
        raise FilterError(f"`{op}` does not apply to the {f.type} field `{clause.path}`")
    if op == "contains" and f.type not in TEXTUAL:
        raise FilterError(
            f"`contains` applies to text fields, not to the {f.type} field `{clause.path}`"
        )
    if op == "set":
        if not isinstance(value, bool):
            raise FilterError(f"`set` takes true or false, not `{value}`")
        return chain
    if op in ("in", "nin"):
        if not isinstance(value, (list, tuple)) or not value:
            raise FilterError(f"`{op}` takes a list of values")
        for v in value:
            _value(registry, d, f, v, op)
        return chain
    if op == "between":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise FilterError("`between` takes two values: [from, to]")
        if value[0] is None and value[1] is None:
            raise FilterError("`between` needs at least one of its two ends")
        for v in value:
            _value(registry, d, f, v, op)
        return chain
    if isinstance(value, (list, tuple, Mapping)):
        raise FilterError(f"`{op}` takes one value")
    if op == "contains" and value is None:
        raise FilterError("`contains` takes a text")
    if value is None and op in ("lt", "lte", "gt", "gte"):
        raise FilterError(f"`{op}` takes a value, not null")
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


# --- compiling -------------------------------------------------------------------------


def compile_filter(
    models: Models,
    doctype: str,
    spec: Mapping[str, Any],
    user_id: int | None = None,
    now: dt.datetime | None = None,
    principal: Principal | None = None,
) -> sa.ColumnElement[bool]:
    """One WHERE clause for ``spec`` on ``doctype``; raises FilterError with a message.

    With a ``principal``, a dotted name or a name given for a ref sees only the
    targets the principal may read: a hidden target is an empty link."""
    registry = models.registry
    d = registry.documents.get(doctype)
    if d is None:
        raise FilterError(
            f"unknown document type `{doctype}`{did_you_mean(doctype, registry.documents)}"
        )
    now = now or clock.now()
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    compiler = _Compiler(models, user_id, now, principal)
    conditions = []
    for clause in parse(spec):
        chain = _validate(registry, d, clause)
        if principal is not None:
            hidden = access.hidden_path(registry, principal, doctype, clause.path)
            if hidden is not None:
                raise FilterError(
                    gettext("you may not filter on `%(path)s`: `%(field)s` is hidden from you",
                            path=clause.path, field=hidden)
                )  # fmt: skip
        conditions.append(compiler.clause(chain, clause))
    return sa.and_(sa.true(), *conditions)


@dataclass(frozen=True)
class _Day:
    """A whole day on the company's calendar, as UTC moments [start, end)."""

    start: dt.datetime
    end: dt.datetime


class _Compiler:
    def __init__(
        self,
        models: Models,
        user_id: int | None,
        now: dt.datetime,
        principal: Principal | None = None,
    ):
        self.models = models
        self.principal = principal
        self.registry = models.registry
        self.user_id = user_id
        self.now = now
        try:
            self.tz: dt.tzinfo = ZoneInfo(str(self.registry.settings.get("timezone") or "UTC"))
        except (ZoneInfoNotFoundError, ValueError):
            self.tz = dt.UTC

    def column(self, d: DocType, f: Field) -> Any:
        return self.models.metadata.tables[d.table].c[f.column]

    def clause(self, chain: list[tuple[DocType, Field]], clause: Clause) -> sa.ColumnElement[bool]:
        op, value = clause.op, clause.value
        negated = op in NEGATES or (op == "set" and value is False)
        positive = Clause(clause.path, NEGATES.get(op, op), True if op == "set" else value)
        cond, matches_null = self.chain(chain, positive)
        if not negated:
            return cond
        if matches_null:
            return sa.not_(cond)
        d, f = chain[0]
        return sa.or_(sa.not_(cond), self.column(d, f).is_(None))

    def chain(
        self, chain: list[tuple[DocType, Field]], clause: Clause
    ) -> tuple[sa.ColumnElement[bool], bool]:
        """The condition and whether it matches an empty value; through a ref,
        ``ref IN (SELECT id FROM target WHERE ...)``."""
        (d, f), rest = chain[0], chain[1:]
        column = self.column(d, f)
        if not rest:
            return self.condition(d, f, column, clause)
        target = _target(self.registry, d, f)
        target_table = self.models.metadata.tables[target.table]
        inner, matches_null = self.chain(rest, clause)
        seen = access.visible(self.models, self.principal, target.name, target_table)
        cond = column.in_(sa.select(target_table.c.id).where(inner, seen))
        if matches_null:  # an empty link is an empty value
            cond = sa.or_(cond, column.is_(None))
        return cond, matches_null

    # -- one field ----------------------------------------------------------------

    def condition(
        self, d: DocType, f: Field, column: Any, clause: Clause
    ) -> tuple[sa.ColumnElement[bool], bool]:
        op = clause.op
        if op == "set":
            cond = column.is_not(None)
            if f.type in TEXTUAL:
                cond = sa.and_(cond, column != "")
            return cond, False
        if op == "contains":
            text = escape_like(str(clause.value))
            return sa.func.lower(column).like(f"%{text.lower()}%", escape="\\"), False
        if op == "in":
            return self.one_of(d, f, column, clause.value)
        if op == "between":
            low, high = (self.value(d, f, v, op) for v in clause.value)
            parts = []
            if low is not None:
                parts.append(self.compare(column, "gte", low))
            if high is not None:
                parts.append(self.compare(column, "lte", high))
            return sa.and_(*parts), False
        # eq, lt, lte, gt, gte: one value
        if op == "eq" and clause.value is None:
            return column.is_(None), True
        if op == "eq" and _is_label(f, clause.value):
            return column.in_(self.by_label(d, f, [clause.value])), False
        v = self.value(d, f, clause.value, op)
        if f.type == "ref" and clause.value == "current_user" and v is None:
            return sa.false(), False
        return self.compare(column, op, v), False

    def one_of(
        self, d: DocType, f: Field, column: Any, values: list[Any]
    ) -> tuple[sa.ColumnElement[bool], bool]:
        labels = [v for v in values if _is_label(f, v)]
        others = [self.value(d, f, v, "in") for v in values if not _is_label(f, v)]
        matches_null = any(v is None for v in values)
        plain = [v for v in others if v is not None and not isinstance(v, _Day)]
        days = [v for v in others if isinstance(v, _Day)]
        parts: list[sa.ColumnElement[bool]] = []
        if plain:
            parts.append(column.in_(list(dict.fromkeys(plain))))
        parts += [self.compare(column, "eq", day) for day in days]
        if labels:
            parts.append(column.in_(self.by_label(d, f, labels)))
        if matches_null:
            parts.append(column.is_(None))
        if not parts:  # only `current_user`, and no user
            return sa.false(), False
        return sa.or_(*parts), matches_null

    def compare(self, column: Any, op: str, v: Any) -> sa.ColumnElement[bool]:
        if isinstance(v, _Day):
            return {
                "eq": lambda: sa.and_(column >= v.start, column < v.end),
                "lt": lambda: column < v.start, "lte": lambda: column < v.end,
                "gt": lambda: column >= v.end, "gte": lambda: column >= v.start,
            }[op]()  # fmt: skip
        return {
            "eq": lambda: column == v,
            "lt": lambda: column < v, "lte": lambda: column <= v,
            "gt": lambda: column > v, "gte": lambda: column >= v,
        }[op]()  # fmt: skip

    def by_label(self, d: DocType, f: Field, labels: list[Any]) -> sa.Select[Any]:
        target = _target(self.registry, d, f)
        lf = label_field(target)
        assert lf is not None  # _validate refused the filter otherwise
        table = self.models.metadata.tables[target.table]
        names = list(dict.fromkeys(str(v).strip() for v in labels))
        column = table.c[lf.column]
        where = column == names[0] if len(names) == 1 else column.in_(names)
        if target.name == USER:  # a user by their login or by their name
            where = sa.or_(where, user_name(table).in_(names))
        seen = access.visible(self.models, self.principal, target.name, table)
        return sa.select(table.c.id).where(where, seen)

    # -- values -------------------------------------------------------------------

    def value(self, d: DocType, f: Field, raw: Any, op: str) -> Any:
        """A value ready for SQL: None, a value of the column's type, or a
        whole day (_Day) for a date given to a datetime field."""
        v = _value(self.registry, d, f, raw, op)
        if f.type == "ref" and v == "current_user":
            return self.user_id
        if _is_relative(f, v):
            try:
                return self.relative(f, v)
            except OverflowError as exc:  # past year 9999 or before year 1
                raise FilterError(f"`{f.name}`: `{v}` is too far from today") from exc
        if f.type == "datetime" and isinstance(v, dt.date) and not isinstance(v, dt.datetime):
            return self.day(v)
        return v

    def local_now(self) -> dt.datetime:
        return self.now.astimezone(self.tz)

    def day(self, day: dt.date) -> _Day:
        start = dt.datetime.combine(day, dt.time(), self.tz)
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), self.tz)
        return _Day(start.astimezone(dt.UTC), end.astimezone(dt.UTC))

    def relative(self, f: Field, value: str) -> Any:
        moment = self.local_now()
        whole_day = value == "today"
        if value not in ("today", "now"):
            match = RELATIVE.match(value)
            assert match
            amount, unit = int(match.group(1)), match.group(2)
            moment += {"h": dt.timedelta(hours=amount), "d": dt.timedelta(days=amount),
                       "w": dt.timedelta(weeks=amount)}[unit]  # fmt: skip
            whole_day = unit in ("d", "w")
        if f.type == "date":
            return moment.date()
        if whole_day:
            return self.day(moment.date())
        return moment.astimezone(dt.UTC)


def _date_only(raw: Any) -> bool:
    """A day rather than a moment: ``2026-01-31``, ``31.01.2026``, a date object."""
    if isinstance(raw, dt.datetime):
        return False
    if isinstance(raw, dt.date):
        return True
    return isinstance(raw, str) and _DATE_ONLY.match(raw) is not None
