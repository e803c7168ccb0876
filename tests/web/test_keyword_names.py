"""Names a consultant for a trading firm writes: a type `Order` with fields
`order`, `from`, `select`, `group`, `limit`, and a type `Group`. They are SQL
key words, and they work everywhere: check, migrate, forms, lists, filters,
sort, kanban, calendar, REST, import and export, transitions; on SQLite, and
on PostgreSQL with CRM_TEST_DATABASE_URL."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask

from engine import migrate
from engine.documents import Documents
from engine.loader import load
from engine.transfer import export, import_

from .conftest import Browser
from .test_api import ok, refused, user_id

TRADING = """
roles:
  manager:    {label: Manager}
  sales_head: {label: Head of sales}
documents:
  Group:
    title: "{{ name }}"
    fields:
      name:   {type: string, required: true, max_length: 100}
      select: {type: boolean}
      limit:  {type: integer, index: true}
    list: {columns: [name, select, limit], search: [name], filters: [select, limit], order: limit}
    access:
      manager:    {read: all, create: true, update: all}
      sales_head: {read: all, create: true, update: all, delete: true}
  Order:
    numbering: {prefix: "O-", width: 4}
    title: "{{ number }} {{ group }}"
    owner: manager
    fields:
      group:   {type: ref, to: Group, required: true}
      order:   {type: integer, index: true}
      from:    {type: date}
      select:  {type: enum, values: [buy, sell]}
      limit:   {type: money, min: 0}
      manager: {type: ref, to: User, default: current_user}
      double:  {type: integer, compute: "order * 2 if order else 0"}
      ahead:   {type: boolean, compute: "from is not none and from > today() and group.limit > 0"}
      side:    {type: string, compute: "doc['select'] ~ '/' ~ doc.group.select"}
      lines:
        type: table
        fields:
          order: {type: integer}
          from:  {type: string}
    statuses:
      initial: new
      states:
        new:    {label: New}
        placed: {label: Placed, require: [from]}
        done:   {label: Done, final: true}
      transitions:
        - {from: new, to: placed, when: "order and order > 0 and doc.limit"}
        - {from: placed, to: done}
    list:
      columns: [number, group, order, from, select, limit, status]
      search: [number]
      filters: [group, order, from, select, limit, status]
      order: -order
    views: {kanban: {by: status, amount: limit}, calendar: {date: from, owner: manager}}
    access:
      manager:    {read: own, create: true, update: own}
      sales_head: {read: all, create: true, update: all, delete: true}
"""
CONFIG = "name: Trading Ltd\nlocale: en\nregion: RU\nlayers: []\n"


def session_user(app: Flask, username: str, login: Callable[..., Browser]) -> Browser:
    """A logged-in browser that sends the CSRF token of an Order form with its API calls."""
    user = login(app, username)
    user.csrf = Browser.token_from(user.get("/order/add").text)
    return user


def make_group(user: Browser, name: str, limit: int, select: bool = False) -> int:
    body = {"name": name, "limit": limit, "select": select}
    return int(ok(user.api("POST", "/api/v1/group/", body), 201)["id"])


def make_order(user: Browser, **values: Any) -> dict[str, Any]:
    return ok(user.api("POST", "/api/v1/order/", values), 201)  # type: ignore[no-any-return]


def numbers(user: Browser, query: str) -> list[str]:
    page = ok(user.api("GET", f"/api/v1/order/?{query}"))
    return [r["number"] for r in page["result"]]


def test_the_names_pass_crm_check(make_config: Callable[..., Path]) -> None:
    registry = load(make_config({"trading.yaml": TRADING}, CONFIG), env={})
    assert {"group", "order", "from", "select", "limit"} <= set(registry.documents["Order"].fields)
    assert registry.documents["Order"].table == "order"
    assert registry.documents["Group"].table == "group"


def test_rest_create_read_filter_sort_and_transition(
    crm_app: Callable[..., Flask], login: Callable[..., Browser]
) -> None:
    app = crm_app(TRADING, CONFIG)
    anna = session_user(app, "anna", login)
    metals = make_group(anna, "Metals", 10, select=True)
    grain = make_group(anna, "Grain", 30)
    o1 = make_order(
        anna, group=metals, order=5, **{"from": "2031-03-01"}, select="buy", limit="100"
    )
    o2 = make_order(anna, group=grain, order=7, select="sell", limit="50")
    o3 = make_order(anna, group=metals, order=1)
    assert o1["result"]["number"] == "O-0001" and o1["result"]["double"] == 10
    assert o1["result"]["from"] == "2031-03-01" and o1["result"]["group"] == metals
    assert (o1["result"]["ahead"], o1["result"]["side"]) == (True, "buy/True")
    assert (o2["result"]["ahead"], o2["result"]["side"]) == (False, "sell/False")
    one = ok(anna.api("GET", f"/api/v1/order/{o2['id']}"))["result"]
    assert (one["order"], one["select"], one["limit"]) == (7, "sell", "50.00")

    # the list's own order is `-order`; every key-word field sorts and filters
    assert numbers(anna, "") == ["O-0002", "O-0001", "O-0003"]
    assert numbers(anna, "order=order") == ["O-0003", "O-0001", "O-0002"]
    # (NULLs keep each database's own place in a sort: filtered out here)
    priced = 'filter={"limit": {"set": true}}&order='
    assert numbers(anna, priced + "-limit") == ["O-0001", "O-0002"]
    assert numbers(anna, priced + "limit") == ["O-0002", "O-0001"]
    assert numbers(anna, 'filter={"select": {"set": true}}&order=-select') == ["O-0002", "O-0001"]
    assert numbers(anna, 'filter={"order": {"gt": 4}}&order=order') == ["O-0001", "O-0002"]
    assert numbers(anna, 'filter={"from": {"set": true}}') == ["O-0001"]
    assert numbers(anna, 'filter={"select": "sell"}') == ["O-0002"]
    assert numbers(anna, 'filter={"limit": {"gte": 60}}') == ["O-0001"]
    assert numbers(anna, f'filter={{"group": {grain}}}') == ["O-0002"]
    # a dotted filter through the ref `group`, on the `Group`'s `limit` and `select`
    assert numbers(anna, 'filter={"group.limit": {"gt": 20}}') == ["O-0002"]
    assert numbers(anna, 'filter={"group.select": true}&order=order') == ["O-0003", "O-0001"]
    assert numbers(anna, "search=O-0003") == ["O-0003"]
    groups = ok(anna.api("GET", '/api/v1/group/?filter={"limit": {"lt": 20}}'))["result"]
    assert [g["name"] for g in groups] == ["Metals"]
    assert [g["name"] for g in ok(anna.api("GET", "/api/v1/group/"))["result"]] == [
        "Metals",
        "Grain",
    ]  # fmt: skip; the Group list is ordered by `limit`

    # the transition's condition reads `order` and `doc.limit`; `placed` needs `from`
    url = f"/api/v1/order/{o3['id']}/transition"
    body = refused(anna.api("POST", url, {"to": "placed"}), 422)
    assert body["reasons"] == [
        "the condition `order and order > 0 and doc.limit` is not met",
        "“From” (from) must be filled in to enter “Placed” (placed)",
    ]
    moved = ok(
        anna.api("POST", url, {"to": "placed", "fields": {"limit": 5, "from": "2031-04-02"}})
    )
    assert moved["state"] == "placed" and moved["result"]["from"] == "2031-04-02"
    dated = 'filter={"from": {"set": true}}&order='
    assert numbers(anna, dated + "from") == ["O-0001", "O-0003"]
    assert numbers(anna, dated + "-from") == ["O-0003", "O-0001"]
    history = ok(anna.api("GET", f"/api/v1/order/{o3['id']}/history"))["result"]
    assert [h["to"] for h in history] == ["placed", "new"]  # newest first
    # the group's timeline (one UNION ALL over the records that refer to it) lists the orders
    timeline = anna.get(f"/group/{metals}").text
    assert "O-0001" in timeline and "O-0003" in timeline and "O-0002" not in timeline
    assert anna.get(f"/order/{o3['id']}").status_code == 200
    # an update through the API
    put = ok(anna.api("PUT", f"/api/v1/order/{o2['id']}", {"version": 1, "order": 70}))
    assert put["result"]["order"] == 70 and put["result"]["double"] == 140


def test_web_form_list_filters_sort_kanban_and_calendar(
    crm_app: Callable[..., Flask], login: Callable[..., Browser]
) -> None:
    app = crm_app(TRADING, CONFIG)
    anna = session_user(app, "anna", login)
    metals = make_group(anna, "Metals", 10)
    new = anna.post_form(
        "/order/add",
        {"group": metals, "order": "12", "from": "01.03.2031", "select": "buy", "limit": "99.5",
         "lines-0-order": "3", "lines-0-from": "Rotterdam"},
    )  # fmt: skip
    assert new.status_code == 302, new.text
    oid = int(re.search(r"/order/(\d+)", new.headers["Location"]).group(1))  # type: ignore[union-attr]
    page = anna.get(f"/order/{oid}").text
    assert "O-0001 Metals" in page and "99.50" in page and "Rotterdam" in page
    edit = anna.post_form(f"/order/{oid}/edit", {"group": metals, "order": "13", "_version": "1",
                                                 "from": "2031-03-02", "select": "sell"})  # fmt: skip
    assert edit.status_code == 302, edit.text
    make_order(anna, group=metals, order=4, select="buy")

    def listed(query: str) -> list[str]:
        html = anna.get(f"/order/?{query}").text
        return re.findall(r">(O-\d{4})<", html)

    assert listed("") == ["O-0001", "O-0002"]  # -order
    assert listed("order=order") == ["O-0002", "O-0001"]
    for query, expected in [
        ("f_order=13", ["O-0001"]),
        ("f_select=buy", ["O-0002"]),
        ("f_from=2031-03-02", ["O-0001"]),
        (f"f_group={metals}", ["O-0001", "O-0002"]),
        ("f_status=new", ["O-0001", "O-0002"]),
        ("q=O-0002", ["O-0002"]),
    ]:
        assert listed(query) == expected, query
    for column in ("from", "select", "limit", "group", "-from", "-select", "-limit", "-group"):
        assert anna.get(f"/order/?order={column}").status_code == 200, column
    assert re.findall(r">(Metals)<", anna.get("/group/?f_limit=10").text)

    kanban = anna.get("/order/kanban")
    assert kanban.status_code == 200 and "O-0001" in kanban.text
    cards = anna.get("/order/kanban/cards?column=new&offset=0").get_json()["cards"]
    assert len(cards) == 2
    calendar = anna.get("/order/calendar?date=2031-03-01")
    assert calendar.status_code == 200 and "O-0001" in calendar.text


def test_documents_service_export_and_import_round_trip(
    crm_app: Callable[..., Flask], login: Callable[..., Browser]
) -> None:
    app = crm_app(TRADING, CONFIG)
    state = app.extensions["crm"]
    anna = user_id(app, "anna")
    with app.app_context():
        session = state.db.session
        docs = Documents(state.models, session, anna, ["manager"], username="anna")
        group = docs.create("Group", {"name": "Oil", "limit": 3, "select": True})
        order = docs.create(
            "Order",
            {"group": group.id, "order": 2, "from": "2031-05-01", "select": "sell", "limit": "7",
             "lines": [{"order": 1, "from": "Baku"}]},
        )  # fmt: skip
        docs.update("Order", order, {"order": 3}, expected_version=1)
        session.commit()
        assert (order.order, getattr(order, "from"), order.select, order.double) == (
            3, order.__class__.__table__.c["from"].type.python_type(2031, 5, 1), "sell", 6
        )  # fmt: skip

        out = io.BytesIO()
        assert export(state.models, session, "Order", out) == 1
        text = out.getvalue().decode("utf-8")
        header = text.splitlines()[0]
        assert header.startswith("number,status,group,order,from,select,limit"), header
        result = import_(
            state.models, session, "Order", io.BytesIO(text.replace("O-0001", "").encode())
        )
        session.commit()
        assert result.created == 1 and not result.errors, result.errors
        table = state.models.table("Order")
        rows = session.execute(
            sa.select(table.c.order, table.c["from"], table.c.select, table.c.limit)
            .order_by(table.c.id)
        ).all()  # fmt: skip
        assert rows[0] == rows[1]
        again = io.BytesIO()
        export(state.models, session, "Order", again)
        lines = again.getvalue().decode("utf-8").splitlines()
        assert lines[1].split(",", 1)[1] == lines[2].split(",", 1)[1]


def test_a_field_named_where_is_added_by_migrate(
    make_config: Callable[..., Path], db_url: str
) -> None:
    from engine.models import build

    def models_of(text: str) -> Any:
        folder = make_config({"trading.yaml": text}, CONFIG + f"database: {db_url}\n")
        return build(load(folder, env={}))

    engine = sa.create_engine(db_url)
    first = models_of(TRADING)
    migrate.apply(first, engine, migrate.plan(first, engine))
    assert migrate.plan(first, engine).empty
    with engine.begin() as conn:
        conn.execute(sa.insert(first.table("Group")).values(name="Tin", limit=1, version=1))
    first.dispose()

    # a field `where` on both types; on `Order` a ref, which SQLite adds by
    # rebuilding the table `order` (Alembic's batch mode)
    later = TRADING.replace(
        "      limit:  {type: integer, index: true}\n",
        "      limit:  {type: integer, index: true}\n      where:  {type: string, index: true}\n",
    ).replace(
        "      limit:   {type: money, min: 0}\n",
        "      limit:   {type: money, min: 0}\n      where:   {type: ref, to: Group}\n",
    )
    second = models_of(later)
    steps = migrate.plan(second, engine)
    assert sorted(str(s) for s in steps.steps) == [
        "add column group.where",
        "add column order.where_id",
        "add index group.ix_group_where_limit_id",
        "add index order.ix_order_where_id_order_id",
    ], steps.lines()
    migrate.apply(second, engine, steps)
    assert migrate.plan(second, engine).empty
    with engine.begin() as conn:
        group, order = second.table("Group"), second.table("Order")
        assert conn.execute(sa.select(group.c.name, group.c.where)).all() == [("Tin", None)]
        tin = conn.execute(sa.select(group.c.id)).scalar_one()
        conn.execute(
            sa.insert(order).values(
                group_id=tin, where_id=tin, order=1, select="buy", status="new", version=1
            )
        )
        assert conn.execute(sa.select(order.c.where_id, order.c.order)).all() == [(tin, 1)]
        fks = sa.inspect(conn).get_foreign_keys("order")
        assert {(tuple(fk["constrained_columns"]), fk["referred_table"]) for fk in fks} >= {
            (("where_id",), "group"), (("group_id",), "group"), (("created_by_id",), "ab_user")
        }  # fmt: skip
    second.dispose()
    engine.dispose()


NAME_PROBLEMS = """\
roles:
  Admin: {}
  Public: {}
  admin_assistant: {}
documents:
  Order:
    fields:
      not: {type: string}
      "None": {type: string}
      self: {type: string}
      csrf_token: {type: string}
  AbUser: {}
  CrmOutbox: {}
  Users: {}
  Index: {}
"""


def test_names_the_expressions_or_the_application_need_are_refused_with_a_way_out(
    problems_of: Callable[..., list[str]],
) -> None:
    assert problems_of({"bad.yaml": NAME_PROBLEMS}) == [
        "bad.yaml:2:3: the role name `Admin` is the administrators' built-in role, kept by the "
        "user accounts; choose another name",
        "bad.yaml:3:3: the role name `Public` is the role of visitors who have not logged in, "
        "kept by the user accounts; choose another name",
        "bad.yaml:8:7: the field name `not` is a word of the expression language, where `not` "
        "would not mean this field; choose another name, such as `not_value`",
        "bad.yaml:9:7: the field name `None` is a word of the expression language, where `None` "
        "would not mean this field; choose another name, such as `none_value`",
        "bad.yaml:10:7: the field name `self` is a word of the expression language, where `self` "
        "would not mean this field; choose another name, such as `self_value`",
        "bad.yaml:11:7: the field name `csrf_token` is the web forms' own security token; "
        "choose another name",
        "bad.yaml:12:3: the document type name `AbUser` would make the table `ab_user`, and names "
        "starting with `ab_` belong to the user accounts; choose another name",
        "bad.yaml:13:3: the document type name `CrmOutbox` would make the table `crm_outbox`, and "
        "names starting with `crm_` belong to the engine; choose another name",
        "bad.yaml:14:3: the document type name `Users` would serve its pages at `/users/`, where "
        "the application has pages of its own; choose another name",
        "bad.yaml:15:3: the document type name `Index` would serve its pages at `/index/`, where "
        "the application has pages of its own; choose another name",
    ]


def test_types_that_would_share_a_table_are_refused(
    problems_of: Callable[..., list[str]],
) -> None:
    shared = """\
documents:
  Group:
    fields:
      history: {type: table, fields: {at: {type: date}}}
    statuses: {initial: a, states: {a: {}, b: {}}}
  CustomerOrder: {}
  Customer_order: {}
"""
    assert problems_of({"bad.yaml": shared}) == [
        "bad.yaml:2:3: the status history of `Group` would use the table `group__history` of "
        "the rows of `Group.history`; rename one of them",
        "bad.yaml:7:3: the type `Customer_order` would use the table `customer_order` of "
        "the type `CustomerOrder`; rename one of them",
    ]


def test_fields_that_would_share_a_column_are_refused(
    problems_of: Callable[..., list[str]],
) -> None:
    shared = """\
attributes:
  User:
    password: {type: string}
    login_count: {type: integer}
documents:
  Order:
    fields:
      group: {type: ref, to: Order}
      group_id: {type: string}
      created_by_id: {type: integer}
      lines: {type: table, fields: {parent_id: {type: integer}, idx: {type: integer}}}
"""
    assert problems_of({"bad.yaml": shared}) == [
        "bad.yaml:3:5: the user attribute `password` would use the column `password` of the "
        "user accounts; choose another name",
        "bad.yaml:4:5: the user attribute `login_count` would use the column `login_count` of "
        "the user accounts; choose another name",
        "bad.yaml:9:7: `Order.group_id` would use the column `group_id` of the ref "
        "`Order.group`; choose another name",
        "bad.yaml:10:7: `Order.created_by_id` would use the column `created_by_id` of the ref "
        "`Order.created_by`; choose another name",
        "bad.yaml:11:37: `Order.lines.parent_id` would use the column `parent_id` of the rows "
        "themselves; choose another name",
        "bad.yaml:11:65: `Order.lines.idx` would use the column `idx` of the rows themselves; "
        "choose another name",
    ]


def test_the_user_accounts_columns_are_the_ones_refused_for_user_attributes() -> None:
    from flask_appbuilder.security.sqla.models import User

    from engine import names

    assert set(User.__table__.c.keys()) == names.USER_TABLE_COLUMNS


def test_role_user_role_and_other_everyday_names_are_fine(
    problems_of: Callable[..., list[str]],
) -> None:
    fine = """\
documents:
  Role: {fields: {user: {type: ref, to: User}, group: {type: string}}}
  User_role: {fields: {role: {type: ref, to: Role}, from: {type: date}, to: {type: date}}}
  Permission: {fields: {class: {type: string}, in: {type: boolean}, where: {type: text}}}
  Outbox: {fields: {select: {type: string}, order: {type: integer}, limit: {type: integer}}}
"""
    assert problems_of({"fine.yaml": fine}) == []


def test_every_page_and_view_of_the_application_is_a_refused_type_name(
    crm_app: Callable[..., Flask],
) -> None:
    """A type named after one of the application's own views (`Index` →
    `IndexView`) or pages (`Users` → `/users/`) is refused by crm check; this
    fails when Flask-AppBuilder or the engine adds a page the list lacks."""
    from engine import names

    app = crm_app(TRADING, CONFIG)
    ours = {"OrderView", "OrderApi", "GroupView", "GroupApi"}
    assert set(app.blueprints) - ours - {"appbuilder"} <= names.VIEW_NAMES
    routes = {r.rule.split("/")[1] for r in app.url_map.iter_rules()} - {"", "order", "group"}
    assert routes <= names.ROUTES


#: field names that are also attribute names in the libraries under the engine
#: (SQLAlchemy's declarative classes, marshmallow's schemas, mappings)
LIBRARY_WORDS = [
    "metadata", "registry", "query", "fields", "opts", "items", "keys", "values", "get", "c",
    "load", "dump", "validate", "context", "Meta", "mapper", "table", "schema", "data",
    "errors", "many", "partial", "key", "label", "next", "result", "message", "page", "form",
]  # fmt: skip


def test_names_the_libraries_use_for_themselves_are_fields_like_any_other(
    crm_app: Callable[..., Flask], login: Callable[..., Browser]
) -> None:
    fields = "".join(f"      {n}: {{type: string}}\n" for n in LIBRARY_WORDS)
    columns, search, filters = (
        ", ".join(LIBRARY_WORDS[:6]), ", ".join(LIBRARY_WORDS[:4]), ", ".join(LIBRARY_WORDS)
    )  # fmt: skip
    metadata = (
        "roles: {manager: {}, sales_head: {}}\ndocuments:\n  Order:\n    fields:\n"
        + fields
        + f"    list: {{columns: [{columns}], filters: [{filters}], search: [{search}]}}\n"
        + "    access: {manager: {read: all, create: true}}\n"
    )
    app = crm_app(metadata, CONFIG)
    anna = session_user(app, "anna", login)
    values = {n: f"v_{n}" for n in LIBRARY_WORDS}
    created = ok(anna.api("POST", "/api/v1/order/", values), 201)
    got = ok(anna.api("GET", f"/api/v1/order/{created['id']}"))["result"]
    assert {n: got[n] for n in LIBRARY_WORDS} == values
    new = anna.post_form("/order/add", values)
    assert new.status_code == 302, new.status_code
    ids = {str(created["id"]), new.headers["Location"].rsplit("/", 1)[1]}
    page = anna.get(new.headers["Location"]).text
    assert [n for n in LIBRARY_WORDS if f"v_{n}" not in page] == []
    query = "&".join(f"f_{n}=v_{n}" for n in LIBRARY_WORDS)
    listed = anna.get(f"/order/?{query}&order=-metadata").text
    assert set(re.findall(r'href="/order/(\d+)"', listed)) == ids


def test_a_field_named_user_or_now_is_doc_user_in_expressions(
    problems_of: Callable[..., list[str]], make_config: Callable[..., Path]
) -> None:
    """A bare `user` is the signed-in user and `now` the time, whatever the
    fields are called; crm check says to write `doc.user` for the field."""
    text = """\
documents:
  Shift:
    title: "{{ doc.user }} {{ now }}"
    fields:
      user:  {type: ref, to: User}
      now:   {type: boolean}
      today: {type: date}
      note:  {type: string, compute: "'mine' if user == doc.user else doc.now"}
    statuses:
      initial: a
      states: {a: {}, b: {}}
      transitions:
        - {from: a, to: b, when: "user and today and today() > today"}
"""
    assert problems_of({"shift.yaml": text}) == [
        "shift.yaml:3:12: the title of `Shift`: `now` in `{{ doc.user }} {{ now }}` is the "
        "current time, not the field `now`: write `doc.now` for the field",
        "shift.yaml:13:34: `when` of a transition of `Shift`: `today()` cannot be used in "
        "`user and today and today() > today`: the field `today` of this record hides it; "
        "rename the field to use the helper",
        "shift.yaml:13:34: `when` of a transition of `Shift`: `user` in `user and today and "
        "today() > today` is the signed-in user, not the field `user`: write `doc.user` for "
        "the field",
    ]
    fixed = text.replace("{{ now }}", "{{ doc.now }}").replace(
        "user and today and today() > today", "doc.user and today"
    )
    assert load(make_config({"shift.yaml": fixed}, CONFIG), env={}).documents["Shift"]


def test_the_web_export_imports_back_through_the_job_runner(
    crm_app: Callable[..., Flask], login: Callable[..., Browser]
) -> None:
    from engine import jobs

    from .test_import_web import queued, status, upload

    app = crm_app(TRADING, CONFIG)
    helen = session_user(app, "helen", login)
    metals = make_group(helen, "Metals", 10)
    make_order(helen, group=metals, order=5, **{"from": "2031-03-01"}, select="buy", limit="12.5")
    make_order(helen, group=metals, order=6, select="sell")
    exported = helen.get("/order/export.csv?f_select=buy")
    assert exported.status_code == 200
    lines = exported.data.decode("utf-8-sig").splitlines()
    assert lines[0].startswith("id,Number,Group,Order,From,Select,Limit,Status"), lines
    assert lines[1].startswith("1,O-0001,Metals,5,2031-03-01,buy,12.50,new,Helen Test"), lines
    # the id and the number are the engine's to give: the file comes back without them
    again = "\n".join(line.split(",", 2)[2] for line in lines).encode()
    job_id = queued(upload(helen, again, "orders.csv", resource="order"), resource="order")
    with app.app_context():
        assert jobs.runner_for(app).drain() == 1
    done = status(helen, job_id, resource="order")
    assert (done["state"], done["ok"], done["created"]) == ("done", True, 1), done
    rows = ok(helen.api("GET", '/api/v1/order/?filter={"select": "buy"}&order=order'))["result"]
    assert [(r["number"], r["order"], r["from"], r["limit"]) for r in rows] == [
        ("O-0001", 5, "2031-03-01", "12.50"), ("O-0003", 5, "2031-03-01", "12.50"),
    ]  # fmt: skip


def test_types_named_role_permission_and_user_role_serve_pages_and_rest(
    crm_app: Callable[..., Flask], login: Callable[..., Browser]
) -> None:
    app = crm_app(
        """
roles: {manager: {}, sales_head: {}}
documents:
  Role:
    title: "{{ name }}"
    fields: {name: {type: string}, user: {type: ref, to: User}}
    access: {manager: {read: all, create: true}}
  Permission:
    fields: {role: {type: ref, to: Role}, class: {type: string}}
    access: {manager: {read: all, create: true}}
  User_role:
    fields: {role: {type: ref, to: Role}, from: {type: date}}
    access: {manager: {read: all, create: true}}
""",
        CONFIG,
    )
    anna = login(app, "anna")
    anna.csrf = Browser.token_from(anna.get("/role/add").text)
    role = ok(anna.api("POST", "/api/v1/role/", {"name": "Broker"}), 201)["id"]
    ok(anna.api("POST", "/api/v1/permission/", {"role": role, "class": "A"}), 201)
    ok(anna.api("POST", "/api/v1/user_role/", {"role": role, "from": "2031-01-01"}), 201)
    for resource in ("role", "permission", "user_role"):
        assert "Broker" in anna.get(f"/{resource}/").text, resource
    # the security screens keep their own pages
    admin = login(app, "admin")
    assert admin.get("/roles/list/").status_code == 200
    assert "Broker" not in admin.get("/roles/list/").text
