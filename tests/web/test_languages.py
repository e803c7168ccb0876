"""Each user reads the UI in their language; errors are pages of the app in it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask

from tests.web.conftest import SALES

RU = "name: Ромашка\nlocale: ru\nregion: RU\nlayers: []\n"
LABELLED = """
roles:
  manager: {label: {ru: Менеджер, en: Manager}}
documents:
  Customer:
    label: {ru: Клиент, en: Customer}
    title: "{{ name }}"
    owner: manager
    fields:
      name: {type: string, required: true, label: {ru: Название, en: Name}}
      manager: {type: ref, to: User, default: current_user, label: {ru: Менеджер, en: Manager}}
    access:
      manager: {read: own, create: true, update: own}
"""


def test_a_user_switches_to_english_and_keeps_it_others_stay_russian(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(LABELLED, RU)
    anna = login(app, "anna")
    page = anna.get("/customer/").text
    assert "Выход" in page and "Клиент" in page and "/lang/en" in page
    assert anna.get("/lang/en").status_code == 302
    page = anna.get("/customer/").text
    assert "Logout" in page and "Customer" in page and "Name" in page
    assert "Выход" not in page and "Клиент" not in page
    # kept for the user, not the browser: a new sign-in elsewhere is in English too
    again = login(app, "anna").get("/customer/").text
    assert "Logout" in again and "Customer" in again
    # another user still reads the configuration's language
    boris = login(app, "boris").get("/customer/").text
    assert "Выход" in boris and "Клиент" in boris
    # and back
    anna.get("/lang/ru")
    assert "Клиент" in login(app, "anna").get("/customer/").text


def test_a_label_without_the_users_language_keeps_the_configs(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(LABELLED.replace("{ru: Название, en: Name}", "Название"), RU)
    anna = login(app, "anna")
    anna.get("/lang/en")
    page = anna.get("/customer/add").text
    assert "Название" in page and "Customer" in page and "Save" in page


def test_an_unknown_language_is_a_404_page_and_changes_nothing(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(LABELLED, RU)
    anna = login(app, "anna")
    response = anna.get("/lang/xx")
    assert response.status_code == 404 and "crm-error-page" in response.text
    assert "Клиент" in anna.get("/customer/").text


def test_errors_are_pages_of_the_app_in_the_users_language(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(SALES, RU)
    helen = login(app, "helen")
    for url, status, text in (
        ("/customer/999999", 404, "Не найдено"),
        ("/nonexistent", 404, "Не найдено"),
        ("/customer/999999/edit", 404, "Не найдено"),
    ):
        response = helen.get(url)
        assert response.status_code == status, url
        assert response.mimetype == "text/html"
        page = response.text
        assert "crm-error-page" in page and text in page and "На главную" in page, url
        assert "Выход" in page  # the app's navbar: the layout, not a bare page
        assert "Werkzeug" not in page and "The requested URL" not in page
    # a method the page does not take
    response = helen.client.delete("/customer/")
    assert response.status_code == 405 and "Недопустимый запрос" in response.text
    # a form without its token
    response = helen.client.post("/customer/add", data={"name": "X"})
    assert response.status_code == 400 and "CSRF" in response.text
    assert "crm-error-page" in response.text
    # a visitor who has not signed in gets the page too
    response = app.test_client().get("/nonexistent")
    assert response.status_code == 404 and "crm-error-page" in response.text
    # the API keeps answering JSON
    response = helen.get("/api/v1/customer/999999")
    assert response.status_code == 404 and response.is_json
    response = helen.get("/api/v1/nonexistent")
    assert response.status_code == 404 and response.is_json


def test_english_users_read_english_error_pages(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app()
    page = login(app, "helen").get("/customer/999999")
    assert page.status_code == 404 and "Not found" in page.text and "To the home page" in page.text


def test_a_bug_is_a_500_page_without_the_traceback(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(SALES, RU)

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("secret detail")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    helen = login(app, "helen")
    response = helen.get("/boom")
    assert response.status_code == 500
    assert "Что-то пошло не так" in response.text and "crm-error-page" in response.text
    assert "secret detail" not in response.text and "Traceback" not in response.text


def test_an_import_speaks_the_language_of_the_user_who_uploaded_it(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    from tests.web.test_import_web import BAD, queued, run_jobs, upload

    app = crm_app(SALES, RU)
    anna, boris = login(app, "anna"), login(app, "boris")
    boris.get("/lang/en")
    russian = queued(upload(anna, BAD.encode(), "bad.csv"))
    english = queued(upload(boris, BAD.encode(), "bad.csv"))
    run_jobs(app)
    page = anna.get(f"/customer/import/{russian}").text
    assert "Ничего не импортировано" in page and "обязательное поле" in page
    page = boris.get(f"/customer/import/{english}").text
    assert "Nothing was imported" in page and "is required" in page
    # the import form's own texts and refusals too
    form = anna.get("/customer/import").text
    assert "Файл CSV или XLSX" in form and "Колонки" in form
    response = upload(anna, b"", "empty.csv")
    assert response.status_code == 400 and "Файл пуст" in response.text


def test_scripts_get_their_texts_in_the_users_language(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    import json
    import re

    app = crm_app(LABELLED, RU)
    anna = login(app, "anna")

    def strings() -> dict[str, str]:
        page = anna.get("/customer/").text
        found = re.search(
            r'<script type="application/json" id="crm-i18n"[^>]*>(.*?)</script>', page
        )
        assert found, "the page carries no script texts"
        return dict(json.loads(found.group(1)))

    assert strings()["Reading the file…"] == "Читаем файл…"  # import.js asks crmT() for it
    anna.get("/lang/en")
    assert strings()["Reading the file…"] == "Reading the file…"
