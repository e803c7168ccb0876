"""Record numbers: a named counter per type, moved in the caller's transaction
with one statement, so two saves never draw the same number."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from engine.documents.validation import DocumentPlanning
from engine.registry import DocType


class DocumentNumbering(DocumentPlanning):
    """Numbers drawn for records (see :class:`engine.documents.Documents`)."""

    def next_number(self, d: DocType) -> str:
        assert d.numbering is not None
        return f"{d.numbering.prefix}{self.increment(d.name):0{d.numbering.width}d}"

    def increment(self, name: str, by: int = 1, at_least: int = 0) -> int:
        """The next value of a named counter, atomically and in the caller's
        transaction: an upsert that returns the new value. On PostgreSQL the
        row stays locked until commit, so concurrent saves wait for each other
        and numbers have no gaps and no duplicates.

        ``by`` reserves that many values at once (an import numbers a batch
        of records in one statement: the returned value is the last of them);
        ``at_least`` first moves the counter up to that value (imported
        records kept their numbers; new ones must come after them)."""
        table = self.models.sequence
        assert table is not None
        dialect = self.session.get_bind().dialect.name
        if dialect in ("postgresql", "sqlite"):
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            greatest = sa.func.greatest if dialect == "postgresql" else sa.func.max
            start = greatest(table.c.value, at_least) if at_least else table.c.value
            stmt = (
                insert(table)
                .values(name=name, value=max(at_least, 0) + by)
                .on_conflict_do_update(index_elements=[table.c.name], set_={"value": start + by})
                .returning(table.c.value)
            )
            return int(self.session.execute(stmt).scalar_one())
        # other databases: a plain UPDATE takes the row lock, then read it back
        result = self.session.execute(
            table.update().where(table.c.name == name).values(value=table.c.value + by)
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            self.session.execute(table.insert().values(name=name, value=max(at_least, 0) + by))
        elif at_least:
            self.session.execute(
                table.update()
                .where(table.c.name == name, table.c.value < at_least + by)
                .values(value=at_least + by)
            )
        return int(
            self.session.execute(sa.select(table.c.value).where(table.c.name == name)).scalar_one()
        )
