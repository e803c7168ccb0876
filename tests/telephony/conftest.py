"""A sales company with telephony on: the base layer, processes, the
telephony plugin with the simulator as its exchange, users in the base
roles with extensions (``manager`` 101, ``sales_head`` 102, ``operator``
103), and helpers to report call events and read records."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.testing import Client, dispose, drain, make_app

EXTENSIONS = {"manager": "101", "sales_head": "102", "operator": "103"}


def set_extensions(app: Any, extensions: dict[str, str] = EXTENSIONS) -> None:
    state = app.extensions["crm"]
    with app.app_context():
        users = state.models.table("User")
        session = state.db.session()
        for username, extension in extensions.items():
            session.execute(
                users.update().where(users.c.username == username).values(extension=extension)
            )
        session.commit()


@pytest.fixture
def phone_app(tmp_path: Path, db_url: str) -> Iterator[Callable[..., Any]]:
    """``phone_app(metadata="", telephony={...}, **more_plugins)`` → a migrated
    app of the base layer with processes, telephony and the simulator on."""
    apps: list[Any] = []

    def build(
        metadata: str = "",
        layers: tuple[str, ...] = ("base",),
        telephony: dict[str, Any] | None = None,
        **plugins: Any,
    ) -> Any:
        enabled = {"processes": {}, "telephony": telephony or {"region": "RU"}, **plugins}
        enabled.setdefault("simulator", {})
        enabled = {k: v for k, v in enabled.items() if v is not None}
        app = make_app(
            tmp_path / f"config{len(apps)}", metadata or "{}\n", plugins=enabled,
            layers=layers, database=db_url,
        )  # fmt: skip
        apps.append(app)
        if "base" in layers:
            set_extensions(app)
        return app

    yield build
    for app in apps:
        dispose(app)


@pytest.fixture
def login() -> Callable[..., Client]:
    return lambda app, username: Client(app, username)


@pytest.fixture
def run_jobs() -> Callable[[Any], int]:
    return drain


def user_id(app: Any, username: str) -> int:
    state = app.extensions["crm"]
    with app.app_context():
        users = state.models.table("User")
        return int(
            state.db.session()
            .execute(sa.select(users.c.id).where(users.c.username == username))
            .scalar_one()
        )


def rows(app: Any, type_name: str, **where: Any) -> list[dict[str, Any]]:
    """The records of a type as plain dicts (columns by name), oldest first."""
    state = app.extensions["crm"]
    with app.app_context():
        table = state.models.table(type_name)
        query = sa.select(table).order_by(table.c.id)
        for column, value in where.items():
            query = query.where(table.c[column] == value)
        return [dict(r._mapping) for r in state.db.session().execute(query)]


def create(app: Any, doctype: str, values: dict[str, Any], username: str = "admin") -> int:
    """A record made through the documents service as ``username``; its id."""
    from engine.api import Documents

    state = app.extensions["crm"]
    with app.app_context():
        session = state.db.session()
        roles = ["Admin"] if username == "admin" else [username]
        docs = Documents(
            state.models, session, user_id(app, username), roles, state.pm,
            username=username, trusted=True,
        )  # fmt: skip
        made = docs.create(doctype, values)
        session.commit()
        return int(made.id)


def report(app: Any, **event: Any) -> Any:
    """Report a call event as a provider does (plugins.telephony.api.report),
    committed; the Call's id, or None for a duplicate."""
    from plugins.telephony import api

    with app.app_context():
        session = app.extensions["crm"].db.session()
        event.setdefault("provider", "test")
        call = api.report(api.Event(**event), session=session)
        session.commit()
        return call.id if call is not None else None
