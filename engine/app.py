"""The app factory: one Flask + Flask-AppBuilder app per configuration.

Start-up only reads: permissions and roles are synced by ``crm migrate``
(``FAB_UPDATE_PERMS`` is off), the security tables are created there too, so
several workers can start at once without racing each other.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask
from flask_appbuilder import AppBuilder
from flask_sqlalchemy import SQLAlchemy
from werkzeug.middleware.proxy_fix import ProxyFix

from engine import i18n, passwords, sessions, web
from engine.configuration import Configuration, load_configuration
from engine.models import Models, build
from engine.registry import Registry
from engine.web.home import HomeView

LANGUAGES = {
    "en": {"flag": "gb", "name": "English"},
    "ru": {"flag": "ru", "name": "Русский"},
}


@dataclass
class CRM:
    """What an app knows about its configuration: ``app.extensions["crm"]``."""

    registry: Registry
    models: Models
    pm: Any
    db: SQLAlchemy
    appbuilder: AppBuilder
    #: the configuration the app was built from, read once
    configuration: Configuration
    #: scripts every page loads (with the page's CSP nonce): a plugin's navbar
    #: badge, for instance; plugins append their URLs in crm_register_views
    page_scripts: list[str] = field(default_factory=list)


def secret_key(registry: Registry) -> str:
    """``CRM_SECRET_KEY``, or a random key kept in the config's instance folder."""
    if os.environ.get("CRM_SECRET_KEY"):
        return os.environ["CRM_SECRET_KEY"]
    folder = Path(registry.settings["config_dir"]) / "instance"
    path = folder / "secret_key"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


def create_app(
    config: str | Path | Configuration, test_config: dict[str, Any] | None = None
) -> Flask:
    """The app of a configuration: a folder, read here, or one read already."""
    configuration = config if isinstance(config, Configuration) else load_configuration(config)
    registry, pm = configuration.registry, configuration.pm
    models = build(registry, dict(configuration.field_types))
    app = Flask("engine", instance_path=str(Path(registry.settings["config_dir"]) / "instance"))
    app.config.update(
        SECRET_KEY=secret_key(registry),
        SQLALCHEMY_DATABASE_URI=registry.database,
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True},
        APP_NAME=registry.name,
        AUTH_TYPE=1,  # database users
        AUTH_ROLE_ADMIN="Admin",
        # the user pages in the CRM's words (engine/web/users.py)
        FAB_SECURITY_MANAGER_CLASS="engine.web.users.CrmSecurityManager",
        AUTH_ROLE_PUBLIC="Public",
        FAB_UPDATE_PERMS=False,
        FAB_CREATE_DB=False,
        FAB_ADD_SECURITY_API=False,
        FAB_API_SWAGGER_UI=True,
        # FAB's layout plus the scripts plugins ask every page to load
        FAB_BASE_TEMPLATE="crm/baselayout.html",
        # the UI speaks the user's language (engine/i18n.py: chosen in the
        # navbar, kept per user), the config's by default: Flask-AppBuilder's
        # chrome and ours through the catalogs, the metadata through the labels
        BABEL_DEFAULT_LOCALE=registry.locale,
        # the engine's catalog, then each plugin's: later ones win over
        # Flask-AppBuilder's own (engine/i18n.py)
        BABEL_TRANSLATION_DIRECTORIES=";".join(
            str(p)
            for p in [i18n.ENGINE_TRANSLATIONS, *i18n.plugin_translation_dirs(pm.get_plugins())]
        ),
        LANGUAGES=LANGUAGES,
        WTF_CSRF_ENABLED=True,
        MAX_CONTENT_LENGTH=64 * 1024 * 1024,  # imports included
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
    )
    security = registry.security
    # every password form of the UI applies the policy (engine/passwords.py)
    app.config.update(
        FAB_PASSWORD_COMPLEXITY_ENABLED=True,
        FAB_PASSWORD_COMPLEXITY_VALIDATOR=passwords.form_validator(security, registry.locale),
    )
    if security.get("https"):
        app.config.update(SESSION_COOKIE_SECURE=True, REMEMBER_COOKIE_SECURE=True)
    if security.get("proxies"):
        # the client's address (sign-in limits) and the scheme come from the proxies
        hops = int(security["proxies"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    app.config.update(test_config or {})
    db = SQLAlchemy()
    db.init_app(app)
    with app.app_context():
        appbuilder = AppBuilder(app, db.session, indexview=HomeView)
        state = CRM(registry, models, pm, db, appbuilder, configuration)
        app.extensions["crm"] = state
        app.context_processor(lambda: {"crm_locale": web.base.locale(), "crm": state})
        web.register(appbuilder, state)
        assert models.sessions is not None
        signin = sessions.install(app, appbuilder, models.sessions, security, registry.locale)
        signin.locales = models.locales
        i18n.install(app, appbuilder, signin)
        pm.hook.crm_register_views(appbuilder=appbuilder, registry=registry)
        pm.hook.crm_startup(app=app, registry=registry)
    return app
