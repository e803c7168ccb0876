"""The documents service's public face: create, update, delete, read and
name records (see :mod:`engine.documents`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa

from engine.documents.errors import DeleteRefused, DuplicatesFound, NotFound
from engine.documents.plans import Plan
from engine.documents.values import (
    AUDIT,
    jsonable,
    quoted,
)
from engine.documents.writing import DocumentWriting
from engine.errors import HandledError
from engine.fieldtypes import valid_id
from engine.i18n import gettext
from engine.registry import DocType, Field


class Documents(DocumentWriting):
    """Create, update and delete records of one configuration, in the caller's
    session and transaction, on behalf of one user.

    ``trusted`` is for the engine itself (plugins' jobs, imports): it may also set
    ``readonly`` fields, which only forms and the API must leave alone.
    ``now`` fixes the clock (a datetime or a callable), for tests and imports.
    """

    # -- public API ------------------------------------------------------------

    def get(self, doctype: str, obj_id: int) -> Any | None:
        return self.session.get(self.models.cls(doctype), obj_id)

    def resolve(self, doctype: str, obj_or_id: Any) -> Any:
        """An ORM object from an object or an id; NotFound when there is none."""
        if isinstance(obj_or_id, (int, str)) and not isinstance(obj_or_id, bool):
            ident = valid_id(obj_or_id)
            obj = self.get(doctype, ident) if ident is not None else None
            if obj is None:
                d = self.registry.documents[doctype]
                raise NotFound(
                    gettext(
                        "there is no %(document)s #%(id)s",
                        document=quoted(d.label, None, self.registry.locale),
                        id=obj_or_id,
                    )
                )
            return obj
        return obj_or_id

    def create(self, doctype: str, values: Mapping[str, Any]) -> Any:
        d = self._writable(doctype)
        if d.builtin:
            raise HandledError(f"{quoted(d.label)} records are managed on the security pages")
        p = self.plan(d, None, values)
        p.raise_errors()
        self._warn(p)
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
        self._warn(p)
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
        lock = self.locked(d, obj)
        if lock is not None:  # a state that locks fields keeps the record too
            raise DeleteRefused(self.lock_message(d, obj, lock[0]))
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
        conv: Callable[[Any], Any] = jsonable if json else (lambda v: v)
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

    def title(self, doctype: str, obj: Any, *, as_read: bool = False) -> str:
        """The record's title; ``as_read``: as the acting user may read it (a
        page, a card): a ref in the title template to a record they may not
        read gives its id, no name."""
        self._masking = as_read
        try:
            return str(self.view(doctype, obj))
        finally:
            self._masking = False

    # -- helpers ---------------------------------------------------------------

    def _warn(self, p: Plan) -> None:
        """Keep the plan's duplicate warnings; stop if the caller asked to."""
        self.warnings = dict(p.warnings)
        seen = {f"{name}:{w.id}" for name, w in p.warnings.items()}
        if seen and self.stop_at_warnings and not seen <= self.confirmed:
            raise DuplicatesFound(p.warnings)

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
                            gettext(
                                "%(document)s #%(id)s cannot be deleted: %(n)s %(other)s "
                                "record(s) refer to it through `%(path)s`",
                                document=quoted(d.label, None, self.registry.locale),
                                id=obj.id,
                                n=count,
                                other=quoted(other.label, None, self.registry.locale),
                                path=path,
                            )
                        )
