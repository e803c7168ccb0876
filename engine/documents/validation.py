"""Planning a save: values normalized, defaults applied, computed fields
recomputed and every rule (required, limits, patterns, refs, unique values)
checked on plain dicts, before anything is written."""

from __future__ import annotations

import dataclasses
import datetime as dt
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from engine import access, expressions, refwhere
from engine.documents.plans import Duplicate, Plan, RowPlan, Shape
from engine.documents.values import (
    AUDIT,
    INVALID,
    empty,
    quoted,
    same,
)
from engine.documents.views import DocumentViews
from engine.fieldtypes import Invalid
from engine.i18n import gettext
from engine.registry import USER, DocType, Field


class DocumentPlanning(DocumentViews):
    """Plans and validation of saves (see :class:`engine.documents.Documents`)."""

    def plan(
        self,
        d: DocType,
        obj: Any | None,
        values: Mapping[str, Any],
        prefix: str = "",
        *,
        lookups: bool = True,
        moving: bool = False,
    ) -> Plan:
        """Work out a save of ``values`` onto ``obj`` (None: a new record) and
        every error it would meet; writes nothing. ``prefix`` goes before every
        error path (the status engine plans new documents as ``next.0.``).

        ``lookups=False`` skips the checks that query the database for this
        one record (that refs exist, that unique values are free): a bulk
        caller (:mod:`engine.transfer`) makes them itself, one query per batch.

        ``moving``: the values come with a transition of the status, which the
        state's ``editable`` lock does not apply to."""
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
        rights = (
            access.ALL_FIELDS
            if self.trusted
            else access.field_rights(self.registry, self.principal, d.name)
        )
        for key, raw in values.items():
            f = d.fields.get(key)
            if f is None:
                p.error(
                    key,
                    gettext(
                        "is not a field of %(document)s",
                        document=quoted(d.label, d.name, self.registry.locale),
                    ),
                )
                continue
            if not rights.readable(key):
                # any value is refused, the one it holds too: no guessing it
                p.error(key, gettext("is hidden from you: you may not set it"))
                continue
            if f.type == "table":
                refused = self._refusal(d, f)
                if not refused and not rights.writable(key):
                    refused = gettext("is read-only to you")
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
            if value is INVALID:
                continue
            refused = self._refusal(d, f)
            if not refused and not rights.writable(key):
                refused = gettext("is read-only to you")
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
        if lookups:  # the records a constrained ref may point to (`where:`)
            refwhere.refuse(self, p)
        if obj is not None and not moving:
            self._check_locked(p)
        return p

    def locked(self, d: DocType, obj: Any) -> Any:
        """The fields the acting user may no longer change in the record's
        state: None when the state locks nothing, else (``all``, allowed
        fields) — see ``editable`` of a state."""
        if d.statuses is None or obj is None:
            return None
        state = d.statuses.states.get(getattr(obj, d.statuses.field, None) or "")
        if state is None:
            return None
        allowed = state.editable_by(self.principal.roles, self.principal.admin)
        return None if allowed is None else (state, set(allowed))

    def lock_message(self, d: DocType, obj: Any, state: Any) -> str:
        name = str(self.view(d.name, obj))
        label = state.label.get(self.registry.locale) or state.name
        return gettext(
            "%(document)s %(name)s is %(state)s: its fields can no longer be changed",
            document=quoted(d.label, None, self.registry.locale),
            name=name,
            state=label,
        )

    def _check_locked(self, p: Plan) -> None:
        """Refuse changes of the fields the record's state locks; computed
        fields follow the fields they are computed from."""
        lock = self.locked(p.doctype, p.obj)
        if lock is None:
            return
        state, allowed = lock
        message: str | None = None
        for name in p.changes:
            f = p.doctype.fields[name]
            if f.compute or name in allowed:
                continue
            if message is None:
                message = self.lock_message(p.doctype, p.obj, state)
            p.error(name, message)

    def _refusal(self, d: DocType, f: Field, row: bool = False) -> str | None:
        """Why the user may not set this field, or None. Sending back the
        value it already has is no attempt to change it: a REST client may PUT
        what it got."""
        if not row and d.statuses is not None and f.name == d.statuses.field:
            return gettext("changes only through a transition of the status")
        if (not row and f.name in AUDIT) or f.system:
            return gettext("is filled in by the engine")
        if f.compute:
            return gettext("is computed from `%(expression)s`", expression=f.compute)
        if f.readonly and not self.trusted:
            return gettext("is read-only")
        return None

    def _value(self, p: Plan, f: Field, raw: Any, path: str) -> Any:
        """The stored form of ``raw``, or INVALID after recording the error."""
        try:
            return self.normalize(f, raw)
        except Invalid as exc:
            p.error(path, str(exc))
            return INVALID

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
            p.error(f.name, gettext("expects a list of rows, each a map of field → value"))
            return None
        kept = {r.obj.id: r for r in p.rows[f.name] if r.obj is not None}
        rights = (
            access.ALL_FIELDS
            if self.trusted
            else access.field_rights(self.registry, self.principal, p.doctype.name)
        )
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
                    p.error(base + "id", gettext("is not a row of this record"))
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
                    p.error(
                        base + key,
                        gettext(
                            "is not a field of the rows of %(table)s",
                            table=quoted(f.label, f.name),
                        ),
                    )
                    continue
                column = f"{f.name}.{key}"
                if not rights.readable(column):
                    p.error(base + key, gettext("is hidden from you: you may not set it"))
                    continue
                normalized = self._value(p, c, value, base + key)
                if normalized is INVALID:
                    continue
                refused = self._refusal(p.doctype, c, row=True)
                if not refused and not rights.writable(column):
                    refused = gettext("is read-only to you")
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
            if value is not INVALID:
                values[f.name] = value
            else:
                p.error(
                    base + f.name,
                    gettext("its default `%(default)s` does not fit", default=f.default),
                )

    def _initial(self, f: Field) -> Any:
        """What a new record holds in a field nobody may set."""
        if f.default is None:
            return False if f.type == "boolean" else None
        value = self.default(f)
        return None if value is INVALID else value

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
            return INVALID

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
                        path,
                        gettext(
                            "there is no %(document)s #%(id)s",
                            document=quoted(label, None, self.registry.locale),
                            id=value,
                        ),
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
            p.error(path, gettext("cannot be computed: %(error)s", error=exc))
            return
        try:
            values[f.name] = self.normalize(f, result)
        except Invalid as exc:
            p.error(
                path, gettext("computed as `%(value)s`, which %(error)s", value=result, error=exc)
            )

    def _shape(self, d: DocType) -> Shape:
        """What planning needs to know about a type, worked out once per type."""
        cached = self._shapes.get(d.name)
        if cached is None or cached.doctype is not d:
            cached = self._shapes[d.name] = Shape.of(d)
        return cached

    def _validate(self, p: Plan) -> None:
        values = p.values
        for f in self._shape(p.doctype).checked:
            if f.type == "table":
                if f.required and not p.rows[f.name]:
                    p.error(f.name, gettext("needs at least one row"))
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
                p.error(path, gettext("is required"))
            return
        if f.min is None and f.max is None:
            return
        for bound, word, too_far in (
            (f.min, gettext("must be at least %(bound)s"), operator.lt),
            (f.max, gettext("must be at most %(bound)s"), operator.gt),
        ):
            if bound is None:
                continue
            limit = self._limit(f, bound)
            if limit is INVALID or limit is None:
                continue
            try:
                if too_far(value, limit):
                    p.error(path, word % {"bound": bound})
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
        """One indexed query per ``unique`` field whose value changes: a value
        another record holds refuses a ``unique: true`` field and warns of a
        ``unique: warn`` one (not of a record a merge archived), naming that
        record; emails compare case-insensitively, phones as E.164. Without
        ``lookups`` only the rows of one table field against each other."""
        d = p.doctype
        wanted = [
            f
            for f in d.fields.values()
            if lookups
            and (f.unique or f.unique_warn)
            and not f.system
            and f.type != "table"
            and p.values.get(f.name) is not None
            and not p.has_error(f.name)
            and (p.creating or not same(p.values[f.name], getattr(p.obj, f.column)))
        ]
        label = quoted(d.label, None, self.registry.locale) if lookups or p.rows else ""
        if wanted:
            table = self.models.table(d.name)
            for f in wanted:
                column, value = table.c[f.column], p.values[f.name]
                cond = (
                    sa.func.lower(column) == str(value).lower()
                    if f.type == "email"
                    else column == value
                )
                stmt = sa.select(table.c.id).where(cond)
                if f.unique_warn:
                    stmt = stmt.where(access.live(self.models, d.name))
                if p.obj is not None:
                    stmt = stmt.where(table.c.id != p.obj.id)
                other = self.session.execute(stmt.order_by(table.c.id).limit(1)).scalar()
                if other is None:
                    continue
                found = self.duplicate(d, f, other)
                if f.unique:
                    p.error(f.name, found.message)
                    p.duplicates[f.name] = found
                else:
                    p.warnings[f.name] = found
        for f, c in self._shape(d).unique_children:
            self._check_unique_rows(p, f, c, label, lookups)

    def duplicate(self, d: DocType, f: Field, other_id: int) -> Duplicate:
        """Who holds the value: the record's title, or only its id to a user
        who may not read it."""
        obj = self.session.get(self.models.cls(d.name), other_id)
        me = self.principal
        # the engine's own work (no user, no roles: a job, an import) sees every record
        who = None if self.trusted or (me.user_id is None and not me.roles) else me
        if obj is not None and access.may_see(self.models, who, d.name, obj):
            self._masking = True
            try:
                name = f"“{self.view(d.name, obj)}”"
            finally:
                self._masking = False
        else:
            name = access.hidden_label(self.registry, other_id)
        message = gettext(
            "this %(field)s already belongs to %(record)s",
            field=f.label.get(self.registry.locale),
            record=name,
        )
        return Duplicate(f.name, d.name, other_id, name, message)

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
                p.error(path, gettext("is already used in row %(n)s", n=seen[value] + 1))
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
                p.error(
                    mine[value], gettext("is already used by another %(document)s", document=label)
                )
