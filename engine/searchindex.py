"""Which columns a search looks in, and SQLite's index for finding words anywhere in them.

PostgreSQL answers ``lower(col) LIKE '%abc%'`` from the GIN trigram indexes that
``crm migrate`` creates (see :mod:`engine.migrate`). SQLite has no such index
for LIKE, so every searched type gets an FTS5 table with the ``trigram``
tokenizer over its searched columns: ``crm_fts_<table>``, an *external-content*
table (it stores the index only; the text stays in the type's own table), kept
in step by three triggers (insert, update of a searched column, delete).

- The trigram tokenizer folds case for every alphabet (``"ромашка"`` finds
  ``ООО «Ромашка Центр»``), and a quoted phrase of three characters or more
  matches exactly the rows holding it as a substring, so the index answers the
  search on its own, with no LIKE check after it. Shorter terms have no trigram:
  they fall back to LIKE (a scan).
- Phones are stored as E.164 (``+74951234567``): their digits are found as a
  substring through the same index.
- The tables are made with the type's own table (``create_all`` fires
  :func:`attach`'s listeners) and brought up to date by ``crm migrate``
  (:func:`sqlite_steps`, :func:`sync`), which rebuilds one when its searched
  fields change. The user table is left out: it is Flask-AppBuilder's and small.
"""

from __future__ import annotations

import weakref
from typing import Any

import sqlalchemy as sa

from engine.filters import TEXTUAL, label_field
from engine.models import Models
from engine.registry import USER, DocType

#: the FTS table of a searched table: internal, so migrate never calls it retired
PREFIX = "crm_fts_"
#: the shortest term the trigram index can find; shorter ones scan with LIKE
MIN_TERM = 3

_COLUMNS: weakref.WeakKeyDictionary[sa.MetaData, dict[str, tuple[str, ...]]] = (
    weakref.WeakKeyDictionary()
)
_PHONES: weakref.WeakKeyDictionary[sa.MetaData, dict[str, frozenset[str]]] = (
    weakref.WeakKeyDictionary()
)


def search_fields(d: DocType) -> tuple[str, ...]:
    """The fields a search looks in: the list's `search`, else the label field."""
    names = d.list.search if d.list else ()
    if not names:
        lf = label_field(d)
        names = (lf.name,) if lf is not None else ()
    return tuple(names)


def search_columns(models: Models) -> set[tuple[str, str]]:
    """(table, column) of every text column some type's list search looks in,
    following reference paths (`customer.name`) to the column they end at."""
    return set(_search_columns(models))


def _search_columns(models: Models) -> dict[tuple[str, str], str]:
    """(table, column) → field type, of every searched text column."""
    out: dict[tuple[str, str], str] = {}
    registry = models.registry
    for d in registry.documents.values():
        if d.name not in models.classes:
            continue
        for name in search_fields(d):
            doc, path = d, name.split(".")
            while path:
                f = doc.fields.get(path[0])
                if f is None or not f.stored:
                    break
                if f.type == "ref":
                    doc = registry.documents[f.to or USER]
                    if doc.name not in models.classes:
                        break
                    path = path[1:] or ([lf.name] if (lf := label_field(doc)) else [])
                    continue
                column = models.table(doc.name).c[f.column]
                if (
                    len(path) == 1
                    and (f.type in TEXTUAL or isinstance(column.type, sa.String))
                    and f.type != "enum"
                ):
                    out[(models.table(doc.name).name, f.column)] = f.type
                break
    return out


def fts_columns(models: Models) -> dict[str, tuple[str, ...]]:
    """table → the searched columns its FTS table indexes (SQLite), made once."""
    known = _COLUMNS.get(models.metadata)
    if known is None:
        users = models.table(USER).name if USER in models.classes else None
        grouped: dict[str, list[str]] = {}
        phones: dict[str, set[str]] = {}
        for (table, column), ftype in sorted(_search_columns(models).items()):
            if table != users:
                grouped.setdefault(table, []).append(column)
                if ftype == "phone":
                    phones.setdefault(table, set()).add(column)
        known = {t: tuple(cs) for t, cs in grouped.items()}
        _COLUMNS[models.metadata] = known
        _PHONES[models.metadata] = {t: frozenset(cs) for t, cs in phones.items()}
    return known


def fts_name(table: str) -> str:
    return PREFIX + table


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def ddl(table: str, columns: tuple[str, ...]) -> list[str]:
    """The FTS table and its three triggers, exactly as they are stored in
    ``sqlite_master`` (compared there to see whether they are up to date)."""
    fts, t = _q(fts_name(table)), _q(table)
    cols = ", ".join(_q(c) for c in columns)
    new = ", ".join("new." + _q(c) for c in columns)
    old = ", ".join("old." + _q(c) for c in columns)
    # names from the metadata, quoted; no value of a user in the statement
    add = f"INSERT INTO {fts}(rowid, {cols}) VALUES (new.id, {new});"  # noqa: S608
    remove = f"INSERT INTO {fts}({fts}, rowid, {cols}) VALUES ('delete', old.id, {old});"  # noqa: S608
    return [
        f"CREATE VIRTUAL TABLE {fts} USING fts5({cols}, content={t}, "
        f"content_rowid='id', tokenize='trigram')",
        f"CREATE TRIGGER {_q(fts_name(table) + '_ai')} AFTER INSERT ON {t} BEGIN {add} END",
        f"CREATE TRIGGER {_q(fts_name(table) + '_ad')} AFTER DELETE ON {t} BEGIN {remove} END",
        f"CREATE TRIGGER {_q(fts_name(table) + '_au')} AFTER UPDATE OF {cols} ON {t} "
        f"BEGIN {remove} {add} END",
    ]


def _live(conn: sa.Connection) -> dict[str, set[str]]:
    """table → the stored SQL of its FTS table and triggers."""
    out: dict[str, set[str]] = {}
    rows = conn.exec_driver_sql(
        "SELECT name, tbl_name, type, sql FROM sqlite_master "
        "WHERE (type = 'table' AND name LIKE 'crm\\_fts\\_%' ESCAPE '\\' AND sql LIKE 'CREATE VIRTUAL%') "
        "OR (type = 'trigger' AND name LIKE 'crm\\_fts\\_%' ESCAPE '\\')"
    ).all()
    for name, tbl_name, kind, sql in rows:
        table = name[len(PREFIX) :] if kind == "table" else tbl_name
        if kind == "trigger" and not name.startswith(fts_name(tbl_name) + "_"):
            continue
        out.setdefault(table, set()).add(sql)
    return out


def stale(models: Models, conn: sa.Connection) -> tuple[list[str], list[str]]:
    """(tables whose FTS index is missing or out of date, tables whose FTS index
    is no longer wanted) in the database ``conn`` is on."""
    live = _live(conn)
    tables = set(sa.inspect(conn).get_table_names())
    wanted = fts_columns(models)
    build = sorted(
        t for t, cols in wanted.items() if t in tables and live.get(t) != set(ddl(t, cols))
    )
    drop = sorted(t for t in live if t not in wanted)
    return build, drop


def drop(conn: sa.Connection, table: str) -> None:
    for suffix in ("_ai", "_ad", "_au"):
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {_q(fts_name(table) + suffix)}")
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_q(fts_name(table))}")


def create(conn: sa.Connection, table: str, columns: tuple[str, ...], fill: bool = True) -> None:
    """(Re)make a table's FTS index and triggers, and index its present rows."""
    drop(conn, table)
    for statement in ddl(table, columns):
        conn.exec_driver_sql(statement)
    if fill:
        fts = _q(fts_name(table))
        conn.exec_driver_sql(f"INSERT INTO {fts}({fts}) VALUES ('rebuild')")  # noqa: S608
        # one segment instead of one per batch: a search reads half as much
        conn.exec_driver_sql(f"INSERT INTO {fts}({fts}) VALUES ('optimize')")  # noqa: S608


def sync(models: Models, conn: sa.Connection) -> None:
    """Bring every FTS index of this configuration up to date (SQLite)."""
    build, gone = stale(models, conn)
    for table in gone:
        drop(conn, table)
    wanted = fts_columns(models)
    for table in build:
        create(conn, table, wanted[table])


def attach(models: Models) -> None:
    """Make each searched table's FTS index with the table on SQLite
    (``metadata.create_all``), and drop it with the table."""
    for table, columns in fts_columns(models).items():
        target = models.metadata.tables.get(table)
        if target is None:
            continue

        def created(t: sa.Table, conn: sa.Connection, _c: Any = columns, **kw: Any) -> None:
            if conn.dialect.name == "sqlite":
                create(conn, t.name, _c, fill=False)

        def dropped(t: sa.Table, conn: sa.Connection, **kw: Any) -> None:
            if conn.dialect.name == "sqlite":
                drop(conn, t.name)

        sa.event.listen(target, "after_create", created)
        sa.event.listen(target, "before_drop", dropped)


def indexed(models: Models, table: str, column: str) -> bool:
    return column in fts_columns(models).get(table, ())


def phrase(text: str) -> str:
    """An FTS5 phrase: the text in double quotes, its own quotes doubled."""
    return '"' + text.replace('"', '""') + '"'


def match(models: Models, table: sa.Table, terms: dict[str, list[str]]) -> sa.ColumnElement[bool]:
    """``table.id IN (SELECT rowid FROM crm_fts_<table> WHERE … MATCH …)``: rows
    holding any of ``terms`` (text → columns) in those columns, from the index.

    A term looked for in every indexed column goes without a column filter,
    which would cost the index as much again (reading the positions); phones
    count as looked in, since a phone (``+`` and digits) can only hold a text
    that the phone search finds too."""
    every = set(fts_columns(models).get(table.name, ()))
    phones = _PHONES[models.metadata].get(table.name, frozenset())
    parts = [
        phrase(text)
        if set(columns) | phones >= every
        else f"({{{' '.join(_q(c) for c in columns)}}} : {phrase(text)})"
        for text, columns in terms.items()
    ]
    fts = sa.table(fts_name(table.name), sa.column("rowid"))
    query = " OR ".join(parts)
    cond = sa.literal_column(_q(fts_name(table.name))).op("MATCH")(sa.literal(query))
    return table.c.id.in_(sa.select(fts.c.rowid).where(cond))
