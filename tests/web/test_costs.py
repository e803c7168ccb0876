"""What pages and start-up cost: a list page sends the same few statements
whatever its size and whoever asks (permission and menu checks are answered
once per request), and starting an app reads, never writes."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from engine.app import create_app


def user_id(app: Flask, username: str) -> int:
    with app.app_context():
        users = app.extensions["crm"].models.table("User")
        session = app.extensions["crm"].db.session
        return int(
            session.execute(sa.select(users.c.id).where(users.c.username == username)).scalar_one()
        )


@contextmanager
def statements_of(target: Any) -> Iterator[list[str]]:
    """Every statement sent through ``target`` (an engine, or the Engine class) meanwhile."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(" ".join(statement.split()))

    sa.event.listen(target, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(target, "before_cursor_execute", record)


def fill_customers(app: Flask, n: int) -> None:
    anna = user_id(app, "anna")
    with app.app_context():
        state = app.extensions["crm"]
        table = state.models.table("Customer")
        session = state.db.session
        session.execute(sa.delete(table))
        now = dt.datetime.now(dt.UTC)
        session.execute(table.insert(), [{"name": f"C{i}", "segment": "A", "manager_id": anna,
                                          "version": 1, "created_at": now} for i in range(n)])  # fmt: skip
        session.commit()


@pytest.mark.parametrize("username", ["admin", "helen", "anna"])
def test_a_list_page_costs_five_statements_whatever_its_size(
    crm_app: Callable[..., Flask], login: Callable[..., Any], username: str
) -> None:
    app = crm_app()
    browser = login(app, username)
    with app.app_context():
        engine = app.extensions["crm"].db.engine

    def statements(url: str, rows: int, offset: int) -> list[str]:
        fill_customers(app, rows)
        with statements_of(engine) as seen:
            response = browser.get(url)
            assert response.status_code == 200
            shown = response.text.count('class="crm-row-link"')
            assert shown == max(0, min(rows - offset, 25))
        return seen

    for url, offset in (("/customer/", 0), ("/customer/?q=C&f_segment=A&order=name&offset=25", 25)):
        few, many = statements(url, 5, offset), statements(url, 60, offset)
        assert len(few) == len(many) == 5, many
    # which five: the user with their roles and groups in one statement, the
    # built-in menu items' permissions in one, the user's own and the shared
    # saved segments of the type (the segment picker), then the rows and count
    assert many[0].startswith("SELECT ab_user.id") and "ab_role" in many[0]
    assert "FROM crm_user_segment" in many[1]
    assert "FROM customer" in many[2] and "LIMIT" in many[2]
    assert many[3].startswith("SELECT count(*)")
    assert "ab_permission_view" in many[4]


def test_the_menu_shows_what_each_user_may_open(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    metadata = """
    roles:
      manager:    {label: Manager}
      sales_head: {label: Head of sales}
    documents:
      Customer:
        fields: {name: {type: string}}
        access: {manager: {read: true}, sales_head: {read: true}}
      Bonus:
        fields: {name: {type: string}}
        access: {sales_head: {read: true}}
    """
    app = crm_app(metadata)
    menus = {}
    for username in ("admin", "helen", "anna"):
        page = login(app, username).get("/customer/").text
        menus[username] = {label for label in ("Customer", "Bonus") if f"{label}</a>" in page}
    assert menus == {"admin": {"Customer", "Bonus"}, "helen": {"Customer", "Bonus"}, "anna": {"Customer"}}  # fmt: skip
    assert login(app, "anna").get("/bonus/").status_code == 403


FIFTY = 50


def fifty_types() -> str:
    """A 50-type configuration: refs between types, tables, statuses, lists, views."""
    lines = ["roles:", "  manager: {label: Manager}", "  sales_head: {label: Head}", "documents:"]
    for i in range(FIFTY):
        lines += [
            f"  Type{i}:",
            f"    label: {{ru: Тип {i}, en: Type {i}}}",
            '    title: "{{ name }}"',
            "    owner: manager",
            "    fields:",
            "      name: {type: string, required: true}",
            "      amount: {type: money}",
            "      kind: {type: enum, values: [a, b, c]}",
            "      due: {type: date}",
            "      manager: {type: ref, to: User, default: current_user}",
            *([f"      prev: {{type: ref, to: Type{i - 1}}}"] if i else []),
            "      lines:",
            "        type: table",
            "        fields:",
            "          item: {type: string}",
            "          qty: {type: decimal}",
        ]
        if i % 5 == 0:
            lines += [
                "    statuses:",
                "      initial: open",
                "      states: {open: {label: Open}, done: {label: Done, final: true}}",
                "      transitions: [{from: open, to: done}]",
                "    views: {kanban: {by: status, amount: amount}, calendar: {date: due, owner: manager}}",
            ]
        lines += [
            "    list: {columns: [name, kind, amount, manager], search: [name], filters: [kind, manager]}",
            "    access:",
            "      manager: {read: own, create: true, update: own}",
            "      sales_head: {read: all, create: true, update: all, delete: true}",
        ]
    return "\n".join(lines) + "\n"


def test_starting_a_50_type_app_writes_nothing(
    crm_app: Callable[..., Flask], login: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    app = crm_app(fifty_types(), "name: Big\nlocale: ru\nregion: RU\nlayers: []\n")
    folder = Path(app.extensions["crm"].registry.settings["config_dir"])
    timings = []
    for _ in range(3):
        with statements_of(sa.engine.Engine) as seen:
            started = time.perf_counter()
            again = create_app(folder, {"TESTING": True, "SECRET_KEY": "test"})
            timings.append(time.perf_counter() - started)
        try:
            writes = [s for s in seen if not s.upper().startswith(("SELECT", "PRAGMA", "SHOW"))]
            assert writes == [], writes  # no permission sync, no table creation
            assert seen == []  # it does not even read: permissions are read per request
            with again.app_context():
                assert len(again.extensions["crm"].registry.documents) == FIFTY + 1
        finally:
            with again.app_context():
                again.extensions["crm"].db.engine.dispose()
            again.extensions["crm"].models.dispose()
    with capsys.disabled():
        print(f"\ncreate_app of a {FIFTY}-type configuration: {min(timings):.2f}s (best of 3)")
    # and it serves: the last type's list, as a manager
    assert login(app, "anna").get("/type49/").status_code == 200
