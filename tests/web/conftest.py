"""A running app over a consultant's config: migrated, with users per role,
and clients that log in through the real login form."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from engine import migrate
from engine.app import create_app
from engine.security import sync

SALES = """
roles:
  manager:    {label: Manager}
  sales_head: {label: Head of sales}
documents:
  Customer:
    title: "{{ name }}"
    owner: manager
    fields:
      name:    {type: string, required: true, max_length: 100}
      phone:   {type: phone}
      email:   {type: email}
      segment: {type: enum, values: [A, B, C]}
      manager: {type: ref, to: User, default: current_user}
    list: {columns: [name, phone, segment, manager], search: [name], filters: [segment, manager]}
    access:
      manager:    {read: own, create: true, update: own}
      sales_head: {read: all, create: true, update: all, delete: true}
  Deal:
    numbering: {prefix: "D-", width: 5}
    title: "{{ number }} {{ customer }}"
    owner: manager
    fields:
      customer: {type: ref, to: Customer, required: true}
      amount:   {type: money, min: 0}
      manager:  {type: ref, to: User, default: current_user}
      planned_close: {type: date}
      loss_reason: {type: text}
      lines:
        type: table
        fields:
          product: {type: string, required: true}
          qty:     {type: decimal, default: 1, min: 0}
          price:   {type: money}
          total:   {type: money, compute: "(qty or 0) * (price or 0)"}
      total: {type: money, compute: "lines | sum(attribute='total')"}
    statuses:
      field: stage
      initial: new
      states:
        new:      {label: New}
        proposal: {label: Proposal, require: [planned_close]}
        won:      {label: Won, final: true, outcome: won}
        lost:     {label: Lost, final: true, outcome: lost, require: [loss_reason]}
      transitions:
        - {from: new, to: proposal, when: "amount and amount > 0"}
        - {from: proposal, to: won, roles: [sales_head]}
        - {from: "*", to: lost}
    list: {columns: [number, customer, stage, amount, manager], search: [number], filters: [stage, manager]}
    views: {kanban: {by: stage, amount: amount}, calendar: {date: planned_close, owner: manager}}
    access:
      manager:    {read: own, create: true, update: own}
      sales_head: {read: all, create: true, update: all, delete: true}
"""


class Browser:
    """A test client that logs in through the login form and keeps the CSRF token."""

    def __init__(self, app: Flask, username: str, password: str):
        self.app = app
        self.client: FlaskClient = app.test_client()
        page = self.client.get("/login/")
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text)
        assert token, "the login form has no CSRF token"
        response = self.client.post(
            "/login/",
            data={"username": username, "password": password, "csrf_token": token.group(1)},
        )
        assert response.status_code == 302, f"login failed for {username}"
        self.csrf = (
            self.token_from(self.client.get("/customer/add").text) if self._can_add() else ""
        )

    def _can_add(self) -> bool:
        return self.client.get("/customer/add").status_code == 200

    @staticmethod
    def token_from(html: str) -> str:
        match = re.search(r'name="csrf_token" value="([^"]+)"', html)
        assert match, "no CSRF token in the page"
        return match.group(1)

    def get(self, url: str, **kw: Any) -> Any:
        return self.client.get(url, **kw)

    def post_form(self, url: str, data: dict[str, Any]) -> Any:
        """Post a form the way a browser does: with the token from the page."""
        page = self.client.get(url)
        token = self.token_from(page.text) if page.status_code == 200 else self.csrf
        return self.client.post(url, data={"csrf_token": token, **data})

    def api(self, method: str, url: str, json: Any = None, **kw: Any) -> Any:
        headers = {"X-CSRFToken": self.csrf} if self.csrf else {}
        return self.client.open(url, method=method, json=json, headers=headers, **kw)


@pytest.fixture
def crm_app(make_config: Callable[..., Path], db_url: str) -> Iterator[Callable[..., Flask]]:
    """``crm_app(yaml)`` → a migrated app; users admin, anna and boris (managers), helen (head)."""
    apps: list[Flask] = []

    def build(
        metadata: str = SALES, config: str = "name: Sales Ltd\nregion: RU\nlayers: []\n"
    ) -> Flask:
        folder = make_config({"crm.yaml": textwrap.dedent(metadata)}, config)
        (folder / "config.yaml").write_text(
            textwrap.dedent(config) + f"database: {db_url}\n", encoding="utf-8"
        )
        app = create_app(
            folder,
            {
                "TESTING": True,
                "SECRET_KEY": "a-test-secret-long-enough-to-sign-tokens-0123456789",
                "WTF_CSRF_ENABLED": True,
                # a cheap hash for the test users: scrypt costs a tenth of a
                # second per user and per login, hundreds of times a run
                "FAB_PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
            },
        )
        apps.append(app)
        state = app.extensions["crm"]
        engine = sa.create_engine(db_url)
        try:
            migrate.apply(state.models, engine, migrate.plan(state.models, engine))
        finally:
            engine.dispose()
        with app.app_context():
            sync(state.appbuilder, state.registry)
            sm = state.appbuilder.sm
            for username, roles in (("admin", ["Admin"]), ("anna", ["manager"]), ("boris", ["manager"]),
                                    ("helen", ["sales_head"])):  # fmt: skip
                sm.add_user(username, username.title(), "Test", f"{username}@example.org",
                            [sm.find_role(r) for r in roles], "secret")  # fmt: skip
        return app

    yield build
    for app in apps:
        with app.app_context():
            app.extensions["crm"].db.session.remove()
            app.extensions["crm"].db.engine.dispose()
        app.extensions["crm"].models.dispose()


@pytest.fixture
def login() -> Callable[[Flask, str], Browser]:
    return lambda app, username: Browser(app, username, "secret")
