"""Writing a checked plan onto the ORM objects: audit columns, table rows,
numbers drawn from the counter, the status history, hooks and optimistic
locking."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm.exc import StaleDataError

from engine.documents.errors import StaleVersion
from engine.documents.numbering import DocumentNumbering
from engine.documents.plans import Plan, RowPlan
from engine.documents.values import (
    aware,
    quoted,
    same,
)
from engine.i18n import gettext
from engine.registry import USER, DocType, Field


class DocumentWriting(DocumentNumbering):
    """Writes of planned saves (see :class:`engine.documents.Documents`)."""

    # -- writing ---------------------------------------------------------------

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

    # -- optimistic locking ----------------------------------------------------

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
            at.astimezone(self.timezone).strftime("%Y-%m-%d %H:%M %Z")
            if at
            else gettext("an unknown time")
        )
        who = row.username or gettext("someone")
        return StaleVersion(
            gettext(
                "%(document)s #%(id)s was changed by %(who)s at %(when)s after you opened it; "
                "reload it and make your changes again",
                document=quoted(d.label, None, self.registry.locale),
                id=obj_id,
                who=who,
                when=when,
            ),
            row.username,
            at,
            row.version,
        )
