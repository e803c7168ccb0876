"""What every request shares: the acting principal, the session, JSON
errors, security headers and CSRF for the API when a browser session calls it."""

from __future__ import annotations

import contextlib
import secrets
from typing import Any

import sqlalchemy as sa
from flask import Flask, Response, current_app, g, jsonify, request
from flask_login import current_user
from flask_wtf.csrf import CSRFError, CSRFProtect, validate_csrf
from werkzeug.exceptions import HTTPException

from engine.access import Principal


def crm() -> Any:
    return current_app.extensions["crm"]


def principal() -> Principal:
    """The acting user, computed once per request."""
    if "crm_principal" not in g:
        g.crm_principal = Principal.of(current_user)
    return g.crm_principal


def db_session() -> Any:
    """The request's SQLAlchemy session (the scoped session's current one)."""
    return crm().db.session()


def locale() -> str:
    return str(crm().registry.locale)


def json_error(status: int, message: str, **extra: Any) -> Response:
    response = jsonify({"message": message, **extra})
    response.status_code = status
    return response


def csp_nonce() -> str:
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    return g.csp_nonce


def _rollback() -> None:
    with contextlib.suppress(sa.exc.SQLAlchemyError):  # the connection may be gone
        db_session().rollback()


def install_request_handling(appbuilder: Any, state: Any) -> None:
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    csrf = CSRFProtect()
    csrf.init_app(app)
    app.jinja_env.globals["csp_nonce"] = csp_nonce
    # @login_required sends a visitor to login_view, which Flask-AppBuilder
    # leaves at "login", an endpoint that does not exist: every page opened
    # before logging in was a 500 instead of the login form.
    if appbuilder.sm.auth_view is not None:
        appbuilder.sm.lm.login_view = f"{appbuilder.sm.auth_view.endpoint}.login"

    @app.before_request
    def api_csrf() -> Response | None:
        """The API is exempt from form CSRF for token clients; a browser session
        calling it must still send the X-CSRFToken header."""
        if not request.path.startswith("/api/") or request.method in ("GET", "HEAD", "OPTIONS"):
            return None
        if request.headers.get("Authorization"):
            return None
        if not current_user.is_authenticated:
            return None
        try:
            validate_csrf(request.headers.get("X-CSRFToken", ""))
        except Exception:  # flask_wtf raises ValidationError with a message for the user
            return json_error(
                400, "The CSRF token is missing or invalid: send the X-CSRFToken header"
            )
        return None

    @app.after_request
    def security_headers(response: Response) -> Response:
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if request.is_secure and state.registry.security.get("https"):
            response.headers.setdefault(
                "Strict-Transport-Security", "max-age=31536000; includeSubDomains"
            )
        nonce = g.get("csp_nonce")
        script = f"'self' 'nonce-{nonce}'" if nonce else "'self'"
        response.headers.setdefault(
            "Content-Security-Policy",
            f"default-src 'self'; script-src {script}; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; font-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        )
        return response

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError) -> Any:
        if request.path.startswith("/api/"):
            return json_error(400, exc.description)
        return exc.description, 400

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if request.path.startswith("/api/"):
            return json_error(exc.code or 500, exc.description or exc.name)
        return exc

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        """A bug: logged with its traceback, answered without one."""
        if isinstance(exc, HTTPException):
            return http_error(exc)
        if isinstance(exc, sa.exc.OperationalError):
            # the database is down or unreachable: not the caller's fault, nor a bug
            current_app.logger.error("database unavailable on %s %s: %s", request.method,
                                     request.path, exc.orig)  # fmt: skip
            _rollback()
            message = "The database is unavailable; try again in a minute"
            if request.path.startswith("/api/"):
                return json_error(503, message)
            return message, 503
        current_app.logger.exception("unhandled error on %s %s", request.method, request.path)
        _rollback()
        if request.path.startswith("/api/"):
            return json_error(500, "Internal error; it has been logged")
        return "Internal error; it has been logged", 500
