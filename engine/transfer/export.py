"""Export: the records of a type as rows of cells, written as CSV or XLSX."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from engine import access
from engine.access import Principal
from engine.documents import AUDIT, Documents, aware
from engine.filters import FilterError, compile_filter, user_name
from engine.models import Models
from engine.registry import USER, DocType, Field
from engine.transfer.formats import (
    BATCH,
    TransferError,
    check_format,
    doctype_of,
    exported_fields,
    guard_text,
    key_field,
)

#: Excel keeps 15 significant digits; longer numbers go out as text
_EXCEL_DIGITS = 15

# -- export ----------------------------------------------------------------------------


def export(
    models: Models,
    session: Session,
    doctype: str,
    out: IO[bytes] | str | Path,
    fmt: str = "csv",
    *,
    principal: Principal | None = None,
    filter: Mapping[str, Any] | None = None,
    header: str = "names",
    batch: int = BATCH,
) -> int:
    """Write every record of ``doctype`` (those ``principal`` may read, and
    ``filter`` matches) to ``out``, a binary file or a path; returns how many.
    ``principal=None`` exports everything (the command line, a backup)."""
    fmt = check_format(fmt)
    if isinstance(out, (str, Path)):
        with open(out, "wb") as fh:
            return export(models, session, doctype, fh, fmt, principal=principal,
                          filter=filter, header=header, batch=batch)  # fmt: skip
    rows = export_rows(models, session, doctype, fmt, principal=principal, filter=filter,
                       header=header, batch=batch)  # fmt: skip
    count = -1
    if fmt == "csv":
        for chunk in csv_chunks(rows):
            out.write(chunk[0])
            count += chunk[1]
    else:
        count += _write_xlsx(rows, out, models.registry.documents[doctype], models.registry.locale)
    return max(count, 0)


def iter_csv(
    models: Models,
    session: Session,
    doctype: str,
    *,
    principal: Principal | None = None,
    filter: Mapping[str, Any] | None = None,
    header: str = "names",
    batch: int = BATCH,
) -> Iterator[bytes]:
    """The CSV file as chunks of bytes, a batch of rows each: for a streamed response."""
    rows = export_rows(models, session, doctype, "csv", principal=principal, filter=filter,
                       header=header, batch=batch)  # fmt: skip
    for chunk, _ in csv_chunks(rows):
        yield chunk


def csv_chunks(rows: Iterable[Iterable[Any]], size: int = BATCH) -> Iterator[tuple[bytes, int]]:
    """Rows as CSV (UTF-8, RFC 4180 quoting): chunks of bytes of up to ``size``
    rows each, with the number of rows in each. Every CSV file the product
    writes goes through here: a text cell a spreadsheet would run as a
    formula is written after an apostrophe (:func:`guard_text`); None is an
    empty cell, anything else its ``str``."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    n = 0
    for row in rows:
        writer.writerow([_csv_cell(v) for v in row])
        n += 1
        if n == size:
            yield buf.getvalue().encode("utf-8"), n
            buf.seek(0)
            buf.truncate()
            n = 0
    yield buf.getvalue().encode("utf-8"), n


def csv_file(rows: Iterable[Iterable[Any]]) -> Iterator[bytes]:
    """A CSV file for a person to open in a spreadsheet: a byte order mark
    (so it is read as UTF-8), then the rows as :func:`csv_chunks` writes them,
    formula cells guarded. For a streamed response or ``b"".join(...)``."""
    yield "\ufeff".encode()
    for chunk, _ in csv_chunks(rows):
        yield chunk


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return guard_text(value)
    return str(value)


def export_rows(
    models: Models,
    session: Session,
    doctype: str,
    fmt: str = "csv",
    *,
    principal: Principal | None = None,
    filter: Mapping[str, Any] | None = None,
    header: str = "names",
    batch: int = BATCH,
) -> Iterator[list[Any]]:
    """The header row, then one row of cells per record in id order, read a
    batch at a time by id (keyset), so memory stays flat however many there
    are. Cells are text for CSV, typed values for XLSX."""
    registry = models.registry
    d = doctype_of(registry, doctype)
    if header not in ("names", "labels"):
        raise TransferError(f"header must be `names` or `labels`, not `{header}`")
    fmt = check_format(fmt)
    cell = _Cells(Documents(models, session).timezone, fmt)
    table = models.table(d.name)
    # the type as the principal sees it: no hidden field, no hidden column of a table
    fields = exported_fields(access.restricted(registry, principal, d))
    condition: Any = sa.true()
    if principal is not None:
        condition = access.where(models, principal, d.name, "read")
    if filter:
        try:
            condition = sa.and_(
                condition,
                compile_filter(
                    models,
                    d.name,
                    filter,
                    principal.user_id if principal else None,
                    principal=principal,
                ),
            )
        except FilterError as exc:
            raise TransferError(f"filter: {exc}") from exc
    stored = [f for f in fields if f.type != "table"]
    stmt = _select_with_keys(models, table, stored, principal).where(condition)
    tables = [f for f in fields if f.type == "table"]
    yield [f.name if header == "names" else f.label.get(registry.locale) for f in fields]
    last = 0
    while True:
        page = session.execute(
            stmt.where(table.c.id > last).order_by(table.c.id).limit(batch)
        ).all()
        if not page:
            return
        last = page[-1].id
        children = {f.name: _children(models, session, d, f, [r.id for r in page]) for f in tables}
        for r in page:
            m = r._mapping
            out = []
            for f in fields:
                if f.type == "table":
                    out.append(cell.table(f, children[f.name].get(r.id, [])))
                else:
                    out.append(cell.value(f, m[f.name], m.get(f"{f.name}__key")))
            yield out
        if len(page) < batch:
            return


def list_fields(d: DocType) -> list[Field]:
    """The columns of a list's export: the list's own columns first, then the
    rest of the file's (:func:`exported_fields`) that a person reads."""
    first = [d.fields[c] for c in (d.list.columns if d.list else ()) if c in d.fields]
    rest = [f for f in exported_fields(d) if not f.hidden]
    return list({f.name: f for f in (*first, *rest) if f.name not in AUDIT}.values())


def list_rows(
    models: Models,
    session: Session,
    doctype: str,
    principal: Principal,
    *,
    filter: Mapping[str, Any] | None = None,
    search: str | None = None,
    order: str | None = None,
    batch: int = 500,
    where: Any = None,
) -> Iterator[list[Any]]:
    """A list page's export: the header (``id``, then the labels of
    :func:`list_fields`), then every record ``principal`` may read that the
    list's filter and search match, in the list's order, read a page at a
    time by the list's keyset cursor. The cells are those of every CSV file
    of the type (:func:`export_rows`), so the file comes back in by import
    (the ``id`` column is skipped there). ``where`` replaces the read rule
    as the rows' base condition (the read rule and a report's drill-down).
    Raises FilterError/ListError."""
    from engine import lists

    registry = models.registry
    d = registry.documents[doctype]
    fields = list_fields(access.restricted(registry, principal, d))
    cell = _Cells(Documents(models, session).timezone, "csv")
    table = models.table(d.name)
    stmt = _select_with_keys(models, table, [f for f in fields if f.type != "table"], principal)
    tables = [f for f in fields if f.type == "table"]
    yield ["id", *(f.label.get(registry.locale) for f in fields)]
    if where is None:
        where = access.where(models, principal, d.name, "read")
    after = None
    while True:
        page = lists.page(
            models, session, d.name, filter=filter or None, search=search or None, order=order,
            after=after, limit=batch, columns=[], user_id=principal.user_id, base_where=where,
            count_cap=0, principal=principal,
        )  # fmt: skip
        ids = [row["id"] for row in page.rows]
        found = {r.id: r._mapping for r in session.execute(stmt.where(table.c.id.in_(ids)))}
        children = {f.name: _children(models, session, d, f, ids) for f in tables}
        for i in ids:
            m = found[i]
            yield [str(i), *(
                cell.table(f, children[f.name].get(i, [])) if f.type == "table"
                else cell.value(f, m[f.name], m.get(f"{f.name}__key"))
                for f in fields
            )]  # fmt: skip
        if page.next_cursor is None:
            return
        after = page.next_cursor


def user_keys(models: Models) -> sa.Subquery:
    """``(id, key)`` of every user as a file names them: their name, or their
    login when another user has the same name or that name is someone's
    login, so that the importer (a login first, else a name only one user
    has) always finds the same user again. One pass over the users."""
    users = models.table(USER)
    name = user_name(users)
    named = sa.select(
        users.c.id,
        users.c.username,
        name.label("name"),
        sa.func.count().over(partition_by=name).label("same"),
    ).subquery("user_names")
    others = models.table(USER).alias("user_logins")
    taken = sa.exists().where(others.c.username == named.c.name, others.c.id != named.c.id)
    key = sa.case((sa.and_(named.c.same == 1, ~taken), named.c.name), else_=named.c.username)
    return sa.select(named.c.id, key.label("key")).subquery("user_keys")


def _select_with_keys(
    models: Models, table: sa.Table, fields: list[Field], principal: Principal | None = None
) -> sa.Select[Any]:
    """The fields' columns, each ref with its target's key beside it (``name__key``);
    a target the principal may not read gives no key, only its id."""
    cols: list[Any] = [table.c.id]
    joined: Any = table
    for f in fields:
        cols.append(table.c[f.column].label(f.name))
        if f.type != "ref":
            continue
        target = f.to or USER
        key = key_field(models.registry, target)
        if key is None:
            continue
        if target == USER:
            users = user_keys(models).alias(f"key_{table.name}_{f.name}")
            joined = joined.outerjoin(users, users.c.id == table.c[f.column])
            cols.append(users.c.key.label(f"{f.name}__key"))
            continue
        alias = models.table(target).alias(f"key_{table.name}_{f.name}")
        seen = access.visible(models, principal, target, alias)
        joined = joined.outerjoin(alias, sa.and_(alias.c.id == table.c[f.column], seen))
        cols.append(alias.c[key.column].label(f"{f.name}__key"))
    return sa.select(*cols).select_from(joined)


def _children(
    models: Models, session: Session, d: DocType, f: Field, ids: list[int]
) -> dict[int, list[sa.RowMapping]]:
    table = models.metadata.tables[d.child_table(f.name)]
    stmt = _select_with_keys(models, table, list(f.fields.values())).add_columns(
        table.c.parent_id.label("parent__id")
    )
    out: dict[int, list[sa.RowMapping]] = {}
    for r in session.execute(
        stmt.where(table.c.parent_id.in_(ids)).order_by(table.c.parent_id, table.c.idx)
    ):
        out.setdefault(r.parent__id, []).append(r._mapping)
    return out


class _Cells:
    """Stored values → cells of a file."""

    def __init__(self, tz: dt.tzinfo, fmt: str):
        self.tz = tz
        self.xlsx = fmt == "xlsx"

    def value(self, f: Field, value: Any, key: Any = None) -> Any:
        if self.xlsx:
            return self.typed(f, value, key)
        return self.text(f, value, key)

    def text(self, f: Field, value: Any, key: Any = None) -> str:
        """A value as the text of a cell; the CSV writer guards formulas (:func:`csv_chunks`)."""
        if value is None:
            return ""
        if f.type == "ref":
            return str(key) if key not in (None, "") else f"#{value}"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, Decimal):
            return format(value, "f")
        if isinstance(value, dt.datetime):
            return aware(value).astimezone(self.tz).isoformat()
        if isinstance(value, dt.date):
            return value.isoformat()
        return str(value)

    def typed(self, f: Field, value: Any, key: Any = None) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or (isinstance(value, dt.date) and f.type == "date"):
            return value
        if isinstance(value, int) and f.type == "integer":
            return value if abs(value) < 10**_EXCEL_DIGITS else str(value)
        if isinstance(value, Decimal) and f.type in ("decimal", "money"):
            digits = len(value.as_tuple().digits)
            return value if digits <= _EXCEL_DIGITS else format(value, "f")
        return self.text(f, value, key)

    def table(self, f: Field, rows: Sequence[Mapping[Any, Any]]) -> str:
        if not rows:
            return ""
        out = []
        for r in rows:
            item: dict[str, Any] = {}
            for c in f.fields.values():
                value = r[c.name]
                if value is None:
                    continue
                if isinstance(value, (bool, int)) and c.type != "ref":
                    item[c.name] = value
                else:
                    item[c.name] = self.text(c, value, r.get(f"{c.name}__key"))
            out.append(item)
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


def _write_xlsx(rows: Iterator[list[Any]], out: IO[bytes], d: DocType, locale: str) -> int:
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    wb = Workbook(write_only=True)
    title = re.sub(r"[\[\]:*?/\\]", " ", d.label.get(locale))[:31].strip() or d.name[:31]
    ws = wb.create_sheet(title)
    n = 0
    for row in rows:
        cells: list[Any] = []
        for value in row:
            if isinstance(value, str):
                value = ILLEGAL_CHARACTERS_RE.sub("", value)
                if value.startswith("="):  # text, never a formula
                    c = WriteOnlyCell(ws, value)
                    c.data_type = "s"
                    value = c
            cells.append(value)
        ws.append(cells)
        n += 1
    wb.save(out)
    return n
