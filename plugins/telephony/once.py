"""Recording a thing once: ``INSERT … ON CONFLICT DO NOTHING RETURNING id``.

A provider's event log (CallEvent) and the signatures of webhook requests
take one row per event or request, and a second one with the same key is a
duplicate to be told apart. One statement does both: the row is inserted
unless its key is there, and a row comes back only when it was new — no
savepoint, no SELECT first. The statement is written once per table and
column set as SQL text with typed parameters, so SQLAlchemy compiles it once
(its dialect-specific ``insert().on_conflict_do_nothing()`` has no cache key
and would be compiled again for every event).

PostgreSQL and SQLite (3.35 and later) both speak it; elsewhere
:func:`supported` is False and the caller takes the slower portable path.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

DIALECTS = ("postgresql", "sqlite")


def supported(session: Any) -> bool:
    return str(session.get_bind().dialect.name) in DIALECTS


@lru_cache(maxsize=64)
def _statement(table: sa.Table, names: tuple[str, ...], key: str, dialect: Any) -> Any:
    quote = dialect.identifier_preparer.quote
    columns = ", ".join(quote(n) for n in names)
    params = ", ".join(f":{n}" for n in names)
    # quoted identifiers of our own tables; the values are bind parameters
    sql = (
        f"INSERT INTO {quote(table.name)} ({columns}) VALUES ({params}) "  # noqa: S608
        f"ON CONFLICT ({quote(key)}) DO NOTHING RETURNING {quote('id')}"
    )
    binds = [sa.bindparam(n, type_=table.c[n].type) for n in names]
    return sa.text(sql).bindparams(*binds)


def insert_new(session: Any, table: sa.Table, values: Mapping[str, Any], key: str) -> bool:
    """Insert ``values`` into ``table`` unless a row with the same ``key``
    (a unique column) is there; whether it was new. In the caller's
    transaction; only where :func:`supported`."""
    row = dict(values)
    for column in table.c:  # what an ORM insert would fill in: `version`, `created_at`...
        default = column.default
        if column.name in row or default is None or not hasattr(default, "arg"):
            continue
        if getattr(default, "is_scalar", False):
            row[column.name] = default.arg
        elif getattr(default, "is_callable", False):
            row[column.name] = default.arg(None)
    names = tuple(sorted(row))
    statement = _statement(table, names, key, session.get_bind().dialect)
    return session.execute(statement, row).first() is not None
