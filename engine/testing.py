"""Testing a plugin: an app from a YAML string, a logged-in client, a drained job runner.

The framework registers this module as a pytest plugin (the ``pytest11``
entry point ``crm``), so a plugin's own tests get its fixtures without
importing anything:

```python
def test_my_section(crm_app, crm_login, crm_drain):
    app = crm_app(METADATA, plugins={"mine": {"greeting": "hello"}})
    anna = crm_login(app, "anna")          # the user `anna`, password `secret`
    assert anna.get("/customer/").status_code == 200
    crm_drain(app)                         # run every job that is due
```

``crm_app`` writes the metadata to a temporary folder beside a SQLite
database, migrates it and creates the users asked for (by default an
administrator ``admin`` and one user per role of the metadata, named after
the role); every password is ``secret``. The same helpers are importable:
``from engine.testing import make_app, Client, drain``.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine import migrate
from engine.app import create_app
from engine.jobs import runner_for
from engine.security import sync

PASSWORD = "secret"  # noqa: S105 - the test users' password
TEST_CONFIG = {
    "TESTING": True,
    "SECRET_KEY": "a-test-secret-long-enough-to-sign-tokens-0123456789",
    "WTF_CSRF_ENABLED": True,
    # a cheap hash: the default costs a tenth of a second per user and login
    "FAB_PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
}


def make_app(
    folder: Path,
    metadata: str,
    *,
    plugins: Mapping[str, Any] | None = None,
    layers: tuple[str, ...] = (),
    locale: str = "en",
    database: str | None = None,
    users: Mapping[str, list[str]] | None = None,
) -> Any:
    """A migrated app of ``metadata`` (one YAML file's text) with the
    ``plugins`` on (name → settings). ``users`` maps a login to its roles;
    by default ``admin`` is an administrator and each role gets a user named
    after it. The database is SQLite in ``folder`` unless ``database`` says."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "crm.yaml").write_text(textwrap.dedent(metadata), encoding="utf-8")
    config = {
        "name": "Test company",
        "locale": locale,
        "layers": list(layers),
        "plugins": dict(plugins or {}),
        "database": database or f"sqlite:///{folder / 'crm.db'}",
    }
    (folder / "config.yaml").write_text(json.dumps(config), encoding="utf-8")
    app = create_app(folder, TEST_CONFIG)
    state = app.extensions["crm"]
    engine = sa.create_engine(state.registry.database)
    try:
        migrate.apply(state.models, engine, migrate.plan(state.models, engine))
    finally:
        engine.dispose()
    wanted = dict(users) if users is not None else _default_users(state.registry)
    with app.app_context():
        sync(state.appbuilder, state.registry)
        sm = state.appbuilder.sm
        for username, roles in wanted.items():
            sm.add_user(username, username.title(), "Test", f"{username}@example.org",
                        [sm.find_role(r) for r in roles], PASSWORD)  # fmt: skip
    return app


def _default_users(registry: Any) -> dict[str, list[str]]:
    return {"admin": ["Admin"], **{role: [role] for role in registry.roles}}


def dispose(app: Any) -> None:
    """Close an app's connections and forget its models (apps made in a loop)."""
    state = app.extensions["crm"]
    with app.app_context():
        state.db.session.remove()
        state.db.engine.dispose()
    state.models.dispose()


class Client:
    """A test client logged in through the login form, which keeps the CSRF
    token for the forms and the JSON API it posts to."""

    def __init__(self, app: Any, username: str, password: str = PASSWORD) -> None:
        self.app = app
        self.client = app.test_client()
        page = self.client.get("/login/")
        token = _token(page.text, r'name="csrf_token" type="hidden" value="([^"]+)"')
        response = self.client.post(
            "/login/", data={"username": username, "password": password, "csrf_token": token}
        )
        if response.status_code != 302:
            raise AssertionError(f"{username} could not log in")
        self.csrf = token

    def get(self, url: str, **kw: Any) -> Any:
        return self.client.get(url, **kw)

    def post_form(self, url: str, data: Mapping[str, Any]) -> Any:
        """Post a form as a browser does: with the token of the page it is on."""
        page = self.client.get(url)
        found = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text)
        return self.client.post(url, data={"csrf_token": found[1] if found else self.csrf, **data})

    def api(self, method: str, url: str, json: Any = None, **kw: Any) -> Any:
        """A JSON request with the session's CSRF token, as the app's pages send them."""
        headers = {"X-CSRFToken": self.csrf}
        return self.client.open(url, method=method, json=json, headers=headers, **kw)


def _token(html: str, pattern: str) -> str:
    found = re.search(pattern, html)
    if not found:
        raise AssertionError("the page has no CSRF token")
    return found[1]


def drain(app: Any) -> int:
    """Run the periodic jobs once and every job that is due, until none is
    left; how many ran. Jobs queued for later stay queued (move the clock
    with ``engine.api.clock.use`` to reach them)."""
    with app.app_context():
        runner = runner_for(app)
        runner.run_schedules()
        return runner.drain()


# --- the pytest plugin --------------------------------------------------------------


@pytest.fixture
def crm_app(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``crm_app(metadata, plugins={...}, ...)`` → a migrated app (see ``make_app``)."""
    apps: list[Any] = []

    def build(metadata: str, **options: Any) -> Any:
        app = make_app(tmp_path / f"config{len(apps)}", metadata, **options)
        apps.append(app)
        return app

    yield build
    for app in apps:
        dispose(app)


@pytest.fixture
def crm_login() -> Callable[..., Client]:
    """``crm_login(app, "anna")`` → a ``Client`` logged in as that user."""
    return lambda app, username, password=PASSWORD: Client(app, username, password)


@pytest.fixture
def crm_drain() -> Callable[[Any], int]:
    """``crm_drain(app)`` → runs the app's due jobs until none is left (see ``drain``)."""
    return drain
