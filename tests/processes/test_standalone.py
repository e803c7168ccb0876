"""The processes plugin in a configuration of its own (`layers: []`): a
kitchen studio with its own roles (seller, head, measurer), no base layer.
`crm check` finds nothing to say about the plugin's types, `crm migrate`
gives every role its own tasks, and a route map's task for the measurer is
seen, worked and told of by the measurer alone."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from engine import clock, jobs
from engine.app import create_app
from engine.documents import Documents
from tests.web.conftest import Browser

CONFIG = """\
name: Kitchen studio
locale: en
region: RU
timezone: Europe/Moscow
layers: []
plugins:
  processes: {}
"""

STUDIO = """\
roles:
  seller:   {label: Seller}
  head:     {label: Head of the studio}
  measurer: {label: Measurer}

documents:
  Kitchen:
    label: Kitchen
    title: "{{ client }}"
    owner: seller
    fields:
      client:  {type: string, required: true, max_length: 100}
      address: {type: string, max_length: 200}
      seller:  {type: ref, to: User, default: current_user}
    list: {columns: [client, address, seller]}
    access:
      seller:   {read: own, create: true, update: own}
      head:     {read: all, create: true, update: all, delete: true}
      measurer: {read: all}

  # the studio's teams: no `head`, unlike the base layer's departments
  Department:
    title: "{{ name }}"
    fields:
      name: {type: string, required: true}
    access:
      everyone: {read: true}

  # the consultant's word on the plugin's tasks: the head sees and reassigns all
  Task:
    access:
      head: {read: all, create: true, update: all}

attributes:
  User:
    department: {type: ref, to: Department}

processes:
  measuring:
    label: Measuring
    document: Kitchen
    start: {on: create}
    steps:
      measure:
        task: {title: "Measure the kitchen of {{ doc.client }}", assignee: {role: measurer}, due: 2d}
        outcomes:
          measured:  {to: tell, label: Measured}
          no_access: {to: stopped, label: No access}
      tell:
        notify: {channel: user, to: owner, text: "{{ doc.client }}: the kitchen is measured"}
        next: done
      done:    {end: true}
      stopped: {end: true}
"""

CRM = str(Path(sys.executable).with_name("crm"))

#: the studio's people: login → role
PEOPLE = {"sam": "seller", "hanna": "head", "mia": "measurer"}


@pytest.fixture
def studio(make_config: Callable[..., Path], db_url: str) -> Path:
    return make_config({"studio.yaml": STUDIO}, CONFIG + f"database: {db_url}\n")


def crm(*args: str) -> Any:
    """The `crm` command, run as the consultant runs it (its own process)."""
    done = subprocess.run([CRM, *args], capture_output=True, text=True, timeout=300, check=False)
    done.exit_code = done.returncode  # type: ignore[attr-defined]
    done.output = done.stdout + done.stderr  # type: ignore[attr-defined]
    return done


@pytest.fixture
def app(studio: Path) -> Iterator[Flask]:
    """`crm check`, `crm migrate`, then the app with a user per role."""
    checked = crm("check", str(studio))
    assert checked.exit_code == 0, checked.output
    assert "OK" in checked.output and "3 roles" in checked.output
    migrated = crm("migrate", str(studio))
    assert migrated.exit_code == 0, migrated.output
    # the plugin's types name no role: each role of the studio gets them from `everyone`
    for role in ("seller", "measurer"):
        assert f"grant {role}: can_read on Task" in migrated.output
        assert f"grant {role}: can_write on Notification" in migrated.output
    assert "grant seller: can_delete on Task" not in migrated.output
    app = create_app(
        studio,
        {
            "TESTING": True,
            "SECRET_KEY": "a-test-secret-long-enough-to-sign-tokens-0123456789",
            "WTF_CSRF_ENABLED": True,
            "FAB_PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
        },
    )
    state = app.extensions["crm"]
    with app.app_context():
        sm = state.appbuilder.sm
        for login, role in PEOPLE.items():
            found = sm.find_role(role)
            assert found is not None, f"crm migrate did not make the role {role}"
            sm.add_user(login, login.title(), "Test", f"{login}@example.org", [found], "secret")
    yield app
    with app.app_context():
        state.db.session.remove()
        state.db.engine.dispose()
    state.models.dispose()


def login(app: Flask, username: str) -> Browser:
    browser = Browser(app, username, "secret")
    page = browser.get("/kitchen/add")
    if page.status_code == 200:
        browser.csrf = Browser.token_from(page.text)
    return browser


def run_jobs(app: Flask, later: dt.timedelta) -> int:
    """The worker, some time from now: the deadlines are due."""
    state = app.extensions["crm"]
    with app.app_context():
        jobs.enqueue(state.db.session, "processes.deadlines", {}, key="deadlines:test")
        state.db.session.commit()
        runner = jobs.Runner(
            state.models, state.db.engine, state.pm, clock=lambda: clock.now() + later
        )
        return runner.drain()


def test_the_measurer_sees_completes_and_hears_of_the_task(app: Flask) -> None:
    sam, hanna, mia = (login(app, name) for name in PEOPLE)
    made = sam.api("POST", "/api/v1/kitchen/", {"client": "Ivanov", "address": "Lenina 1"})
    assert made.status_code == 201, made.text
    title = "Measure the kitchen of Ivanov"

    # the task is the measurer's: on her list, not on the seller's
    page = mia.get("/tasks/")
    assert page.status_code == 200 and title in page.text
    [task_id] = [t["id"] for t in mia.api("GET", "/api/v1/task/").json["result"]]
    mine = sam.get("/tasks/")
    assert mine.status_code == 200 and title not in mine.text
    assert "No open tasks here." in mine.text
    assert sam.api("GET", "/api/v1/task/").json["result"] == []
    assert sam.api("GET", f"/api/v1/task/{task_id}").status_code == 404
    refused = sam.api("POST", f"/api/v1/task/{task_id}/complete", {"outcome": "measured"})
    assert refused.status_code == 404, refused.text
    # the head sees the team's tasks, by the studio's own rule for `head`
    assert title in hanna.get("/tasks/?tab=team").text

    # two days later it is overdue: the measurer is told (the studio's teams
    # have no head, so nobody else is)
    assert run_jobs(app, dt.timedelta(days=3)) >= 1
    assert mia.get("/notifications/unread").json == {"count": 1}
    assert f"Overdue: {title}" in mia.get("/notifications/").text
    assert sam.get("/notifications/unread").json == {"count": 0}

    # she completes it with an outcome; the process goes on and tells the seller
    mia.csrf = Browser.token_from(mia.get("/tasks/").text)  # her page's form has the token
    done = mia.api("POST", f"/api/v1/task/{task_id}/complete", {"outcome": "measured"})
    assert done.status_code == 200, done.text
    assert done.json["status"] == "done" and done.json["outcome"] == "measured"
    assert title not in mia.get("/tasks/").text
    assert "Ivanov: the kitchen is measured" in sam.get("/notifications/").text
    notes = mia.api("GET", "/api/v1/notification/").json["result"]
    assert [n["text"] for n in notes] == [f"Overdue: {title}"]


def test_the_head_of_a_department_with_a_head_hears_of_an_overdue_task(
    make_config: Callable[..., Path], db_url: str
) -> None:
    """A standalone config whose departments do have a head: the head hears too."""
    with_head = STUDIO.replace(
        "      name: {type: string, required: true}\n",
        "      name: {type: string, required: true}\n      head: {type: ref, to: User}\n",
    )
    folder = make_config({"studio.yaml": with_head}, CONFIG + f"database: {db_url}\n")
    assert crm("migrate", str(folder)).exit_code == 0
    app = create_app(folder, {"TESTING": True, "SECRET_KEY": "x" * 40})
    state = app.extensions["crm"]
    try:
        with app.app_context():
            sm = state.appbuilder.sm
            ids = {}
            for login_, role in PEOPLE.items():
                user = sm.add_user(
                    login_, login_.title(), "T", f"{login_}@example.org", [sm.find_role(role)], "x"
                )
                ids[login_] = user.id
            session = state.db.session
            admin = Documents(state.models, session, None, ["Admin"], state.pm, username="admin")
            dept = admin.create("Department", {"name": "Measuring", "head": ids["hanna"]})
            users = state.models.table("User")
            session.execute(
                users.update().where(users.c.id == ids["mia"]).values(department_id=dept.id)
            )
            sam = Documents(state.models, session, ids["sam"], ["seller"], state.pm, username="sam")
            sam.create("Kitchen", {"client": "Petrov"})
            session.commit()
        run_jobs(app, dt.timedelta(days=3))
        with app.app_context():
            notes = state.models.table("Notification")
            told = state.db.session.execute(sa.select(notes.c.recipient_id)).scalars().all()
        assert sorted(told) == sorted([ids["mia"], ids["hanna"]])
    finally:
        with app.app_context():
            state.db.session.remove()
            state.db.engine.dispose()
        state.models.dispose()


def test_a_deal_of_its_own_lives_beside_the_plugin(
    make_config: Callable[..., Path], db_url: str
) -> None:
    """The plugin's typical sale is for the base layer's Deal: a standalone
    `Deal` without `kind` or `stage` is the config's own, and no process
    starts on it."""
    deal = textwrap.dedent(
        """\
        roles:
          seller: {label: Seller}
        documents:
          Deal:
            title: "{{ subject }}"
            owner: seller
            fields:
              subject: {type: string, required: true}
              seller:  {type: ref, to: User, default: current_user}
            access:
              seller: {read: own, create: true, update: own}
        """
    )
    folder = make_config({"deal.yaml": deal}, CONFIG + f"database: {db_url}\n")
    checked = crm("check", str(folder))
    assert checked.exit_code == 0, checked.output
    assert crm("migrate", str(folder)).exit_code == 0
    app = create_app(
        folder,
        {"TESTING": True, "SECRET_KEY": "x" * 40, "FAB_PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000"},
    )
    state = app.extensions["crm"]
    try:
        assert "typical_sale" not in state.registry.section("processes")
        with app.app_context():
            sm = state.appbuilder.sm
            sm.add_user("sam", "Sam", "T", "sam@example.org", [sm.find_role("seller")], "secret")
        sam = Browser(app, "sam", "secret")
        sam.csrf = Browser.token_from(sam.get("/deal/add").text)
        made = sam.api("POST", "/api/v1/deal/", {"subject": "A kitchen for the Petrovs"})
        assert made.status_code == 201, made.text
        assert sam.api("GET", "/api/v1/task/").json["result"] == []
    finally:
        with app.app_context():
            state.db.session.remove()
            state.db.engine.dispose()
        state.models.dispose()
