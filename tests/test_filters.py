"""Structured filters compile to one SQL WHERE clause, on SQLite and PostgreSQL.

Every operator is run against a small database and the exact set of matching
ids is asserted; errors are FilterErrors with a message, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import textwrap
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine import migrate
from engine.filters import FilterError, compile_filter
from engine.loader import load
from engine.models import Models, build
from tests.conftest import _reset_postgres, worker_pg_url

CONFIG = "name: Filters Ltd\nlocale: en\nlayers: []\ntimezone: Europe/Moscow\n"
FILES = {
    "crm.yaml": """
        documents:
          Department:
            title: "{{ name }}"
            fields:
              name: {type: string, required: true}
          Customer:
            title: "{{ name }}"
            list: {columns: [name, segment], filters: [segment]}
            fields:
              name:    {type: string, required: true}
              email:   {type: email}
              segment: {type: enum, values: {A: Key account, B: Regular, C: Small}}
              revenue: {type: money}
              phone:   {type: phone}
              notes:   {type: text}
              created: {type: date, index: true}
              manager: {type: ref, to: User}
          Deal:
            fields:
              customer:  {type: ref, to: Customer}
              manager:   {type: ref, to: User}
              amount:    {type: money}
              closed_at: {type: datetime}
            statuses:
              field: stage
              initial: new
              states:
                new: {}
                won: {final: true}
                lost: {final: true}
          Task:
            fields:
              deal: {type: ref, to: Deal}
        attributes:
          User:
            department: {type: ref, to: Department}
    """
}
#: the moment "now" for relative dates: 15:00 in Moscow
NOW = dt.datetime(2026, 3, 15, 12, 0, tzinfo=dt.UTC)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


USERS = [
    {"id": 1, "username": "alice", "first_name": "Alice", "last_name": "A", "email": "alice@x.com", "department_id": 1},
    {"id": 2, "username": "bob", "first_name": "Bob", "last_name": "B", "email": "bob@x.com", "department_id": 2},
    {"id": 3, "username": "carol", "first_name": "Carol", "last_name": "C", "email": "carol@x.com", "department_id": None},
]  # fmt: skip
CUSTOMERS = [
    {"id": 1, "name": "Romashka", "email": "info@romashka.ru", "segment": "A",
     "revenue": Decimal("1500000.00"), "phone": "+74951234567", "notes": "Key client, 100% loyal",
     "created": dt.date(2026, 1, 10), "manager_id": 1},
    {"id": 2, "name": "Vasilek", "email": "", "segment": "B", "revenue": Decimal("500000.00"),
     "phone": None, "notes": "alpha trade", "created": dt.date(2026, 2, 15), "manager_id": 2},
    {"id": 3, "name": "Lilia_Trade", "email": None, "segment": None, "revenue": None,
     "phone": "+74957654321", "notes": "10 of 100 are loyal", "created": None, "manager_id": None},
    {"id": 4, "name": "romashka-2", "email": "b@x.com", "segment": "C",
     "revenue": Decimal("1000000.00"), "phone": "", "notes": "data_table",
     "created": dt.date(2026, 3, 15), "manager_id": 1},
]  # fmt: skip
DEALS = [
    {"id": 1, "customer_id": 1, "manager_id": 1, "amount": Decimal("100.00"), "stage": "new",
     "closed_at": None},
    {"id": 2, "customer_id": 2, "manager_id": 2, "amount": Decimal("2000.00"), "stage": "won",
     "closed_at": utc(2026, 3, 15, 8, 0)},
    # 23:30 UTC on the 14th is 02:30 on the 15th in Moscow
    {"id": 3, "customer_id": 3, "manager_id": 3, "amount": None, "stage": "lost",
     "closed_at": utc(2026, 3, 14, 23, 30)},
    {"id": 4, "customer_id": None, "manager_id": None, "amount": Decimal("50.00"), "stage": "new",
     "closed_at": None},
    {"id": 5, "customer_id": 4, "manager_id": 1, "amount": Decimal("999.99"), "stage": "won",
     "closed_at": utc(2026, 3, 1, 10, 0)},
]  # fmt: skip
TASKS = [{"id": 1, "deal_id": 1}, {"id": 2, "deal_id": 5}]


def _database_url(folder: Path) -> str:
    """Like the `db_url` fixture, once for the module: the data is only read."""
    url = worker_pg_url()
    if not url:
        return f"sqlite:///{folder / 'filters.db'}"
    _reset_postgres(url)
    return url


def _make_config(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir()
    (folder / "config.yaml").write_text(CONFIG, encoding="utf-8")
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.Engine]:
    engine = sa.create_engine(_database_url(tmp_path_factory.mktemp("db")))
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, engine: sa.Engine) -> Iterator[Models]:
    folder = _make_config(tmp_path_factory.mktemp("filters") / "config", FILES)
    models = build(load(folder, env={}))
    # Flask-AppBuilder's tables (ab_user...) first, then ours and the
    # department column of ab_user: what `crm migrate` does
    migrate.apply(models, engine, migrate.plan(models, engine))
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        conn.execute(models.table("Department").insert(), [
            {"id": 1, "name": "Sales", "created_at": now}, {"id": 2, "name": "Support", "created_at": now},
        ])  # fmt: skip
        conn.execute(models.table("User").insert(), USERS)
        for doctype, rows in (("Customer", CUSTOMERS), ("Deal", DEALS), ("Task", TASKS)):
            conn.execute(models.table(doctype).insert(), [{**r, "created_at": now} for r in rows])
    yield models
    models.dispose()


@pytest.fixture
def ids(models: Models, engine: sa.Engine) -> Callable[..., set[int]]:
    """The ids of `doctype` records that `spec` matches, by running the SQL."""

    def run(
        doctype: str, spec: dict[str, Any], user_id: int | None = None, now: dt.datetime = NOW
    ) -> set[int]:
        table = models.table(doctype)
        where = compile_filter(models, doctype, spec, user_id=user_id, now=now)
        with engine.connect() as conn:
            return set(conn.execute(sa.select(table.c.id).where(where)).scalars())

    return run


# --- every operator ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, {1, 2, 3, 4}),
        ({"segment": "A"}, {1}),
        ({"segment": {"eq": "A"}}, {1}),
        ({"segment": "Key account"}, {1}),  # an enum value by its label
        ({"segment": {"ne": "A"}}, {2, 3, 4}),  # ne includes the empty segment
        ({"segment": None}, {3}),
        ({"segment": {"ne": None}}, {1, 2, 4}),
        ({"revenue": {"gt": 1000000}}, {1}),
        ({"revenue": {"gte": "1000000"}}, {1, 4}),
        ({"revenue": {"lt": 1000000}}, {2}),
        ({"revenue": {"lte": Decimal("1000000")}}, {2, 4}),
        ({"revenue": {"between": [500000, 1000000]}}, {2, 4}),
        ({"revenue": {"between": [600000, None]}}, {1, 4}),  # open at the empty end
        ({"revenue": {"gte": 1000000, "lt": 2000000}}, {1, 4}),
        ({"segment": {"in": ["A", "C"]}}, {1, 4}),
        ({"segment": ["A", "C"]}, {1, 4}),  # a list means `in`
        ({"segment": {"in": ["Key account", "B"]}}, {1, 2}),  # labels and keys
        ({"segment": {"nin": ["A", "C"]}}, {2, 3}),  # nin includes the empty segment
        ({"segment": {"in": ["A", None]}}, {1, 3}),
        ({"segment": {"nin": ["A", None]}}, {2, 4}),
        ({"name": {"contains": "ROMASHKA"}}, {1, 4}),  # case-insensitive
        ({"name": {"contains": "ka-"}}, {4}),
        ({"email": {"set": True}}, {1, 4}),
        ({"email": {"set": False}}, {2, 3}),  # the empty string is not set
        ({"phone": {"set": True}}, {1, 3}),
        ({"phone": "+7 495 123-45-67"}, {1}),  # normalized like the stored value
        ({"manager": {"set": True}}, {1, 2, 4}),
        ({"manager": {"set": False}}, {3}),
        ({"created": {"between": ["2026-01-01", "31.01.2026"]}}, {1}),
        ({"created": {"lt": "2026-02-15"}}, {1}),
        ({"created": {"lte": "2026-02-15"}}, {1, 2}),
        ({"segment": "A", "revenue": {"gte": 1000000}, "email": {"set": True}}, {1}),
    ],
)
def test_operators_on_customer(
    ids: Callable[..., set[int]], spec: dict[str, Any], expected: set[int]
) -> None:
    assert ids("Customer", spec) == expected


def test_contains_escapes_percent_and_underscore(ids: Callable[..., set[int]]) -> None:
    # unescaped, `%` would match "10 of 100 are loyal" and `_` "alpha trade"
    assert ids("Customer", {"notes": {"contains": "100% loyal"}}) == {1}
    assert ids("Customer", {"notes": {"contains": "a_t"}}) == {4}
    assert ids("Customer", {"name": {"contains": "a_T"}}) == {3}
    assert ids("Customer", {"notes": {"contains": "\\"}}) == set()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"stage": "won"}, {2, 5}),
        ({"stage": {"nin": ["new", "won"]}}, {3}),
        ({"amount": {"between": ["100", "999.99"]}}, {1, 5}),
        ({"amount": {"ne": 100}}, {2, 3, 4, 5}),
        ({"amount": None}, {3}),
        # refs: by id, by the target's name, both, or empty
        ({"customer": 1}, {1}),
        ({"customer": "1"}, {1}),
        ({"customer": "Romashka"}, {1}),
        ({"customer": {"in": ["Romashka", "Vasilek"]}}, {1, 2}),
        ({"customer": {"in": ["Romashka", 4]}}, {1, 5}),
        ({"customer": {"ne": "Romashka"}}, {2, 3, 4, 5}),
        ({"customer": {"nin": ["Romashka", None]}}, {2, 3, 5}),
        ({"customer": None}, {4}),
        ({"customer": {"set": True}}, {1, 2, 3, 5}),
        ({"manager": "alice"}, {1, 5}),  # a user by username
        ({"manager": "Alice A"}, {1, 5}),  # or by the name people see
        # dotted names follow refs
        ({"manager.department": "Sales"}, {1, 5}),
        ({"manager.department": 1}, {1, 5}),
        ({"manager.department": {"in": ["Sales", "Support"]}}, {1, 2, 5}),
        # an empty link is an empty value: no manager, or a manager without department
        ({"manager.department": {"ne": "Sales"}}, {2, 3, 4}),
        ({"manager.department": None}, {3, 4}),
        ({"manager.department": {"set": True}}, {1, 2, 5}),
        ({"manager.department": {"set": False}}, {3, 4}),
        ({"customer.segment": "A"}, {1}),
        ({"customer.segment": {"ne": "A"}}, {2, 3, 4, 5}),
        ({"customer.segment": {"in": ["A", "B"]}}, {1, 2}),
        ({"customer.revenue": {"gte": 1000000}}, {1, 5}),
        ({"customer.name": {"contains": "romashka"}}, {1, 5}),
        ({"customer.email": {"set": False}}, {2, 3, 4}),
        ({"customer.manager.department": "Support"}, {2}),
        ({"customer.created": {"gte": "-30d"}}, {2, 5}),
    ],
)
def test_operators_on_deal(
    ids: Callable[..., set[int]], spec: dict[str, Any], expected: set[int]
) -> None:
    assert ids("Deal", spec) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        # a date field: days on the company's calendar (now is 2026-03-15 15:00 in Moscow)
        ({"created": "today"}, {4}),
        ({"created": {"lt": "today"}}, {1, 2}),
        ({"created": {"gte": "-30d"}}, {2, 4}),
        ({"created": {"between": ["-10w", "-4w"]}}, {1, 2}),
        ({"created": {"lte": "+2w"}}, {1, 2, 4}),
        ({"created": {"gt": "now"}}, set()),
        ({"created": {"between": ["-1d", "+1d"]}}, {4}),
    ],
)
def test_relative_dates(
    ids: Callable[..., set[int]], spec: dict[str, Any], expected: set[int]
) -> None:
    assert ids("Customer", spec) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        # a datetime field: `today` and a date are the whole day in Moscow,
        # so 23:30 UTC on the 14th (02:30 on the 15th in Moscow) is today
        ({"closed_at": "today"}, {2, 3}),
        ({"closed_at": "2026-03-15"}, {2, 3}),
        ({"closed_at": {"lt": "today"}}, {5}),
        ({"closed_at": {"gte": "-6h"}}, {2}),  # a moment: 06:00 UTC
        ({"closed_at": {"lte": "now"}}, {2, 3, 5}),
        ({"closed_at": {"between": ["2026-03-01", "2026-03-14"]}}, {5}),
        ({"closed_at": {"between": ["-2w", "today"]}}, {2, 3, 5}),
        ({"closed_at": {"gt": "2026-03-14"}}, {2, 3}),
        ({"closed_at": {"lte": "2026-03-14"}}, {5}),
        ({"closed_at": {"gte": "2026-03-15T05:00:00+00:00"}}, {2}),
        ({"closed_at": {"ne": "today"}}, {1, 4, 5}),
    ],
)
def test_datetimes_take_whole_days_in_the_company_timezone(
    ids: Callable[..., set[int]], spec: dict[str, Any], expected: set[int]
) -> None:
    assert ids("Deal", spec) == expected


def test_today_is_on_the_company_calendar(ids: Callable[..., set[int]]) -> None:
    # 22:00 UTC on the 14th is already the 15th in Moscow
    late = utc(2026, 3, 14, 22, 0)
    assert ids("Customer", {"created": "today"}, now=late) == {4}
    assert ids("Customer", {"created": {"gte": "-4w"}}, now=late) == {2, 4}
    assert ids("Deal", {"closed_at": "today"}, now=late) == {2, 3}
    assert ids("Deal", {"closed_at": {"gte": "-1h"}}, now=late) == {2, 3}  # a moment
    naive = dt.datetime(2026, 3, 14, 22, 0)  # read as UTC
    assert ids("Customer", {"created": "today"}, now=naive) == {4}


def test_current_user(ids: Callable[..., set[int]]) -> None:
    assert ids("Deal", {"manager": "current_user"}, user_id=1) == {1, 5}
    assert ids("Deal", {"manager": "current_user"}, user_id=2) == {2}
    assert ids("Deal", {"manager": {"ne": "current_user"}}, user_id=1) == {2, 3, 4}
    assert ids("Deal", {"manager": {"in": ["current_user", 2]}}, user_id=1) == {1, 2, 5}
    assert ids("Customer", {"manager": "current_user"}, user_id=2) == {2}
    # nobody acting: `mine` is nothing, and certainly not the records without a manager
    assert ids("Deal", {"manager": "current_user"}) == set()
    assert ids("Deal", {"manager": {"in": ["current_user"]}}) == set()
    assert ids("Deal", {"manager": {"ne": "current_user"}}) == {1, 2, 3, 4, 5}


def test_a_table_without_name_field_is_matched_by_id(ids: Callable[..., set[int]]) -> None:
    assert ids("Task", {"deal": 5}) == {2}
    assert ids("Task", {"deal.customer": "romashka-2"}) == {2}
    with pytest.raises(FilterError, match="`Deal` has no name field to match `big` against"):
        ids("Task", {"deal": "big"})


# --- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doctype", "spec", "message"),
    [
        ("Customer", {"segmnt": "A"}, "`Customer` has no field `segmnt` (did you mean `segment`?)"),
        (
            "Deal",
            {"manager.departmnt": "Sales"},
            "`User` has no field `departmnt` (did you mean `department`?)",
        ),
        ("Customer", {"segment.name": "A"}, "`Customer.segment` is not a reference"),
        ("Customer", {"revenue": {"gtee": 1}}, "unknown operator `gtee` (did you mean `gte`?)"),
        ("Customer", {"revenue": {"gte": "abc"}}, "`revenue`: `abc` must be a number"),
        (
            "Customer",
            {"created": {"gte": "yesterday"}},
            "must be a date such as 2026-12-31, or today",
        ),
        ("Customer", {"segment": "Z"}, "`segment`: `Z` must be one of: A, B, C"),
        ("Customer", {"manager": "nobody@"}, None),  # a label: fine, matches nothing
        ("Deal", {"customer": 1.5}, None),
        ("Deal", {"customer": {"in": [True]}}, "must be a record id"),
        (
            "Customer",
            {"name": {"gt": 5}},
            "`name` is a string field and takes text, not the number `5`",
        ),
        (
            "Customer",
            {"notes": {"in": ["x", dt.date(2026, 1, 31)]}},
            "`notes` is a text field and takes text, not the date `2026-01-31`",
        ),
        (
            "Customer",
            {"revenue": {"between": [True, 10]}},
            "`revenue` is a money field and takes a number, not the yes/no value `true`",
        ),
        ("Customer", {"created": {"gt": 5}}, "`created`: `5` must be a date such as 2026-12-31"),
        ("Customer", {"email": {"gt": "a@b.c"}}, "`gt` does not apply to the email field `email`"),
        ("Customer", {"revenue": {"between": [1]}}, "`between` takes two values: [from, to]"),
        ("Customer", {"revenue": {"between": 5}}, "`between` takes two values"),
        ("Customer", {"revenue": {"between": [None, None]}}, "at least one of its two ends"),
        ("Customer", {"segment": {"in": "A"}}, "`in` takes a list of values"),
        ("Customer", {"segment": {"nin": []}}, "`nin` takes a list of values"),
        ("Customer", {"segment": {"eq": ["A"]}}, "`eq` takes one value"),
        ("Customer", {"email": {"set": "yes"}}, "`set` takes true or false, not `yes`"),
        ("Customer", {"revenue": {"contains": "1"}}, "`contains` applies to text fields"),
        ("Deal", {"customer": {"contains": "Rom"}}, "`contains` applies to text fields"),
        (
            "Customer",
            {"revenue": "1e1000"},
            "`revenue`: `1e1000` must have at most 16 digits before the point",
        ),
        ("Deal", {"customer": float("inf")}, "`customer`: `inf` must be a record id"),
        ("Customer", {"segment": {"lt": "B"}}, "`lt` does not apply to the enum field `segment`"),
        ("Customer", {"revenue": {"gt": None}}, "`gt` takes a value, not null"),
        ("Customer", {"segment": {}}, "`segment`: an empty condition"),
        ("Customer", {"customer": "current_user"}, "has no field `customer`"),
        ("Deal", {"customer": "current_user"}, "`current_user` is a user"),
        ("Customer", ["segment"], "a filter must be a map"),
        ("Client", {"segment": "A"}, "unknown document type `Client`"),
    ],
)
def test_errors_are_filter_errors_with_a_message(
    models: Models, doctype: str, spec: Any, message: str | None
) -> None:
    if message is None:
        compile_filter(models, doctype, spec)  # accepted
        return
    with pytest.raises(FilterError) as info:
        compile_filter(models, doctype, spec)
    assert message in str(info.value)


def test_a_segment_with_a_typo_is_a_check_error(problems_of: Callable[..., list[str]]) -> None:
    files = {
        **FILES,
        "segments.yaml": """
            segments:
              big: {document: Customer, filter: {revenu: {gte: 1000000}}}
              mine: {document: Deal, filter: {manager.department: {gtee: 1}}}
        """,
    }
    problems = "\n".join(problems_of(files, CONFIG))
    assert "has no field `revenu` (did you mean `revenue`?)" in problems
    assert "unknown operator `gtee` (did you mean `gte`?)" in problems
    assert "segments.yaml:" in problems


# --- SQL, not Python -----------------------------------------------------------------


def test_a_dotted_filter_is_one_statement_with_subqueries(
    models: Models, engine: sa.Engine
) -> None:
    table = models.table("Deal")
    where = compile_filter(
        models, "Deal", {"manager.department": "Sales", "customer.segment": {"ne": "A"}}
    )
    stmt = sa.select(table.c.id).where(where)
    sql = str(stmt.compile(engine))
    assert sql.count("IN (SELECT") == 3, sql
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        with engine.connect() as conn:
            assert set(conn.execute(stmt).scalars()) == {5}
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert len(statements) == 1


@pytest.mark.parametrize(
    ("doctype", "spec", "index"),
    [
        ("Deal", {"customer": 1}, "ix_deal_customer_id"),  # refs are indexed
        ("Customer", {"created": {"gte": "-30d"}}, "ix_customer_created"),  # index: true
        ("Customer", {"segment": "A"}, "ix_customer_segment_created_at"),  # a list filter
        ("Deal", {"manager.department": "Sales"}, "ix_deal_manager_id"),
    ],
)
def test_filters_on_indexed_columns_use_the_index(
    models: Models, engine: sa.Engine, doctype: str, spec: dict[str, Any], index: str
) -> None:
    table = models.table(doctype)
    stmt = sa.select(table.c.id).where(compile_filter(models, doctype, spec, now=NOW))
    sql = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            plan = "\n".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
            assert f"INDEX {index}" in plan and "USING" in plan, plan
        else:  # PostgreSQL: with sequential scans off, the index must be usable
            conn.exec_driver_sql("SET enable_seqscan = off")
            plan = "\n".join(str(r[0]) for r in conn.exec_driver_sql(f"EXPLAIN {sql}"))
            assert index in plan, plan
