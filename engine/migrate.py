"""Schema changes: compare the registry with the live database, add what is missing.

Only additive operations are ever applied: new tables, columns, indexes and
foreign keys. A field removed from metadata keeps its column and data and is
reported as *retired*; dropping it takes ``--drop-retired``. A field whose
type changed is refused with a message: that needs a data migration, not a
schema diff. The plan is computed by Alembic's autogenerate comparison and
applied with Alembic operations (batch mode on SQLite, where ALTER TABLE is
limited), identically on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from flask_appbuilder import Model as FabModel
from flask_appbuilder.security.sqla import models as _fab_security  # noqa: F401 - defines FAB's tables

from engine import searchindex
from engine.errors import HandledError
from engine.models import Models
from engine.searchindex import search_columns

#: generic families: a change within a family (VARCHAR(80) → TEXT) is harmless
FAMILIES: tuple[tuple[type[sa.types.TypeEngine[Any]], str], ...] = (
    (sa.Boolean, "boolean"),
    (sa.DateTime, "datetime"),
    (sa.Date, "date"),
    (sa.Integer, "integer"),
    (sa.Numeric, "number"),
    (sa.String, "text"),
)
INTERNAL_PREFIXES = ("ab_", "alembic_", "crm_", "sqlite_")


@dataclass
class Step:
    #: add_security, add_table, add_column, add_index, add_fk, drop_column,
    #: add_extension, add_search_index, build_fts, drop_fts
    kind: str
    table: str
    detail: str
    obj: Any = None

    def __str__(self) -> str:
        if self.kind == "add_security":
            return "add the security tables (users, roles, permissions)"
        if self.kind == "add_extension":
            return f"add extension {self.detail} (for searching words anywhere in a field)"
        if self.kind == "add_search_index":
            return f"add search index {self.table}.{self.detail} (trigram)"
        if self.kind == "build_fts":
            return f"build search index {self.table} ({self.detail}) (trigram, FTS5)"
        if self.kind == "drop_fts":
            return f"drop search index {self.table} (no field of it is searched any more)"
        verb = {
            "add_table": "add table",
            "add_column": "add column",
            "add_index": "add index",
            "add_fk": "add foreign key",
            "drop_column": "DROP column",
        }[self.kind]
        return f"{verb} {self.table}{'.' + self.detail if self.detail else ''}"


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.steps

    def lines(self) -> list[str]:
        out = [f"  + {s}" for s in self.steps]
        out += [f"  ~ retired (kept with its data): {r}" for r in self.retired]
        out += [f"  ! {r}" for r in self.refused]
        return out


class MigrationRefused(HandledError):
    pass


def _family(type_: Any) -> str | None:
    for cls, name in FAMILIES:
        if isinstance(type_, cls):
            return name
    return None


def _fab_columns() -> dict[str, set[str]]:
    return {t.name: set(t.c.keys()) for t in FabModel.metadata.sorted_tables}


def plan(models: Models, engine: sa.Engine, drop_retired: bool = False) -> Plan:
    """What ``crm migrate`` would do, without doing it."""
    result = Plan()
    ours = set(models.metadata.tables)
    fab = _fab_columns()
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        diffs = compare_metadata(context, models.metadata)
        inspector = sa.inspect(conn)
        existing = set(inspector.get_table_names())
        for diff in _flatten(diffs):
            kind = diff[0]
            if kind == "add_table" and diff[1].name in fab:
                # Flask-AppBuilder's own table (users): it creates the table,
                # the engine adds the user attributes to it
                table = diff[1]
                result.steps.append(Step("add_security", table.name, "", None))
                for column in table.columns:
                    if column.name not in fab[table.name]:
                        result.steps.append(Step("add_column", table.name, column.name, column))
                for index in table.indexes:
                    result.steps.append(Step("add_index", table.name, index.name or "", index))
            elif kind == "add_table":
                table = diff[1]
                result.steps.append(Step("add_table", table.name, "", table))
            elif kind == "add_column":
                _, _, tname, column = diff
                result.steps.append(Step("add_column", tname, column.name, column))
            elif kind == "add_index":
                index = diff[1]
                if index.table.name in existing and index.table.name not in fab:
                    result.steps.append(
                        Step("add_index", index.table.name, index.name or "", index)
                    )
            elif kind == "add_fk":
                fk = diff[1]
                added = any(
                    s.kind == "add_column"
                    and s.table == fk.parent.name
                    and s.detail in fk.column_keys
                    for s in result.steps
                )
                if fk.parent.name in existing and not added:
                    result.steps.append(Step("add_fk", fk.parent.name, fk.name or "", fk))
            elif kind == "remove_column":
                _, _, tname, column = diff
                if tname in fab and column.name in fab[tname]:
                    continue
                if tname in ours:
                    result.retired.append(f"{tname}.{column.name}")
                    if drop_retired:
                        result.steps.append(Step("drop_column", tname, column.name, column))
            elif kind == "remove_table":
                name = diff[1].name
                if not name.startswith(INTERNAL_PREFIXES):
                    result.retired.append(f"table {name}")
        if engine.dialect.name == "postgresql":
            result.steps += _search_steps(models, conn, inspector, existing)
        elif engine.dialect.name == "sqlite":
            build, gone = searchindex.stale(models, conn)
            wanted = searchindex.fts_columns(models)
            result.steps += [Step("build_fts", t, ", ".join(wanted[t])) for t in build]
            result.steps += [Step("drop_fts", t, "") for t in gone]
        for table in models.metadata.sorted_tables:
            if table.name not in existing:
                continue
            live = {c["name"]: c for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in live:
                    continue
                old, new = _family(live[column.name]["type"]), _family(column.type)
                if old and new and old != new and not (old == "integer" and new == "number"):
                    result.refused.append(
                        f"{table.name}.{column.name} holds {old} values in the database but the "
                        f"metadata now says {new}: changing a field's type needs a data migration"
                    )
    order = {
        "add_security": 0,
        "add_table": 0,
        "add_column": 1,
        "add_fk": 2,
        "add_index": 3,
        "add_extension": 4,
        "add_search_index": 5,
        "build_fts": 5,
        "drop_fts": 5,
        "drop_column": 6,
    }
    tables = {t.name: i for i, t in enumerate(models.metadata.sorted_tables)}
    result.steps.sort(key=lambda s: (order[s.kind], tables.get(s.table, 0)))
    return result


def search_index_name(table: str, column: str) -> str:
    """The trigram index of a searched column, within PostgreSQL's 63-character names."""
    name = f"ix_search_{table}_{column}"
    if len(name) > 63:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[:54]}_{digest}"
    return name


def _search_steps(
    models: Models, conn: sa.Connection, inspector: sa.Inspector, existing: set[str]
) -> list[Step]:
    """PostgreSQL: the pg_trgm extension and a GIN trigram index on ``lower(col)`` of
    every column a list search looks in, so that "contains" is index-backed."""
    steps: list[Step] = []
    has_trgm = conn.exec_driver_sql("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'").first()
    if has_trgm is None:
        steps.append(Step("add_extension", "", "pg_trgm"))
    for tname, column in sorted(search_columns(models)):
        if tname in existing:
            names = {i["name"] for i in inspector.get_indexes(tname)}
            if search_index_name(tname, column) in names:
                continue
        steps.append(Step("add_search_index", tname, column))
    return steps


def _flatten(diffs: Iterable[Any]) -> Iterable[tuple[Any, ...]]:
    for diff in diffs:
        if isinstance(diff, list):  # column modifications come grouped
            yield from (d for d in diff if isinstance(d, tuple))
        else:
            yield diff


def apply(models: Models, engine: sa.Engine, the_plan: Plan) -> None:
    """Apply a plan in one transaction (on PostgreSQL DDL is transactional too)."""
    if the_plan.refused:
        raise MigrationRefused("\n".join(the_plan.refused))
    sqlite = engine.dialect.name == "sqlite"
    with engine.begin() as conn:
        FabModel.metadata.create_all(conn)
        ops = Operations(MigrationContext.configure(conn))
        new_tables = [
            models.metadata.tables[s.table]
            for s in the_plan.steps
            if s.kind == "add_table" and s.obj is not None
        ]
        if new_tables:
            models.metadata.create_all(conn, tables=new_tables)
        by_table: dict[str, list[Step]] = {}
        for s in the_plan.steps:
            if s.kind in ("add_column", "add_fk", "drop_column"):
                by_table.setdefault(s.table, []).append(s)
        for tname, steps in by_table.items():
            _alter(ops, tname, steps, sqlite)
        for s in the_plan.steps:
            if s.kind == "add_index":
                index = s.obj
                ops.create_index(
                    index.name,
                    index.table.name,
                    [c.name for c in index.columns],
                    unique=index.unique,
                )
        trgm_schema = None
        for s in the_plan.steps:
            if s.kind == "add_extension":
                conn.exec_driver_sql(f"CREATE EXTENSION IF NOT EXISTS {s.detail}")
            elif s.kind == "add_search_index":
                if trgm_schema is None:
                    # the operator class where the extension lives: a database whose
                    # search_path leaves that schema out still finds it
                    trgm_schema = conn.exec_driver_sql(
                        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n "
                        "ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'"
                    ).scalar_one()
                conn.exec_driver_sql(
                    f'CREATE INDEX IF NOT EXISTS "{search_index_name(s.table, s.detail)}" '
                    f'ON "{s.table}" USING gin (lower("{s.detail}") "{trgm_schema}".gin_trgm_ops)'
                )
        if sqlite:
            # also after a table was copied to change it (batch mode), which
            # drops its triggers: the FTS index is rebuilt from the rows
            searchindex.sync(models, conn)
            conn.exec_driver_sql("PRAGMA foreign_key_check")
    # statistics let the planner pick the composite index for a filtered page
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")


def _alter(ops: Operations, tname: str, steps: list[Step], sqlite: bool) -> None:
    def add(target: Any, s: Step) -> None:
        if s.kind == "add_column":
            target.add_column(_fresh(s.obj))
        elif s.kind == "add_fk":
            fk = s.obj
            names = (
                fk.referred_table.name,
                [c.name for c in fk.columns],
                [e.column.name for e in fk.elements],
            )
            if isinstance(target, Operations):
                target.create_foreign_key(fk.name, tname, *names)
            else:
                target.create_foreign_key(fk.name, *names)
        elif s.kind == "drop_column":
            target.drop_column(s.detail)

    needs_batch = sqlite and any(
        s.kind in ("add_fk", "drop_column") or (s.kind == "add_column" and s.obj.foreign_keys)
        for s in steps
    )
    if needs_batch:
        with ops.batch_alter_table(tname, recreate="always") as batch:
            for s in steps:
                add(batch, s)
    else:
        for s in steps:
            if s.kind == "add_column":
                ops.add_column(tname, _fresh(s.obj))
            elif s.kind == "add_fk":
                add(ops, s)
            elif s.kind == "drop_column":
                ops.drop_column(tname, s.detail)


def _fresh(column: sa.Column[Any]) -> sa.Column[Any]:
    """A detached copy of a model column for ALTER TABLE: its FK named by the
    convention, no index (indexes are created afterwards, outside any batch)."""
    fks = [
        sa.ForeignKey(
            fk.target_fullname, name=f"fk_{column.table.name}_{column.name}_{fk.column.table.name}"
        )
        for fk in column.foreign_keys
    ]
    return sa.Column(
        column.name,
        column.type,
        *fks,
        nullable=True,
        server_default=column.server_default,
        comment=column.comment,
    )
