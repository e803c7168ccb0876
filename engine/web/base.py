"""What every request shares: the acting principal, the session, JSON
errors, security headers and CSRF for the API when a browser session calls it."""

from __future__ import annotations

import contextlib
import secrets
from typing import Any

import sqlalchemy as sa
from flask import Flask, Response, current_app, g, jsonify, render_template, request
from flask_login import current_user
from flask_wtf.csrf import CSRFError, CSRFProtect, validate_csrf
from markupsafe import escape
from werkzeug.exceptions import HTTPException

from engine.access import Principal
from engine.i18n import gettext


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
    """The reader's language: the signed-in user's choice, else the
    configuration's ``locale`` (outside a request: the configuration's)."""
    from engine.i18n import _request_locale

    return _request_locale() or str(crm().registry.locale)


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
                400, gettext("The CSRF token is missing or invalid: send the X-CSRFToken header")
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
        message = gettext(
            "The form's security token (CSRF) is missing or has expired: open the form again"
        )
        if request.path.startswith("/api/"):
            return json_error(400, message)
        return error_page(400, message)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if exc.code is None or exc.code < 400:
            return exc  # a redirect (a missing trailing slash)
        if request.path.startswith("/api/"):
            return json_error(exc.code, exc.description or exc.name)
        own = exc.description if exc.description != type(exc).description else None
        return error_page(exc.code, own, exc.get_headers())

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
            message = gettext("The database is unavailable; try again in a minute")
            if request.path.startswith("/api/"):
                return json_error(503, message)
            return _plain_page(503, message)
        current_app.logger.exception("unhandled error on %s %s", request.method, request.path)
        _rollback()
        if request.path.startswith("/api/"):
            return json_error(500, gettext("Internal error; it has been logged"))
        return error_page(500)


def _titles() -> dict[int, tuple[str, str]]:
    return {
        400: (
            gettext("Bad request"),
            gettext("The request could not be understood; go back and try again."),
        ),
        401: (gettext("Sign in first"), gettext("This page is for signed-in users.")),
        403: (gettext("Access denied"), gettext("You may not open this page.")),
        404: (
            gettext("Not found"),
            gettext("There is no such page or record; it may have been deleted."),
        ),
        405: (gettext("Not allowed"), gettext("This page does not take this kind of request.")),
        409: (
            gettext("Conflict"),
            gettext("The record was changed meanwhile; open it again and repeat your change."),
        ),
        413: (gettext("Too large"), gettext("The file or the form is too large.")),
        429: (gettext("Too many requests"), gettext("Wait a little and try again.")),
        500: (
            gettext("Something went wrong"),
            gettext("An internal error; it has been logged. Try again later."),
        ),
    }


def error_page(status: int, detail: str | None = None, headers: Any = None) -> Response:
    """An error as a page of the app's layout, in the reader's language, with a
    way home (the API answers JSON instead)."""
    title, message = _titles().get(status, (gettext("Error"), ""))
    try:
        appbuilder = crm().appbuilder
        html = render_template(
            "crm/error.html",
            base_template=appbuilder.base_template,
            appbuilder=appbuilder,
            status=status,
            title=title,
            message=message,
            detail=detail,
            home=appbuilder.get_url_for_index,
        )
    except Exception:  # the layout itself fails (the database): a page without it
        current_app.logger.exception("error page for %s failed", status)
        _rollback()
        return _plain_page(status, detail or message or title)
    response = Response(html, status, mimetype="text/html")
    for name, value in headers or []:
        if name.lower() not in ("content-type", "content-length"):
            response.headers[name] = value
    return response


def _plain_page(status: int, message: str) -> Response:
    text = escape(message)
    home = escape(gettext("To the home page"))
    html = f'<!DOCTYPE html><html><body><h2>{text}</h2><p><a href="/">{home}</a></p></body></html>'
    return Response(html, status, mimetype="text/html")
