"""Every page a user of a Russian configuration opens is in Russian: each
role's user of configs/wholesale (the demo company in it, the processes
plugin on) opens every menu page, the first record of each list, its edit
form, the new-record forms, the boards, calendars, tasks and processes, and
the account pages. A message the catalogs ask for without a Russian
translation fails the test, as does any page that answers 500.

The recorder wraps the app's active translations (flask_babel's domain):
every id asked for in Russian must be in the merged catalog (Flask-AppBuilder's,
the engine's, the plugins'). Menu labels of the metadata and text typed in
Russian are not catalog ids and are let through.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import flask_babel
import pytest
import sqlalchemy as sa
from flask import Flask
from werkzeug.security import generate_password_hash

from engine import migrate
from engine.app import create_app
from engine.demo import DEMO_USERS, Demo, Sizes
from engine.security import sync
from tests.conftest import _reset_postgres, worker_pg_url

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "demo-Password-1"
SIZES = Sizes(
    customers=6, deals=8, interests=4, orders=4, past_interactions=6, planned_interactions=6
)
CYRILLIC = re.compile("[а-яА-ЯёЁ]")
#: not pages: leaving, switching the language, files, the API and its docs
SKIP = re.compile(
    r"^/(logout|lang/|static/|appbuilder/|api/|swagger)|/(export|csv|download|template)\b|\.(csv|xlsx)$"
)


class Recorder:
    """The translations of a request, noting every id asked for in Russian
    that the catalogs do not have."""

    def __init__(self, translations: Any, missing: set[str]):
        self._t = translations
        self._missing = missing

    def _check(self, msgid: Any, key: Any) -> None:
        if not isinstance(msgid, str) or type(msgid) is not str:
            return  # a menu label that follows the user's language itself
        if not msgid.strip() or CYRILLIC.search(msgid):
            return  # typed in Russian by the consultant
        if key not in getattr(self._t, "_catalog", {}):
            self._missing.add(msgid)

    def ugettext(self, msgid: str) -> Any:
        self._check(msgid, msgid)
        return self._t.ugettext(msgid)

    gettext = ugettext

    def ungettext(self, singular: str, plural: str, n: int) -> Any:
        self._check(singular, (singular, 0))
        return self._t.ungettext(singular, plural, n)

    ngettext = ungettext

    def __getattr__(self, name: str) -> Any:
        return getattr(self._t, name)


@pytest.fixture(scope="module")
def wholesale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, list[str]]]:
    folder = tmp_path_factory.mktemp("wholesale") / "config"
    shutil.copytree(ROOT / "configs" / "wholesale", folder)
    pg = worker_pg_url()
    if pg:
        _reset_postgres(pg)
        url = pg
    else:
        url = f"sqlite:///{folder.parent / 'crm.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRM_DATABASE_URL", url)
        app = create_app(
            folder,
            {
                "TESTING": True,
                "SECRET_KEY": "a-test-secret-long-enough-to-sign-tokens-0123456789",
                "WTF_CSRF_ENABLED": True,
            },
        )
    state = app.extensions["crm"]
    assert state.registry.locale == "ru"
    engine = sa.create_engine(url)
    try:
        migrate.apply(state.models, engine, migrate.plan(state.models, engine))
        with app.app_context():
            sync(state.appbuilder, state.registry)
            sm = state.appbuilder.sm
            users = {}
            hashed = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")
            for username, first, last, role, _ in (("admin", "Админ", "Демо", sm.auth_role_admin, 0),
                                                    *DEMO_USERS):  # fmt: skip
                user = sm.add_user(username, first, last, f"{username}@demo.example.ru",
                                   [sm.find_role(role)], hashed_password=hashed)  # fmt: skip
                users[username] = user.id
            session = state.db.session()
            Demo(state.models, session, users).fill(SIZES)
            session.commit()
            state.db.session.remove()
        yield app, list(users)
    finally:
        with app.app_context():
            state.db.session.remove()
            state.db.engine.dispose()
        state.models.dispose()
        engine.dispose()


@pytest.fixture
def missing(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    found: set[str] = set()
    original = flask_babel.Domain.get_translations

    def recording(self: Any) -> Any:
        translations = original(self)
        if str(flask_babel.get_locale()) != "ru":
            return translations
        return Recorder(translations, found)

    monkeypatch.setattr(flask_babel.Domain, "get_translations", recording)
    return found


def links(html: str) -> list[str]:
    found = []
    for href in re.findall(r'href="([^"#]+)"', html):
        parts = urlsplit(href.replace("&amp;", "&"))
        if parts.scheme or parts.netloc or not parts.path.startswith("/"):
            continue
        found.append(parts.path + (f"?{parts.query}" if parts.query else ""))
    return found


def shape(url: str) -> str:
    """Pages of one kind: the same path with other ids, other query values."""
    parts = urlsplit(url)
    keys = sorted(k.split("=", 1)[0] for k in parts.query.split("&") if k)
    return re.sub(r"/\d+", "/N", parts.path) + "?" + "&".join(keys)


def log_in(app: Flask, username: str) -> Any:
    client = app.test_client()
    page = client.get("/login/")
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text)
    assert token
    response = client.post(
        "/login/", data={"username": username, "password": PASSWORD, "csrf_token": token.group(1)}
    )
    assert response.status_code == 302, username
    return client


# Flask-AppBuilder's role pages use Query.get(): a warning, not an error, when served
@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.LegacyAPIWarning")
def test_every_role_reads_every_page_in_russian(
    wholesale: tuple[Flask, list[str]], missing: set[str]
) -> None:
    app, users = wholesale
    failures: list[str] = []
    # the sign-in page of a visitor
    anonymous = app.test_client()
    for url in ("/login/", "/nonexistent"):
        response = anonymous.get(url)
        if response.status_code >= 500:
            failures.append(f"anonymous {url}: {response.status_code}")
    for username in users:
        client = log_in(app, username)
        home = client.get("/", follow_redirects=True)
        # each user's menu pages, then what they lead to: one page of each kind
        queue = [u for u in links(home.text) if not SKIP.search(u)]
        queue += [
            "/users/userinfo/",
            "/resetmypassword/form",
            "/tasks/",
            "/processes/",
            "/nonexistent",
        ]
        own: set[str] = set()
        visited = 0
        while queue and visited < 150:
            url = queue.pop(0)
            kind = shape(url)
            if kind in own:
                continue  # one page of each kind per user: the first record of a list
            own.add(kind)
            response = client.get(url)
            visited += 1
            if response.status_code >= 500:
                failures.append(f"{username} {url}: {response.status_code}")
                continue
            if response.mimetype != "text/html" or response.status_code != 200:
                continue
            for link in links(response.text):
                if not SKIP.search(link) and shape(link) not in own:
                    queue.append(link)
        assert visited > 5, f"{username} saw almost nothing"
    assert not failures, failures
    assert not missing, f"asked for in Russian, not in the catalogs: {sorted(missing)}"
