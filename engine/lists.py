"""The list page: one query shape for the web UI and the REST API.

A page costs two statements whatever its size and whatever its columns:

- the rows, with each reference column's display text fetched by a LEFT OUTER
  JOIN (one alias per reference path) instead of one query per row;
- a count capped at ``count_cap``: ``SELECT count(*) FROM (SELECT 1 ... LIMIT
  cap + 1)``. Counting 200 000 matching rows exactly costs more than the page
  itself; a pager only needs "10 000+".

Rows are ordered by the sort column, then by id: the shape of the composite
indexes that ``engine.models`` builds for list filters, so a filtered, sorted
page is an index range scan that stops after ``limit`` rows. Deep pages use a
keyset cursor (the last row's sort value and id) rather than a large OFFSET.

NULLs keep each database's own order (PostgreSQL: largest, SQLite: smallest),
because asking for another order would stop it reading the index in order;
the keyset cursor follows the same rule.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, TypeAlias

import phonenumbers
import sqlalchemy as sa
from sqlalchemy.orm import Session

from engine import access, searchindex
from engine.access import Principal
from engine.fieldtypes import valid_id
from engine.filters import (
    TEXTUAL,
    FilterError,
    compile_filter,
    escape_like,
    label_column,
    label_field,
    user_name,
)
from engine.i18n import gettext
from engine.models import Models
from engine.registry import USER, DocType, Field
from engine.searchindex import search_fields

DEFAULT_LIMIT = 25
MAX_LIMIT = 1000
COUNT_CAP = 10_000
#: how many references a dotted column may follow (`customer.manager.department`)
MAX_DEPTH = 3
#: databases that sort NULL above every value (ORDER BY ... ASC puts NULLs last)
NULLS_LARGEST = frozenset({"postgresql", "oracle"})


class ListError(FilterError):
    """A list request (column, order, cursor, limit) is wrong; the message is for the user."""


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference cell: the target's id and the text a person recognizes it by."""

    id: int
    label: str
    #: False when the user may not read the target: ``label`` then says so
    readable: bool = True


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    #: matching rows, at most ``count_cap``; with ``count_capped`` show it as "10 000+"
    count: int
    count_capped: bool
    #: pass as ``after`` to get the next page; None on the last page
    next_cursor: str | None
    columns: tuple[str, ...]
    offset: int
    limit: int


@dataclass(frozen=True)
class _Cell:
    key: str
    value: int
    #: position of the joined label for a reference column
    label: int | None
    ref: bool
    #: position of the joined target's id: NULL when the user may not read it
    seen: int | None = None


Executor = Session | sa.Connection


class ListQuery:
    """The two statements of one list page, built but not run.

    Built apart from running so that the benchmark can print and time the very
    SQL the engine sends; :func:`page` is the usual entry point.
    """

    def __init__(
        self,
        models: Models,
        doctype: str,
        *,
        dialect: str,
        filter: Mapping[str, Any] | None = None,
        search: str | None = None,
        order: str | None = None,
        offset: int = 0,
        after: str | None = None,
        limit: int = DEFAULT_LIMIT,
        columns: Sequence[str] | None = None,
        user_id: int | None = None,
        base_where: sa.ColumnElement[bool] | None = None,
        count_cap: int | None = COUNT_CAP,
        principal: Principal | None = None,
    ) -> None:
        if doctype not in models.registry.documents:
            raise ListError(f"there is no document type `{doctype}`")
        if not 1 <= limit <= MAX_LIMIT:
            raise ListError(f"a page holds 1 to {MAX_LIMIT} rows, not {limit}")
        if offset < 0:
            raise ListError("the offset cannot be negative")
        self.models = models
        #: whose access rules the refs follow (None: the engine's own work, sees all)
        self.principal = principal
        self.doc: DocType = models.registry.documents[doctype]
        self.dialect = dialect
        self.table = models.table(doctype)
        self.limit = limit
        self.offset = offset
        self.count_cap = count_cap
        spec = self.doc.list
        self.columns = tuple(columns if columns is not None else _default_columns(self.doc))
        for name in self.columns:
            self._refuse_hidden(name)
        self.order = order or (spec.order if spec else _default_order(self.doc))
        if not order and not access.path_readable(
            models.registry, principal, doctype, self.order.lstrip("-+")
        ):
            self.order = "-id"  # the type's own order is by a field hidden from the user
        self.descending = self.order.startswith("-")
        self.sort_field = self.order.lstrip("-+")
        self.sort_column = self._sort_column(self.sort_field)

        where: list[sa.ColumnElement[bool]] = []
        if base_where is not None:
            where.append(base_where)
        if filter:
            where.append(compile_filter(models, doctype, filter, user_id, principal=principal))
        if search and search.strip():
            where.append(self._search(search.strip()))
        self.where = sa.and_(sa.true(), *where)
        self.rows_select, self._cells, self._sort_pos = self._rows(after)
        self.count_select = self._count()

    # -- running --------------------------------------------------------------

    def run(self, executor: Executor) -> Page:
        rows = executor.execute(self.rows_select).all()
        count, capped = self.count_of(executor.execute(self.count_select).scalar_one())
        more = len(rows) > self.limit
        rows = rows[: self.limit]
        cursor = None
        if more:
            last = rows[-1]
            sort_value = last[self._sort_pos] if self._sort_pos is not None else None
            cursor = encode_cursor(sort_value, last[0])
        return Page(
            [self._row(r) for r in rows],
            count,
            capped,
            cursor,
            self.columns,
            self.offset,
            self.limit,
        )

    def count_of(self, counted: int) -> tuple[int, bool]:
        if self.count_cap is not None and counted > self.count_cap:
            return self.count_cap, True
        return counted, False

    def _row(self, row: sa.Row[Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"id": row[0]}
        for cell in self._cells:
            value = row[cell.value]
            if cell.ref and value is not None:
                if cell.seen is not None and row[cell.seen] is None:
                    label = access.hidden_label(self.models.registry, value)
                    value = Ref(value, label, readable=False)
                    out[cell.key] = value
                    continue
                text = row[cell.label] if cell.label is not None else None
                value = Ref(value, str(text) if text is not None else str(value))
            out[cell.key] = value
        return out

    # -- building ---------------------------------------------------------------

    def _refuse_hidden(self, path: str, sort: bool = False) -> None:
        """A field hidden from the principal cannot be a column or an order:
        the answer would tell its values."""
        if self.principal is None:
            return
        hidden = access.hidden_path(self.models.registry, self.principal, self.doc.name, path)
        if hidden is None:
            return
        if sort:
            raise ListError(
                gettext("you may not sort by `%(path)s`: `%(field)s` is hidden from you",
                        path=path, field=hidden)
            )  # fmt: skip
        raise ListError(
            gettext("`%(path)s` cannot be a column: `%(field)s` is hidden from you",
                    path=path, field=hidden)
        )  # fmt: skip

    def _sort_column(self, name: str) -> sa.ColumnElement[Any]:
        if name == "id":
            return self.table.c.id
        self._refuse_hidden(name, sort=True)
        f = self.doc.fields.get(name)
        if f is None or not f.stored:
            raise ListError(f"`{self.doc.name}` has no field `{name}` to sort by")
        if f.type == "ref":
            raise ListError(f"`{name}` is a reference; sort by one of its own fields")
        return self.table.c[f.column]

    def _rows(self, after: str | None) -> tuple[sa.Select[Any], list[_Cell], int | None]:
        t = self.table
        selected: list[sa.ColumnElement[Any]] = [t.c.id]
        joined: sa.FromClause = t
        aliases: dict[str, sa.FromClause] = {}

        def source(path: tuple[str, ...]) -> sa.FromClause:
            """The table (aliased, joined) that a dotted prefix leads to."""
            nonlocal joined
            if not path:
                return t
            key = ".".join(path)
            if key not in aliases:
                parent = source(path[:-1])
                f = self._field_at(path)
                alias = _alias(self.models, self.doc.name, path, f.to or USER)
                seen = access.visible(self.models, self.principal, f.to or USER, alias)
                joined = joined.outerjoin(alias, sa.and_(alias.c.id == parent.c[f.column], seen))
                aliases[key] = alias
            return aliases[key]

        def add(column: sa.ColumnElement[Any]) -> int:
            selected.append(column.label(f"c{len(selected)}"))
            return len(selected) - 1

        cells: list[_Cell] = []
        for name in self.columns:
            if name == "id":
                continue
            path = tuple(name.split("."))
            f = self._field_at(path)
            if not f.stored:
                raise ListError(f"`{name}` holds rows and cannot be a list column")
            position = add(source(path[:-1]).c[f.column])
            label = seen = None
            if f.type == "ref":
                target = self.models.registry.documents[f.to or USER]
                if target.name == USER or label_field(target) is not None:
                    named = label_column(target, source(path))
                    label = add(named) if named is not None else None
                if self.principal is not None and target.name != USER:
                    seen = add(source(path).c.id)
            cells.append(_Cell(name, position, label, f.type == "ref", seen))

        sort_pos: int | None = None
        if self.sort_field != "id":
            sort_pos = next(
                (c.value for c in cells if c.key == self.sort_field),
                None,
            )
            if sort_pos is None:
                sort_pos = add(self.sort_column)

        id_order = t.c.id.desc() if self.descending else t.c.id.asc()
        order_by = [id_order]
        if self.sort_field != "id":
            sort = self.sort_column.desc() if self.descending else self.sort_column.asc()
            order_by.insert(0, sort)
        base = sa.select(*selected).select_from(joined).order_by(*order_by)
        segments = self._after(after) if after is not None else [sa.true()]
        if len(segments) == 1:
            query = base.where(self.where, segments[0]).limit(self.limit + 1)
            if self.offset:
                query = query.offset(self.offset)
            return query, cells, sort_pos
        # the rest of the page crosses between the NULLs and the values: each
        # side is its own index range; take enough ids from each, order the
        # few that came out, and join the labels for those rows only
        wanted = self.offset + self.limit + 1
        keys = sa.select(t.c.id.label("id"), self.sort_column.label("sort")).order_by(*order_by)
        parts = [
            sa.select(keys.where(self.where, seg).limit(wanted).subquery()) for seg in segments
        ]
        keyset = sa.union_all(*parts).subquery("keyset")
        query = (
            sa.select(*selected)
            .select_from(joined.join(keyset, keyset.c.id == t.c.id))
            .order_by(
                keyset.c.sort.desc() if self.descending else keyset.c.sort.asc(),
                keyset.c.id.desc() if self.descending else keyset.c.id.asc(),
            )
            .limit(self.limit + 1)
        )
        if self.offset:
            query = query.offset(self.offset)
        return query, cells, sort_pos

    def _count(self) -> sa.Select[Any]:
        if self.count_cap is None:
            return sa.select(sa.func.count()).select_from(self.table).where(self.where)
        inner = (
            sa.select(sa.literal_column("1").label("one"))
            .select_from(self.table)
            .where(self.where)
            .limit(self.count_cap + 1)
            .subquery("capped")
        )
        return sa.select(sa.func.count()).select_from(inner)

    def _field_at(self, path: Sequence[str]) -> Field:
        if len(path) > MAX_DEPTH + 1:
            raise ListError(f"`{'.'.join(path)}` follows more than {MAX_DEPTH} references")
        d = self.doc
        for i, part in enumerate(path):
            f = d.fields.get(part)
            if f is None:
                raise ListError(f"`{d.name}` has no field `{part}`")
            if i == len(path) - 1:
                return f
            if f.type != "ref":
                raise ListError(f"`{d.name}.{part}` is not a reference, so `{'.'.join(path)}` cannot follow it")  # fmt: skip
            d = self.models.registry.documents[f.to or USER]
        raise ListError("an empty column name")

    def _after(self, cursor: str) -> list[sa.ColumnElement[bool]]:
        """Rows after the cursor in page order: one index range, or two when the
        rest of the list crosses between NULL and non-NULL sort values.

        One condition such as ``(col <= v AND ...) OR col IS NULL`` would be
        exact too, but databases read it by scanning from the top of the index.
        """
        sort_value, last_id = decode_cursor(cursor)
        t = self.table
        desc = self.descending
        next_id = t.c.id < last_id if desc else t.c.id > last_id
        if self.sort_field == "id":
            return [next_id]
        col = self.sort_column
        nulls_first = (self.dialect in NULLS_LARGEST) == desc
        if sort_value is None:
            in_nulls = sa.and_(col.is_(None), next_id)
            return [in_nulls, col.is_not(None)] if nulls_first else [in_nulls]
        value = self._cursor_value(sort_value)
        # `col <= v` alone is what lets the index seek; the OR settles the tie on v
        within = col <= value if desc else col >= value
        beyond = col < value if desc else col > value
        seek = sa.and_(within, sa.or_(beyond, next_id))
        if not nulls_first and getattr(col, "nullable", True):
            return [seek, col.is_(None)]
        return [seek]

    def _cursor_value(self, raw: Any) -> Any:
        f = self.doc.fields.get(self.sort_field)
        ftype = f.type if f is not None else "integer"
        try:
            if ftype == "datetime":
                return dt.datetime.fromisoformat(raw)
            if ftype == "date":
                return dt.date.fromisoformat(raw)
            if ftype in ("decimal", "money"):
                return Decimal(raw)
            if ftype == "integer":
                return int(raw)
            if ftype == "boolean":
                return bool(raw)
        except (TypeError, ValueError, InvalidOperation) as exc:
            raise ListError("the page cursor is not valid") from exc
        return str(raw)

    # -- search ---------------------------------------------------------------

    def _search(self, term: str) -> sa.ColumnElement[bool]:
        return search_where(self.models, self.principal, self.doc, term, self.dialect)


#: the aliases of each configuration's reference joins, made once: building an
#: alias copies every column of its table, a third of a page's Python time
_ALIASES: weakref.WeakKeyDictionary[sa.MetaData, dict[tuple[str, ...], sa.FromClause]] = (
    weakref.WeakKeyDictionary()
)


def _alias(models: Models, doctype: str, path: tuple[str, ...], target: str) -> sa.FromClause:
    """The alias for the rows a reference path leads to, named after the path
    (``_customer__manager``): a leading underscore no table name has."""
    known = _ALIASES.setdefault(models.metadata, {})
    key = (doctype, *path)
    if key not in known:
        name = "_" + "__".join(path)
        known[key] = models.table(target).alias(name)
    return known[key]


def search_where(
    models: Models, principal: Principal | None, d: DocType, term: str, dialect: str
) -> sa.ColumnElement[bool]:
    """The one meaning of a search, shared by lists, REST and the ref picker:
    the term found anywhere in any of the type's search fields (case-insensitive),
    a field of another type joining in only when the text can be its value."""
    parts: list[_Part] = []
    for name in search_fields(d):
        # a field hidden from the user is not searched: a match would tell its value
        if not access.path_readable(models.registry, principal, d.name, name):
            continue
        parts += _search_path(models, principal, d, name.split("."), term, dialect)
    return _any(parts)


@dataclass(frozen=True, slots=True)
class _Indexed:
    """``text`` anywhere in ``table.column``, answered by SQLite's FTS index."""

    models: Models
    table: sa.Table
    column: str
    text: str


_Part: TypeAlias = "sa.ColumnElement[bool] | _Indexed"


def _any(parts: Sequence[_Part]) -> sa.ColumnElement[bool]:
    """OR of the parts; the indexed ones of one table in one MATCH."""
    conditions: list[sa.ColumnElement[bool]] = []
    grouped: dict[str, tuple[Models, sa.Table, dict[str, list[str]]]] = {}
    for p in parts:
        if isinstance(p, _Indexed):
            _, _, terms = grouped.setdefault(p.table.name, (p.models, p.table, {}))
            columns = terms.setdefault(p.text, [])
            if p.column not in columns:
                columns.append(p.column)
        else:
            conditions.append(p)
    for models, table, terms in grouped.values():
        conditions.append(searchindex.match(models, table, terms))
    if not conditions:
        return sa.false()
    return conditions[0] if len(conditions) == 1 else sa.or_(*conditions)


def _contains(models: Models, table: sa.Table, column: str, text: str, dialect: str) -> _Part:
    """``text`` anywhere in the column: from the FTS index on SQLite when the
    term has a trigram (3 characters or more), else :func:`contains_match`."""
    if (
        dialect == "sqlite"
        and len(text) >= searchindex.MIN_TERM
        and "\x00" not in text  # ends an FTS5 query string early
        and searchindex.indexed(models, table.name, column)
    ):
        return _Indexed(models, table, column, text.lower())
    return contains_match(table.c[column], text, dialect)


def _search_path(
    models: Models,
    principal: Principal | None,
    d: DocType,
    path: list[str],
    term: str,
    dialect: str,
) -> list[_Part]:
    """What finds the term in one search field: none when the text cannot be its value."""
    f = d.fields.get(path[0])
    if f is None or not f.stored:
        raise ListError(f"`{d.name}` has no field `{path[0]}` to search")
    table = models.table(d.name)
    column = table.c[f.column]
    if f.type == "ref":
        target = models.registry.documents[f.to or USER]
        rest = path[1:]
        if not rest and target.name == USER:  # a user by login or name
            users = models.table(USER)
            found = sa.or_(
                contains_match(users.c.username, term, dialect),
                contains_match(user_name(users), term, dialect),
            )
            return [column.in_(sa.select(users.c.id).where(found))]
        if not rest:
            lf = label_field(target)
            if lf is None:
                ident = valid_id(term)
                return [column == ident] if ident is not None else []
            rest = [lf.name]
        inner = _search_path(models, principal, target, rest, term, dialect)
        if not inner:
            return []
        seen = access.visible(models, principal, target.name)
        return [column.in_(sa.select(models.table(target.name).c.id).where(_any(inner), seen))]
    if len(path) > 1:
        raise ListError(f"`{d.name}.{f.name}` is not a reference")
    if f.type == "phone":
        # stored as E.164 ("+74951234567"), so the query's digits are looked for
        # in any format: "+7 (495) 123-45-67", "8 495 123 45 67", "4951234567", "123-45"
        if not re.fullmatch(r"[\s()+\-.0-9]+", term) or not re.search(r"[0-9]", term):
            return []
        digits = phone_digits(term, str(models.registry.settings.get("region") or "RU"))
        return [_contains(models, table, f.column, digits, dialect)]
    if f.type == "enum":
        low = term.lower()
        keys = [
            k
            for k, label in f.values.items()
            if low in k.lower() or any(low in text.lower() for text in label.texts.values())
        ]
        return [column.in_(keys)] if keys else []
    width = 9 if f.system else 18  # digits: ids are 32-bit, other integers 64-bit
    if f.type == "integer" and re.fullmatch(rf"-?[0-9]{{1,{width}}}", term):
        return [column == int(term)]
    # text types, and any other type stored as text (`inn`, a plugin's types)
    if f.type in TEXTUAL or isinstance(column.type, sa.String):
        return [_contains(models, table, f.column, term, dialect)]
    return []


def phone_digits(term: str, region: str) -> str:
    """The digits a phone search looks for. A whole number is looked for by its
    national part, the digits every way of writing it shares ("8 (495)
    123-45-67" in Russia, "+7 495 1234567" and "4951234567" all dial
    +74951234567 and look for "4951234567"); a part of a number by its own
    digits ("123-45")."""
    try:
        number = phonenumbers.parse(term, region)
    except phonenumbers.NumberParseException:
        number = None
    if number is not None and phonenumbers.is_valid_number(number):
        return phonenumbers.national_significant_number(number)
    return re.sub(r"\D", "", term)


def contains_match(
    column: sa.ColumnElement[Any], term: str, dialect: str
) -> sa.ColumnElement[bool]:
    """Case-insensitive "contains": ``lower(col) LIKE '%abc%'``.

    PostgreSQL answers it from the ``gin (lower(col) gin_trgm_ops)`` index that
    ``crm migrate`` creates for every searched column (for terms of three
    characters or more). SQLite's lower() is the engine's Unicode one, so
    "ромашка" finds "ООО «Ромашка Центр»".
    """
    return sa.func.lower(column).like("%" + escape_like(term.lower()) + "%", escape="\\")


def _default_columns(d: DocType) -> tuple[str, ...]:
    if d.list is not None:
        return d.list.columns
    lf = label_field(d)
    names = [f.name for f in d.fields.values() if f.stored and not f.system and not f.hidden]
    if lf is not None:
        names = [lf.name, *(n for n in names if n != lf.name)]
    return tuple(names[:6])


def _default_order(d: DocType) -> str:
    return "-created_at" if "created_at" in d.fields else "-id"


# -- cursors ------------------------------------------------------------------


def encode_cursor(sort_value: Any, row_id: int) -> str:
    """An opaque, URL-safe token for "after this row"."""
    if isinstance(sort_value, (dt.date, dt.datetime)):
        value: Any = sort_value.isoformat()
    elif isinstance(sort_value, Decimal):
        value = str(sort_value)
    else:
        value = sort_value
    raw = json.dumps([value, row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[Any, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value, row_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ListError("the page cursor is not valid") from exc
    if not isinstance(row_id, int) or isinstance(row_id, bool):
        raise ListError("the page cursor is not valid")
    return value, row_id


def dialect_of(executor: Executor) -> str:
    if isinstance(executor, Session):
        return executor.get_bind().dialect.name
    return executor.dialect.name


def page(
    models: Models,
    session: Executor,
    doctype: str,
    *,
    filter: Mapping[str, Any] | None = None,
    search: str | None = None,
    order: str | None = None,
    offset: int = 0,
    after: str | None = None,
    limit: int = DEFAULT_LIMIT,
    columns: Sequence[str] | None = None,
    user_id: int | None = None,
    base_where: sa.ColumnElement[bool] | None = None,
    count_cap: int | None = COUNT_CAP,
    principal: Principal | None = None,
) -> Page:
    """One page of a document list: rows as dicts (typed values, :class:`Ref` for
    references) plus a capped count. Raises FilterError/ListError with a message."""
    query = ListQuery(
        models,
        doctype,
        dialect=dialect_of(session),
        filter=filter,
        search=search,
        order=order,
        offset=offset,
        after=after,
        limit=limit,
        columns=columns,
        user_id=user_id,
        base_where=base_where,
        count_cap=count_cap,
        principal=principal,
    )
    return query.run(session)
