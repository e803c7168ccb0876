"""What the generated pages do against a hostile value, a forged post, a
framing page or a malformed URL; and the language they speak."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from flask import Flask

PAYLOAD = "<img src=x onerror=alert(1)>"
ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"


def record_id(response: Any) -> int:
    assert response.status_code == 302, response.text
    return int(response.headers["Location"].rstrip("/").rsplit("/", 1)[1])


def add_user(app: Flask, username: str, first_name: str, role: str) -> None:
    with app.app_context():
        sm = app.extensions["crm"].appbuilder.sm
        user = sm.add_user(username, first_name, "Evil", "evil@example.org", [sm.find_role(role)], "secret")  # fmt: skip
        assert user, "the user was not created"


def test_a_hostile_value_is_shown_as_text_everywhere(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app()
    add_user(app, PAYLOAD, PAYLOAD, "manager")
    evil = login(app, PAYLOAD)
    customer = record_id(evil.post_form("/customer/add", {"name": PAYLOAD}))
    posted = {"customer": str(customer), "amount": "10", "planned_close": "2030-05-15",
              "loss_reason": PAYLOAD, "lines-0-product": PAYLOAD}  # fmt: skip
    deal = record_id(evil.post_form("/deal/add", posted))
    assert evil.post_form(f"/deal/{deal}/transition/lost", {"loss_reason": PAYLOAD}).status_code == 302  # fmt: skip
    helen = login(app, "helen")
    pages = {
        "customer list": "/customer/",
        "customer record": f"/customer/{customer}",
        "customer form": f"/customer/{customer}/edit",
        "deal list": "/deal/",
        "deal record (fields, lines, history, audit)": f"/deal/{deal}",
        "deal form (ref picker, lines)": f"/deal/{deal}/edit",
        "deal list filtered by the customer picker": f"/deal/?f_manager={PAYLOAD}",
        "kanban cards": "/deal/kanban",
        "calendar entries": "/deal/calendar?date=2030-05-01",
        "transition form": f"/deal/{deal}/transition/new",
    }
    for what, url in pages.items():
        for browser in (evil, helen):
            response = browser.get(url)
            assert response.status_code < 500, what
            assert PAYLOAD not in response.text, f"unescaped in {what}"
            assert ESCAPED in response.text, f"not shown in {what}"
    history = helen.get(f"/deal/{deal}").text.split('class="table table-condensed crm-history"', 1)[
        1
    ]
    assert ESCAPED in history  # who made the move
    # JSON is JSON: the picker's results carry the text as a string, no markup is built from it
    lookup = helen.get("/customer/lookup?q=%3Cimg")
    assert lookup.mimetype == "application/json"
    assert lookup.get_json()["results"][0]["text"] == PAYLOAD
    export = helen.get("/customer/export.csv")
    assert export.mimetype == "text/csv" and "attachment" in export.headers["Content-Disposition"]


def test_labels_from_metadata_are_escaped_too(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    metadata = """
    roles:
      manager: {label: Manager}
      sales_head: {label: Head of sales}
    documents:
      Note:
        label: "Note <script>x()</script> 100%"
        title: "{{ text }}"
        fields:
          text: {type: string, label: "Text <b>bold</b>", required: true}
          kind: {type: enum, values: {a: "<i>A</i>"}}
        access:
          manager: {read: true, create: true, update: true}
    """
    app = crm_app(metadata)
    anna = login(app, "anna")
    note = record_id(anna.post_form("/note/add", {"text": "hello", "kind": "a"}))
    for url in ("/note/", f"/note/{note}", f"/note/{note}/edit", "/note/add"):
        page = anna.get(url).text
        assert "<script>x()</script>" not in page and "<b>bold</b>" not in page and "<i>A</i>" not in page, url  # fmt: skip
    assert "Text &lt;b&gt;bold&lt;/b&gt;" in anna.get("/note/add").text


def test_every_state_changing_form_needs_its_csrf_token(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app()
    helen = login(app, "helen")
    customer = record_id(helen.post_form("/customer/add", {"name": "Kept"}))
    deal = record_id(helen.post_form("/deal/add", {"customer": str(customer)}))
    forged = {
        "/customer/add": {"name": "Forged"},
        f"/customer/{customer}/edit": {"name": "Forged", "_version": "1"},
        f"/customer/{customer}/delete": {"_version": "1"},
        f"/deal/{deal}/transition/lost": {"loss_reason": "forged", "_version": "1"},
    }
    for url, data in forged.items():
        for token in ({}, {"csrf_token": "not-a-token"}):
            response = helen.client.post(url, data={**data, **token})
            assert response.status_code == 400, url
            assert "CSRF" in response.text
    with app.app_context():
        state = app.extensions["crm"]
        names = state.db.session.execute(sa.select(state.models.table("Customer").c.name)).scalars()
        assert list(names) == ["Kept"]
    assert helen.get(f"/deal/{deal}").text.count('data-state="new"') == 1
    # every form the pages render carries a token
    for url in ("/customer/add", f"/customer/{customer}/edit", f"/customer/{customer}",
                f"/deal/{deal}/transition/lost", f"/deal/{deal}"):  # fmt: skip
        page = helen.get(url).text
        forms = re.findall(r'<form method="post".*?</form>', page, re.S)
        assert forms, url
        assert all('name="csrf_token"' in form for form in forms), url
    # deleting is never a GET
    assert helen.get(f"/customer/{customer}/delete").status_code == 405


def test_pages_cannot_be_framed_and_scripts_need_the_page_nonce(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app()
    helen = login(app, "helen")
    for url in ("/customer/", "/customer/add", "/deal/kanban", "/deal/calendar", "/login/"):
        response = helen.get(url)
        assert response.headers["X-Frame-Options"] == "DENY", url
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        csp = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
        nonce = re.search(r"'nonce-([^']+)'", csp)
        scripts = re.findall(r"<script[^>]*>", response.text)
        if scripts:
            assert nonce, url
            assert all(f'nonce="{nonce.group(1)}"' in s for s in scripts), url
        assert "unsafe-inline" not in csp.split("script-src", 1)[1].split(";", 1)[0]


def test_malformed_ids_filters_and_parameters_are_4xx_never_500(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app()
    helen = login(app, "helen")
    customer = record_id(helen.post_form("/customer/add", {"name": "Romashka"}))
    deal = record_id(helen.post_form("/deal/add", {"customer": str(customer)}))
    not_found = [
        "/customer/abc", "/customer/-1", "/customer/0", "/customer/99999999999999999999",
        "/customer/2147483648", "/customer/99999/edit", "/customer/1.5",
        f"/deal/{deal}/transition/nonsense", "/deal/99999999999999999999/transition/lost",
        "/customer/kanban",  # customers have no kanban
    ]  # fmt: skip
    for url in not_found:
        assert helen.get(url).status_code == 404, url
    bad_request = [
        "/customer/?f_segment=Z", "/deal/?f_stage=nonsense",
        "/deal/calendar?date=2030-13-45", "/deal/calendar?date=yesterday", "/deal/calendar?mode=year",
        "/deal/calendar?owner=abc", "/deal/calendar?owner=99999999999999999999",
        "/deal/kanban?owner=-5", "/deal/kanban/cards?column=nonsense", "/deal/kanban/cards?column=new&offset=-1",
        "/deal/kanban/cards?column=new&offset=99999999999999999999", "/customer/export.csv?f_segment=Z",
        "/customer/?f_manager=99999999999999999999",
        # a segment that does not exist (or is another user's) is said so, never ignored
        "/customer/?segment=nonsense", "/customer/export.csv?segment=nonsense",
    ]  # fmt: skip
    for url in bad_request:
        response = helen.get(url)
        assert response.status_code == 400, (url, response.status_code)
    shown_anyway = [
        "/customer/?offset=abc", "/customer/?offset=-10", "/customer/?offset=99999999999999999999",
        "/customer/?order=nonsense", "/customer/?order=-manager", "/customer/?q=%00%25_%5C",
        "/customer/?q=" + "x" * 5000, "/customer/lookup?q=%00",
        "/crm_users/lookup?q=%00",
        "/customer/?f_manager=nobody", "/deal/?f_manager=%00",
    ]  # fmt: skip
    for url in shown_anyway:
        assert helen.get(url).status_code == 200, url
    # a filter the list cannot apply says why, next to the filters
    page = helen.get("/customer/?f_segment=Z")
    assert "crm-filter-error" in page.text and "Z" in page.text
    # posted nonsense is a form error, not a crash
    response = helen.post_form(
        "/deal/add",
        {"customer": "99999999999999999999", "amount": "1e999999", "planned_close": "31.02.2030",
         "lines-0-qty": "NaN", "lines-99999999999-product": "x", "loss_reason": "a\x00b"},
    )  # fmt: skip
    assert response.status_code == 422
    weird = helen.post_form("/customer/add", {"name": "Zero\x00byte"})
    assert weird.status_code == 302
    assert "Zerobyte" in helen.get(weird.headers["Location"]).text


def test_the_ui_speaks_the_config_language_fab_chrome_included(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    metadata = """
    roles:
      manager: {label: Менеджер}
      sales_head: {label: Руководитель}
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
    ru = crm_app(metadata, "name: Ромашка\nlocale: ru\nregion: RU\nlayers: []\n")
    login_page = ru.test_client().get("/login/").text
    assert "Пароль" in login_page and "Вход" in login_page
    anna = login(ru, "anna")
    page = anna.get("/customer/").text
    assert "Выход" in page and "Logout" not in page  # Flask-AppBuilder's own Russian
    assert "Клиент" in page and "Справочники" in page and "Название" in page
    assert "Нет записей" in page
    assert "/lang/en" in page  # each user may switch to English (engine/i18n.py)
    form = anna.get("/customer/add").text
    assert "Сохранить" in form and "Отмена" in form and "Название" in form
    en = crm_app(metadata, "name: Romashka\nlocale: en\nregion: RU\nlayers: []\n")
    page = login(en, "anna").get("/customer/").text
    assert "Logout" in page and "Customer" in page and "Directory" in page and "Name" in page
    assert "Выход" not in page and "Клиент" not in page


def test_an_administrator_manages_users_on_the_security_pages(crm_app: Any, login: Any) -> None:
    app = crm_app()
    admin, anna = login(app, "admin"), login(app, "anna")
    assert admin.get("/users/list/").status_code == 200
    assert "anna" in admin.get("/users/list/").text
    assert anna.get("/users/list/").status_code in (302, 403)
