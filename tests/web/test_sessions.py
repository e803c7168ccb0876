"""Sign-in and sessions: logout, a new password, deactivation and new roles
end every session and token of the user; sign-in is limited per account and
per address; a database outage is a 503, not "log in first"."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

CONFIG = "name: Sales Ltd\nlocale: en\nregion: RU\nlayers: []\n"
LOGIN = "/api/v1/security/login"


def cookie_of(client: FlaskClient) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def replay(app: Flask, cookie: str) -> FlaskClient:
    """A new browser that sends an old session cookie."""
    client = app.test_client()
    client.set_cookie("session", cookie)
    return client


def tokens(app: Flask, username: str, password: str = "secret") -> dict[str, str]:
    response = app.test_client().post(
        LOGIN, json={"username": username, "password": password, "provider": "db", "refresh": True}
    )
    assert response.status_code == 200, response.text
    return dict(response.json)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signed_in(client: FlaskClient, headers: dict[str, str] | None = None) -> bool:
    response = client.get("/api/v1/customer/", headers=headers or {})
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200


def refreshes(app: Flask, refresh_token: str) -> bool:
    response = app.test_client().post("/api/v1/security/refresh", headers=bearer(refresh_token))
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200


def form_login(app: Flask, username: str, password: str) -> tuple[FlaskClient, Any]:
    client = app.test_client()
    page = client.get("/login/")
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text)
    assert token
    response = client.post(
        "/login/",
        data={"username": username, "password": password, "csrf_token": token.group(1)},
        follow_redirects=True,
    )
    return client, response


def change_own_password(client: FlaskClient, password: str) -> Any:
    """The self-service form every user reaches from their profile."""
    page = client.get("/resetmypassword/form")
    assert page.status_code == 200, page.text
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text)
    assert token
    return client.post(
        "/resetmypassword/form",
        data={"password": password, "conf_password": password, "csrf_token": token.group(1)},
    )


def change_user(app: Flask, username: str, fn: Callable[[Any, Any], None]) -> None:
    with app.app_context():
        sm = app.extensions["crm"].appbuilder.sm
        user = sm.find_user(username=username)
        fn(sm, user)
        sm.session.commit()


# -- sessions and tokens end with logout and with changes to the user ---------------


def test_logout_ends_the_cookie_and_the_tokens(crm_app: Callable[..., Flask], login: Any) -> None:
    app = crm_app(config=CONFIG)
    anna = login(app, "anna")
    old = cookie_of(anna.client)
    jwt = tokens(app, "anna")
    assert signed_in(replay(app, old))
    assert signed_in(app.test_client(), bearer(jwt["access_token"]))

    anna.get("/logout/")
    assert not signed_in(replay(app, old))
    assert not signed_in(app.test_client(), bearer(jwt["access_token"]))
    assert not refreshes(app, jwt["refresh_token"])
    # another user's session is not touched, and anna may sign in again
    boris = login(app, "boris")
    assert signed_in(boris.client)
    assert signed_in(login(app, "anna").client)


def test_a_new_password_ends_old_sessions_and_refresh_tokens(
    crm_app: Callable[..., Flask], login: Any
) -> None:
    app = crm_app(config=CONFIG)
    anna = login(app, "anna")
    jwt = tokens(app, "anna")
    assert refreshes(app, jwt["refresh_token"])

    change_user(app, "anna", lambda sm, user: sm.reset_password(user.id, "a-new-long-secret"))
    assert not signed_in(anna.client)
    assert not signed_in(app.test_client(), bearer(jwt["access_token"]))
    assert not refreshes(app, jwt["refresh_token"])
    assert tokens(app, "anna", "a-new-long-secret")["access_token"]


def test_a_token_client_logs_out_every_token(crm_app: Callable[..., Flask], login: Any) -> None:
    app = crm_app(config=CONFIG)
    anna = login(app, "anna")
    first, second = tokens(app, "anna"), tokens(app, "anna")
    out = app.test_client().post("/api/v1/security/logout", headers=bearer(first["access_token"]))
    assert out.status_code == 200, out.text
    assert not signed_in(app.test_client(), bearer(second["access_token"]))
    assert not refreshes(app, second["refresh_token"])
    assert not signed_in(anna.client)
    again = app.test_client().post("/api/v1/security/logout", headers=bearer(first["access_token"]))
    assert again.status_code == 401


@pytest.mark.parametrize("change", ["deactivated", "new roles"])
def test_deactivation_and_new_roles_end_sessions(
    crm_app: Callable[..., Flask], login: Any, change: str
) -> None:
    app = crm_app(config=CONFIG)
    anna = login(app, "anna")
    jwt = tokens(app, "anna")

    def edit(sm: Any, user: Any) -> None:
        if change == "deactivated":
            user.active = False
        else:
            user.roles = [sm.find_role("sales_head")]

    change_user(app, "anna", edit)
    assert not signed_in(anna.client)
    assert not refreshes(app, jwt["refresh_token"])


def test_changing_ones_own_password_keeps_this_session_and_ends_the_others(
    crm_app: Callable[..., Flask], login: Any
) -> None:
    app = crm_app(config=CONFIG)
    here, elsewhere = login(app, "anna"), login(app, "anna")
    profile = here.get("/users/userinfo/")
    assert profile.status_code == 200
    assert "/users/action/resetmypassword/" in profile.text  # its "reset my password" button
    response = change_own_password(here.client, "a-new-long-secret")
    assert response.status_code == 302, response.text
    assert signed_in(here.client)
    assert not signed_in(elsewhere.client)


# -- sign-in limits --------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    """The sign-in counters' clock (the limits library's memory storage)."""
    import limits.storage.memory

    from engine import sessions

    fake = FakeTime()
    monkeypatch.setattr(limits.storage.memory, "time", fake)
    monkeypatch.setattr(sessions, "time", fake)
    return fake


def test_wrong_passwords_lock_the_account_until_the_window_passes(
    crm_app: Callable[..., Flask], fake_time: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    app = crm_app(config=CONFIG)
    client = app.test_client()
    caplog.set_level(logging.INFO, logger="crm.security")
    for _ in range(5):
        wrong = client.post(LOGIN, json={"username": "anna", "password": "x", "provider": "db"})
        assert wrong.status_code == 401
    right = client.post(LOGIN, json={"username": "anna", "password": "secret", "provider": "db"})
    assert right.status_code == 429
    assert right.json["message"] == "Too many failed sign-ins; try again in 15 minutes"
    assert int(right.headers["Retry-After"]) > 800
    # the login form refuses too, with the same message
    _, page = form_login(app, "anna", "secret")
    assert "Too many failed sign-ins; try again in 15 minutes" in page.text
    assert "failed sign-in as 'anna'" in caplog.text
    assert "secret" not in caplog.text and "'x'" not in caplog.text

    fake_time.now += 15 * 60 + 1
    assert tokens(app, "anna")["access_token"]
    assert "sign-in as 'anna'" in caplog.text


def test_a_success_resets_the_account_counter(
    crm_app: Callable[..., Flask], fake_time: FakeTime
) -> None:
    app = crm_app(config=CONFIG)
    client = app.test_client()
    for _ in range(4):
        client.post(LOGIN, json={"username": "anna", "password": "x", "provider": "db"})
    assert tokens(app, "anna")["access_token"]
    for _ in range(4):
        client.post(LOGIN, json={"username": "anna", "password": "x", "provider": "db"})
    assert tokens(app, "anna")["access_token"]


def test_one_address_is_limited_across_accounts(
    crm_app: Callable[..., Flask], fake_time: FakeTime
) -> None:
    app = crm_app(
        config=CONFIG + "security: {account_limit: 100 per hour, address_limit: 10 per hour}\n"
    )
    client = app.test_client()
    for name in ("anna", "boris") * 5:
        client.post(LOGIN, json={"username": name, "password": "x", "provider": "db"})
    refused = client.post(LOGIN, json={"username": "helen", "password": "secret", "provider": "db"})
    assert refused.status_code == 429
    assert refused.json["message"] == "Too many failed sign-ins; try again in 60 minutes"
    # another address is not refused
    other = app.test_client().post(
        LOGIN,
        json={"username": "helen", "password": "secret", "provider": "db"},
        environ_base={"REMOTE_ADDR": "10.0.0.7"},
    )
    assert other.status_code == 200


def test_the_message_follows_the_locale(crm_app: Callable[..., Flask], fake_time: FakeTime) -> None:
    app = crm_app(config=CONFIG.replace("locale: en", "locale: ru"))
    client = app.test_client()
    for _ in range(6):
        response = client.post(LOGIN, json={"username": "anna", "password": "x", "provider": "db"})
    assert response.json["message"].startswith("Слишком много неудачных попыток входа")


# -- a database outage -----------------------------------------------------------------


def test_a_database_outage_is_a_503_not_log_in_first(
    crm_app: Callable[..., Flask], login: Any
) -> None:
    app = crm_app(config=CONFIG)
    jwt = tokens(app, "anna")
    with app.app_context():
        engine = app.extensions["crm"].db.engine
        app.extensions["crm"].db.session.remove()
        engine.dispose()

        @sa.event.listens_for(engine, "do_connect")
        def down(*args: Any) -> Any:
            raise engine.dialect.loaded_dbapi.OperationalError("connection refused")

    response = app.test_client().get("/api/v1/customer/", headers=bearer(jwt["access_token"]))
    assert response.status_code == 503, response.text
    assert response.json["message"] == "The database is unavailable; try again in a minute"


# -- the password policy in the UI ---------------------------------------------------


def test_the_password_forms_apply_the_policy(crm_app: Callable[..., Flask], login: Any) -> None:
    app = crm_app(config=CONFIG + "security: {password_min_length: 12}\n")
    anna = login(app, "anna")
    short = change_own_password(anna.client, "eleven-char")
    assert short.status_code == 200
    assert "The password must be at least 12 characters long" in short.text
    common = change_own_password(anna.client, "QWERTY123456")
    assert "This password is one of the most common; choose another" in common.text
    assert tokens(app, "anna")["access_token"]  # the password did not change


# -- HTTPS -------------------------------------------------------------------------------


def test_https_makes_cookies_secure_and_sends_hsts(crm_app: Callable[..., Flask]) -> None:
    plain = crm_app(config=CONFIG).test_client().get("/login/")
    assert "Secure" not in plain.headers["Set-Cookie"]
    assert "Strict-Transport-Security" not in plain.headers

    app = crm_app(config=CONFIG + "security: {https: true, proxies: 1}\n")
    page = app.test_client().get("/login/", headers={"X-Forwarded-Proto": "https"})
    assert "; Secure" in page.headers["Set-Cookie"]
    assert page.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    # behind the proxy, the client's address is the one the proxy saw
    for n in range(30):
        app.test_client().post(
            LOGIN,
            json={"username": f"nobody{n}", "password": "x", "provider": "db"},
            headers={"X-Forwarded-For": "203.0.113.9"},
        )
    limited = app.test_client().post(
        LOGIN,
        json={"username": "anna", "password": "secret", "provider": "db"},
        headers={"X-Forwarded-For": "203.0.113.9"},
    )
    assert limited.status_code == 429
    elsewhere = app.test_client().post(
        LOGIN,
        json={"username": "anna", "password": "secret", "provider": "db"},
        headers={"X-Forwarded-For": "198.51.100.4"},
    )
    assert elsewhere.status_code == 200


def test_the_email_counts_against_the_same_account(
    crm_app: Callable[..., Flask], fake_time: FakeTime
) -> None:
    app = crm_app(config=CONFIG)
    client = app.test_client()
    for name in ("anna", "ANNA@example.org") * 3:
        client.post(LOGIN, json={"username": name, "password": "x", "provider": "db"})
    refused = client.post(LOGIN, json={"username": "anna", "password": "secret", "provider": "db"})
    assert refused.status_code == 429


def test_crm_check_names_a_bad_security_setting(problems_of: Callable[..., list[str]]) -> None:
    config = "name: X\nlayers: []\nsecurity:\n  account_limit: lots\n  password_min_length: 3\n"
    assert problems_of({}, config=config) == [
        "config.yaml:4:18: `security` of config.yaml: `account_limit` must read like "
        "`5 per 15 minutes; 20 per day`, not `lots`",
        "config.yaml:5:24: `security` of config.yaml: `password_min_length` must be between "
        "6 and 128, not 3",
    ]
