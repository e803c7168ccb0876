"""A savepoint that is the first statement of a transaction stays inside it
on SQLite too: releasing it commits nothing, and rolling back the outer
transaction undoes what the savepoint kept (pysqlite would otherwise open a
transaction of the savepoint's own and commit it on release)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

import engine.models  # noqa: F401  (its engine events)


def test_a_released_savepoint_is_rolled_back_with_its_transaction(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    table = sa.Table("notes", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                     sa.Column("text", sa.String(20)))  # fmt: skip
    table.metadata.drop_all(engine)
    table.metadata.create_all(engine)
    try:
        with Session(engine) as session:
            session.execute(sa.select(table.c.id)).all()  # reads only: no transaction yet
            with session.begin_nested():
                session.execute(table.insert().values(text="kept?"))
            session.rollback()
        with Session(engine) as session:
            assert session.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0
            with session.begin_nested():
                session.execute(table.insert().values(text="kept"))
            session.commit()
        with engine.connect() as conn:
            assert conn.execute(sa.select(table.c.text)).scalars().all() == ["kept"]
    finally:
        table.metadata.drop_all(engine)
        engine.dispose()
