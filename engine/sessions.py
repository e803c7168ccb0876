"""Sign-in and sessions: what a session cookie and a token stay valid for,
and how often a password may be guessed.

Every session cookie and every JWT (access and refresh) carries the user's
*stamp*: a version counter kept in ``crm_session`` (bumped on logout) and a
digest of what the user's access rests on (the password hash, ``active``,
the roles). Each request compares the stamp with the user's current one, so
logout, a password change, deactivation and a role change end every session
and token of that user at once, wherever they were issued.

Sign-in (the login form and ``POST /api/v1/security/login``) is limited per
account and per address with the ``limits`` library (Flask-Limiter's): after
too many failures the account, or the address, is refused, even with the
right password, until the window passes; the windows grow (a short one, then
a day). The counters live in Redis when ``security.redis`` or
``CRM_REDIS_URL`` names one, in memory otherwise. Sign-ins, failures and
refusals are logged on the ``crm.security`` logger, never with a password.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from typing import Any

import sqlalchemy as sa
from flask import Flask, Response, flash, has_request_context, redirect, request, session, url_for
from flask_login import current_user, user_logged_in
from limits import parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from engine.i18n import gettext

log = logging.getLogger("crm.security")

SESSION_TABLE = "crm_session"
#: the Flask session's and the JWT's key for the stamp
STAMP_KEY = "crm_stamp"
API_LOGIN = "/api/v1/security/login"
DEFAULT_ACCOUNT_LIMIT = "5 per 15 minutes; 20 per day"
DEFAULT_ADDRESS_LIMIT = "30 per 15 minutes; 200 per day"

LOCALE_TABLE = "crm_user_locale"


def session_table(metadata: sa.MetaData) -> sa.Table:
    """The session version of each user who ever logged out (no row: version 0)."""
    return sa.Table(
        SESSION_TABLE, metadata,
        sa.Column("user_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.Integer, nullable=False, server_default="0"),
    )  # fmt: skip


def locale_table(metadata: sa.MetaData) -> sa.Table:
    """The language each user chose (no row: the configuration's ``locale``)."""
    return sa.Table(
        LOCALE_TABLE, metadata,
        sa.Column("user_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("locale", sa.String(16), nullable=False),
    )  # fmt: skip


def stamp(user: Any, version: int | None) -> str:
    """What a session or token of ``user`` must carry to stay valid."""
    roles = ",".join(sorted(str(r.id) for r in getattr(user, "roles", []) or []))
    digest = hashlib.sha256(
        f"{user.password or ''}|{bool(user.active)}|{roles}".encode()
    ).hexdigest()[:32]
    return f"{version or 0}.{digest}"


class Sessions:
    """The app's session stamps and sign-in limits: ``app.extensions["crm.sessions"]``."""

    def __init__(self, app: Flask, appbuilder: Any, table: sa.Table, settings: Any, locale: str):
        self.app = app
        self.sm = appbuilder.sm
        self.table = table
        self.locale = locale
        self.locales: sa.Table | None = None
        redis = settings.get("redis") or os.environ.get("CRM_REDIS_URL")
        self.storage = storage_from_string(redis or "memory://")
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.account_limits = parse_many(settings.get("account_limit") or DEFAULT_ACCOUNT_LIMIT)
        self.address_limits = parse_many(settings.get("address_limit") or DEFAULT_ADDRESS_LIMIT)

    # -- stamps ------------------------------------------------------------------

    def version(self, user_id: int) -> int:
        stmt = sa.select(self.table.c.version).where(self.table.c.user_id == user_id)
        return int(self.sm.session.execute(stmt).scalar() or 0)

    def version_column(self, user_cls: Any) -> Any:
        """The version as a column of the statement that loads the user."""
        return (
            sa.select(self.table.c.version)
            .where(self.table.c.user_id == user_cls.id)
            .scalar_subquery()
        )

    def stamp_of(self, user: Any) -> str:
        return stamp(user, self.version(user.id))

    def bump(self, user_id: int) -> None:
        """End every session and token of the user (logout)."""
        db = self.sm.session
        increment = (
            sa.update(self.table)
            .where(self.table.c.user_id == user_id)
            .values(version=self.table.c.version + 1)
        )
        if not getattr(db.execute(increment), "rowcount", 0):
            try:
                db.execute(sa.insert(self.table).values(user_id=user_id, version=1))
            except sa.exc.IntegrityError:  # another worker's logout made the row first
                db.rollback()
                db.execute(increment)
        db.commit()

    # -- sign-in limits ----------------------------------------------------------

    def _items(self, username: str) -> list[tuple[Any, tuple[str, str]]]:
        address = request.remote_addr or "?"
        return [(item, ("account", username)) for item in self.account_limits] + [
            (item, ("address", address)) for item in self.address_limits
        ]

    def refused_for(self, username: str) -> int | None:
        """Seconds to wait when sign-in as ``username`` from here is refused now."""
        waits = []
        for item, keys in self._items(username):
            if not self.limiter.test(item, *keys):
                reset = self.limiter.get_window_stats(item, *keys).reset_time
                waits.append(max(1.0, reset - time.time()))
        return math.ceil(max(waits)) if waits else None

    def failed(self, username: str) -> None:
        for item, keys in self._items(username):
            self.limiter.hit(item, *keys)
        log.warning("failed sign-in as %r from %s", username, request.remote_addr)

    def succeeded(self, username: str) -> None:
        for item in self.account_limits:
            self.limiter.clear(item, "account", username)
        log.info("sign-in as %r from %s", username, request.remote_addr)

    def account(self, typed: Any) -> str:
        """The account a sign-in is for: a user may type their username or
        their email, both count against the same account."""
        name = str(typed or "").strip().lower()[:200]
        if "@" in name:
            users = self.sm.user_model
            found = self.sm.session.execute(
                sa.select(users.username).where(sa.func.lower(users.email) == name).limit(1)
            ).scalar()
            if found is not None:
                return str(found).lower()
        return name

    def message(self, seconds: int) -> str:
        return gettext(
            "Too many failed sign-ins; try again in %(n)s minutes",
            n=max(1, math.ceil(seconds / 60)),
        )

    # -- each user's language ------------------------------------------------------

    def user_locale(self, user_id: int) -> str | None:
        """The language the user chose, or None (the configuration's)."""
        if self.locales is None:
            return None
        stmt = sa.select(self.locales.c.locale).where(self.locales.c.user_id == user_id)
        found = self.sm.session.execute(stmt).scalar()
        return str(found) if found else None

    def set_user_locale(self, user_id: int, locale: str) -> None:
        assert self.locales is not None
        db = self.sm.session
        table = self.locales
        changed = db.execute(
            sa.update(table).where(table.c.user_id == user_id).values(locale=locale)
        )
        if not getattr(changed, "rowcount", 0):
            try:
                db.execute(sa.insert(table).values(user_id=user_id, locale=locale))
            except sa.exc.IntegrityError:  # the same user's other request made the row
                db.rollback()
                db.execute(sa.update(table).where(table.c.user_id == user_id).values(locale=locale))
        db.commit()


def _username() -> str:
    if request.path == API_LOGIN:
        body = request.get_json(silent=True)
        name = body.get("username") if isinstance(body, dict) else None
    else:
        name = request.form.get("username")
    return str(name or "")


def install(app: Flask, appbuilder: Any, table: sa.Table, settings: Any, locale: str) -> Sessions:
    """Stamp sessions and tokens, check them on each request, limit sign-in."""
    state = Sessions(app, appbuilder, table, settings, locale)
    app.extensions["crm.sessions"] = state
    sm = appbuilder.sm

    # -- the session cookie: stamped at login, checked by the user loader (engine.web.menu)
    @user_logged_in.connect_via(app)
    def stamp_session(sender: Any, user: Any, **extra: Any) -> None:
        session[STAMP_KEY] = state.stamp_of(user)

    on_logout = sm.on_user_logout

    def logout(user: Any) -> None:
        state.bump(user.id)
        log.info("sign-out of %r", user.username)
        on_logout(user)

    sm.on_user_logout = logout

    reset_password = sm.reset_password

    def reset(userid: Any, password: str) -> None:
        """A new password ends the user's other sessions; the one that changed
        its own password goes on with the new stamp."""
        reset_password(userid, password)
        log.info("password changed for user #%s", userid)
        if not has_request_context():
            return  # crm users, a script
        if current_user.is_authenticated and str(current_user.id) == str(userid):
            session[STAMP_KEY] = state.stamp_of(current_user)

    sm.reset_password = reset

    # -- tokens: the stamp is a claim, checked as a revocation list would be
    jwt = sm.jwt_manager

    @jwt.additional_claims_loader
    def claims(identity: Any) -> dict[str, Any]:
        user = sm.get_user_by_id(int(identity))
        return {STAMP_KEY: state.stamp_of(user)} if user is not None else {}

    @jwt.token_in_blocklist_loader
    def revoked(header: dict[str, Any], payload: dict[str, Any]) -> bool:
        user = sm.get_user_by_id(int(payload["sub"]))
        if user is None or not user.is_active:
            return True
        return bool(payload.get(STAMP_KEY) != state.stamp_of(user))

    @app.post("/api/v1/security/logout")
    def token_logout() -> Any:
        """A token client's logout: every token and session of the user ends."""
        from flask_jwt_extended import get_jwt_identity, verify_jwt_in_request

        try:
            verify_jwt_in_request()
        except sa.exc.OperationalError:
            raise
        except Exception:  # no token, or one that is expired or revoked already
            return Response(
                app.json.dumps(
                    {"message": gettext("Log in first: an Authorization: Bearer token")}
                ),
                401,
                mimetype="application/json",
            )
        user = sm.get_user_by_id(int(get_jwt_identity()))
        logout(user)
        return Response(
            app.json.dumps({"message": gettext("Logged out")}), 200, mimetype="application/json"
        )

    app.extensions["csrf"].exempt(token_logout)  # a token is no cookie: nothing to forge

    # -- sign-in limits
    login_endpoint = f"{sm.auth_view.endpoint}.login" if sm.auth_view is not None else None

    @app.before_request
    def limit_sign_in() -> Any:
        if request.method != "POST":
            return None
        if request.path != API_LOGIN and request.endpoint != login_endpoint:
            return None
        username = state.account(_username())
        wait = state.refused_for(username)
        if wait is None:
            return None
        log.warning("sign-in as %r from %s refused: too many failures", username,
                    request.remote_addr)  # fmt: skip
        text = state.message(wait)
        response: Any
        if request.path == API_LOGIN:
            response = Response(app.json.dumps({"message": text}), 429, mimetype="application/json")
        else:
            flash(text, "danger")
            response = redirect(url_for(str(login_endpoint)))
        response.headers["Retry-After"] = str(wait)
        return response

    auth_user_db = sm.auth_user_db

    def authenticate(username: Any, password: Any) -> Any:
        user = auth_user_db(username, password)
        name = state.account(username)
        if user is None:
            state.failed(name)
        else:
            state.succeeded(name)
        return user

    sm.auth_user_db = authenticate
    return state
