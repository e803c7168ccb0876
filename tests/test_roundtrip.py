"""Every document type of the example configs goes out as CSV and comes back:
the demo company (and a record of each type the demo leaves empty) exported
from one database, imported into an empty one in the order the types refer
to each other, and exported again — byte for byte the same files."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask_appbuilder.security.sqla.models import User
from sqlalchemy.orm import Session

from engine import migrate
from engine.demo import DEMO_USERS, Demo, Sizes
from engine.documents import Documents
from engine.loader import Loader
from engine.models import Models, build
from engine.registry import USER, DocType, Registry
from engine.transfer import export, import_

ROOT = Path(__file__).resolve().parents[1]
SIZES = Sizes(
    customers=12, deals=20, interests=8, orders=6, past_interactions=10, planned_interactions=10
)
NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


@dataclass
class Database:
    engine: sa.Engine
    session: Session
    users: dict[str, int]


def load_models(config: str) -> tuple[Registry, Models]:
    loader = Loader(ROOT / "configs" / config)
    registry = loader.load()
    field_types = {t.name: t for result in loader.pm.hook.crm_field_types() for t in result}
    return registry, build(registry, field_types)


@pytest.fixture
def databases(db_url: str) -> Iterator[Any]:
    """``databases(models)`` → a migrated, empty database with the demo's users;
    on PostgreSQL the second one lives in a schema of its own."""
    made: list[Database] = []

    def make(models: Models) -> Database:
        if made and db_url.startswith("postgresql"):
            admin = sa.create_engine(db_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.exec_driver_sql("DROP SCHEMA IF EXISTS roundtrip CASCADE")
                conn.exec_driver_sql("CREATE SCHEMA roundtrip")
            admin.dispose()
            engine = sa.create_engine(db_url, connect_args={"options": "-c search_path=roundtrip"})
        else:
            engine = sa.create_engine(db_url if not made else db_url.replace(".db", "2.db"))
        db = Database(engine, Session(engine), {})
        made.append(db)  # disposed of even if what follows fails
        migrate.apply(models, engine, migrate.plan(models, engine))
        users = User.__table__  # Flask-AppBuilder's: its ids come from a sequence on PostgreSQL
        with engine.begin() as conn:
            for username, first, last, *_ in (("admin", "Админ", "Демо"), *DEMO_USERS):
                db.users[username] = conn.execute(
                    users.insert()
                    .values(username=username, first_name=first, last_name=last,
                            email=f"{username}@demo.example.ru", active=True)
                    .returning(users.c.id)
                ).scalar_one()  # fmt: skip
        return db

    yield make
    for db in made:
        db.session.close()
        db.engine.dispose()


def import_order(registry: Registry, files: dict[str, bytes]) -> list[str]:
    """The types, each after the types its records refer to (a column of refs,
    or of table rows with refs, that is filled in somewhere in its file)."""

    def needs(d: DocType) -> set[str]:
        rows = list(csv.DictReader(io.StringIO(files[d.name].decode("utf-8"))))
        used = {name for row in rows for name, cell in row.items() if cell}
        fields = [f for f in d.fields.values() if f.name in used]
        fields += [c for f in fields if f.type == "table" for c in f.fields.values()]
        return {f.to for f in fields if f.type == "ref" and f.to and f.to not in (USER, d.name)}

    order: list[str] = []
    pending = {name: needs(registry.documents[name]) for name in files}
    while pending:
        ready = sorted(n for n, deps in pending.items() if deps <= set(order))
        assert ready, f"the records refer to each other in a circle: {pending}"
        order.extend(ready)
        for n in ready:
            del pending[n]
    return order


def sample(d: DocType, models: Models, db: Database) -> dict[str, Any]:
    """Values for one record of a type the demo leaves empty: every field a
    person or the system may set, of its type."""
    values: dict[str, Any] = {}
    for f in d.fields.values():
        if f.system or f.compute or not f.stored or f.type == "table":
            continue
        if f.pattern:  # a mailbox's password: the ${NAME} of an environment variable
            values[f.name] = "${SAMPLE_PASSWORD}" if f.pattern.startswith("^\\$") else None
            continue
        if f.type == "ref":
            if f.to in (None, USER):
                values[f.name] = db.users["manager"]
            elif f.required:  # the first record of the type it refers to (made earlier)
                target = models.table(f.to)
                values[f.name] = db.session.execute(
                    sa.select(target.c.id).order_by(target.c.id).limit(1)
                ).scalar()
            continue
        values[f.name] = {
            "string": f"Образец {d.name}", "text": "Строка 1\nСтрока 2", "integer": 7,
            "boolean": True, "date": NOW.date(), "datetime": NOW, "money": Decimal("12.50"),
            "decimal": Decimal("1.5"), "email": "sample@demo.example.ru",
            "phone": "+74959990001", "url": "https://sample.example.ru/",
            "enum": next(iter(f.values)) if f.values else None,
        }.get(f.type)  # fmt: skip
    return {k: v for k, v in values.items() if v is not None}


def fill(registry: Registry, models: Models, db: Database, config: str) -> None:
    demo = Demo(models, db.session, db.users, now=NOW)
    demo.fill(SIZES)
    docs = Documents(models, db.session, db.users["manager"], ["Admin"], now=NOW,
                     username="manager", trusted=True)  # fmt: skip
    # what each config adds, on some of the records
    extra = {
        "wholesale": {
            "Customer": {"industry": "retail", "region": "Москва", "credit_limit": "500000"},
            "CustomerOrder": {"warehouse": "spb", "delivery_date": "2026-03-10"},
        },
        "services": {
            "Customer": {"employees": 750, "it_landscape": "1С, SAP\nVPN", "nda_signed": True,
                         "website": "https://vector.example.ru/"},
            "Deal": {"project_manager": db.users["ivanov"], "hours": 120, "rate": "4500"},
            "Interest": {"service": "audit", "budget_confirmed": True},
            "Interaction": {"location": "Офис клиента, переговорная 2"},
        },
    }[config]  # fmt: skip
    for doctype, values in extra.items():
        table = models.table(doctype)
        query = sa.select(table.c.id).order_by(table.c.id).limit(3)
        st = registry.documents[doctype].statuses
        if st is not None:  # a record in a final state keeps its fields
            final = [name for name, state in st.states.items() if state.final]
            query = query.where(
                table.c[registry.documents[doctype].fields[st.field].column].notin_(final)
            )
        for obj_id in db.session.execute(query).scalars():
            docs.update(doctype, obj_id, values)
    # a file names an Interest by its subject: the demo's repeat, and a file
    # with two interests of one subject cannot say which a deal belongs to
    # (and a letter names its interaction by its subject: a thread's replies share one)
    for name in ("Interest", "Interaction"):
        named = models.table(name)
        db.session.execute(
            named.update().values(subject=named.c.subject + " — " + sa.cast(named.c.id, sa.String))
        )
    for d in registry.documents.values():
        table = models.table(d.name)
        if not d.builtin and db.session.execute(sa.select(table.c.id).limit(1)).first() is None:
            docs.create(d.name, sample(d, models, db))
    db.session.commit()


def csv_of(models: Models, db: Database, doctype: str) -> bytes:
    out = io.BytesIO()
    export(models, db.session, doctype, out, "csv")
    return out.getvalue()


@pytest.mark.parametrize("config", ["wholesale", "services"])
def test_every_type_of_an_example_config_round_trips_through_csv(
    config: str, databases: Any
) -> None:
    registry, models = load_models(config)
    try:
        source = databases(models)
        fill(registry, models, source, config)
        target = databases(models)
        files = {d.name: csv_of(models, source, d.name)
                 for d in registry.documents.values() if not d.builtin}  # fmt: skip
        order = import_order(registry, files)
        assert {"Customer", "Deal", "CustomerOrder", "Interaction", "Interest"} <= set(order)
        for doctype in order:
            rows = files[doctype].decode("utf-8").count("\n") - 1
            assert rows >= 1, f"no {doctype} to carry over"
            result = import_(models, target.session, doctype, io.BytesIO(files[doctype]), "csv",
                             now=NOW)  # fmt: skip
            target.session.commit()
            assert result.errors == [], (doctype, result.errors[:5])
            assert result.created == result.rows, doctype
        for doctype in order:
            assert csv_of(models, target, doctype) == files[doctype], doctype
    finally:
        models.dispose()
