"""Import and export: files a person would make or get, on SQLite and PostgreSQL.

Each test builds a configuration from YAML and a real database with
Flask-AppBuilder's user table, as tests/test_documents.py does; the command
line is run as a user would run it, in a real process.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import sqlalchemy as sa
from flask_appbuilder import Model
from flask_appbuilder.security.sqla.models import User
from sqlalchemy.orm import Session

from engine.access import Principal
from engine.documents import Documents
from engine.models import Models, build
from engine.registry import Registry
from engine.transfer import (
    ImportResult,
    RowError,
    TransferError,
    export,
    export_rows,
    import_,
    iter_csv,
    key_field,
)
from engine.transfer.readers import Limits

NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
CRM_BIN = str(Path(sys.executable).with_name("crm"))
CONFIG = "name: Romashka LLC\nlocale: ru\nregion: RU\ntimezone: Europe/Moscow\nlayers: []\n"
CRM = """
roles:
  manager: {label: Manager}
documents:
  Company:
    title: "{{ name }}"
    owner: manager
    fields:
      name:    {type: string, required: true, label: {en: Name, ru: Наименование}}
      inn:     {type: inn, label: {en: INN, ru: ИНН}}
      parent:  {type: ref, to: Company, label: {en: Parent, ru: Головная}}
      manager: {type: ref, to: User, default: current_user}
    access:
      manager: {read: own, create: true, update: own}
  Product:
    fields:
      code: {type: string, unique: true, label: {en: Code, ru: Артикул}}
      name: {type: string}
    access:
      manager: {read: true, create: true}
  Deal:
    numbering: {prefix: "D-", width: 5}
    fields:
      company:  {type: ref, to: Company, required: true, label: {en: Company, ru: Компания}}
      manager:  {type: ref, to: User, default: current_user}
      title:    {type: string, max_length: 60}
      notes:    {type: text}
      seats:    {type: integer, min: 0}
      rate:     {type: decimal, places: 3}
      budget:   {type: money}
      urgent:   {type: boolean}
      due:      {type: date}
      call_at:  {type: datetime}
      kind:     {type: enum, values: {new: New business, up: Upsell}, default: new}
      phone:    {type: phone}
      email:    {type: email}
      site:     {type: url}
      code:     {type: string, readonly: true}
      lines:
        type: table
        label: {en: Lines, ru: Строки}
        fields:
          product: {type: ref, to: Product}
          qty:     {type: decimal, default: 1, min: 0}
          price:   {type: money}
          serial:  {type: string, unique: true}
          amount:  {type: money, compute: "(qty or 0) * (price or 0)"}
      total:    {type: money, compute: "lines | sum(attribute='amount')"}
    statuses:
      initial: open
      states:
        open: {label: {en: Open, ru: Открыта}}
        won:  {label: {en: Won, ru: Выиграна}, final: true, require: [budget]}
        lost: {label: {en: Lost, ru: Проиграна}, final: true}
    access:
      manager: {read: true, create: true}
"""


@dataclass
class World:
    registry: Registry
    models: Models
    engine: sa.Engine
    session: Session
    users: dict[str, int]

    def docs(self, user: str = "ivan") -> Documents:
        return Documents(self.models, self.session, self.users[user], ["manager"], now=NOW,
                         username=user, trusted=True)  # fmt: skip

    def export(self, doctype: str, fmt: str = "csv", **kw: Any) -> bytes:
        out = io.BytesIO()
        export(self.models, self.session, doctype, out, fmt, **kw)
        return out.getvalue()

    def import_(self, doctype: str, data: bytes | str, fmt: str = "csv", **kw: Any) -> ImportResult:
        raw = data.encode("utf-8") if isinstance(data, str) else data
        kw.setdefault("now", NOW)
        result = import_(self.models, self.session, doctype, io.BytesIO(raw), fmt, **kw)
        self.session.commit()
        return result

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())

    def principal(self, user: str = "ivan") -> Principal:
        return Principal(self.users[user], user, frozenset({"manager"}))


def add_user(engine: sa.Engine, username: str) -> int:
    users = User.__table__
    with engine.begin() as conn:
        return int(
            conn.execute(
                users.insert()
                .values(username=username, first_name=username.title(), last_name="Test",
                        email=f"{username}@romashka.example", active=True)
                .returning(users.c.id)
            ).scalar_one()
        )  # fmt: skip


@pytest.fixture
def world(load_config: Callable[..., Registry], db_url: str) -> Iterator[Callable[..., World]]:
    """``world()`` → a fresh database for the CRM above; on PostgreSQL each
    world after the first gets a schema of its own."""
    made: list[World] = []

    def make(text: str = CRM, config: str = CONFIG) -> World:
        registry = load_config({"crm.yaml": text}, config)
        models = build(registry)
        if made and db_url.startswith("postgresql"):
            schema = f"world{len(made)}"
            admin = sa.create_engine(db_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
            admin.dispose()
            engine = sa.create_engine(db_url, connect_args={"options": f"-c search_path={schema}"})
        else:
            url = db_url if not made else db_url.replace(".db", f"{len(made)}.db")
            engine = sa.create_engine(url)
        Model.metadata.create_all(engine)
        models.metadata.create_all(engine)
        users = {name: add_user(engine, name) for name in ("ivan", "olga")}
        w = World(registry, models, engine, Session(engine), users)
        made.append(w)
        return w

    yield make
    for w in made:
        w.session.close()
        w.models.dispose()
        w.engine.dispose()


def fill(w: World) -> None:
    """Records with every field type, as users would have entered them."""
    docs = w.docs()
    head = docs.create("Company", {"name": "Ромашка", "inn": "7707083893"})
    branch = docs.create(
        "Company", {"name": "Ромашка Юг", "inn": "500100732259", "parent": head.id}
    )
    docs.create("Company", {"name": "Лютик", "inn": "7728168971", "manager": w.users["olga"]})
    tea = docs.create("Product", {"code": "TEA-1", "name": "Чай"})
    docs.create("Product", {"code": "=HYPERLINK(1)", "name": "-5 apples"})
    docs.create("Deal", {
        "company": head.id, "title": "Поставка, \"большая\"", "notes": "line one\nline two; 'quoted'",
        "seats": 12, "rate": "0,125", "budget": "1 234 567.5", "urgent": True,
        "due": "2026-04-01", "call_at": "2026-03-05T10:30:00+03:00", "kind": "Upsell",
        "phone": "8 (495) 123-45-67", "email": "Sales@Romashka.Example", "site": "https://romashka.example/a?b=1",
        "code": "'secret",
        "lines": [
            {"product": tea.id, "qty": "2.5", "price": "10.10", "serial": "S-1"},
            {"price": "3", "serial": "S-2"},
        ],
    })  # fmt: skip
    won = docs.create("Deal", {"company": branch.id, "budget": 5, "seats": 0, "urgent": False})
    won.status = "won"
    docs.create("Deal", {"company": head.id, "title": "+cmd|' /C calc'!A0", "kind": None})
    w.session.commit()


def cells(data: bytes, fmt: str) -> list[list[Any]]:
    if fmt == "csv":
        return list(csv.reader(io.StringIO(data.decode("utf-8"))))
    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        return [list(r) for r in book.worksheets[0].iter_rows(values_only=True)]
    finally:
        book.close()


# -- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_every_field_type_round_trips(world: Callable[..., World], fmt: str) -> None:
    a = world()
    fill(a)
    b = world()
    files = {t: a.export(t, fmt) for t in ("Company", "Product", "Deal")}
    # one who may read every company, as the deals' refs need (`crm import --user`)
    olga = Principal(b.users["olga"], "olga", frozenset({"manager", "Admin"}))
    for doctype, data in files.items():
        result = b.import_(doctype, data, fmt, principal=olga)
        assert result.errors == [], result.errors
        assert result.created == {"Company": 3, "Product": 2, "Deal": 3}[doctype]
    for doctype, data in files.items():
        assert cells(b.export(doctype, fmt), fmt) == cells(data, fmt), doctype
        # and whatever the format, the data is the same
        assert b.export(doctype) == a.export(doctype), doctype

    text = a.export("Deal").decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    first = rows[0]
    assert list(first)[:3] == ["number", "status", "company"]
    assert "id" not in first and "created_at" not in first
    assert first["number"] == "D-00001"
    assert first["company"] == "7707083893"  # the Company's key: its INN
    assert first["manager"] == "Ivan Test"  # a user by name (the import finds them by it)
    assert first["rate"] == "0.125" and first["budget"] == "1234567.50"
    assert first["urgent"] == "true" and first["due"] == "2026-04-01"
    assert first["call_at"] == "2026-03-05T10:30:00+03:00"  # the company's time zone
    assert first["kind"] == "up" and first["phone"] == "+74951234567"  # phones stay plain
    assert first["code"] == "''secret"  # an apostrophe is doubled, and taken off again
    assert json.loads(first["lines"]) == [
        {"product": "TEA-1", "qty": "2.5000", "price": "10.10", "serial": "S-1", "amount": "25.25"},
        {"qty": "1.0000", "price": "3.00", "serial": "S-2", "amount": "3.00"},
    ]
    assert rows[2]["title"] == "'+cmd|' /C calc'!A0"  # never a formula in a spreadsheet
    assert "'=HYPERLINK(1)" in a.export("Product").decode()

    deals = b.models.table("Deal")
    with b.engine.connect() as conn:
        got = conn.execute(sa.select(deals).order_by(deals.c.id)).all()
        history = conn.execute(sa.text("SELECT to_state FROM deal__history ORDER BY doc_id")).scalars().all()  # fmt: skip
    assert [r.number for r in got] == ["D-00001", "D-00002", "D-00003"]
    assert [r.status for r in got] == ["open", "won", "open"]
    assert history == ["open", "won", "open"]
    assert {r.created_by_id for r in got} == {b.users["olga"]}  # the importer is the author
    assert {r.version for r in got} == {1}
    assert got[0].total == Decimal("28.25") and got[0].code == "'secret"
    # the counter went past the imported numbers
    assert b.docs().create("Deal", {"company": 1}).number == "D-00004"


def test_export_streams_in_batches_and_obeys_access_and_filters(
    world: Callable[..., World],
) -> None:
    w = world()
    fill(w)
    everything = w.export("Company", batch=1)
    assert everything == w.export("Company")
    assert everything.decode().count("\n") == 4
    own = w.export("Company", principal=w.principal("olga")).decode().splitlines()
    assert own == ["name,inn,parent,manager", "Лютик,7728168971,,Olga Test"]
    filtered = w.export("Company", filter={"parent": {"set": True}}).decode().splitlines()
    assert filtered[1:] == ["Ромашка Юг,500100732259,7707083893,Ivan Test"]
    chunks = b"".join(iter_csv(w.models, w.session, "Company", batch=2))
    assert chunks == everything
    labels = w.export("Company", header="labels").decode().splitlines()[0]
    assert labels == "Наименование,ИНН,Головная,Manager"
    with pytest.raises(TransferError, match="has no field `nam`"):
        w.export("Company", filter={"nam": "x"})
    with pytest.raises(TransferError, match="did you mean `Company`"):
        list(export_rows(w.models, w.session, "Compnay"))


# -- errors -----------------------------------------------------------------------------


DEALS = (
    "number,company,title,notes,seats,lines,status\n"
    "D-00007,7707083893,Good,,1,,\n"
    'D-00008,7707083893,"Two\nlines",,x,,\n'  # a record over two lines: the next starts on line 5
    "D-00009,0000000000,Bad ref,,2,,\n"
    'D-00010,7707083893,Bad table,,,"[{""qty"": ""-1""}, {""qty"": ""z"", ""nope"": 1}]",\n'
    "D-00011,7707083893,Not JSON,,,[oops,\n"
    "D-00012,7707083893,Won without budget,,,,won\n"
    "D-00013,7707083893,Good too,,,,lost\n"
)


def test_every_bad_row_is_reported_with_its_line_and_field_and_nothing_is_written(
    world: Callable[..., World],
) -> None:
    w = world()
    w.docs().create("Company", {"name": "Ромашка", "inn": "7707083893"})
    w.session.commit()
    result = w.import_("Deal", DEALS, batch=2)  # the first batch is written, then undone
    assert [str(e) for e in result.errors] == [
        "3: seats: must be a whole number",
        "5: company: there is no “Company” with “ИНН” (inn) `0000000000`",
        "6: lines[1].qty: must be at least 0",
        "6: lines[2].qty: must be a number",
        "6: lines[2].nope: is not a field of the rows of “Lines” (lines)",
        "7: lines: is not a JSON list of rows: Expecting value at character 2",
        "8: status: “Budget” (budget) must be filled in to enter “Выиграна”",
    ]
    assert result.created == 0 and result.rows == 7 and result.bad_rows == 5
    assert w.count("deal") == 0 and w.count("deal__history") == 0
    with w.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM crm_sequence")).scalar_one() == 0


def test_partial_import_writes_the_good_rows(world: Callable[..., World]) -> None:
    w = world()
    w.docs().create("Company", {"name": "Ромашка", "inn": "7707083893"})
    w.session.commit()
    result = w.import_("Deal", DEALS, all_or_nothing=False, batch=2)
    assert result.created == 2 and result.bad_rows == 5 and len(result.errors) == 7
    deals = w.models.table("Deal")
    with w.engine.connect() as conn:
        rows = conn.execute(sa.select(deals.c.number, deals.c.status).order_by(deals.c.id)).all()
    assert [tuple(r) for r in rows] == [("D-00007", "open"), ("D-00013", "lost")]
    assert w.docs().create("Deal", {"company": 1}).number == "D-00014"


def test_errors_are_capped_with_a_count_of_the_rest(world: Callable[..., World]) -> None:
    w = world()
    data = "name,inn\n" + "".join(f"Co {i},12\n" for i in range(30))
    result = w.import_("Company", data, max_errors=10, batch=7)
    assert len(result.errors) == 10 and result.more_errors == 20 and result.error_count == 30
    assert result.errors[0] == RowError(2, "inn", "must be a taxpayer number of 10 or 12 digits")


def test_the_header_takes_names_and_labels_and_refuses_unknown_columns(
    world: Callable[..., World],
) -> None:
    w = world()
    ok = w.import_(
        "Company",
        "НАИМЕНОВАНИЕ;инн;id;Created\nРомашка;7707083893;17;2020-01-01\n",  # `;` as Excel saves it
    )
    assert ok.errors == [] and ok.created == 1
    assert ok.warnings == [
        "column `id` is filled in by the engine: its values are ignored",
        "column `Created` is filled in by the engine: its values are ignored",
    ]
    bad = w.import_("Company", "nam,inn,inn,colour\nx,1,2,3\n")
    assert [str(e) for e in bad.errors] == [
        "1: nam: is not a field of “Company” (did you mean `name`?)",
        "1: inn: repeats the column `inn`",
        "1: colour: is not a field of “Company”",
    ]
    assert bad.rows == 0 and w.count("company") == 1
    extra = w.import_("Company", "name,,inn\nA,,\nB,oops,\n")
    assert [str(e) for e in extra.errors] == ["3: #2: a value in a column without a header"]
    with pytest.raises(TransferError, match="the file is empty"):
        w.import_("Company", "")
    with pytest.raises(TransferError, match="not an XLSX workbook"):
        w.import_("Company", "name\nx\n", "xlsx")
    with pytest.raises(TransferError, match="managed on the security pages"):
        w.import_("User", "username\nx\n")


# -- refs, keys, unique values -------------------------------------------------------------


def test_refs_are_found_by_key_in_one_query_per_batch(world: Callable[..., World]) -> None:
    w = world()
    docs = w.docs()
    head = docs.create("Company", {"name": "Ромашка", "inn": "7707083893"})
    docs.create("Company", {"name": "Двойник", "inn": "7728168971"})
    docs.create("Company", {"name": "Двойник", "inn": "500100732259"})
    w.session.commit()
    assert key_field(w.registry, "Deal").name == "number"
    assert key_field(w.registry, "Product").name == "code"  # unique
    assert key_field(w.registry, "Company").name == "inn"
    assert key_field(w.registry, "User").name == "username"

    statements: list[str] = []
    sa.event.listen(w.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    rows = "".join(f"77 07 08 38 93,olga,{i}\n" for i in range(50))
    result = w.import_("Deal", "company,manager,seats\n" + rows, batch=25)
    assert result.errors == [] and result.created == 50
    lookups = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # each ref once (keys are remembered between batches); no query per row
    assert len(lookups) == 2, lookups
    deals = w.models.table("Deal")
    with w.engine.connect() as conn:
        refs = set(conn.execute(sa.select(deals.c.company_id, deals.c.manager_id)).all())
    assert refs == {(head.id, w.users["olga"])}

    by_name = w.import_(
        "Deal",
        f"company.name,manager\nРомашка,\nДвойник,\nНет такой,nobody\n#{head.id},#999\n",
    )
    assert [str(e) for e in by_name.errors] == [
        "3: company.name: 2 “Company” records have “Наименование” (name) `Двойник`: use a unique key",
        "4: company.name: there is no “Company” with “Наименование” (name) `Нет такой`",
        "4: manager: there is no “Пользователь” with “Логин” (username) `nobody`",
        "5: manager: there is no “Пользователь” #999",
    ]
    bad_key = w.import_("Deal", "company.colour\nx\n")
    assert [str(e) for e in bad_key.errors] == [
        "1: company.colour: “Company” has no field `colour` to find records by"
    ]


def test_a_row_may_refer_to_an_earlier_line_of_its_own_file(world: Callable[..., World]) -> None:
    w = world()
    data = (
        "name,inn,parent\n"
        "Head,7707083893,\n"
        "Branch,500100732259,7707083893\n"
        "Sub-branch,7728168971,500100732259\n"
        "Orphan,7702070139,7736050003\n"
    )
    result = w.import_("Company", data)
    assert [str(e) for e in result.errors] == [
        "5: parent: there is no “Company” with “ИНН” (inn) `7736050003`"
    ]
    result = w.import_("Company", data.replace(",7736050003", ","))
    assert result.errors == [] and result.created == 4
    companies = w.models.table("Company")
    with w.engine.connect() as conn:
        rows = {r.name: r for r in conn.execute(sa.select(companies))}
    assert rows["Sub-branch"].parent_id == rows["Branch"].id
    assert rows["Branch"].parent_id == rows["Head"].id


def test_unique_values_are_checked_against_the_database_and_the_file(
    world: Callable[..., World],
) -> None:
    w = world()
    w.docs().create("Product", {"code": "P1"})
    w.docs().create("Company", {"name": "Ромашка", "inn": "7707083893"})
    w.docs().create("Deal", {"company": 1, "lines": [{"serial": "S-1"}]})
    w.session.commit()
    result = w.import_("Product", "code\nP1\nP2\np3\nP2\n\nP3\n")
    assert [str(e) for e in result.errors] == [
        "2: code: is already used by another “Product”",
        "5: code: is already used on line 3",
    ]
    lines = '"[{""serial"": ""S-1""}]"\n"[{""serial"": ""S-2""}, {""serial"": ""S-2""}]"\n"[{""serial"": ""S-3""}]"\n"[{""serial"": ""S-3""}]"\n'
    result = w.import_(
        "Deal", "company,lines\n" + "".join(f"7707083893,{x}\n" for x in lines.splitlines())
    )
    assert [str(e) for e in result.errors] == [
        "2: lines[1].serial: is already used by another “Deal”",
        "3: lines[2].serial: is already used in row 1",
        "5: lines[1].serial: is already used on line 4",
    ]
    numbers = w.import_(
        "Deal", "number,company\nD-00001,7707083893\nD-00005,7707083893\nD-00005,7707083893\n"
    )
    assert [str(e) for e in numbers.errors] == [
        "2: number: is already used by another “Deal”",
        "4: number: is already used on line 3",
    ]


def test_numbers_are_kept_or_drawn_and_the_counter_moves_past_them(
    world: Callable[..., World],
) -> None:
    w = world()
    w.docs().create("Company", {"name": "Ромашка", "inn": "7707083893"})
    w.session.commit()
    result = w.import_(
        "Deal", "number,company\n,7707083893\nD-00040,7707083893\n,7707083893\nX-1,7707083893\n"
    )
    assert result.errors == []
    deals = w.models.table("Deal")
    with w.engine.connect() as conn:
        numbers = conn.execute(sa.select(deals.c.number).order_by(deals.c.id)).scalars().all()
    assert numbers == ["D-00041", "D-00040", "D-00042", "X-1"]
    assert w.docs().create("Deal", {"company": 1}).number == "D-00043"


# -- the file formats ---------------------------------------------------------------------


def test_spreadsheet_habits_are_understood(world: Callable[..., World]) -> None:
    w = world()
    w.docs().create("Company", {"name": "Ромашка", "inn": "7707083893"})
    w.session.commit()
    text = "\ufeffcompany;title;budget;due;urgent;kind\r\n7707083893;Ёлка;1 000,50;31.12.2026;да;Upsell\r\n"
    result = w.import_("Deal", text.encode("utf-8"))  # with a BOM, `;`, decimal commas
    assert result.errors == []
    result = w.import_("Deal", text.replace("\ufeff", "").encode("cp1251"))  # Excel's "CSV"
    assert result.errors == []
    deals = w.models.table("Deal")
    with w.engine.connect() as conn:
        rows = conn.execute(sa.select(deals).order_by(deals.c.id)).all()
    for r in rows:
        assert (r.title, r.budget, r.due, r.urgent, r.kind) == (
            "Ёлка",
            Decimal("1000.50"),
            dt.date(2026, 12, 31),
            True,
            "up",
        )

    # a workbook typed by hand: numbers and dates as Excel keeps them
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Компания", "Seats", "Budget", "Due", "Urgent", "Title"])
    sheet.append([7707083893, 3.0, 12.5, dt.datetime(2026, 5, 1), True, "Ёлка"])
    buf = io.BytesIO()
    book.save(buf)
    result = w.import_("Deal", buf.getvalue(), "xlsx")
    assert result.errors == []
    with w.engine.connect() as conn:
        last = conn.execute(sa.select(deals).order_by(deals.c.id.desc())).first()
    assert last is not None
    assert (last.seats, last.budget, last.due, last.urgent, last.title) == (
        3,
        Decimal("12.50"),
        dt.date(2026, 5, 1),
        True,
        "Ёлка",
    )


def test_progress_is_reported_after_every_batch(world: Callable[..., World]) -> None:
    w = world()
    seen: list[tuple[int, int | None]] = []
    data = "name\n" + "".join(f"Co {i}\n" for i in range(25))
    result = w.import_(
        "Company", data, batch=10, progress=lambda done, total: seen.append((done, total))
    )
    assert result.created == 25
    assert seen == [(10, 25), (20, 25), (25, 25)]

    def cancel(done: int, total: int | None) -> None:
        if done >= 20:
            raise KeyboardInterrupt  # the user closed the page, or pressed Ctrl+C

    with pytest.raises(KeyboardInterrupt):
        w.import_("Company", data, batch=10, progress=cancel)
    assert w.count("company") == 25  # the two batches written were rolled back


def _sheet_xml(rows: str, dimension: str = "A1:B2") -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        f'<dimension ref="{dimension}"/><sheetData>{rows}</sheetData></worksheet>'
    )


def _workbook(sheet_xml: str | None = None, extra: tuple[str, bytes] | None = None) -> bytes:
    """A tiny workbook made by openpyxl, its sheet replaced by ``sheet_xml`` and
    ``extra`` (a name, the contents) added: the hostile files of the tests below."""
    book = openpyxl.Workbook()
    book.active.append(["name"])
    buf = io.BytesIO()
    book.save(buf)
    out = io.BytesIO()
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if sheet_xml is not None and item.filename == "xl/worksheets/sheet1.xml":
                data = sheet_xml.encode()
            dst.writestr(item.filename, data)
        if extra is not None:
            dst.writestr(extra[0], extra[1])
    return out.getvalue()


def _cell(ref: str, text: str) -> str:
    return f'<c r="{ref}" t="inlineStr"><is><t>{text}</t></is></c>'


def test_a_workbook_is_read_as_the_rows_it_holds_not_the_size_it_declares(
    world: Callable[..., World],
) -> None:
    w = world()
    # the whole sheet declared, two rows held: both are read, nothing made up
    rows = f'<row r="1">{_cell("A1", "name")}</row><row r="7">{_cell("A7", "Far")}</row>'
    data = _workbook(_sheet_xml(rows, "A1:XFD1048576"))
    assert len(data) < 10_000
    result = w.import_("Company", data, "xlsx")
    assert result.errors == [] and result.created == 1
    # a row at 1 048 576: refused at the limit of rows, without reading a million
    rows = f'<row r="1">{_cell("A1", "name")}</row><row r="1048576">{_cell("A1048576", "x")}</row>'
    with pytest.raises(TransferError, match=r"more than 1,000,000 rows, the limit of an import"):
        w.import_("Company", _workbook(_sheet_xml(rows, "A1:XFD1048576")), "xlsx")
    # a cell in the last column of a sheet: refused at the limit of columns
    rows = f'<row r="1">{_cell("A1", "name")}</row><row r="2">{_cell("XFD2", "x")}</row>'
    with pytest.raises(TransferError, match=r"line 2: the row has 16384 columns, more than 200"):
        w.import_("Company", _workbook(_sheet_xml(rows)), "xlsx")
    # an empty cell far right (a formatted column) is no column
    rows = (
        f'<row r="1">{_cell("A1", "name")}<c r="XFD1"/></row><row r="2">{_cell("A2", "Co")}</row>'
    )
    assert w.import_("Company", _workbook(_sheet_xml(rows)), "xlsx").created == 1
    assert w.count("company") == 2


def test_a_zip_bomb_is_refused_before_it_is_unpacked(world: Callable[..., World]) -> None:
    w = world()
    bomb = _workbook(extra=("xl/media/bomb.bin", b"\0" * (201 * 1024 * 1024)))
    assert len(bomb) < 1024 * 1024
    with pytest.raises(TransferError, match=r"more than 200.0 MB, the limit of an import"):
        w.import_("Company", bomb, "xlsx")
    small = _workbook(extra=("xl/media/bomb.bin", b"\0" * (20 * 1024 * 1024)))
    with pytest.raises(TransferError, match=r"`xl/media/bomb.bin` unpacks \d+ times larger"):
        w.import_("Company", small, "xlsx")
    assert w.count("company") == 0


def test_csv_limits_name_the_limit(world: Callable[..., World]) -> None:
    w = world()
    with pytest.raises(TransferError, match=r"line 3, column 1: the cell holds 40,000 characters"):
        w.import_("Company", "name\nShort\n" + "x" * 40_000 + "\n")
    with pytest.raises(TransferError, match=r"line 2: the row has 201 columns, more than 200"):
        w.import_("Company", "name\n" + ",".join(["a"] * 201) + "\n")
    with pytest.raises(TransferError, match=r"line 5: the file has more than 3 rows"):
        w.import_("Company", "name\n" + "".join(f"Co {i}\n" for i in range(5)),
                  limits=Limits(rows=3))  # fmt: skip
    with pytest.raises(TransferError, match=r"more than 0.0 MB, the limit of an import"):
        w.import_("Company", "name\nCo\n", limits=Limits(size=5))
    assert w.count("company") == 0


def test_the_limits_are_read_from_config_yaml(world: Callable[..., World]) -> None:
    w = world(config=CONFIG + "imports: {max_rows: 2, max_columns: 3, max_cell: 10}\n")
    with pytest.raises(TransferError, match=r"line 4: the file has more than 2 rows"):
        w.import_("Company", "name\nA\nB\nC\n")
    with pytest.raises(TransferError, match=r"line 2, column 1: the cell holds 11 characters"):
        w.import_("Company", "name\n" + "x" * 11 + "\n")
    with pytest.raises(TransferError, match=r"line 2: the row has 4 columns, more than 3"):
        w.import_("Company", "name\nA,b,c,d\n")
    assert w.import_("Company", "name\nA\nB\n").created == 2


def test_a_nul_byte_is_a_bad_value_on_its_line(world: Callable[..., World]) -> None:
    w = world()
    result = w.import_("Company", "name\nGood\nBad\x00name\nAlso good\n", all_or_nothing=False)
    assert [str(e) for e in result.errors] == [
        "3: name: holds a NUL character (\\0), which text may not contain"
    ]
    assert result.created == 2
    w.docs().create("Company", {"name": "Ромашка", "inn": "7707083893"})
    w.session.commit()
    data = 'company,lines\n7707083893,"[{""serial"": ""S\\u0000""}]"\n'
    result = w.import_("Deal", data)
    assert [str(e) for e in result.errors] == [
        "2: lines: holds a NUL character (\\0), which text may not contain"
    ]
    assert w.count("deal") == 0


def test_access_rules_apply_to_a_principal(world: Callable[..., World]) -> None:
    w = world()
    stranger = Principal(w.users["olga"], "olga", frozenset())
    with pytest.raises(TransferError, match="olga may not create “Product” records"):
        w.import_("Product", "code\nP1\n", principal=stranger)
    result = w.import_("Company", "name\nMine\n", principal=w.principal("olga"))
    companies = w.models.table("Company")
    with w.engine.connect() as conn:
        row = conn.execute(sa.select(companies)).one()
    assert result.created == 1 and row.manager_id == w.users["olga"]  # current_user
    # a ref finds only what the principal may read, as a form's does
    w.docs("ivan").create("Company", {"name": "His"})
    w.session.commit()
    data = "company.name,title\nMine,ok\nHis,not hers\n"
    result = w.import_("Deal", data, principal=w.principal("olga"))
    assert result.errors == [
        RowError(3, "company.name", "there is no “Company” with “Наименование” (name) `His`")
    ]
    result = w.import_("Deal", data, principal=w.principal("ivan"), all_or_nothing=False)
    assert [e.line for e in result.errors] == [2] and result.created == 1


# -- the command line ---------------------------------------------------------------------


def crm(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CRM_BIN, *args], capture_output=True, text=True, cwd=cwd,
        env={**os.environ, **env}, timeout=120, check=False,
    )  # fmt: skip


def test_crm_import_and_export_as_a_user_runs_them(
    make_config: Callable[..., Path], db_url: str, tmp_path: Path
) -> None:
    folder = make_config({"crm.yaml": CRM}, CONFIG)
    env = {"CRM_DATABASE_URL": db_url}
    migrated = crm("migrate", ".", cwd=folder, env=env)
    assert migrated.returncode == 0, migrated.stderr
    engine = sa.create_engine(db_url)
    try:
        add_user(engine, "anna")
    finally:
        engine.dispose()
    companies = tmp_path / "companies.csv"
    companies.write_text("name,inn\nРомашка,7707083893\nЛютик,7728168971\n", encoding="utf-8")
    done = crm("import", ".", "Company", str(companies), "--user", "anna", cwd=folder, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"imported 2 Company record(s) from {companies}"

    deals = tmp_path / "deals.csv"
    deals.write_text(
        "company,seats,budget\n7707083893,1,10\n7728168971,many,\n0000000000,2,\n7728168971,3,5\n",
        encoding="utf-8",
    )
    refused = crm("import", ".", "Deal", str(deals), cwd=folder, env=env)
    assert refused.returncode == 1
    assert refused.stdout.splitlines() == [
        f"{deals}:3: seats: must be a whole number",
        f"{deals}:4: company: there is no “Company” with “ИНН” (inn) `0000000000`",
    ]
    assert refused.stderr.splitlines()[-1] == (
        "2 errors in 2 of 4 row(s); nothing was imported (use --partial to import the good rows)"
    )
    assert "Traceback" not in refused.stderr
    partial = crm("import", ".", "Deal", str(deals), "--partial", cwd=folder, env=env)
    assert partial.returncode == 1
    assert (
        partial.stderr.splitlines()[-1]
        == "2 errors in 2 of 4 row(s); imported the other 2 record(s)"
    )

    out = crm("export", ".", "Deal", "--filter", '{"seats": {"gte": 2}}', cwd=folder, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1].startswith("D-00002,open,7728168971,,,,3,,5.00,false,")
    book = tmp_path / "companies.xlsx"
    saved = crm("export", ".", "Company", str(book), cwd=folder, env=env)
    assert saved.returncode == 0, saved.stderr
    assert saved.stderr.strip() == f"exported 2 record(s) to {book}"
    assert cells(book.read_bytes(), "xlsx") == [
        ["name", "inn", "parent", "manager"],
        ["Ромашка", "7707083893", None, "Anna Test"],
        ["Лютик", "7728168971", None, "Anna Test"],
    ]
    again = crm("import", ".", "Company", str(book), cwd=folder, env=env)
    assert again.returncode == 0, again.stderr  # INN is no unique key: two more companies

    for args, message in (
        (("export", ".", "Deel"), "error: there is no document type `Deel` (did you mean `Deal`?)"),
        (("export", ".", "Deal", "--filter", "{oops"), "error: --filter is not JSON"),
        (("import", ".", "Deal", str(tmp_path / "nope.csv")), "error: cannot read"),
    ):
        result = crm(*args, cwd=folder, env=env)
        assert result.returncode == 1
        assert result.stderr.startswith(message), result.stderr
        assert "Traceback" not in result.stderr


def test_the_import_benchmark_runs(db_url: str) -> None:
    """Tiny and untimed: the figures belong to `python -m bench --imports`."""
    from bench import imports

    lines: list[str] = []
    figures = imports.run(300, url=db_url, repeat=1, log=lines.append)
    assert figures.rows == 300 and figures.core_s > 0 and figures.import_s > 0
    assert imports.report(figures, lines.append) == []  # no target below 100 k rows
    assert any("ratio import / Core" in line for line in lines)


def test_a_file_names_people_by_name_and_by_login_where_names_are_shared(
    world: Callable[..., World],
) -> None:
    """A user is exported by name; two users of one name by their logins, so
    that the file finds the same people again; import takes either, and a
    shared name is an error that asks for the login."""
    w = world()
    users = User.__table__
    with w.engine.begin() as conn:
        ids = {
            login: conn.execute(
                users.insert()
                .values(username=login, first_name=first, last_name=last,
                        email=f"{login}@romashka.example", active=True)
                .returning(users.c.id)
            ).scalar_one()
            for login, first, last in (("ivanov1", "Иван", "Иванов"), ("ivanov2", "Иван", "Иванов"),
                                       ("petrov", "Пётр", "Петров"))
        }  # fmt: skip
    docs = w.docs()
    for name, login in (("Один", "ivanov1"), ("Два", "ivanov2"), ("Три", "petrov")):
        docs.create("Company", {"name": name, "manager": ids[login]})
    w.session.commit()
    rows = w.export("Company").decode().splitlines()
    assert sorted(r.rsplit(",", 1)[1] for r in rows[1:]) == ["ivanov1", "ivanov2", "Пётр Петров"]
    again = w.import_("Company", "name,manager\nЧетыре,Пётр Петров\nПять,ivanov2\n")
    assert again.ok, again.errors
    company = w.models.table("Company")
    got = dict(w.session.execute(sa.select(company.c.name, company.c.manager_id)).tuples().all())
    assert got["Четыре"] == ids["petrov"] and got["Пять"] == ids["ivanov2"]
    shared = w.import_("Company", "name,manager\nШесть,Иван Иванов\n")
    assert not shared.ok
    assert "2 " in str(shared.errors[0]) and "Иван Иванов" in str(shared.errors[0])
