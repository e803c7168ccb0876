"""Merging duplicate records, and undoing a merge.

A merge keeps one record (the *survivor*), gives it the field values the user
chose from the others, moves every reference to the others onto it and
archives the others; all of it in the caller's one transaction.

- **Every reference** is found in the registry, so plugins' types are
  covered like the engine's: each ref field (``type: ref``, ``to:`` the
  merged type) of every document type and of every table's rows, the merged
  type's status history (``doc_id``), and every type that points at records
  of any type by a ``doctype`` + ``doc_id`` pair (tasks, calls, messages,
  notifications, process instances). The timeline is built from exactly
  these, so it follows. One ``UPDATE`` per referencing column, never a loop
  over rows; the ids of the rows each one moved are kept so that an undo
  moves back those rows and no others. A moved document row's ``version``
  goes up: a form opened on it before the merge cannot put the old ref back.
- **Archived, not deleted**: a record merged away gets ``merged_into`` (a
  column of every document table) = the survivor. ``access.where`` leaves
  such rows out of every list, count, picker, report, export and search;
  the record's own page still opens and says where it went.
- **Logged**: a row of ``crm_merge`` (who, when, which records, the moved
  references, the survivor's overwritten values, the unique values cleared
  on the archived records) and a timeline entry on the survivor.
- **Undone** exactly: the moved rows go back, the archived records return,
  the survivor gets its old values back, unless a later merge took one of
  these records meanwhile.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine import access, clock
from engine.access import Principal
from engine.documents import AUDIT, Documents, jsonable
from engine.errors import HandledError
from engine.i18n import gettext
from engine.models import ARCHIVE_COLUMN, Models
from engine.registry import USER, DocType, Field

#: the most records one merge takes (the page shows them side by side)
MAX_RECORDS = 10
#: ids per statement when an undo moves rows back (bind parameter limits)
CHUNK = 5000


class MergeError(HandledError):
    """A merge or an undo the request cannot have: bad ids, a record already
    merged, a later merge in the way. ``status`` is the HTTP answer."""

    def __init__(self, message: str, status: int = 400):
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class Reference:
    """A column that points at records of the merged type."""

    table: sa.Table
    column: str
    #: a ``doctype`` + ``doc_id`` pair: only rows whose type column names the merged type
    type_column: str | None = None
    #: a document table: a moved row's version goes up
    versioned: bool = False

    @property
    def key(self) -> str:
        return f"{self.table.name}.{self.column}"


def references(models: Models, doctype: str) -> list[Reference]:
    """Every column of every table that refers to records of ``doctype``."""
    registry = models.registry
    d = registry.documents[doctype]
    out: list[Reference] = []
    for other in registry.documents.values():
        if other.name not in models.classes:
            continue
        table = models.table(other.name)
        versioned = other.name != USER
        for f in other.fields.values():
            if f.type == "ref" and f.to == doctype and f.name not in AUDIT and f.stored:
                out.append(Reference(table, f.column, versioned=versioned))
            elif f.type == "table":
                rows = models.metadata.tables[other.child_table(f.name)]
                out += [
                    Reference(rows, c.column)
                    for c in f.fields.values()
                    if c.type == "ref" and c.to == doctype
                ]
        pair = _pair(other)
        if pair is not None:
            out.append(Reference(table, pair[1].column, pair[0].column, versioned))
    if d.statuses is not None:
        out.append(Reference(models.metadata.tables[d.history_table], "doc_id"))
    return out


def _pair(d: DocType) -> tuple[Field, Field] | None:
    """The ``doctype`` + ``doc_id`` fields by which a type points at any record."""
    kind, ident = d.fields.get("doctype"), d.fields.get("doc_id")
    if kind is None or ident is None or not kind.stored or not ident.stored:
        return None
    if kind.type not in ("string", "enum") or ident.type != "integer":
        return None
    return kind, ident


def choosable(d: DocType, rights: access.FieldRights | None = None) -> list[Field]:
    """The fields whose value the user picks from one of the records: stored,
    not computed, not the engine's, not the status, not a table, writable."""
    status = d.statuses.field if d.statuses else None
    return [
        f
        for f in d.fields.values()
        if f.stored
        and not f.system
        and not f.compute
        and not f.readonly
        and f.type != "table"
        and f.name not in AUDIT
        and f.name != status
        and (rights is None or rights.writable(f.name))
    ]


def may_merge(models: Models, principal: Principal, doctype: str, survivor: Any,
              others: Iterable[Any]) -> bool:  # fmt: skip
    """Whoever may update the survivor and update or delete each other record."""
    if not access.may_touch(models, principal, doctype, "update", survivor):
        return False
    return all(
        _may_change(models, principal, doctype, "update", o)
        or _may_change(models, principal, doctype, "delete", o)
        for o in others
    )


def _may_change(models: Models, principal: Principal, doctype: str, action: str, obj: Any) -> bool:
    """``may_touch`` without the archive's refusal (an undo brings them back)."""
    r = access.rule(models.registry, principal, doctype, action)
    if r is True:
        return True
    if r is False or principal.user_id is None:
        return False
    d = models.registry.documents[doctype]
    if not d.owner:
        return False
    return bool(getattr(obj, d.fields[d.owner].column, None) == principal.user_id)


def parse_ids(text: str | Sequence[Any] | None) -> list[int]:
    """``3,7,9`` (or a list) → distinct ids in order; MergeError when malformed."""
    raw = text.split(",") if isinstance(text, str) else list(text or [])
    ids: list[int] = []
    for part in raw:
        value = part.strip() if isinstance(part, str) else part
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, str) and value.isdigit())
        ):
            raise MergeError(gettext("`%(value)s` is not a record id", value=str(value)[:40]))
        ident = int(value)
        if not 0 < ident < 2**31:
            raise MergeError(gettext("`%(value)s` is not a record id", value=ident))
        if ident not in ids:
            ids.append(ident)
    if len(ids) < 2:
        raise MergeError(gettext("name at least two different records to merge"))
    if len(ids) > MAX_RECORDS:
        raise MergeError(gettext("at most %(n)s records can be merged at once", n=MAX_RECORDS))
    return ids


def load(docs: Documents, doctype: str, ids: Sequence[int]) -> list[Any]:
    """The records, in the order of ``ids``, that the user may read: 404 for
    one that is not there (or hidden), 400 for one a merge archived already."""
    models = docs.models
    cls = models.cls(doctype)
    readable = access.where(models, docs.principal, doctype, "read", archived=True)
    found = {
        o.id: o
        for o in docs.session.execute(sa.select(cls).where(cls.id.in_(ids), readable)).scalars()
    }
    d = models.registry.documents[doctype]
    out = []
    for ident in ids:
        obj = found.get(ident)
        if obj is None:
            raise MergeError(
                gettext("there is no %(document)s #%(id)s", document=_label(d), id=ident), 404
            )
        if getattr(obj, ARCHIVE_COLUMN) is not None:
            raise MergeError(
                gettext(
                    "%(document)s #%(id)s was merged into #%(into)s already",
                    document=_label(d),
                    id=ident,
                    into=getattr(obj, ARCHIVE_COLUMN),
                )
            )
        out.append(obj)
    return out


def _label(d: DocType) -> str:
    return f"“{d.label.get(None)}”"


def merge(
    docs: Documents,
    doctype: str,
    survivor_id: int,
    other_ids: Sequence[int],
    fields: Mapping[str, int] | None = None,
) -> int:
    """Merge ``other_ids`` into ``survivor_id``, the survivor taking each
    field of ``fields`` from the record named there; the id of the log row.
    Writes in the caller's transaction and commits nothing: the caller
    commits, or rolls all of it back."""
    models, session = docs.models, docs.session
    d = models.registry.documents.get(doctype)
    if d is None or d.builtin:
        raise MergeError(gettext("there is no document type `%(name)s`", name=doctype), 404)
    ids = parse_ids([survivor_id, *other_ids])
    records = load(docs, doctype, ids)
    survivor, others = records[0], records[1:]
    if not may_merge(models, docs.principal, doctype, survivor, others):
        raise MergeError(gettext("you may not merge these records"), 403)
    by_id = {o.id: o for o in records}
    rights = access.field_rights(models.registry, docs.principal, doctype)
    allowed = {f.name: f for f in choosable(d, rights)}
    values: dict[str, Any] = {}
    for name, source in (fields or {}).items():
        f = allowed.get(name)
        if f is None:
            raise MergeError(gettext("`%(name)s` is not a field you may choose", name=name), 422)
        if isinstance(source, bool) or not isinstance(source, int) or source not in by_id:
            raise MergeError(
                gettext("`%(name)s`: take it from one of the merged records", name=name), 422
            )
        if source != survivor.id:
            values[name] = getattr(by_id[source], f.column)
    table = models.table(doctype)
    others_ids = [o.id for o in others]
    before = {
        "survivor": {n: jsonable(getattr(survivor, allowed[n].column)) for n in values},
        "cleared": {},
    }
    # a unique value the survivor takes leaves the archived record (the index holds it)
    cleared: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        f = allowed[name]
        if not f.unique or value is None:
            continue
        for o in others:
            if getattr(o, f.column) == value:
                cleared.setdefault(str(o.id), {})[f.column] = jsonable(value)
                session.execute(sa.update(table).where(table.c.id == o.id).values({f.column: None}))
    before["cleared"] = cleared
    if values:
        docs.update(doctype, survivor, values)
    moved = _move(session, references(models, doctype), doctype, others_ids, survivor.id)
    session.execute(
        sa.update(table)
        .where(table.c.id.in_(others_ids))
        .values({ARCHIVE_COLUMN: survivor.id, "version": table.c.version + 1})
    )
    merges = models.merges
    assert merges is not None
    merge_id = session.execute(  # type: ignore[attr-defined]
        merges.insert().values(
            doctype=doctype,
            survivor_id=survivor.id,
            merged_ids=json.dumps(others_ids),
            by_id=docs.user_id,
            at=clock.now(),
            moved=json.dumps(moved),
            before=json.dumps(before),
        )
    ).inserted_primary_key[0]
    _forget(session, records)
    return int(merge_id)


def _move(
    session: Any, refs: list[Reference], doctype: str, from_ids: list[int], to_id: int
) -> list[Any]:
    """One SELECT and one UPDATE per referencing column; what moved, by column
    and former target: ``[[table, column, {from id: [row ids]}], ...]``."""
    moved: list[Any] = []
    for ref in refs:
        t = ref.table
        col = t.c[ref.column]
        cond: sa.ColumnElement[bool] = col.in_(from_ids)
        if ref.type_column is not None:
            cond = sa.and_(t.c[ref.type_column] == doctype, cond)
        rows = session.execute(sa.select(t.c.id, col).where(cond)).all()
        if not rows:
            continue
        by_target: dict[str, list[int]] = {}
        for row_id, target in rows:
            by_target.setdefault(str(target), []).append(row_id)
        values: dict[str, Any] = {ref.column: to_id}
        if ref.versioned:
            values["version"] = t.c.version + 1
        session.execute(sa.update(t).where(cond).values(values))
        moved.append([t.name, ref.column, by_target])
    return moved


def _forget(session: Any, objects: Iterable[Any]) -> None:
    """Loaded objects whose rows a set-based UPDATE changed read afresh."""
    for obj in objects:
        session.expire(obj)


# --- the log and undo ------------------------------------------------------------------


@dataclass(frozen=True)
class Merge:
    id: int
    doctype: str
    survivor_id: int
    merged_ids: tuple[int, ...]
    by_id: int | None
    at: Any
    undone_at: Any
    moved: list[Any]
    before: dict[str, Any]

    @property
    def count(self) -> int:
        """How many references moved."""
        return sum(len(ids) for _, _, by in self.moved for ids in by.values())


def _row(row: Any) -> Merge:
    return Merge(
        row.id, row.doctype, row.survivor_id, tuple(json.loads(row.merged_ids)), row.by_id,
        row.at, row.undone_at, json.loads(row.moved), json.loads(row.before),
    )  # fmt: skip


def get(models: Models, session: Any, merge_id: int) -> Merge | None:
    merges = models.merges
    assert merges is not None
    if not 0 < merge_id < 2**31:  # no such id fits the column
        return None
    row = session.execute(sa.select(merges).where(merges.c.id == merge_id)).first()
    return _row(row) if row is not None else None


def of_record(models: Models, session: Any, doctype: str, doc_id: int) -> list[Merge]:
    """The merges (not undone) this record survived, newest first."""
    merges = models.merges
    assert merges is not None
    stmt = (
        sa.select(merges)
        .where(
            merges.c.doctype == doctype,
            merges.c.survivor_id == doc_id,
            merges.c.undone_at.is_(None),
        )
        .order_by(merges.c.id.desc())
    )
    return [_row(r) for r in session.execute(stmt)]


def log(models: Models, session: Any, principal: Principal, limit: int = 100) -> list[Merge]:
    """The latest merges of the types the principal may read."""
    merges = models.merges
    assert merges is not None
    readable = [
        n for n, d in models.registry.documents.items()
        if not d.builtin and access.allowed(models.registry, principal, n, "read")
    ]  # fmt: skip
    stmt = (
        sa.select(merges)
        .where(merges.c.doctype.in_(readable))
        .order_by(merges.c.id.desc())
        .limit(limit)
    )
    return [_row(r) for r in session.execute(stmt)]


def undo(docs: Documents, merge_id: int) -> Merge:
    """Undo a merge in the caller's transaction (the caller commits)."""
    models, session = docs.models, docs.session
    m = get(models, session, merge_id)
    if m is None or m.doctype not in models.classes:
        raise MergeError(gettext("there is no merge #%(id)s", id=merge_id), 404)
    d = models.registry.documents[m.doctype]
    if not access.allowed(models.registry, docs.principal, m.doctype, "read"):
        raise MergeError(gettext("there is no merge #%(id)s", id=merge_id), 404)
    if m.undone_at is not None:
        raise MergeError(gettext("merge #%(id)s was undone already", id=merge_id), 409)
    merges = models.merges
    assert merges is not None
    involved = {m.survivor_id, *m.merged_ids}
    later = session.execute(
        sa.select(merges.c.id, merges.c.survivor_id, merges.c.merged_ids).where(
            merges.c.doctype == m.doctype, merges.c.id > m.id, merges.c.undone_at.is_(None)
        )
    ).all()
    for row in later:
        if involved & {row.survivor_id, *json.loads(row.merged_ids)}:
            raise MergeError(
                gettext(
                    "these records were merged again since (merge #%(id)s): undo that one first",
                    id=row.id,
                ),
                409,
            )
    cls = models.cls(m.doctype)
    records = {
        o.id: o for o in session.execute(sa.select(cls).where(cls.id.in_(list(involved)))).scalars()
    }
    survivor = records.get(m.survivor_id)
    if survivor is None or any(i not in records for i in m.merged_ids):
        raise MergeError(
            gettext("a record of this merge was deleted since: it cannot be undone"), 409
        )
    if not may_merge(
        models, docs.principal, m.doctype, survivor, [records[i] for i in m.merged_ids]
    ):
        raise MergeError(gettext("you may not undo this merge"), 403)
    table = models.table(m.doctype)
    tables = models.metadata.tables
    for name, column, by_target in m.moved:
        t = tables[name]
        versioned = "version" in t.c and t.name != models.table(USER).name
        for target, row_ids in by_target.items():
            for start in range(0, len(row_ids), CHUNK):
                chunk = row_ids[start : start + CHUNK]
                values: dict[str, Any] = {column: int(target)}
                if versioned:
                    values["version"] = t.c.version + 1
                session.execute(
                    sa.update(t)
                    .where(t.c.id.in_(chunk), t.c[column] == m.survivor_id)
                    .values(values)
                )
    session.execute(
        sa.update(table)
        .where(table.c.id.in_(list(m.merged_ids)))
        .values({ARCHIVE_COLUMN: None, "version": table.c.version + 1})
    )
    _forget(session, records.values())
    old = m.before.get("survivor") or {}
    if old:
        docs.update(m.doctype, survivor, {k: v for k, v in old.items() if k in d.fields})
    for ident, columns in (m.before.get("cleared") or {}).items():
        session.execute(sa.update(table).where(table.c.id == int(ident)).values(columns))
    session.execute(
        sa.update(merges)
        .where(merges.c.id == m.id)
        .values(undone_at=clock.now(), undone_by_id=docs.user_id)
    )
    _forget(session, records.values())
    return m
