"""Executive discipline: tasks done on time and late, per person and per
department, in one statement, as far as the reader may see; the page, its CSV
and its JSON show the same numbers."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from flask import Flask

from engine import migrate
from engine.access import Principal
from plugins.processes.reports import (
    Row,
    discipline,
    discipline_params,
    discipline_select,
    period_bounds,
)
from tests.processes.conftest import World
from tests.web.conftest import Browser, crm_app  # noqa: F401  (crm_app: a fixture)

MOSCOW = ZoneInfo("Europe/Moscow")
NOVEMBER = (dt.date(2026, 11, 1), dt.date(2026, 11, 30))
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


def at(day: int, hour: int = 9, month: int = 11) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, 0, tzinfo=dt.UTC)


def add_tasks(conn: sa.Connection, models: Any, users: dict[str, int], now: dt.datetime) -> None:
    """Departments Sales (anna, head1) and Support (boris); head2 has none.

    November on Moscow's clock is 31 Oct 21:00 UTC to 30 Nov 21:00 UTC."""
    departments = models.table("Department")
    people = models.table("User")
    sales = conn.execute(
        departments.insert().values(name="Sales", version=1, created_at=now, head_id=users["head1"])
    ).inserted_primary_key[0]
    support = conn.execute(
        departments.insert().values(name="Support", version=1, created_at=now)
    ).inserted_primary_key[0]
    for name, dept in (("anna", sales), ("head1", sales), ("boris", support)):
        conn.execute(people.update().where(people.c.id == users[name]).values(department_id=dept))
    rows: list[tuple[str, dt.datetime, dt.datetime | None, str, dt.datetime | None]] = [
        # who, created, due, status, done_at
        ("anna", at(1), at(2), "done", at(2, 8)),  # on time, 23 h
        ("anna", at(3), at(4), "done", at(4, 15)),  # 6 h late, 30 h
        ("anna", at(5), at(6), "open", None),  # overdue
        ("anna", at(10), at(25), "open", None),  # not yet due
        ("anna", at(10), None, "done", at(11)),  # no due time: on time, 24 h
        ("anna", at(5), at(7), "cancelled", None),  # not counted
        ("anna", at(30, 8, 10), at(31, 20, 10), "done", at(31, 20, 10)),  # 31 Oct 23:00 MSK: before
        ("anna", at(31, 8, 10), at(31, 21, 10), "done", at(31, 21, 10)),  # 1 Nov 00:00 MSK: on time, 13 h
        ("anna", at(29), at(30, 21), "open", None),  # 1 Dec 00:00 MSK: after
        ("boris", at(1), at(3), "done", at(5)),  # 48 h late, 96 h
        ("boris", at(2), at(10), "done", at(9)),  # on time, 168 h
        ("head2", at(12), at(15), "open", None),  # overdue
        ("head1", at(20), at(2, 9, 12), "open", None),  # December
        ("head2", at(20, 9, 10), None, "open", None),  # open without a due time: no period
        ("head1", at(20, 9, 10), None, "done", at(3)),  # no due time, done in November: 336 h
        ("head1", at(25), None, "done", at(2, 9, 12)),  # done in December
    ]  # fmt: skip
    tasks = models.table("Task")
    conn.execute(
        tasks.insert(),
        [
            {"title": f"Task {i}", "assignee_id": users[who], "created_at": created, "due": due,
             "status": status, "done_at": done, "updated_at": done, "version": 1}
            for i, (who, created, due, status, done) in enumerate(rows)
        ],
    )  # fmt: skip
    # closed by a bare transition: no done_at, the last change counts (1 h late, 25 h)
    conn.execute(
        tasks.insert().values(
            title="Closed by hand", assignee_id=users["boris"], created_at=at(1), due=at(2),
            status="done", done_at=None, updated_at=at(2, 10), version=1,
        )
    )  # fmt: skip


def figures(row: Row) -> tuple[Any, ...]:
    return (row.total, row.on_time, row.late, row.overdue, row.pending, row.on_time_pct,
            row.avg_late_hours, row.avg_hours_to_complete)  # fmt: skip


ANNA = (6, 3, 1, 1, 1, 60.0, 6.0, 22.5)
HEAD1 = (1, 1, 0, 0, 0, 100.0, None, 336.0)
SALES = (7, 4, 1, 1, 1, 66.7, 6.0, 85.2)
BORIS = (3, 1, 2, 0, 0, 33.3, 24.5, 96.3)
HEAD2 = (1, 0, 0, 1, 0, 0.0, None, None)
TOTAL = (11, 5, 3, 2, 1, 50.0, 18.3, 89.4)


@pytest.fixture
def world(world_for: Callable[..., World]) -> World:
    w = world_for({})
    # the users' attributes (department) are columns the migration adds to FAB's table
    migrate.apply(w.models, w.engine, migrate.plan(w.models, w.engine))
    with w.engine.begin() as conn:
        add_tasks(conn, w.models, w.users, NOW)
    return w


def principal(w: World, name: str, role: str) -> Principal:
    return Principal(w.users[name], name, frozenset({role}))


def report(w: World, who: Principal, by: str = "person") -> list[Row]:
    with w.session() as s:
        return discipline(w.models, s, who, *NOVEMBER, by, MOSCOW, now=NOW)  # type: ignore[arg-type]


def test_per_person_exact_numbers_and_totals(world: World) -> None:
    rows = report(world, principal(world, "head1", "sales_head"))
    assert [(r.name, r.department, r.key) for r in rows] == [
        ("Anna", "Sales", world.users["anna"]),
        ("Head1", "Sales", world.users["head1"]),
        ("Boris", "Support", world.users["boris"]),
        ("Head2", "(no department)", world.users["head2"]),
        ("Total", "", None),
    ]
    assert [figures(r) for r in rows] == [ANNA, HEAD1, BORIS, HEAD2, TOTAL]
    assert rows[-1].is_total and not any(r.is_total for r in rows[:-1])


def test_per_department(world: World) -> None:
    rows = report(world, principal(world, "head2", "sales_head"), by="department")
    assert [(r.name, r.department) for r in rows] == [
        ("Sales", ""), ("Support", ""), ("(no department)", ""), ("Total", ""),
    ]  # fmt: skip
    assert [figures(r) for r in rows] == [SALES, BORIS, HEAD2, TOTAL]


def test_a_manager_sees_only_his_own_row(world: World) -> None:
    anna = principal(world, "anna", "manager")
    rows = report(world, anna)
    assert [r.name for r in rows] == ["Anna", "Total"]
    assert figures(rows[0]) == figures(rows[1]) == ANNA
    by_department = report(world, anna, by="department")
    assert [(r.name, figures(r)) for r in by_department] == [("Sales", ANNA), ("Total", ANNA)]
    nobody = report(world, Principal(world.users["boris"], "boris", frozenset({"guest"})))
    assert [(r.name, r.total, r.on_time_pct) for r in nobody] == [("Total", 0, None)]


def test_the_report_is_one_statement(world: World) -> None:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(" ".join(statement.split()))

    sa.event.listen(world.engine, "before_cursor_execute", record)
    try:
        for by in ("person", "department"):
            report(world, principal(world, "head1", "sales_head"), by)
    finally:
        sa.event.remove(world.engine, "before_cursor_execute", record)
    assert len(seen) == 2, seen
    assert all("GROUP BY" in s and "JOIN ab_user" in s for s in seen)


@pytest.mark.parametrize(("who", "role", "due", "undue"), [
    ("head1", "sales_head", "ix_task_status_due_id (status=? AND due>? AND due<?)",
     "ix_task_done_at_due_id (done_at>? AND done_at<?)"),
    ("anna", "manager", "ix_task_assignee_id_due_id (assignee_id=? AND due>? AND due<?)",
     "ix_task_assignee_id_due_id (assignee_id=? AND due=?)"),
])  # fmt: skip
def test_indexes_serve_the_period(world: World, who: str, role: str, due: str, undue: str) -> None:
    if world.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's plan is the one checked")
    select = discipline_select(world.models, principal(world, who, role), "person", "sqlite")
    select = select.params(discipline_params(*NOVEMBER, MOSCOW, NOW))
    sql = str(select.compile(world.engine, compile_kwargs={"literal_binds": True}))
    with world.engine.connect() as conn:
        plan = [str(r[3]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]
    # the tasks due in the period, then those without a due time done in it
    # (a manager's: his own without one); never a scan of the table
    searches = [step for step in plan if "task" in step.split()[:2]]
    assert searches == [f"SEARCH task USING INDEX {due}", f"SEARCH task USING INDEX {undue}"], plan


def test_period_bounds_follow_the_company_clock() -> None:
    assert period_bounds(*NOVEMBER, MOSCOW) == (at(31, 21, 10), at(30, 21))
    with pytest.raises(ValueError, match="ends before it starts"):
        period_bounds(NOVEMBER[1], NOVEMBER[0], MOSCOW)


# --- the page ---------------------------------------------------------------------------------

CONFIG = """\
name: Sales Ltd
locale: en
region: RU
timezone: Europe/Moscow
layers: [base]
plugins:
  processes: {}
"""


@pytest.fixture
def app(crm_app: Callable[..., Flask]) -> Flask:  # noqa: F811
    app = crm_app("{}", CONFIG)
    state = app.extensions["crm"]
    with app.app_context():
        users = state.models.table("User")
        ids = dict(state.db.session.execute(sa.select(users.c.username, users.c.id)).all())
        ids["head1"], ids["head2"] = ids["helen"], ids["admin"]
        with state.db.engine.begin() as conn:
            add_tasks(conn, state.models, ids, NOW)
    return app


def test_the_page_renders_for_a_head_and_the_csv_has_the_same_numbers(
    app: Flask,
) -> None:
    helen = Browser(app, "helen", "secret")
    query = "from=2026-11-01&to=2026-11-30"
    page = helen.get(f"/processes/discipline?{query}")
    assert page.status_code == 200, page.text
    assert "Executive discipline" in page.text
    assert 'value="2026-11-01"' in page.text and 'value="2026-11-30"' in page.text
    assert page.text.count('class="crm-report-row"') == 4
    assert "/processes/discipline.csv?" in page.text

    as_csv = helen.get(f"/processes/discipline.csv?{query}")
    assert as_csv.status_code == 200 and as_csv.mimetype == "text/csv"
    table = list(csv.reader(io.StringIO(as_csv.data.decode("utf-8-sig"))))
    assert table[0][:3] == ["Person", "Department", "Total"]
    as_json = helen.get(f"/processes/discipline.json?{query}").json
    rows = [*as_json["rows"], as_json["total"]]
    assert [line[0] for line in table[1:]] == [r["name"] for r in rows]
    columns = ("total", "on_time", "late", "overdue", "pending", "on_time_pct",
               "avg_late_hours", "avg_hours_to_complete")  # fmt: skip
    for line, row in zip(table[1:], rows, strict=True):
        assert line[2:] == ["" if row[c] is None else str(row[c]) for c in columns]
        # the page shows every one of them in the row's cells
        for c in columns:
            assert f">{'—' if row[c] is None else row[c]}</td>" in page.text
    # the figures are the report's (overdue or not depends on today's date)
    assert [r["name"] for r in rows] == [
        "Anna Test",
        "Helen Test",
        "Boris Test",
        "Admin Test",
        "Total",
    ]
    assert [r["total"] for r in rows] == [6, 1, 3, 1, 11]
    assert [r["on_time"] for r in rows] == [3, 1, 1, 0, 5]
    assert rows[-1]["late"] == 3 and rows[-1]["avg_late_hours"] == 18.3

    by_department = helen.get(f"/processes/discipline.json?{query}&by=department").json
    assert [r["name"] for r in by_department["rows"]] == ["Sales", "Support", "(no department)"]


def test_the_csv_never_hands_a_spreadsheet_a_formula(app: Flask) -> None:
    """A person's or a department's name is text, even one a spreadsheet would run."""
    state = app.extensions["crm"]
    with app.app_context(), state.db.engine.begin() as conn:
        people, departments = state.models.table("User"), state.models.table("Department")
        conn.execute(
            people.update().where(people.c.username == "anna")
            .values(first_name='=HYPERLINK("http://evil.example","x")', last_name="")
        )  # fmt: skip
        conn.execute(departments.update().where(departments.c.name == "Support")
                     .values(name="+cmd|' /C calc'!A0"))  # fmt: skip
    helen = Browser(app, "helen", "secret")
    query = "from=2026-11-01&to=2026-11-30"
    for by in ("person", "department"):
        as_csv = helen.get(f"/processes/discipline.csv?{query}&by={by}")
        assert as_csv.status_code == 200
        table = list(csv.reader(io.StringIO(as_csv.data.decode("utf-8-sig"))))
        names = [line[0] for line in table[1:]]
        hostile = [n for n in names if n[:1] in ("=", "+", "-", "@", "'")]
        assert hostile, names
        assert all(n.startswith("'") for n in hostile), names
    assert "'+cmd|' /C calc'!A0" in names  # the department, written as text


def test_a_manager_gets_only_his_row_and_the_menu_has_the_report(
    app: Flask,
) -> None:
    anna = Browser(app, "anna", "secret")
    data = anna.get("/processes/discipline.json?from=2026-11-01&to=2026-11-30").json
    assert [r["name"] for r in data["rows"]] == ["Anna Test"]
    assert data["total"]["total"] == 6
    page = anna.get("/processes/discipline")  # this month by default: nothing due yet
    assert page.status_code == 200
    assert "Executive discipline</a>" in page.text


def test_who_may_not_read_tasks_gets_403_and_no_menu_item(app: Flask) -> None:
    with app.app_context():
        sm = app.extensions["crm"].appbuilder.sm
        role = sm.find_role("guest") or sm.add_role("guest")
        sm.add_user("guest", "Guest", "Test", "guest@example.org", [role], "secret")
    guest = Browser(app, "guest", "secret")
    assert guest.get("/processes/discipline").status_code == 403
    response = guest.get("/processes/discipline.json")
    assert response.status_code == 403 and response.json == {"message": "you may not read tasks"}
    assert "Executive discipline" not in guest.get("/").text
    assert "Executive discipline</a>" in Browser(app, "helen", "secret").get("/").text


BAD = (
    ("from=2026-13-01", "`from` must be a date such as 2026-01-31"),
    ("to=yesterday", "`to` must be a date such as 2026-01-31"),
    ("from=2026-12-01&to=2026-11-01", "`from` must not be after `to`"),
    ("from=0001-01-01", "`from` must be between 1900-01-01 and 9000-12-31"),
    ("by=team", "`by` is one of: person, department"),
)


def test_bad_requests_are_400_with_a_message(app: Flask) -> None:
    helen = Browser(app, "helen", "secret")
    for query, message in BAD:
        for suffix in ("", ".csv"):
            response = helen.get(f"/processes/discipline{suffix}?{query}")
            assert response.status_code == 400 and message in response.text, query
        response = helen.get(f"/processes/discipline.json?{query}")
        assert response.status_code == 400 and response.json == {"message": message}, query


def test_who_may_not_see_a_counted_field_gets_no_report(crm_app: Callable[..., Flask]) -> None:  # noqa: F811
    """A report over a field hidden from the role would tell its values."""
    hidden = """
documents:
  Task:
    access:
      manager: {read: own, create: true, update: own, fields: {done_at: none}}
"""
    app = crm_app(hidden, CONFIG)
    anna = Browser(app, "anna", "secret")
    assert anna.get("/processes/discipline").status_code == 403
    assert anna.get("/processes/discipline.json").status_code == 403
    assert "Executive discipline" not in anna.get("/").text
    assert "Executive discipline</a>" in Browser(app, "helen", "secret").get("/").text
