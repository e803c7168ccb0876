"""SQLAlchemy models built from a registry: one set of classes per configuration.

Every field is a real column of the right type (additional attributes too);
refs are foreign keys with an index; a ``table`` field is a child table with a
row order; each status field gets a history table. The classes live on their
own ``DeclarativeBase`` and ``MetaData`` so two configurations in one process
never share a class or a table.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.orderinglist import ordering_list
from sqlalchemy.orm import DeclarativeBase, relationship

from engine import clock
from engine.fieldtypes import CORE_TYPES, FieldType
from engine.registry import USER, DocType, Field, Registry
from engine.segments import segment_table
from engine.sessions import locale_table, session_table

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
SEQUENCE_TABLE = "crm_sequence"
OUTBOX_TABLE = "crm_outbox"
SCHEDULE_TABLE = "crm_schedule"
MERGE_TABLE = "crm_merge"
#: the archive flag of every document table: the record it was merged into
#: (engine/merge.py); archived rows are left out of lists, counts and pickers
ARCHIVE_COLUMN = "merged_into"
#: columns of Flask-AppBuilder's user table that the engine reads
USER_COLUMNS = ("username", "first_name", "last_name", "email", "active")
#: how long an SQLite connection waits for another's write transaction (milliseconds)
SQLITE_BUSY_TIMEOUT_MS = 30_000


@sa.event.listens_for(sa.Engine, "connect")
def _sqlite_unicode_lower(dbapi_connection: Any, connection_record: Any) -> None:
    """SQLite's lower() folds ASCII only; searches and `contains` filters must
    fold Cyrillic too, as PostgreSQL does."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.create_function("lower", 1, _lower, deterministic=True)
        # readers never wait for a writer (WAL), and a writer waits its turn
        # instead of failing at once with "database is locked" (busy timeout)
        # (a connection opened with a timeout of its own, such as 0, keeps it)
        waits = dbapi_connection.execute("PRAGMA busy_timeout").fetchone()[0]
        if 0 < waits < SQLITE_BUSY_TIMEOUT_MS:
            dbapi_connection.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        dbapi_connection.execute("PRAGMA journal_mode = WAL").fetchall()


@sa.event.listens_for(sa.Engine, "savepoint")
def _sqlite_savepoint_inside_a_transaction(conn: Any, name: Any) -> None:
    """pysqlite opens a transaction only before its first INSERT, UPDATE or
    DELETE; a SAVEPOINT that comes first opens one of its own, and releasing
    it commits at once, so ``session.begin_nested()`` would commit what the
    caller may still roll back. Open the real transaction first."""
    raw = conn.connection.dbapi_connection
    if isinstance(raw, sqlite3.Connection) and not raw.in_transaction:
        conn.exec_driver_sql("BEGIN")


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


@dataclass
class Models:
    """The mapped classes and tables of one configuration."""

    registry: Registry
    metadata: sa.MetaData
    base: type[DeclarativeBase]
    types: dict[str, FieldType]
    #: mapped classes are made at run time, one attribute per field: ``type[Any]``
    classes: dict[str, type[Any]] = field(default_factory=dict)
    children: dict[tuple[str, str], type[Any]] = field(default_factory=dict)
    histories: dict[str, type[Any]] = field(default_factory=dict)
    sequence: sa.Table | None = None
    outbox: sa.Table | None = None
    schedule: sa.Table | None = None
    sessions: sa.Table | None = None
    locales: sa.Table | None = None
    merges: sa.Table | None = None
    user_segments: sa.Table | None = None

    def cls(self, doctype: str) -> type[Any]:
        return self.classes[doctype]

    def table(self, doctype: str) -> sa.Table:
        return self.classes[doctype].__table__

    def dispose(self) -> None:
        """Forget the mappers: tests build many configurations in one process."""
        self.base.registry.dispose()
        self.metadata.clear()


def build(registry: Registry, field_types: dict[str, FieldType] | None = None) -> Models:
    metadata = sa.MetaData(naming_convention=NAMING)

    class Base(DeclarativeBase):
        pass

    Base.metadata = metadata
    types = {t.name: t for t in CORE_TYPES} | (field_types or {})
    models = Models(registry, metadata, Base, types)
    models.sequence = sa.Table(
        SEQUENCE_TABLE, metadata,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False, server_default="0"),
    )  # fmt: skip
    models.outbox, models.schedule = job_tables(metadata)
    models.merges = merge_table(metadata)
    models.sessions = session_table(metadata)
    models.locales = locale_table(metadata)
    models.user_segments = segment_table(metadata)
    # tables first (refs may point forward), then mappers with relationships
    tables = {name: _doc_table(models, d) for name, d in registry.documents.items()}
    for name, d in registry.documents.items():
        _map_doc(models, d, tables[name])
    from engine import searchindex  # it reads the mapped models

    searchindex.attach(models)
    return models


def job_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """The job runner's outbox and its periodic schedules (see engine/jobs.py).

    A due job is found by one index range scan of (state, run_after): a
    pending row is due once ``run_after`` has passed; a running row carries
    its lease's end in ``run_after`` too, so an abandoned lease is found the
    same way."""
    outbox = sa.Table(
        OUTBOX_TABLE, metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job", sa.String(100), nullable=False),
        sa.Column("key", sa.String(200), nullable=False, unique=True, index=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer),
        sa.Column("run_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_by", sa.String(100)),
        sa.Column("locked_until", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text),
        sa.Column("result", sa.Text),
        sa.Column("done", sa.Integer),
        sa.Column("total", sa.Integer),
        sa.Column("message", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, default=clock.now),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Index(f"ix_{OUTBOX_TABLE}_state_run_after", "state", "run_after"),
    )  # fmt: skip
    schedule = sa.Table(
        SCHEDULE_TABLE, metadata,
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("next_run", sa.DateTime(timezone=True), nullable=False),
    )  # fmt: skip
    return outbox, schedule


def merge_table(metadata: sa.MetaData) -> sa.Table:
    """The merge log (engine/merge.py): who merged which records into which,
    every reference it moved and every value it overwrote, so that the merge
    can be undone exactly."""
    return sa.Table(
        MERGE_TABLE, metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("doctype", sa.String(64), nullable=False),
        sa.Column("survivor_id", sa.Integer, nullable=False),
        #: JSON: the ids of the archived records
        sa.Column("merged_ids", sa.Text, nullable=False),
        sa.Column("by_id", sa.Integer),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, default=clock.now),
        sa.Column("undone_at", sa.DateTime(timezone=True)),
        sa.Column("undone_by_id", sa.Integer),
        #: JSON: [[table, column, {from id: [row ids]}], ...]
        sa.Column("moved", sa.Text, nullable=False),
        #: JSON: {"survivor": {field: old value}, "cleared": {id: {column: value}}}
        sa.Column("before", sa.Text, nullable=False),
        sa.Index(f"ix_{MERGE_TABLE}_doctype_survivor_id", "doctype", "survivor_id"),
    )  # fmt: skip


def _column(models: Models, doc_table: str, f: Field, composite: bool = False) -> sa.Column[Any]:
    """``composite``: the document's composite indexes (column, sort column, id)
    serve this column, so it gets no one-column index of its own."""
    ftype = models.types[f.type]
    kwargs: dict[str, Any] = {"nullable": True}
    args: list[Any] = []
    if f.type == "ref":
        target = models.registry.documents[f.to].table if f.to else "ab_user"
        # use_alter: refs may form cycles (a user's department, the department's
        # head); the FK is then added after both tables exist
        args.append(sa.ForeignKey(f"{target}.id", use_alter=True))
        kwargs["index"] = not composite
    elif f.unique:
        # a unique index, not a constraint: a later layer can add it in place
        kwargs["unique"] = True
        kwargs["index"] = True
    elif f.index:
        kwargs["index"] = not composite
    default = _server_default(f)
    if default is not None:
        kwargs["server_default"] = default
    if f.label:
        kwargs["comment"] = str(f.label)
    return sa.Column(f.column, ftype.column(f), *args, **kwargs)


def _server_default(f: Field) -> str | None:
    """Defaults the database applies itself, so that new columns fill old rows alike."""
    value = f.default
    if f.type == "boolean":
        return "1" if value is True else "0" if value in (None, False) else None
    if value is None or value == "current_user" or f.compute or f.type == "ref":
        return None
    if f.type in ("integer", "decimal", "money") and isinstance(value, (int, float, Decimal)):
        return str(value)
    if f.type in ("string", "enum", "text", "phone", "email", "url") and isinstance(value, str):
        return value
    return None


def _doc_table(models: Models, d: DocType) -> sa.Table:
    md = models.metadata
    cols: list[sa.Column[Any]]
    if d.name == USER:
        cols = [sa.Column("id", sa.Integer, primary_key=True)]
        for name in USER_COLUMNS:
            f = d.fields[name]
            cols.append(sa.Column(name, models.types[f.type].column(f)))
        cols += [_column(models, d.table, f) for f in d.fields.values() if not f.system]
        return sa.Table(d.table, md, *cols)
    cols = [
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, default=clock.now),
        sa.Column(
            "created_by_id", sa.Integer, sa.ForeignKey("ab_user.id", use_alter=True), index=True
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True, onupdate=clock.now),
        sa.Column("updated_by_id", sa.Integer, sa.ForeignKey("ab_user.id", use_alter=True)),
        sa.Column(ARCHIVE_COLUMN, sa.Integer, nullable=True),
    ]
    skip = {"id", "version", "created_at", "created_by", "updated_at", "updated_by"}
    composites = _composite_indexes(d)
    covered = {c[0] for c in composites if len(c) == 3}
    for f in d.fields.values():
        if f.name in skip or not f.stored:
            continue
        cols.append(_column(models, d.table, f, composite=f.column in covered))
    table = sa.Table(d.table, md, *cols, comment=str(d.label))
    for columns in composites:
        sa.Index(f"ix_{d.table}_{'_'.join(columns)}", *(table.c[c] for c in columns))
    for f in d.fields.values():
        if f.type == "table":
            _child_table(models, d, f)
    if d.statuses is not None:
        sa.Table(
            d.history_table, md,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("doc_id", sa.Integer, sa.ForeignKey(f"{d.table}.id", ondelete="CASCADE"), nullable=False),
            sa.Column("field", sa.String(64), nullable=False),
            sa.Column("from_state", sa.String(64)),
            sa.Column("to_state", sa.String(64), nullable=False),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False, default=clock.now),
            sa.Column("by_id", sa.Integer, sa.ForeignKey("ab_user.id", use_alter=True)),
            sa.Index(f"ix_{d.history_table}_doc_id_at", "doc_id", "at"),
            sa.Index(f"ix_{d.history_table}_to_state_at", "to_state", "at"),
            comment=f"{d.label}: history of {d.statuses.field}",
        )  # fmt: skip
    return table


def _composite_indexes(d: DocType) -> list[tuple[str, ...]]:
    """Indexes that end in the list's sort column and the id: one per list
    filter, the status, every ref and every ``index: true`` field. A list
    filtered on any of them is then one index range scan in page order,
    whatever the share of matching rows, rather than a sort of every match;
    the composite still serves plain lookups, so those columns get no
    one-column index besides."""
    wanted: list[tuple[str, ...]] = [("created_at", "id")]
    order_col = "created_at"
    if d.list is not None:
        order_field = d.fields.get(d.list.order_field)
        if order_field is not None and order_field.stored:
            order_col = order_field.column
    if order_col != "created_at":
        wanted.append((order_col, "id"))
    names = list(d.list.filters) if d.list else []
    if d.statuses is not None:
        names.insert(0, d.statuses.field)
    names += [
        f.name for f in d.fields.values()
        if not f.system and ((f.index and not f.unique) or f.type == "ref")
    ]  # fmt: skip
    for name in names:
        f = d.fields.get(name)
        if f is not None and f.stored and f.column != order_col and not f.unique:
            wanted.append((f.column, order_col, "id"))
    return list(dict.fromkeys(wanted))


def _child_table(models: Models, d: DocType, f: Field) -> sa.Table:
    cols = [
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "parent_id",
            sa.Integer,
            sa.ForeignKey(f"{d.table}.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("idx", sa.Integer, nullable=False, server_default="0"),
    ]
    cols += [_column(models, d.child_table(f.name), c) for c in f.fields.values()]
    table = sa.Table(d.child_table(f.name), models.metadata, *cols, comment=f"{d.label}: {f.label}")
    sa.Index(f"ix_{table.name}_parent_id_idx", table.c.parent_id, table.c.idx)
    return table


def _map_doc(models: Models, d: DocType, table: sa.Table) -> None:
    props: dict[str, Any] = {"__table__": table, "__doctype__": d}
    if d.name != USER:
        props["__mapper_args__"] = {"version_id_col": table.c.version}
    for f in d.fields.values():
        if f.type == "ref":
            target = d.name if f.to == d.name else f.to
            props[f.name] = relationship(
                lambda target=target: models.classes[target],
                foreign_keys=[table.c[f.column]],
                remote_side=[table.c.id] if target == d.name else None,
                lazy="select",
            )
        elif f.type == "table":
            child_cls = _map_child(models, d, f)
            props[f.name] = relationship(
                child_cls,
                # explicit: a row may also ref the parent's own type
                foreign_keys=[child_cls.__table__.c.parent_id],  # type: ignore[attr-defined]
                order_by=child_cls.__table__.c.idx,  # type: ignore[attr-defined]
                collection_class=ordering_list("idx"),
                cascade="all, delete-orphan",
                passive_deletes=True,
                lazy="select",
            )
    cls = type(d.name, (models.base,), props)
    models.classes[d.name] = cls
    if d.statuses is not None:
        hist = models.metadata.tables[d.history_table]
        models.histories[d.name] = type(f"{d.name}History", (models.base,), {"__table__": hist})


def _map_child(models: Models, d: DocType, f: Field) -> type:
    table = models.metadata.tables[d.child_table(f.name)]
    props: dict[str, Any] = {"__table__": table}
    for c in f.fields.values():
        if c.type == "ref":
            props[c.name] = relationship(
                lambda target=c.to: models.classes[target],
                foreign_keys=[table.c[c.column]],
                lazy="select",
            )
    cls = type(f"{d.name}_{f.name}", (models.base,), props)
    models.children[(d.name, f.name)] = cls
    return cls
