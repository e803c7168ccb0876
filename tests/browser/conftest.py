"""Real browser tests: the app served on a free localhost port, driven by
Chromium through Playwright's sync API.

One Chromium per session, a fresh context (cookies, storage) per test. A
failing test leaves a screenshot of every page it had open in
``test-artifacts/``. Without Chromium or the ``playwright`` package the
tests are skipped, with the reason; in CI (``CI=true``) they fail instead.
``CRM_CHROMIUM`` names another Chromium binary.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import WSGIRequestHandler, make_server

from tests.web.conftest import SALES, Browser, crm_app  # noqa: F401  (crm_app: a fixture)

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    # the `browser` fixture then skips every test (fails them in CI), saying why
    sync_playwright = None  # type: ignore[assignment]
    expect = None  # type: ignore[assignment]
    PlaywrightError = Exception  # type: ignore[assignment,misc]

IN_CI = os.environ.get("CI") == "true"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000  # auto-waiting's limit; a passing test never waits that long
PASSWORD = "secret"


def chromium_path() -> str | None:
    """``CRM_CHROMIUM`` when set, else Debian's chromium (``apt-get install chromium``)."""
    chosen = os.environ.get("CRM_CHROMIUM")
    if chosen:
        return chosen if os.access(chosen, os.X_OK) else None
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"browser tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the whole session."""
    if sync_playwright is None:
        _unavailable("the `playwright` package is not installed (pip install -e '.[test]')")
    executable = chromium_path()
    if executable is None:
        _unavailable(
            f"no Chromium at {os.environ.get('CRM_CHROMIUM') or '/usr/bin/chromium'}"
            " (apt-get install chromium, or set CRM_CHROMIUM to its path)"
        )
    try:
        playwright = sync_playwright().start()
    except PlaywrightError as exc:  # pragma: no cover
        _unavailable(f"Playwright does not start: {exc}")
    try:
        chromium = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
    except PlaywrightError as exc:
        playwright.stop()
        _unavailable(f"Chromium at {executable} does not start: {exc.message.splitlines()[0]}")
    expect.set_options(timeout=TIMEOUT_MS)
    yield chromium
    chromium.close()
    playwright.stop()


@pytest.fixture
def new_context(browser: Any, request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """``new_context(**options)`` → a fresh browser context, closed after the test."""
    contexts: list[Any] = []
    request.node.crm_browser_contexts = contexts  # for the screenshot on failure

    def make(**options: Any) -> Any:
        context = browser.new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def context(new_context: Callable[..., Any]) -> Any:
    return new_context()


@pytest.fixture
def page(context: Any) -> Any:
    return context.new_page()


class Server:
    """A running app: its URL, and API clients to set up data as a given user."""

    def __init__(self, app: Flask, url: str):
        self.app = app
        self.url = url
        self._clients: dict[str, Browser] = {}

    def as_user(self, username: str) -> Browser:
        """A logged-in test client (through the login form), for setting up data fast."""
        if username not in self._clients:
            self._clients[username] = Browser(self.app, username, PASSWORD)
        return self._clients[username]

    def create(self, username: str, resource: str, **values: Any) -> int:
        response = self.as_user(username).api("POST", f"/api/v1/{resource}/", json=values)
        assert response.status_code == 201, response.get_json()
        return int(response.get_json()["id"])

    def transition(self, username: str, resource: str, obj_id: int, to: str, **fields: Any) -> None:
        response = self.as_user(username).api(
            "POST", f"/api/v1/{resource}/{obj_id}/transition", json={"to": to, "fields": fields}
        )
        assert response.status_code == 200, response.get_json()

    def login(self, page: Any, username: str) -> Any:
        """Log ``page``'s context in as ``username``: the session of a login
        through the login form (made by the test client, which is faster than
        loading the form in the browser; test_log_in… clicks through it)."""
        client = self.as_user(username).client
        name = self.app.config["SESSION_COOKIE_NAME"]
        cookie = client.get_cookie(name)
        assert cookie is not None, f"no session cookie after logging in as {username}"
        page.context.clear_cookies()
        page.context.add_cookies([{"name": name, "value": cookie.value, "url": self.url}])
        return page


class QuietHandler(WSGIRequestHandler):
    """No access log: a failing test's output shows the test, not every static file."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@pytest.fixture
def serve(crm_app: Callable[..., Flask]) -> Iterator[Callable[..., Server]]:  # noqa: F811
    """``serve(yaml)`` → a :class:`Server` for a migrated app on a free port."""
    servers: list[tuple[Any, threading.Thread]] = []

    def start(metadata: str = SALES, config: str | None = None) -> Server:
        app = crm_app(metadata) if config is None else crm_app(metadata, config)
        # static files are cached without a revalidation per page: pages load faster
        app.config["SEND_FILE_MAX_AGE_DEFAULT"] = 3600
        http = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
        thread = threading.Thread(
            target=http.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="crm-test-server",
            daemon=True,
        )
        thread.start()
        servers.append((http, thread))
        return Server(app, f"http://127.0.0.1:{http.server_port}")

    yield start
    for http, thread in servers:
        http.shutdown()
        http.server_close()
        thread.join(timeout=5)


@pytest.fixture
def site(serve: Callable[..., Server]) -> Server:
    """The SALES config (customers, deals with lines and stages), served."""
    return serve()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On a failure, a screenshot of every open page goes to test-artifacts/."""
    report = yield
    if report.failed and report.when in ("setup", "call"):
        pages = [p for c in getattr(item, "crm_browser_contexts", []) for p in c.pages]
        if pages:
            ARTIFACTS.mkdir(exist_ok=True)
            stem = re.sub(r"[^\w.-]+", "_", item.nodeid)
            for i, p in enumerate(pages):
                path = ARTIFACTS / f"{stem}{f'-{i}' if i else ''}.png"
                try:
                    p.screenshot(path=str(path), full_page=True)
                except PlaywrightError:
                    continue
                report.sections.append(("screenshot", str(path)))
    return report
