"""Translations: every string a user reads goes through a catalog.

The engine's catalog lives in ``engine/translations/<locale>/LC_MESSAGES``;
a plugin may bring its own folder (see ``translation_dirs``). Message ids are
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
import io
import sys
from collections.abc import Iterable
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
        package = Path(ep.load().__file__).resolve().parent
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


METHOD_MAP = [
    ("**.py", "python"),
    ("**/templates/**.html", "jinja2"),
    ("**/static/**.js", "javascript"),
]
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "lazy_gettext": None, "_l": None}


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
