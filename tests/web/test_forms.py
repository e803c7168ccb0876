"""Generated forms as a user fills them in: a widget per field type, ref
pickers that search on the server, table rows edited in place, sections,
server-side validation with the message at the field, defaults, read-only
and hidden fields."""

from __future__ import annotations

import datetime as dt
import html as htmlmod
import re
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from flask import Flask

CONFIG = "name: Forms Ltd\nlocale: en\nregion: RU\ntimezone: Europe/Moscow\nlayers: []\n"

EVERY_TYPE = """
roles:
  manager:    {label: Manager}
  sales_head: {label: Head of sales}
documents:
  Customer:
    title: "{{ name }}"
    owner: manager
    fields:
      name:      {type: string, required: true, max_length: 60}
      code:      {type: string, pattern: "^[A-Z]{3}-[0-9]{3}$", unique: true, help: "Three letters, a dash, three digits"}
      notes:     {type: text}
      employees: {type: integer, min: 1, max: 10000}
      rating:    {type: decimal, digits: 5, places: 2, min: 0, max: 10}
      revenue:   {type: money}
      vip:       {type: boolean}
      founded:   {type: date}
      next_call: {type: datetime}
      segment:   {type: enum, values: {key: Key account, regular: Regular}, default: regular}
      parent:    {type: ref, to: Customer}
      phone:     {type: phone}
      email:     {type: email}
      site:      {type: url}
      manager:   {type: ref, to: User, default: current_user}
      source:    {type: string, readonly: true, default: web}
      secret:    {type: string, hidden: true}
      contacts:
        type: table
        fields:
          person: {type: string, required: true}
          born:   {type: date}
          main:   {type: boolean}
          referee: {type: ref, to: User}
    access:
      manager:    {read: own, create: true, update: own}
      sales_head: {read: all, create: true, update: all, delete: true}
"""

SECTIONS = """
roles:
  manager: {label: Manager}
documents:
  Contact:
    title: "{{ name }}"
    owner: manager
    fields:
      name:    {type: string, required: true}
      phone:   {type: phone}
      comment: {type: text}
      manager: {type: ref, to: User, default: current_user}
    form:
      sections:
        - {label: {en: Who, ru: Кто}, fields: [name, manager]}
        - {label: {en: How to reach, ru: Как связаться}, fields: [phone]}
    access:
      manager: {read: own, create: true, update: own}
"""


def block(html: str, name: str) -> str:
    """The markup of one field (``data-field="name"``) up to the next field."""
    assert f'data-field="{name}"' in html, f"no field {name} in the page"
    rest = html.split(f'data-field="{name}"', 1)[1]
    end = rest.find('data-field="')
    return rest if end < 0 else rest[:end]


def error_at(html: str, name: str) -> str:
    """The message shown at a field, or ''."""
    match = re.search(r'class="help-block crm-error">([^<]*)<', block(html, name))
    return htmlmod.unescape(match.group(1)) if match else ""


def record_id(response: Any) -> int:
    assert response.status_code == 302, response.text
    return int(response.headers["Location"].rstrip("/").rsplit("/", 1)[1])


def row_of(app: Flask, table: str, obj_id: int) -> dict[str, Any]:
    with app.app_context():
        state = app.extensions["crm"]
        t = state.models.table(table) if table[0].isupper() else state.models.metadata.tables[table]
        return dict(state.db.session.execute(sa.select(t).where(t.c.id == obj_id)).mappings().one())


def user_id(app: Flask, username: str) -> int:
    with app.app_context():
        users = app.extensions["crm"].models.table("User")
        session = app.extensions["crm"].db.session
        return int(
            session.execute(sa.select(users.c.id).where(users.c.username == username)).scalar_one()
        )


def test_every_field_type_gets_its_widget(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(EVERY_TYPE, CONFIG)
    page = login(app, "anna").get("/customer/add")
    assert page.status_code == 200
    html = page.text
    assert 'type="text"' in block(html, "name") and 'maxlength="60"' in block(html, "name")
    assert 'pattern="^[A-Z]{3}-[0-9]{3}$"' in block(html, "code")
    assert "Three letters, a dash, three digits" in block(html, "code")  # help text
    assert "<textarea" in block(html, "notes")
    assert 'type="number"' in block(html, "employees")
    assert 'min="1"' in block(html, "employees") and 'max="10000"' in block(html, "employees")
    for name in ("rating", "revenue"):
        assert 'inputmode="decimal"' in block(html, name), name
    assert 'type="checkbox"' in block(html, "vip")
    # a date is typed as the user writes it (dd.mm.yyyy in Russian), not in the browser's format
    assert 'crm-date" type="text"' in block(html, "founded")
    assert 'type="datetime-local"' in block(html, "next_call")
    segment = block(html, "segment")
    assert "<select" in segment and ">Key account</option>" in segment
    assert re.search(r'<option value="regular" selected>Regular</option>', segment)  # enum default
    assert 'type="tel"' in block(html, "phone")
    assert 'type="email"' in block(html, "email")
    assert 'type="url"' in block(html, "site")
    # refs are server-side pickers, users included
    assert 'data-lookup="/customer/lookup"' in block(html, "parent")
    assert 'data-lookup="/crm_users/lookup"' in block(html, "manager")
    # required fields are marked
    assert 'class="text-danger">*' in block(html, "name")
    # the table's rows: widgets per column type, a row template to add rows
    assert "crm-add-row" in html and "crm-row-template" in html
    template = html.split('class="crm-row-template"', 1)[1].split("</template>", 1)[0]
    assert 'name="contacts-__i__-born"' in template and 'crm-date" type="text"' in template
    assert 'name="contacts-__i__-main"' in template and 'type="checkbox"' in template
    assert 'name="contacts-__i__-referee"' in template and "crm-ref" in template


def test_defaults_readonly_and_hidden(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(EVERY_TYPE, CONFIG)
    anna = login(app, "anna")
    html = anna.get("/customer/add").text
    # current_user: Anna is already picked, shown by name
    assert re.search(r'<option value="\d+" selected>Anna Test</option>', block(html, "manager"))
    # read-only: shown, not editable; hidden: absent
    assert "readonly" in block(html, "source") and 'value="web"' in block(html, "source")
    assert 'name="secret"' not in html
    new = anna.post_form("/customer/add", {"name": "Acme", "source": "forged", "secret": "forged"})
    row = row_of(app, "Customer", record_id(new))
    assert row["source"] == "web"
    assert row["secret"] is None
    assert row["manager_id"] == user_id(app, "anna")
    assert row["segment"] == "regular"
    page = anna.get(f"/customer/{row['id']}").text
    assert 'data-field="secret"' not in page


def test_values_typed_in_the_forms_are_stored_and_shown(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(EVERY_TYPE, CONFIG)
    anna = login(app, "anna")
    new = anna.post_form(
        "/customer/add",
        {"name": "Acme", "code": "ACM-001", "notes": "line 1\nline 2", "employees": "250",
         "rating": "7,5", "revenue": "1 500 000,50", "vip": "1", "founded": "2001-02-03",
         "next_call": "2026-03-01T10:00", "segment": "key", "phone": "8 (495) 123-45-67",
         "email": "info@acme.example", "site": "https://acme.example"},
    )  # fmt: skip
    obj_id = record_id(new)
    row = row_of(app, "Customer", obj_id)
    assert row["employees"] == 250 and row["vip"] is True
    assert str(row["revenue"]) == "1500000.50"
    assert row["founded"] == dt.date(2001, 2, 3)
    assert row["phone"] == "+74951234567"
    # a datetime-local input is the company's wall clock (Moscow, UTC+3)
    stored = row["next_call"]
    stored = stored.replace(tzinfo=dt.UTC) if stored.tzinfo is None else stored
    assert stored == dt.datetime(2026, 3, 1, 7, 0, tzinfo=dt.UTC)
    page = anna.get(f"/customer/{obj_id}").text
    assert "2026-03-01 10:00" in block(page, "next_call")
    assert "1,500,000.50" in block(page, "revenue")
    assert "Key account" in block(page, "segment")
    assert "+7 495 123-45-67" in block(page, "phone")
    edit = anna.get(f"/customer/{obj_id}/edit").text
    assert 'value="2026-03-01T10:00"' in block(edit, "next_call")
    assert 'value="2001-02-03"' in block(edit, "founded")
    assert 'value="1500000.50"' in block(edit, "revenue")
    assert 'value="7.5"' in block(edit, "rating")
    assert "checked" in block(edit, "vip")


def test_required_min_max_pattern_and_unique_are_checked_on_the_server(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(EVERY_TYPE, CONFIG)
    anna = login(app, "anna")
    record_id(anna.post_form("/customer/add", {"name": "First", "code": "ABC-123"}))
    response = anna.post_form(
        "/customer/add",
        {"name": "", "code": "ABC-123", "employees": "0", "rating": "11", "email": "nope",
         "contacts-0-born": "2000-01-01"},
    )  # fmt: skip
    assert response.status_code == 422
    html = response.text
    assert error_at(html, "name") == "is required"
    assert error_at(html, "code").startswith("this Code already belongs to")
    assert error_at(html, "employees") == "must be at least 1"
    assert error_at(html, "rating") == "must be at most 10"
    assert error_at(html, "email")
    assert error_at(html, "contacts-0-person") == "is required"
    # what the user typed is kept
    assert 'value="ABC-123"' in block(html, "code")
    assert 'value="2000-01-01"' in block(html, "contacts-0-born")
    bad_pattern = anna.post_form("/customer/add", {"name": "X", "code": "abc"})
    assert bad_pattern.status_code == 422
    assert error_at(bad_pattern.text, "code") == "does not match the required pattern"
    with app.app_context():
        state = app.extensions["crm"]
        count = state.db.session.execute(
            sa.select(sa.func.count()).select_from(state.models.table("Customer"))
        ).scalar_one()
    assert count == 1  # nothing of the refused forms was saved


def test_ref_pickers_search_on_the_server_and_never_list_every_row(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(EVERY_TYPE, CONFIG)
    anna, boris = login(app, "anna"), login(app, "boris")
    for i in range(30):
        anna.client.post("/customer/add", data={"csrf_token": anna.csrf, "name": f"Alpha {i:02d}"})
    record_id(anna.post_form("/customer/add", {"name": "Beta"}))
    record_id(boris.post_form("/customer/add", {"name": "Alpine (Boris)"}))
    html = anna.get("/customer/add").text
    assert block(html, "parent").count("<option") == 1  # just the empty choice
    found = anna.get("/customer/lookup?q=alp").get_json()["results"]
    assert len(found) == 20  # a page of matches, never everything
    assert all(r["text"].startswith("Alpha") for r in found)  # not Boris's record
    assert [r["text"] for r in anna.get("/customer/lookup?q=BET").get_json()["results"]] == ["Beta"]
    assert anna.get("/customer/lookup?q=%25").get_json()["results"] == []  # LIKE wildcards are text
    users = anna.get("/crm_users/lookup?q=bor").get_json()["results"]
    assert [u["text"] for u in users] == ["Boris Test"]
    # a chosen ref is the only option of its picker, named by its title
    beta = anna.get("/customer/lookup?q=Beta").get_json()["results"][0]["id"]
    child = record_id(anna.post_form("/customer/add", {"name": "Child", "parent": str(beta)}))
    parent = block(anna.get(f"/customer/{child}/edit").text, "parent")
    assert (
        parent.count("<option") == 2 and f'<option value="{beta}" selected>Beta</option>' in parent
    )


def test_a_ref_to_a_record_the_user_cannot_see_is_refused(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(EVERY_TYPE, CONFIG)
    anna, boris = login(app, "anna"), login(app, "boris")
    hidden = record_id(boris.post_form("/customer/add", {"name": "Boris's own"}))
    response = anna.post_form("/customer/add", {"name": "Sneaky", "parent": str(hidden)})
    assert response.status_code == 422
    assert error_at(response.text, "parent") == f"there is no “Customer” #{hidden}"
    assert "Boris" not in error_at(response.text, "parent")
    # the same message as for a record that does not exist at all
    missing = anna.post_form("/customer/add", {"name": "Sneaky", "parent": "99999"})
    assert error_at(missing.text, "parent") == "there is no “Customer” #99999"


def test_table_rows_are_added_reordered_and_removed_in_the_parent_form(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(EVERY_TYPE, CONFIG)
    anna = login(app, "anna")
    posted = {"name": "Acme", "contacts-0-person": "Ann", "contacts-0-main": "1",
              "contacts-1-person": "Bob", "contacts-1-born": "1990-05-06",
              "contacts-2-person": "Cid"}  # fmt: skip
    obj_id = record_id(anna.post_form("/customer/add", posted))
    with app.app_context():
        table = app.extensions["crm"].models.metadata.tables["customer__contacts"]

    def rows() -> list[tuple[int, str, int]]:
        with app.app_context():
            session = app.extensions["crm"].db.session
            stmt = sa.select(table.c.id, table.c.person, table.c.idx).where(
                table.c.parent_id == obj_id
            )
            return [tuple(r) for r in session.execute(stmt.order_by(table.c.idx))]

    before = rows()
    assert [r[1] for r in before] == ["Ann", "Bob", "Cid"]
    edit = anna.get(f"/customer/{obj_id}/edit").text
    ids = {name: int(i) for i, name in re.findall(r'name="contacts-\d+-id" value="(\d+)">.*?value="(\w+)"', edit, re.S)}  # fmt: skip
    assert set(ids) == {"Ann", "Bob", "Cid"}
    version = re.search(r'name="_version" value="(\d+)"', edit).group(1)  # type: ignore[union-attr]
    # move Cid up to the top, drop Ann, add Dan at the end
    response = anna.post_form(
        f"/customer/{obj_id}/edit",
        {"_version": version, "name": "Acme",
         "contacts-0-id": str(ids["Cid"]), "contacts-0-person": "Cid",
         "contacts-1-id": str(ids["Bob"]), "contacts-1-person": "Bob", "contacts-1-born": "1990-05-06",
         "contacts-2-person": "Dan"},
    )  # fmt: skip
    assert response.status_code == 302, response.text
    after = rows()
    assert [r[1] for r in after] == ["Cid", "Bob", "Dan"]
    assert [r[2] for r in after] == [0, 1, 2]
    kept = {r[1]: r[0] for r in after}
    assert kept["Cid"] == ids["Cid"] and kept["Bob"] == ids["Bob"]  # rows keep their identity
    page = anna.get(f"/customer/{obj_id}").text
    table_html = page.split('data-field="contacts"', 1)[1]
    assert table_html.index("Cid") < table_html.index("Bob") < table_html.index("Dan")
    assert "Ann" not in table_html.split("</table>", 1)[0]


def test_form_sections_shape_the_form_and_limit_what_it_sets(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(SECTIONS, "name: Sections\nlocale: ru\nregion: RU\nlayers: []\n")
    anna = login(app, "anna")
    html = anna.get("/contact/add").text
    legends = re.findall(r"<legend>([^<]*)</legend>", html)
    assert legends == ["Кто", "Как связаться"]
    who = html.split("<legend>Кто</legend>", 1)[1].split("</fieldset>", 1)[0]
    assert 'name="name"' in who and 'name="manager"' in who and 'name="phone"' not in who
    assert 'name="comment"' not in html  # not in any section: not in the form
    assert "Сохранить" in html  # the form speaks the config's language
    created = record_id(anna.post_form("/contact/add", {"name": "Ivan", "comment": "forged"}))
    row = row_of(app, "Contact", created)
    assert row["comment"] is None
    assert row["manager_id"] == user_id(app, "anna")


def test_a_new_table_row_starts_with_its_columns_defaults(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app()  # Deal.lines.qty defaults to 1
    html = login(app, "anna").get("/deal/add").text
    template = html.split('class="crm-row-template"', 1)[1].split("</template>", 1)[0]
    assert 'value="1"' in block(template, "lines-__i__-qty")
    assert 'value=""' in block(template, "lines-__i__-product")
