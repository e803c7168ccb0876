"""The catalogs: every message the sources ask for is in both languages,
and the compiled catalogs the app loads are those of the ``.po`` files."""

from __future__ import annotations

from babel.messages.pofile import read_po

from engine import i18n


def _catalog(translations, locale):
    with i18n.po_path(translations, locale).open("rb") as f:
        return read_po(f, locale=locale)


def test_every_message_of_the_sources_is_in_both_catalogs():
    for translations, source in i18n.catalogs().items():
        asked = set(i18n._extract(source))
        for locale in i18n.LOCALES:
            have = {m.id for m in _catalog(translations, locale) if m.id}
            missing = sorted(asked - have)
            assert not missing, (
                f"{translations}/{locale}: not in the catalog (python -m engine.i18n update): {missing[:20]}"
            )


def test_every_message_is_translated_in_both_languages():
    for translations in i18n.catalogs():
        for locale in i18n.LOCALES:
            empty = [
                m.id
                for m in _catalog(translations, locale)
                if m.id and not (all(m.string) if isinstance(m.string, tuple) else m.string)
            ]
            assert not empty, f"{translations}/{locale}: untranslated {empty[:20]}"
            fuzzy = [m.id for m in _catalog(translations, locale) if m.id and m.fuzzy]
            assert not fuzzy, f"{translations}/{locale}: fuzzy {fuzzy[:20]}"


def test_the_compiled_catalogs_are_those_of_the_po_files():
    for translations in i18n.catalogs():
        for locale in i18n.LOCALES:
            mo = i18n.po_path(translations, locale).with_suffix(".mo")
            assert mo.read_bytes() == i18n.compiled(translations, locale), (
                f"{mo} is stale: python -m engine.i18n compile"
            )


def test_a_page_speaks_the_catalog(crm_app, crm_login):
    app = crm_app(
        """
roles:
  manager: {label: Менеджер}
documents:
  Note:
    label: Заметка
    fields: {title: {type: string, label: Заголовок}}
    access: {manager: {read: all, create: true, update: all}}
""",
        locale="ru",
    )
    page = crm_login(app, "manager").get("/note/").get_data(as_text=True)
    assert 'title="Создать"' in page
