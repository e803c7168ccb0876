"""The list page: two statements per page, joined labels, capped counts, keyset = offset."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from flask_appbuilder import Model as FabModel
from flask_appbuilder.security.sqla import models as _fab_security  # noqa: F401 - FAB's tables
from sqlalchemy.orm import Session

from engine.lists import ListError, ListQuery, Page, Ref, decode_cursor, encode_cursor, page
from engine.models import Models, build
from engine.registry import Registry

CONFIG = "name: Lists Ltd\nlocale: en\nlayers: []\n"
FILES = {
    "company.yaml": """
        documents:
          Company:
            title: "{{ name }}"
            fields:
              name:     {type: string, required: true}
              city:     {type: string}
              industry: {type: enum, values: [retail, wholesale]}
            list: {columns: [name, city], search: [name], order: name}
          Tag:
            fields:
              weight: {type: integer}
        """,
    "deal.yaml": """
        documents:
          Deal:
            title: "{{ title }}"
            fields:
              title:   {type: string}
              company: {type: ref, to: Company}
              stage:   {type: enum, values: [new, won, lost]}
              amount:  {type: money}
              closes:  {type: date}
              owner:   {type: ref, to: User}
              tag:     {type: ref, to: Tag}
              phone:   {type: phone}
              inn:     {type: inn}
            list:
              columns: [title, company, stage, amount, closes, owner]
              search: [title, company, stage, phone, inn]
              filters: [stage, company]
              order: -closes
        """,
}
COMPANIES = ["Alpha", "Ромашка", "beta", "Gamma 50%", None]
STAGES = ["new", "won", "lost"]
START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
N_DEALS = 61


@dataclass
class World:
    models: Models
    engine: sa.Engine
    deals: list[dict[str, Any]]
    company_names: dict[int, str | None]
    user_names: dict[int, str]

    @property
    def nulls_largest(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def expected(self, rows: list[dict[str, Any]], field: str, desc: bool) -> list[int]:
        """Ids in the page order: the field then id, NULLs where the database puts them."""

        def key(r: dict[str, Any]) -> tuple[int, Any, int]:
            value = r[field]
            null_rank = (1 if self.nulls_largest else -1) if value is None else 0
            return (null_rank, value if value is not None else 0, r["id"])

        return [r["id"] for r in sorted(rows, key=key, reverse=desc)]


@pytest.fixture
def world(load_config: Callable[..., Registry], db_url: str) -> Iterator[World]:
    models = build(load_config(FILES, CONFIG))
    engine = sa.create_engine(db_url)
    FabModel.metadata.create_all(engine)
    models.metadata.create_all(engine)
    users = FabModel.metadata.tables["ab_user"]
    company = models.table("Company")
    tag = models.table("Tag")
    deal = models.table("Deal")
    deals: list[dict[str, Any]] = []
    with engine.begin() as conn:
        conn.execute(
            users.insert(),
            [{"id": i, "username": u, "first_name": first, "last_name": last, "email": f"{u}@x.test",
              "active": True} for i, u, first, last in ((1, "alice", "Alice", "Smith"), (2, "bob", "", " "))],
        )  # fmt: skip
        conn.execute(
            company.insert(),
            [{"id": i + 1, "name": n, "city": "Town", "industry": "retail" if i % 2 else "wholesale",
              "created_at": START}
             for i, n in enumerate(COMPANIES)],
        )  # fmt: skip
        conn.execute(tag.insert(), [{"id": 1, "weight": 5, "created_at": START}])
        for i in range(1, N_DEALS + 1):
            deals.append(
                {
                    "id": i,
                    "title": f"Deal {i:03d}" if i % 7 else f"deal_{i:03d}",
                    "company_id": None if i % 11 == 0 else i % len(COMPANIES) + 1,
                    "stage": STAGES[i % 3],
                    "amount": None if i % 13 == 0 else Decimal(i * 37 % 500) + Decimal("0.25"),
                    # ties (every date four times) and NULLs, to test the keyset
                    "closes": None if i % 9 == 0 else dt.date(2025, 3, 1) + dt.timedelta(i // 4),
                    "owner_id": None if i % 5 == 0 else 1 + i % 2,
                    "tag_id": 1 if i % 2 else None,
                    "phone": f"+7495{i:07d}",
                    "inn": f"77{i:08d}",
                    "created_at": START + dt.timedelta(hours=i),
                    "version": 1,
                }
            )
        conn.execute(deal.insert(), deals)
    yield World(
        models,
        engine,
        deals,
        {i + 1: n for i, n in enumerate(COMPANIES)},
        {1: "Alice Smith", 2: "bob"},  # a user by name; by login when no name is set
    )
    engine.dispose()
    models.dispose()


@pytest.fixture
def statements(world: World) -> Iterator[list[str]]:
    """Every SQL statement sent to the database while the test runs."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sa.event.listen(world.engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(world.engine, "before_cursor_execute", record)


def run(world: World, doctype: str = "Deal", **kwargs: Any) -> Page:
    with Session(world.engine) as session:
        return page(world.models, session, doctype, **kwargs)


def ids(p: Page) -> list[int]:
    return [r["id"] for r in p.rows]


def test_default_page_has_typed_values_and_joined_labels(world: World) -> None:
    p = run(world)
    assert p.columns == ("title", "company", "stage", "amount", "closes", "owner")
    assert ids(p) == world.expected(world.deals, "closes", desc=True)[:25]
    assert p.count == N_DEALS and not p.count_capped
    by_id = {d["id"]: d for d in world.deals}
    for row in p.rows:
        deal = by_id[row["id"]]
        assert set(row) == {"id", "title", "company", "stage", "amount", "closes", "owner"}
        assert row["amount"] == deal["amount"]
        assert row["amount"] is None or isinstance(row["amount"], Decimal)
        assert row["closes"] == deal["closes"]
        assert row["closes"] is None or type(row["closes"]) is dt.date
        if deal["company_id"] is None:
            assert row["company"] is None
        else:
            name = world.company_names[deal["company_id"]]
            # a target without a name falls back to its id
            assert row["company"] == Ref(deal["company_id"], name or str(deal["company_id"]))
        if deal["owner_id"] is not None:
            assert row["owner"] == Ref(deal["owner_id"], world.user_names[deal["owner_id"]])


def test_a_page_is_two_statements_whatever_its_size(world: World, statements: list[str]) -> None:
    for limit in (1, 25, 100):
        statements.clear()
        p = run(world, limit=limit, columns=["title", "company", "owner", "tag", "company.city"])
        assert len(p.rows) == min(limit, N_DEALS)
        assert len(statements) == 2, statements
    rows_sql, count_sql = statements
    # a keyset page too, even where it crosses between NULL and non-NULL sort values
    statements.clear()
    p = run(world, order="-closes", limit=50)
    run(world, order="-closes", limit=50, after=p.next_cursor)
    assert len(statements) == 4
    # company and owner joined once each; `company.city` reuses the company join;
    # Tag has no name field, so its id is its label and it needs no join
    assert rows_sql.upper().count("LEFT OUTER JOIN") == 2
    assert "JOIN" not in count_sql.upper()
    assert "LIMIT" in count_sql.upper()


def test_ref_without_label_field_shows_its_id_and_dotted_columns(world: World) -> None:
    p = run(world, columns=["tag", "company.city", "company.industry"], order="id")
    first = p.rows[0]
    assert first["id"] == 1
    assert first["tag"] == Ref(1, "1")
    assert first["company.city"] == "Town"
    assert first["company.industry"] == "retail"  # company 2
    assert p.rows[1]["tag"] is None
    no_company = next(r for r in p.rows if r["id"] == 11)
    assert no_company["company.city"] is None


def test_filter_and_base_where(world: World) -> None:
    deal = world.models.table("Deal")
    p = run(world, filter={"stage": "won"}, limit=100)
    won = [d for d in world.deals if d["stage"] == "won"]
    assert sorted(ids(p)) == sorted(d["id"] for d in won)
    assert ids(p) == world.expected(won, "closes", desc=True)
    assert p.count == len(won)

    p = run(world, filter={"stage": "won"}, base_where=deal.c.owner_id == 1, limit=100)
    mine = [d["id"] for d in won if d["owner_id"] == 1]
    assert sorted(ids(p)) == sorted(mine) and p.count == len(mine)

    p = run(world, filter={"owner": "current_user"}, user_id=2, limit=100)
    assert p.count == sum(1 for d in world.deals if d["owner_id"] == 2)


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        # anywhere in the title, any case
        ("deal 00", lambda d: "deal 00" in d["title"].lower()),
        ("l 04", lambda d: "l 04" in d["title"].lower()),
        # the company's name, through the reference; Cyrillic folds too
        ("ром", lambda d: d["company_id"] == 2),
        ("РОМАШ", lambda d: d["company_id"] == 2),
        ("alp", lambda d: d["company_id"] == 1),
        # LIKE wildcards are plain text
        ("deal_", lambda d: d["title"].startswith("deal_")),
        ("gamma 50%", lambda d: d["company_id"] == 4),
        ("%", lambda d: d["company_id"] == 4),
        ("%x", lambda d: False),
        # an enum matches by key or label
        ("wo", lambda d: d["stage"] == "won"),
        # a phone, however it is typed
        ("7 (495) 000-001", lambda d: 10 <= d["id"] <= 19),
        ("+7495000006", lambda d: 60 <= d["id"] <= 69),
        # a type of its own stored as text
        ("770000001", lambda d: 10 <= d["id"] <= 19),
    ],
)
def test_search_finds_the_term_anywhere_in_search_fields(
    world: World, term: str, expected: Callable[[dict[str, Any]], bool]
) -> None:
    p = run(world, search=term, limit=100)
    assert sorted(ids(p)) == sorted(d["id"] for d in world.deals if expected(d))
    assert p.count == len(p.rows)


def test_search_combines_with_filter(world: World) -> None:
    p = run(world, search="deal 0", filter={"stage": "lost"}, limit=100)
    assert p.rows and all(r["stage"] == "lost" for r in p.rows)
    assert all(r["title"].startswith("Deal 0") for r in p.rows)


def test_count_is_capped(world: World) -> None:
    p = run(world, count_cap=10)
    assert (p.count, p.count_capped) == (10, True)
    p = run(world, count_cap=N_DEALS)
    assert (p.count, p.count_capped) == (N_DEALS, False)
    p = run(world, count_cap=None)
    assert (p.count, p.count_capped) == (N_DEALS, False)


def test_offset_pages_and_the_end(world: World) -> None:
    everything = world.expected(world.deals, "closes", desc=True)
    p = run(world, offset=50, limit=25)
    assert ids(p) == everything[50:]
    assert p.next_cursor is None and p.count == N_DEALS
    p = run(world, offset=500)
    assert p.rows == [] and p.count == N_DEALS


@pytest.mark.parametrize(
    "order", ["-closes", "closes", "-amount", "amount", "title", "-created_at", "id", "-id"]
)
def test_keyset_pages_equal_offset_pages(world: World, order: str) -> None:
    limit = 7
    by_offset: list[int] = []
    for offset in range(0, N_DEALS, limit):
        by_offset += ids(run(world, order=order, offset=offset, limit=limit))
    field = order.lstrip("-")
    assert by_offset == world.expected(world.deals, field, desc=order.startswith("-"))

    by_cursor: list[int] = []
    cursor: str | None = None
    for _ in range(N_DEALS):
        p = run(world, order=order, after=cursor, limit=limit)
        by_cursor += ids(p)
        assert p.count == N_DEALS
        cursor = p.next_cursor
        if cursor is None:
            break
    assert by_cursor == by_offset


def test_keyset_with_filter(world: World) -> None:
    first = run(world, filter={"stage": "new"}, limit=5)
    second = run(world, filter={"stage": "new"}, limit=5, after=first.next_cursor)
    assert ids(second) == ids(run(world, filter={"stage": "new"}, limit=5, offset=5))


def test_cursor_round_trip() -> None:
    for value in (None, 5, "x", dt.date(2025, 1, 2), Decimal("1.50")):
        raw, row_id = decode_cursor(encode_cursor(value, 42))
        assert row_id == 42
        assert raw == (value if value is None or isinstance(value, (int, str)) else str(value))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"columns": ["nope"]}, "`Deal` has no field `nope`"),
        ({"columns": ["stage.name"]}, "not a reference"),
        ({"order": "-company"}, "is a reference"),
        ({"order": "missing"}, "no field `missing` to sort by"),
        ({"after": "not a cursor!"}, "cursor is not valid"),
        ({"after": encode_cursor("yesterday", 1)}, "cursor is not valid"),
        ({"limit": 0}, "1 to"),
        ({"offset": -1}, "negative"),
        ({"filter": {"stge": "won"}}, "no field `stge`"),
    ],
)
def test_bad_requests_say_what_is_wrong(world: World, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run(world, **kwargs)


def test_list_error_is_a_filter_error() -> None:
    from engine.filters import FilterError

    assert issubclass(ListError, FilterError)


def test_query_can_be_built_without_a_session(world: World) -> None:
    query = ListQuery(world.models, "Company", dialect=world.engine.dialect.name, search="alp")
    sql = str(query.rows_select.compile(world.engine))
    assert "ORDER BY company.name" in sql
    with world.engine.connect() as conn:
        p = query.run(conn)
    assert [r["name"] for r in p.rows] == ["Alpha"]
