"""Translations: every string a user reads goes through a catalog.

The engine's catalog lives in ``engine/translations/<locale>/LC_MESSAGES``;
a plugin may bring its own folder (see ``catalogs``). Message ids are
English. Templates write ``{{ _('New') }}``, Python code
``gettext("no transition from %(source)s to %(target)s", source=..., target=...)``.
Outside a request (the CLI, ``crm check``) the message id itself is returned.

``python -m engine.i18n update`` extracts the ids from the sources into both
catalogs (keeping what is translated) and ``python -m engine.i18n compile``
writes the ``.mo`` files the app loads; ``tests/test_i18n.py`` fails when a
catalog lacks a translation or a ``.mo`` is stale.
"""

from __future__ import annotations

import datetime
import importlib.util
import io
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask_babel import gettext, lazy_gettext, ngettext

__all__ = ["ENGINE_TRANSLATIONS", "LOCALES", "gettext", "lazy_gettext", "ngettext"]

LOCALES = ("ru", "en")
ROOT = Path(__file__).resolve().parent.parent
ENGINE_TRANSLATIONS = Path(__file__).resolve().parent / "translations"


def catalogs() -> dict[Path, Path]:
    """Every catalog folder and the source folder it is extracted from: the
    engine's, then each installed plugin package's ``translations/`` folder
    (a plugin's catalog needs nothing more than that folder)."""
    from engine.plugins import available_plugins

    found = {ENGINE_TRANSLATIONS: ENGINE_TRANSLATIONS.parent}
    for ep in available_plugins().values():
        # found without importing it: an installed plugin whose code is not on
        # this path (a test's sample plugin) has no catalog to look at
        try:
            spec = importlib.util.find_spec(ep.module.split(":")[0])
        except ImportError:
            continue
        if spec is None or spec.origin is None:
            continue
        package = Path(spec.origin).resolve().parent
        if (package / "translations").is_dir():
            found[package / "translations"] = package
    return found


def plugin_translation_dirs(modules: Iterable[object]) -> list[Path]:
    """The catalogs of the registered plugins (the app loads them after the engine's)."""
    dirs = []
    for module in modules:
        file = getattr(module, "__file__", None)
        if file and (Path(file).resolve().parent / "translations").is_dir():
            dirs.append(Path(file).resolve().parent / "translations")
    return dirs


# -- each user's language ---------------------------------------------------------


def install(app: Any, appbuilder: Any, sessions: Any) -> None:
    """Each user reads the UI in the language they chose (stored per user by
    ``sessions``), else in the configuration's ``locale``. A visitor who has not
    signed in yet may pick one for the sign-in page (kept in the session).
    ``/lang/<locale>`` (the navbar's language menu, Flask-AppBuilder's view)
    stores the choice of the signed-in user."""
    from flask import g, has_request_context, request, session
    from flask_login import current_user, user_logged_in

    from engine import registry

    languages = app.config["LANGUAGES"]
    default = app.config["BABEL_DEFAULT_LOCALE"]

    def select() -> str:
        """The session's language: the user's choice, read from the database
        once, at sign-in (no query per request), or the visitor's."""
        if not has_request_context():
            return str(default)
        chosen = session.get("locale")
        return str(chosen if chosen in languages else default)

    @user_logged_in.connect_via(app)
    def signed_in(sender: Any, user: Any, **extra: Any) -> None:
        session["locale"] = sessions.user_locale(user.id) or default
        g.pop("_flask_babel", None)  # the page after signing in speaks it already

    app.extensions["babel"].locale_selector = select
    app.jinja_env.globals["crm_script_strings"] = lambda: script_strings(app)
    registry.preferred_locale = _request_locale

    @app.before_request
    def choose_language() -> None:
        """``/lang/<locale>``: Flask-AppBuilder's view keeps it in the session,
        here it is kept for the signed-in user too."""
        if request.endpoint != "LocaleView.index":
            return
        chosen = (request.view_args or {}).get("locale")
        if chosen in languages and current_user.is_authenticated:
            sessions.set_user_locale(current_user.id, chosen)


@contextmanager
def speaking(locale: str | None) -> Iterator[None]:
    """Messages in ``locale`` within an app context without a request (a
    background job speaks the language of the user it works for). Only this
    context's language changes, not the app's: requests go on in theirs."""
    from babel import Locale
    from flask import has_app_context
    from flask_babel import _get_current_context

    ctx = _get_current_context() if has_app_context() else None
    if ctx is None or not locale:
        yield
        return
    before = (getattr(ctx, "babel_locale", None), getattr(ctx, "babel_translations", None))
    ctx.babel_locale = Locale.parse(locale)
    ctx.babel_translations = None
    try:
        yield
    finally:
        ctx.babel_locale, ctx.babel_translations = before


def _request_locale() -> str | None:
    """The language of the request's reader (None outside a request)."""
    from flask import current_app, has_request_context

    if not has_request_context() or "babel" not in current_app.extensions:
        return None
    from flask_babel import get_locale

    found = get_locale()
    return str(found) if found is not None else None


METHOD_MAP = [
    ("**.py", "python"),
    ("**/templates/**.html", "jinja2"),
    ("**/static/**.js", "javascript"),
]
KEYWORDS = {
    "_": None,
    "gettext": None,
    "ngettext": (1, 2),
    "lazy_gettext": None,
    "_l": None,
    "crmT": None,  # a script's text (engine/static/crm/i18n.js)
}

_SCRIPT_IDS: dict[tuple[str, ...], list[str]] = {}


def script_ids(folders: Iterable[Path]) -> list[str]:
    """The ids the scripts of ``folders`` (``static/`` of the engine and the
    plugins) ask ``crmT()`` for: each page sends them translated, read once."""
    key = tuple(str(f) for f in folders)
    if key not in _SCRIPT_IDS:
        from babel.messages.extract import extract_from_dir

        ids: set[str] = set()
        for folder in folders:
            if not folder.is_dir():
                continue
            for _f, _line, message, _c, _ctx in extract_from_dir(
                str(folder), method_map=[("**.js", "javascript")], keywords={"crmT": None}
            ):
                if isinstance(message, str) and message:
                    ids.add(message)
        _SCRIPT_IDS[key] = sorted(ids)
    return _SCRIPT_IDS[key]


def script_strings(app: Any) -> dict[str, str]:
    """The scripts' texts in the reader's language (crm/_i18n.html)."""
    folders = [Path(app.static_folder or "")]
    folders += [
        p.parent / "static" for p in plugin_translation_dirs(app.extensions["crm"].pm.get_plugins())
    ]
    return {msgid: gettext(msgid) for msgid in script_ids(folders)}


def _extract(source: Path) -> dict[Any, list[tuple[str, int]]]:
    """Message ids and where they are used; ``ngettext``'s as (singular, plural)."""
    from babel.messages.extract import extract_from_dir

    found: dict[Any, list[tuple[str, int]]] = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
        str(source),
        method_map=METHOD_MAP,
        keywords=KEYWORDS,
        options_map={"**/templates/**.html": {"extensions": "jinja2.ext.do"}},
    ):
        msgid = message if isinstance(message, str) else tuple(message[:2])
        if msgid and all(msgid):
            found.setdefault(msgid, []).append((str((source / filename).relative_to(ROOT)), lineno))
    return found


FIXED = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def po_path(translations: Path, locale: str) -> Path:
    return translations / locale / "LC_MESSAGES" / "messages.po"


def update(translations: Path) -> list[str]:
    """Bring both catalogs of a folder up to the sources; the new ids, untranslated."""
    from babel.messages.catalog import Catalog
    from babel.messages.pofile import read_po, write_po

    found = _extract(catalogs()[translations])
    new: list[str] = []
    for locale in LOCALES:
        path = po_path(translations, locale)
        old = read_po(path.open("rb"), locale=locale) if path.exists() else Catalog(locale=locale)
        # fixed dates: a catalog changes only when its messages do
        catalog = Catalog(
            locale=locale,
            project="crm-framework",
            version="1",
            fuzzy=False,
            creation_date=FIXED,
            revision_date=FIXED,
            copyright_holder="crm-framework",
            msgid_bugs_address="-",
            last_translator="-",
            language_team="-",
        )
        for msgid in sorted(found, key=lambda m: m if isinstance(m, str) else m[0]):
            before = old.get(msgid[0] if isinstance(msgid, tuple) else msgid)
            string: Any = before.string if before is not None else ""
            if isinstance(msgid, tuple):  # a plural: one string per plural form
                forms = old.num_plurals if path.exists() else catalog.num_plurals
                if not isinstance(string, tuple) or len(string) != forms:
                    string = ("",) * forms
                if locale == "en" and not any(string):
                    string = msgid
            elif locale == "en" and not string:
                string = msgid
            if not (all(string) if isinstance(string, tuple) else string):
                new.append(f"{locale}: {msgid if isinstance(msgid, str) else msgid[0]}")
            catalog.add(msgid, string, locations=sorted(found[msgid])[:3])
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            write_po(f, catalog, width=100, no_location=True, sort_output=True)
    return new


def compiled(translations: Path, locale: str) -> bytes:
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    buf = io.BytesIO()
    with po_path(translations, locale).open("rb") as f:
        write_mo(buf, read_po(f, locale=locale))
    return buf.getvalue()


def compile_all() -> None:
    for translations in catalogs():
        for locale in LOCALES:
            if po_path(translations, locale).exists():
                mo = po_path(translations, locale).with_suffix(".mo")
                mo.write_bytes(compiled(translations, locale))


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "update"
    if command == "update":
        missing: list[str] = []
        for translations in catalogs():
            missing += update(translations)
        compile_all()
        for line in missing:
            print("untranslated", line)
        return 0
    if command == "compile":
        compile_all()
        return 0
    print("usage: python -m engine.i18n [update|compile]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
