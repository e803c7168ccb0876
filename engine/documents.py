"""The documents service: every write of a record goes through here.

Web forms, REST, imports, processes and the status engine all call
:class:`Documents`, so a rule (a required field, a unique value, a computed
total, the number sequence, optimistic locking) holds everywhere or nowhere.

A save is *planned* before anything is written: values are normalized,
defaults applied, computed fields recomputed and every rule checked on plain
dicts. Only a plan without errors touches the ORM objects, so a refused save
leaves the session exactly as it was. That needs no savepoint, which matters
because pysqlite's savepoints do not nest inside the caller's transaction.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from jinja2 import meta
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from engine import clock, expressions
from engine.access import Principal
from engine.errors import HandledError
from engine.fieldtypes import Context, Invalid
from engine.filters import label_field
from engine.models import Models
from engine.registry import USER, DocType, Field, Label

#: columns every document has; the engine fills them, nobody writes them
AUDIT = ("id", "created_at", "created_by", "updated_at", "updated_by", "version")
NUMBERS = ("integer", "decimal", "money")
#: how deep ``{{ customer }}`` in a title may follow refs to other titles
MAX_TITLE_DEPTH = 3


class ValidationFailed(HandledError):
    """Values that do not fit their fields, all of them at once, by field path
    (``customer``, ``lines.2.qty``, ``next.0.due``; rows count from 0), so a
    form can show each message next to its input. Nothing has been written."""

    def __init__(self, errors: Mapping[str, str]):
        self.errors = dict(errors)
        super().__init__("; ".join(f"{path}: {message}" for path, message in self.errors.items()))


class StaleVersion(HandledError):
    """Someone saved the record after the user loaded it: overwriting their
    change silently would lose it, so the user is told who and when."""

    def __init__(self, message: str, by: str | None, at: dt.datetime | None, version: int | None):
        self.by = by
        self.at = at
        self.version = version
        super().__init__(message)


class NotFound(HandledError):
    """No record with that id (or the type has none that may be written)."""


class DeleteRefused(HandledError):
    """Other records still refer to the one being deleted."""


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


@dataclass
class RowPlan:
    """One table row as it will be saved; ``obj`` is the row it keeps, if any."""

    obj: Any | None
    values: dict[str, Any]


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

    @property
    def creating(self) -> bool:
        return self.obj is None

    def error(self, path: str, message: str) -> None:
        self.errors.setdefault(self.prefix + path, message)

    def has_error(self, path: str) -> bool:
        return self.prefix + path in self.errors

    def raise_errors(self) -> None:
        if self.errors:
            raise ValidationFailed(self.errors)


@dataclass(frozen=True)
class _Shape:
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
    def of(cls, d: DocType) -> _Shape:
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


class Documents:
    """Create, update and delete records of one configuration, in the caller's
    session and transaction, on behalf of one user.

    ``trusted`` is for the engine itself (processes, imports): it may also set
    ``readonly`` fields, which only forms and the API must leave alone.
    ``now`` fixes the clock (a datetime or a callable), for tests and imports.
    """

    def __init__(
        self,
        models: Models,
        session: Session,
        user_id: int | None = None,
        roles: Iterable[str] = (),
        pm: Any = None,
        now: dt.datetime | Callable[[], dt.datetime] | None = None,
        *,
        username: str = "",
        trusted: bool = False,
    ):
        self.models = models
        self.registry = models.registry
        self.session = session
        self.principal = Principal(user_id, username, frozenset(roles))
        self.pm = pm
        self.trusted = trusted
        self._now = now
        self.type_context = Context(str(self.registry.settings.get("region") or "RU"))
        self._user_view: expressions.DocView | None = None
        self._limits: dict[tuple[int, Any], tuple[Field, Any]] = {}
        self._shapes: dict[str, _Shape] = {}

    @classmethod
    def for_principal(
        cls, models: Models, session: Session, principal: Principal, pm: Any = None, **kw: Any
    ) -> Documents:
        return cls(
            models,
            session,
            principal.user_id,
            principal.roles,
            pm,
            username=principal.username,
            **kw,
        )

    # -- the clock ---------------------------------------------------------------

    @property
    def user_id(self) -> int | None:
        return self.principal.user_id

    @property
    def timezone(self) -> dt.tzinfo:
        try:
            return ZoneInfo(str(self.registry.settings.get("timezone") or "UTC"))
        except (ZoneInfoNotFoundError, ValueError):
            return dt.UTC

    def now(self) -> dt.datetime:
        value = self._now() if callable(self._now) else self._now
        return aware(value) if value is not None else clock.now()

    def today(self) -> dt.date:
        """Today where the company is: a date field means a day on its calendar."""
        return self.now().astimezone(self.timezone).date()

    # -- public API --------------------------------------------------------------

    def get(self, doctype: str, obj_id: int) -> Any | None:
        return self.session.get(self.models.cls(doctype), obj_id)

    def resolve(self, doctype: str, obj_or_id: Any) -> Any:
        """An ORM object from an object or an id; NotFound when there is none."""
        if isinstance(obj_or_id, (int, str)) and not isinstance(obj_or_id, bool):
            text = str(obj_or_id).strip()
            obj = self.get(doctype, int(text)) if text.isdigit() else None
            if obj is None:
                d = self.registry.documents[doctype]
                raise NotFound(
                    f"there is no {quoted(d.label, None, self.registry.locale)} #{obj_or_id}"
                )
            return obj
        return obj_or_id

    def create(self, doctype: str, values: Mapping[str, Any]) -> Any:
        d = self._writable(doctype)
        if d.builtin:
            raise HandledError(f"{quoted(d.label)} records are managed on the security pages")
        p = self.plan(d, None, values)
        p.raise_errors()
        obj = self.write(p)
        self.flush(d, obj)
        self.add_history(d, obj, None, p.values.get(d.statuses.field) if d.statuses else None)
        self.call_hook("crm_document_created", doctype=d, doc=obj)
        return obj

    def update(
        self,
        doctype: str,
        obj_or_id: Any,
        values: Mapping[str, Any],
        expected_version: int | None = None,
    ) -> Any:
        d = self._writable(doctype)
        obj = self.resolve(doctype, obj_or_id)
        self.check_version(d, obj, expected_version)
        p = self.plan(d, obj, values)
        p.raise_errors()
        if not p.changes:
            return obj
        self.write(p)
        self.flush(d, obj)
        self.call_hook("crm_document_updated", doctype=d, doc=obj, changes=p.changes)
        return obj

    def delete(self, doctype: str, obj_or_id: Any, expected_version: int | None = None) -> None:
        d = self._writable(doctype)
        if d.builtin:
            raise HandledError(f"{quoted(d.label)} records are managed on the security pages")
        obj = self.resolve(doctype, obj_or_id)
        self.check_version(d, obj, expected_version)
        self._refuse_if_referenced(d, obj)
        self.call_hook("crm_document_deleted", doctype=d, doc=obj)
        # the ORM deletes loaded rows itself; SQLite does not cascade unless told
        for f in d.fields.values():
            if f.type == "table":
                getattr(obj, f.name)
        if d.name in self.models.histories:
            hist = self.models.histories[d.name].__table__
            self.session.execute(sa.delete(hist).where(hist.c.doc_id == obj.id))
        self.session.delete(obj)
        self.flush(d, obj)

    def to_dict(self, doctype: str, obj: Any, json: bool = False) -> dict[str, Any]:
        """Every field by name (refs as ids, tables as lists of row dicts with
        their ``id``); ``json=True`` turns decimals and dates into strings."""
        d = self.registry.documents[doctype]
        conv: Callable[[Any], Any] = _jsonable if json else (lambda v: v)
        out: dict[str, Any] = {"id": obj.id}
        for f in d.fields.values():
            if f.type == "table":
                out[f.name] = [
                    {
                        "id": row.id,
                        **{c.name: conv(getattr(row, c.column)) for c in f.fields.values()},
                    }
                    for row in getattr(obj, f.name)
                ]
            else:
                out[f.name] = conv(getattr(obj, f.column, None))
        return out

    def title(self, doctype: str, obj: Any) -> str:
        return str(self.view(doctype, obj))

    # -- what expressions see ----------------------------------------------------

    def view(
        self, doctype: str | DocType, source: Any, *, zero: bool = False, depth: int = 0
    ) -> expressions.DocView:
        """A record (an ORM object or a plan's values) as expressions see it:
        refs as views of the referenced record, tables as lists of row views.
        ``zero`` reads empty numbers as 0, like empty cells in a spreadsheet,
        so that ``qty * price`` and ``sum`` work on half-filled rows."""
        d = doctype if isinstance(doctype, DocType) else self.registry.documents[doctype]
        return expressions.DocView(
            source,
            list(d.fields),
            title=lambda v: self._title(d, v, depth),
            wrap=lambda name, raw: self._wrap(d.fields[name], raw, zero, depth),
        )

    def _wrap(self, f: Field, raw: Any, zero: bool, depth: int) -> Any:
        if f.type == "ref":
            target = self._ref_object(f, raw)
            return None if target is None else self.view(f.to or USER, target, depth=depth + 1)
        if f.type == "table":
            return [
                expressions.DocView(
                    row, list(f.fields), wrap=lambda n, v: self._wrap(f.fields[n], v, zero, depth)
                )
                for row in raw or ()
            ]
        if zero and raw is None and f.type in NUMBERS:
            return 0
        return raw

    def _ref_object(self, f: Field, raw: Any) -> Any:
        if raw is None:
            return None
        if isinstance(raw, int) and not isinstance(raw, bool):
            return self.session.get(self.models.cls(f.to or USER), raw)
        return raw

    def _title(self, d: DocType, view: expressions.DocView, depth: int) -> str:
        ident = view["id"] if "id" in d.fields else None
        if d.title and depth <= MAX_TITLE_DEPTH:
            try:
                ctx = self.expression_context(view, d.fields, d.title, template=True)
                text = expressions.render(d.title, ctx).strip()
            except expressions.ExpressionError:
                text = ""
            if text:
                return text
        lf = label_field(d)
        if lf is not None and view[lf.name]:
            return str(view[lf.name])
        return f"{d.label.get(self.registry.locale)} #{ident}" if ident else ""

    def user_view(self) -> expressions.DocView | None:
        """The acting user's record, as ``user`` in expressions."""
        if self._user_view is None and self.user_id is not None:
            obj = self.session.get(self.models.cls(USER), self.user_id)
            if obj is not None:
                self._user_view = self.view(USER, obj)
        return self._user_view

    def expression_context(
        self,
        view: expressions.DocView,
        fields: Iterable[str],
        source: str,
        template: bool = False,
    ) -> dict[str, Any]:
        """The names ``source`` uses, and only those: reading every field
        of a record would load every ref it has."""
        used = names_used(source, template)
        ctx: dict[str, Any] = {name: view[name] for name in fields if name in used}
        ctx.update(doc=view, now=self.now())
        ctx["user"] = self.user_view() if "user" in used else None
        return ctx

    # -- planning ----------------------------------------------------------------

    def plan(
        self,
        d: DocType,
        obj: Any | None,
        values: Mapping[str, Any],
        prefix: str = "",
        *,
        lookups: bool = True,
    ) -> Plan:
        """Work out a save of ``values`` onto ``obj`` (None: a new record) and
        every error it would meet; writes nothing. ``prefix`` goes before every
        error path (the status engine plans new documents as ``next.0.``).

        ``lookups=False`` skips the checks that query the database for this
        one record (that refs exist, that unique values are free): a bulk
        caller (:mod:`engine.transfer`) makes them itself, one query per batch."""
        p = Plan(d, obj, prefix)
        old: dict[str, Any] = {}
        if obj is None:  # a new record: everything starts empty
            p.values = dict.fromkeys(self._shape(d).names)
            old = dict(p.values)
        for known in self._shape(d).tables if obj is None else d.fields.values():
            if known.type == "table":
                kept = [] if obj is None else list(getattr(obj, known.name))
                p.rows[known.name] = [
                    RowPlan(r, {c.name: getattr(r, c.column) for c in known.fields.values()})
                    for r in kept
                ]
                p.values[known.name] = [r.values for r in p.rows[known.name]]
                old[known.name] = [dict(r.values) for r in p.rows[known.name]]
            elif known.name not in AUDIT:
                p.values[known.name] = None if obj is None else getattr(obj, known.column)
                old[known.name] = p.values[known.name]
        refs: list[tuple[str, Field, int]] = []
        given: set[str] = set()
        if not isinstance(values, Mapping):
            raise TypeError(f"values must be a mapping, not {type(values).__name__}")
        for key, raw in values.items():
            f = d.fields.get(key)
            if f is None:
                p.error(key, f"is not a field of {quoted(d.label, d.name, self.registry.locale)}")
                continue
            if f.type == "table":
                refused = self._refusal(d, f)
                if refused:
                    p.error(key, refused)
                    continue
                rows = self._plan_rows(p, f, raw, refs)
                if rows is not None:
                    p.rows[key] = rows
                    p.values[key] = [r.values for r in rows]
                    given.add(key)
                continue
            value = self._value(p, f, raw, key)
            if value is _INVALID:
                continue
            refused = self._refusal(d, f)
            if refused:
                current = self._initial(f) if obj is None else old.get(key, getattr(obj, f.column))
                if not same(value, current):
                    p.error(key, refused)
                continue
            p.values[key] = value
            given.add(key)
            if f.type == "ref" and value is not None:
                refs.append((key, f, value))
        if obj is None:
            self._apply_defaults(p, d.fields.values(), p.values, given, "")
            if d.statuses is not None:
                p.values[d.statuses.field] = d.statuses.initial
        if lookups:
            self._check_refs(p, refs)
        self._compute(p)
        self._validate(p)
        self._check_unique(p, lookups)
        for name, new in p.values.items():
            if isinstance(new, list):
                now_rows = [dict(r) for r in new]
                if now_rows != old[name]:
                    p.changes[name] = (old[name], now_rows)
            else:
                before = old.get(name)
                if before is not new and not same(before, new):
                    p.changes[name] = (before, new)
        return p

    def _refusal(self, d: DocType, f: Field, row: bool = False) -> str | None:
        """Why the user may not set this field, or None. Sending back the
        value it already has is no attempt to change it: a REST client may PUT
        what it got."""
        if not row and d.statuses is not None and f.name == d.statuses.field:
            return "changes only through a transition of the status"
        if (not row and f.name in AUDIT) or f.system:
            return "is filled in by the engine"
        if f.compute:
            return f"is computed from `{f.compute}`"
        if f.readonly and not self.trusted:
            return "is read-only"
        return None

    def _value(self, p: Plan, f: Field, raw: Any, path: str) -> Any:
        """The stored form of ``raw``, or _INVALID after recording the error."""
        try:
            return self.normalize(f, raw)
        except Invalid as exc:
            p.error(path, str(exc))
            return _INVALID

    def normalize(self, f: Field, raw: Any) -> Any:
        """A value from a form, JSON, CSV or Python → what the column stores."""
        if f.type == "boolean" and (raw is None or raw == ""):
            return False
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        if f.type == "ref" and hasattr(raw, "__table__"):
            raw = raw.id
        return self.models.types[f.type].normalize(raw, f, self.type_context)

    def _plan_rows(
        self, p: Plan, f: Field, raw: Any, refs: list[tuple[str, Field, int]]
    ) -> list[RowPlan] | None:
        if raw is None:
            return []
        if (
            not isinstance(raw, Sequence)
            or isinstance(raw, (str, bytes))
            or not all(isinstance(r, Mapping) for r in raw)
        ):
            p.error(f.name, "expects a list of rows, each a map of field → value")
            return None
        kept = {r.obj.id: r for r in p.rows[f.name] if r.obj is not None}
        out: list[RowPlan] = []
        for i, row in enumerate(raw):
            base = f"{f.name}.{i}."
            row_id = row.get("id")
            if row_id not in (None, ""):
                try:
                    found = kept.get(int(row_id))
                except (TypeError, ValueError):
                    found = None
                if found is None:
                    p.error(base + "id", "is not a row of this record")
                    continue
                rp = RowPlan(found.obj, dict(found.values))
            else:
                rp = RowPlan(None, {c: None for c in f.fields})
            given: set[str] = set()
            for key, value in row.items():
                if key == "id":
                    continue
                c = f.fields.get(key)
                if c is None:
                    p.error(base + key, f"is not a field of the rows of {quoted(f.label, f.name)}")
                    continue
                normalized = self._value(p, c, value, base + key)
                if normalized is _INVALID:
                    continue
                refused = self._refusal(p.doctype, c, row=True)
                if refused:
                    current = rp.values.get(key) if rp.obj is not None else self._initial(c)
                    if not same(normalized, current):
                        p.error(base + key, refused)
                    continue
                rp.values[key] = normalized
                given.add(key)
                if c.type == "ref" and normalized is not None:
                    refs.append((base + key, c, normalized))
            if rp.obj is None:
                self._apply_defaults(p, f.fields.values(), rp.values, given, base)
            out.append(rp)
        return out

    def _apply_defaults(
        self,
        p: Plan,
        fields: Iterable[Field],
        values: dict[str, Any],
        given: set[str],
        base: str,
    ) -> None:
        for f in fields:
            # on a new record (or row) an empty value takes the default, as an
            # untouched one does: the database would fill it anyway, and what
            # is computed from it must see the same value
            chosen = f.name in given and (values.get(f.name) is not None or f.type == "boolean")
            if chosen or f.default is None or f.compute or f.type == "table":
                continue
            if f.name in AUDIT:
                continue
            value = self.default(f)
            if value is not _INVALID:
                values[f.name] = value
            else:
                p.error(base + f.name, f"its default `{f.default}` does not fit")

    def _initial(self, f: Field) -> Any:
        """What a new record holds in a field nobody may set."""
        if f.default is None:
            return False if f.type == "boolean" else None
        value = self.default(f)
        return None if value is _INVALID else value

    def default(self, f: Field) -> Any:
        """A field's default for a new record: ``current_user``, ``today``,
        ``now`` or a literal (normalized like a value the user typed)."""
        value = f.default
        if value == "current_user" and f.type == "ref":
            return self.user_id
        if value in ("today", "now") and f.type in ("date", "datetime"):
            if f.type == "date":
                return self.today()
            if value == "now":
                return self.now()
            midnight = dt.datetime.combine(self.today(), dt.time(), self.timezone)
            return midnight.astimezone(dt.UTC)
        try:
            return self.normalize(f, value)
        except Invalid:
            return _INVALID

    def _check_refs(self, p: Plan, refs: list[tuple[str, Field, int]]) -> None:
        """A ref must name a record that exists: one query per referenced type."""
        by_type: dict[str, list[tuple[str, int]]] = {}
        for path, f, value in refs:
            by_type.setdefault(f.to or USER, []).append((path, value))
        for target, wanted in by_type.items():
            cls = self.models.cls(target)
            ids = {v for _, v in wanted}
            found = set(self.session.execute(sa.select(cls.id).where(cls.id.in_(ids))).scalars())
            label = self.registry.documents[target].label
            for path, value in wanted:
                if value not in found:
                    p.error(
                        path, f"there is no {quoted(label, None, self.registry.locale)} #{value}"
                    )

    def _compute(self, p: Plan) -> None:
        """Table rows first (a total sums their amounts), then the record, each
        in the order the fields are declared."""
        d = p.doctype
        if not self._shape(d).computes:
            return
        doc = self.view(d, p.values, zero=True)
        for f in d.fields.values():
            if f.type != "table" or not any(c.compute for c in f.fields.values()):
                continue
            for i, rp in enumerate(p.rows[f.name]):
                for c in f.fields.values():
                    if c.compute:
                        row = self._row_view(f, rp.values)
                        ctx = {
                            **self.expression_context(row, f.fields, c.compute),
                            "doc": doc,
                        }
                        self._set_computed(p, c, rp.values, ctx, f"{f.name}.{i}.{c.name}")
        for f in d.fields.values():
            if f.compute and f.type != "table":
                ctx = self.expression_context(doc, d.fields, f.compute)
                self._set_computed(p, f, p.values, ctx, f.name)

    def _row_view(self, f: Field, values: dict[str, Any]) -> expressions.DocView:
        """A row of table field ``f`` as its computed columns see it."""
        return expressions.DocView(
            values, list(f.fields), wrap=lambda n, v: self._wrap(f.fields[n], v, True, 0)
        )

    def _set_computed(
        self, p: Plan, f: Field, values: dict[str, Any], ctx: Mapping[str, Any], path: str
    ) -> None:
        assert f.compute is not None
        try:
            result = expressions.evaluate(f.compute, ctx)
        except expressions.ExpressionError as exc:
            p.error(path, f"cannot be computed: {exc}")
            return
        try:
            values[f.name] = self.normalize(f, result)
        except Invalid as exc:
            p.error(path, f"computed as `{result}`, which {exc}")

    def _shape(self, d: DocType) -> _Shape:
        """What planning needs to know about a type, worked out once per type."""
        cached = self._shapes.get(d.name)
        if cached is None or cached.doctype is not d:
            cached = self._shapes[d.name] = _Shape.of(d)
        return cached

    def _validate(self, p: Plan) -> None:
        values = p.values
        for f in self._shape(p.doctype).checked:
            if f.type == "table":
                if f.required and not p.rows[f.name]:
                    p.error(f.name, "needs at least one row")
                for i, rp in enumerate(p.rows[f.name]):
                    for c in f.fields.values():
                        self._check_value(p, c, rp.values.get(c.name), f"{f.name}.{i}.{c.name}")
                continue
            value = values.get(f.name)
            if f.min is None and f.max is None and not empty(value):
                continue  # nothing to check (the fast path of an import)
            self._check_value(p, f, value, f.name)

    def _check_value(self, p: Plan, f: Field, value: Any, path: str) -> None:
        if p.has_error(path):
            return
        if empty(value):
            if f.required and f.type != "boolean":
                p.error(path, "is required")
            return
        if f.min is None and f.max is None:
            return
        for bound, word, too_far in (
            (f.min, "least", operator.lt),
            (f.max, "most", operator.gt),
        ):
            if bound is None:
                continue
            limit = self._limit(f, bound)
            if limit is _INVALID or limit is None:
                continue
            try:
                if too_far(value, limit):
                    p.error(path, f"must be at {word} {bound}")
            except TypeError:
                continue

    def _limit(self, f: Field, bound: Any) -> Any:
        """A min or max in the field's type; a literal one is worked out once
        (an import checks it a hundred thousand times), ``today`` every time."""
        if isinstance(bound, str) and bound in ("today", "now", "current_user"):
            return self.default(
                dataclasses.replace(f, default=bound, pattern=None, max_length=None)
            )
        key = (id(f), bound)
        try:
            cached = self._limits.get(key)
        except TypeError:  # an unhashable bound: the checks will say what is wrong with it
            return self.default(
                dataclasses.replace(f, default=bound, pattern=None, max_length=None)
            )
        if cached is None or cached[0] is not f:
            limit = self.default(
                dataclasses.replace(f, default=bound, pattern=None, max_length=None)
            )
            cached = self._limits[key] = (f, limit)
        return cached[1]

    def _check_unique(self, p: Plan, lookups: bool = True) -> None:
        """One query per table for all its unique fields that change; without
        ``lookups`` only the rows of one table field against each other."""
        d = p.doctype
        wanted = [
            f
            for f in d.fields.values()
            if lookups
            and f.unique
            and not f.system
            and f.type != "table"
            and p.values.get(f.name) is not None
            and not p.has_error(f.name)
            and (p.creating or not same(p.values[f.name], getattr(p.obj, f.column)))
        ]
        label = quoted(d.label, None, self.registry.locale) if lookups or p.rows else ""
        if wanted:
            table = self.models.table(d.name)
            cond = sa.or_(*(table.c[f.column] == p.values[f.name] for f in wanted))
            stmt = sa.select(*(table.c[f.column] for f in wanted)).where(cond)
            if p.obj is not None:
                stmt = stmt.where(table.c.id != p.obj.id)
            taken = self.session.execute(stmt.limit(len(wanted))).all()
            for f in wanted:
                if any(same(row._mapping[f.column], p.values[f.name]) for row in taken):
                    p.error(f.name, f"is already used by another {label}")
        for f, c in self._shape(d).unique_children:
            self._check_unique_rows(p, f, c, label, lookups)

    def _check_unique_rows(
        self, p: Plan, f: Field, c: Field, label: str, lookups: bool = True
    ) -> None:
        seen: dict[Any, int] = {}
        mine: dict[Any, str] = {}
        for i, rp in enumerate(p.rows[f.name]):
            value = rp.values.get(c.name)
            if value is None:
                continue
            path = f"{f.name}.{i}.{c.name}"
            if value in seen:
                p.error(path, f"is already used in row {seen[value] + 1}")
            else:
                seen[value] = i
                mine[value] = path
        if not mine or not lookups:
            return
        table = self.models.metadata.tables[p.doctype.child_table(f.name)]
        stmt = sa.select(table.c[c.column]).where(table.c[c.column].in_(list(mine)))
        if p.obj is not None:
            stmt = stmt.where(table.c.parent_id != p.obj.id)
        for value in self.session.execute(stmt).scalars():
            if value in mine:
                p.error(mine[value], f"is already used by another {label}")

    # -- writing -------------------------------------------------------------------

    def write(self, p: Plan) -> Any:
        """Carry out a plan without errors onto the ORM object (a new one when
        creating); the caller flushes. Numbers are drawn here, not while
        planning, so a refused save never uses one up."""
        assert not p.errors, p.errors
        d = p.doctype
        obj = self.models.cls(d.name)() if p.obj is None else p.obj
        for name, value in p.values.items():
            f = d.fields[name]
            if f.type == "table":
                if p.creating or name in p.changes:
                    self._write_rows(d, f, obj, p.rows[name])
            elif p.creating or name in p.changes:
                setattr(obj, f.column, value)
        if d.builtin:
            return obj
        now = self.now()
        if p.creating:
            obj.created_at = now
            obj.created_by_id = self.user_id
            if d.numbering is not None:
                setattr(obj, d.numbering.field, self.next_number(d))
            self.session.add(obj)
        elif p.changes:
            self.touch(obj)
        return obj

    def touch(self, obj: Any) -> None:
        """Audit an update; also makes the version counter move."""
        obj.updated_at = self.now()
        obj.updated_by_id = self.user_id

    def _write_rows(self, d: DocType, f: Field, obj: Any, rows: list[RowPlan]) -> None:
        cls = self.models.children[(d.name, f.name)]
        out = []
        for i, rp in enumerate(rows):
            row = rp.obj if rp.obj is not None else cls()
            for c in f.fields.values():
                value = rp.values.get(c.name)
                if rp.obj is None or not same(getattr(row, c.column), value):
                    setattr(row, c.column, value)
            # ordering_list numbers appended rows only; a replaced list keeps stale idx
            row.idx = i
            out.append(row)
        setattr(obj, f.name, out)

    def next_number(self, d: DocType) -> str:
        assert d.numbering is not None
        return f"{d.numbering.prefix}{self.increment(d.name):0{d.numbering.width}d}"

    def increment(self, name: str, by: int = 1, at_least: int = 0) -> int:
        """The next value of a named counter, atomically and in the caller's
        transaction: an upsert that returns the new value. On PostgreSQL the
        row stays locked until commit, so concurrent saves wait for each other
        and numbers have no gaps and no duplicates.

        ``by`` reserves that many values at once (an import numbers a batch
        of records in one statement: the returned value is the last of them);
        ``at_least`` first moves the counter up to that value (imported
        records kept their numbers; new ones must come after them)."""
        table = self.models.sequence
        assert table is not None
        dialect = self.session.get_bind().dialect.name
        if dialect in ("postgresql", "sqlite"):
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            greatest = sa.func.greatest if dialect == "postgresql" else sa.func.max
            start = greatest(table.c.value, at_least) if at_least else table.c.value
            stmt = (
                insert(table)
                .values(name=name, value=max(at_least, 0) + by)
                .on_conflict_do_update(index_elements=[table.c.name], set_={"value": start + by})
                .returning(table.c.value)
            )
            return int(self.session.execute(stmt).scalar_one())
        # other databases: a plain UPDATE takes the row lock, then read it back
        result = self.session.execute(
            table.update().where(table.c.name == name).values(value=table.c.value + by)
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            self.session.execute(table.insert().values(name=name, value=max(at_least, 0) + by))
        elif at_least:
            self.session.execute(
                table.update()
                .where(table.c.name == name, table.c.value < at_least + by)
                .values(value=at_least + by)
            )
        return int(
            self.session.execute(sa.select(table.c.value).where(table.c.name == name)).scalar_one()
        )

    def add_history(self, d: DocType, obj: Any, source: str | None, target: str | None) -> None:
        """A row of the status history; entering the initial state counts too,
        so a funnel knows when each record entered it."""
        if d.statuses is None or target is None:
            return
        # written at once, not left pending in the session: reports and a
        # delete in the same transaction see it
        hist = self.models.histories[d.name].__table__
        self.session.execute(
            hist.insert().values(
                doc_id=obj.id,
                field=d.statuses.field,
                from_state=source,
                to_state=target,
                at=self.now(),
                by_id=self.user_id,
            )
        )

    def flush(self, d: DocType, obj: Any) -> None:
        """Flush, turning a lost race on the version counter into StaleVersion."""
        identity = sa.inspect(obj).identity
        try:
            self.session.flush()
        except StaleDataError as exc:
            # the session is unusable now: read who won the race elsewhere
            raise self._stale(d, identity[0] if identity else 0, fresh=True) from exc

    def call_hook(self, name: str, **kwargs: Any) -> list[Any]:
        if self.pm is None:
            return []
        result: list[Any] = getattr(self.pm.hook, name)(
            session=self.session, user=self.principal, docs=self, **kwargs
        )
        return result

    # -- optimistic locking ----------------------------------------------------------

    def check_version(self, d: DocType, obj: Any, expected: int | None) -> None:
        if expected is None or d.builtin:
            return
        if int(expected) != obj.version:
            raise self._stale(d, obj.id)

    def _stale(self, d: DocType, obj_id: int, fresh: bool = False) -> StaleVersion:
        """Who changed the record last and when, read outside the failed
        transaction when the race was lost at flush time."""
        table = self.models.table(d.name)
        users = self.models.table(USER)
        cols = (table.c.version, table.c.updated_at, table.c.updated_by_id, table.c.created_at,
                table.c.created_by_id)  # fmt: skip
        stmt = (
            sa.select(*cols, users.c.username)
            .select_from(
                table.outerjoin(
                    users,
                    users.c.id == sa.func.coalesce(table.c.updated_by_id, table.c.created_by_id),
                )
            )
            .where(table.c.id == obj_id)
        )
        if fresh:
            bind = self.session.get_bind()
            engine = bind.engine if isinstance(bind, sa.Connection) else bind
            with engine.connect() as conn:
                row = conn.execute(stmt).first()
        else:
            row = self.session.execute(stmt).first()
        if row is None:
            return StaleVersion(
                f"{quoted(d.label)} #{obj_id} was deleted meanwhile", None, None, None
            )
        at = row.updated_at or row.created_at
        at = aware(at) if at is not None else None
        when = (
            at.astimezone(self.timezone).strftime("%Y-%m-%d %H:%M %Z") if at else "an unknown time"
        )
        who = row.username or "someone"
        return StaleVersion(
            f"{quoted(d.label, None, self.registry.locale)} #{obj_id} was changed by {who} "
            f"at {when} after you opened it; reload it and make your changes again",
            row.username,
            at,
            row.version,
        )

    # -- helpers -------------------------------------------------------------------

    def _writable(self, doctype: str) -> DocType:
        d = self.registry.documents.get(doctype)
        if d is None:
            raise NotFound(f"there is no document type `{doctype}`")
        return d

    def _refuse_if_referenced(self, d: DocType, obj: Any) -> None:
        """Refs are foreign keys: say who still points here rather than fail
        with a database error (and alike on SQLite, which does not enforce them)."""
        for other in self.registry.documents.values():
            for f in other.fields.values():
                tables: list[tuple[sa.Table, Field, str]] = []
                if f.type == "ref" and f.to == d.name and f.name not in AUDIT:
                    tables.append((self.models.table(other.name), f, f.name))
                elif f.type == "table":
                    for c in f.fields.values():
                        if c.type == "ref" and c.to == d.name:
                            table = self.models.metadata.tables[other.child_table(f.name)]
                            tables.append((table, c, f"{f.name}.{c.name}"))
                for table, ref, path in tables:
                    count = self.session.execute(
                        sa.select(sa.func.count()).where(table.c[ref.column] == obj.id)
                    ).scalar_one()
                    if other.name == d.name and ref.to == d.name and table.name == d.table:
                        count -= int(getattr(obj, ref.column) == obj.id)
                    if count:
                        raise DeleteRefused(
                            f"{quoted(d.label, None, self.registry.locale)} #{obj.id} cannot be "
                            f"deleted: {count} {quoted(other.label, None, self.registry.locale)} "
                            f"record(s) refer to it through `{path}`"
                        )


@functools.lru_cache(maxsize=4096)
def names_used(source: str, template: bool = False) -> frozenset[str]:
    """The free names of an expression or template (fields, ``doc``, ``user``)."""
    text = source if template else "{{ (" + source + ") }}"
    return frozenset(meta.find_undeclared_variables(expressions.ENV.parse(text)))


class _Invalid:
    """Marks a value that failed to normalize (None is a valid value)."""


_INVALID: Any = _Invalid()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return aware(value).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value
