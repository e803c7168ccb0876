"""``unique: true`` and ``unique: warn`` at entry: a duplicate is refused, or
warned of, naming (and linking) the record that holds the value; in the
documents service, a form and REST; and what ``crm check`` says of the option."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine import merge as merging
from engine.access import Principal
from engine.documents import Documents, ValidationFailed
from engine.testing import Client, dispose, make_app

CRM = """
roles:
  manager: {label: Manager}
documents:
  Customer:
    title: "{{ name }}"
    owner: manager
    fields:
      name:    {type: string, required: true}
      inn:     {type: inn, unique: warn, label: INN}
      phone:   {type: phone, unique: warn}
      email:   {type: email, unique: warn}
      code:    {type: string, unique: true, label: Code}
      manager: {type: ref, to: User, default: current_user}
    access:
      manager: {read: all, create: true, update: own}
"""


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[Any]:
    made = make_app(
        tmp_path / "config", CRM, database=db_url, users={"admin": ["Admin"], "anna": ["manager"]}
    )
    yield made
    dispose(made)


def service(app: Any) -> Documents:
    state = app.extensions["crm"]
    return Documents.for_principal(state.models, state.db.session, Principal.system(), state.pm)


def test_warn_saves_and_says_who_holds_the_value(app: Any) -> None:
    with app.app_context():
        docs = service(app)
        first = docs.create(
            "Customer", {"name": "Romashka", "inn": "7707083893", "phone": "+7 495 123 45 67",
                         "email": "Info@Romashka.example"},
        )  # fmt: skip
        assert docs.warnings == {}
        # the same number typed otherwise, the email in other case: still the same
        twin = docs.create(
            "Customer", {"name": "Twin", "inn": "7707083893", "phone": "+7 (495) 123-45-67",
                         "email": "info@romashka.example"},
        )  # fmt: skip
        assert twin.id  # saved: a warning never blocks the service
        assert {n: (w.id, w.message) for n, w in docs.warnings.items()} == {
            "inn": (first.id, "this INN already belongs to “Romashka”"),
            "phone": (first.id, "this Phone already belongs to “Romashka”"),
            "email": (first.id, "this Email already belongs to “Romashka”"),
        }
        assert docs.warnings["inn"].url == f"/customer/{first.id}"
        # a record a merge archived holds nothing any more
        app.extensions["crm"].db.session.commit()
        merging.merge(docs, "Customer", twin.id, [first.id])
        third = docs.create("Customer", {"name": "Third", "inn": "7707083893"})
        assert {n: w.id for n, w in docs.warnings.items()} == {"inn": twin.id}
        assert third.id


def test_true_refuses_with_the_record_named(app: Any) -> None:
    with app.app_context():
        docs = service(app)
        docs.create("Customer", {"name": "Romashka", "code": "R-1"})
        with pytest.raises(ValidationFailed) as refused:
            docs.create("Customer", {"name": "Twin", "code": "R-1"})
        assert refused.value.errors == {"code": "this Code already belongs to “Romashka”"}


def test_form_warns_then_saves_anyway(app: Any) -> None:
    anna = Client(app, "anna")
    made = anna.post_form(
        "/customer/add", {"name": "Romashka", "inn": "7707083893", "phone": "+7 495 123 45 67"}
    )
    assert made.status_code == 302
    first = customer_id(app, "Romashka")
    asked = anna.post_form("/customer/add", {"name": "Twin", "inn": "7707083893"})
    assert asked.status_code == 200  # not saved yet: the form asks
    html = asked.text
    assert "this INN already belongs to “Romashka”" in html
    assert f'href="/customer/{first}"' in html and "Save anyway" in html
    confirm = re.search(r'name="_save_anyway" value="([^"]*)"', html)[1]
    assert customer_id(app, "Twin") is None
    saved = anna.post_form(
        "/customer/add", {"name": "Twin", "inn": "7707083893", "_save_anyway": confirm}
    )
    assert saved.status_code == 302 and customer_id(app, "Twin") is not None
    # a confirmation covers what was shown, not another duplicate found later
    again = anna.post_form(
        "/customer/add",
        {
            "name": "Third",
            "inn": "7707083893",
            "phone": "+7 495 123 45 67",
            "_save_anyway": confirm,
        },
    )
    assert again.status_code == 200 and customer_id(app, "Third") is None


def test_form_refuses_unique_true_with_a_link(app: Any) -> None:
    anna = Client(app, "anna")
    anna.post_form("/customer/add", {"name": "Romashka", "code": "R-1"})
    first = customer_id(app, "Romashka")
    refused = anna.post_form("/customer/add", {"name": "Twin", "code": "R-1"})
    assert refused.status_code == 422
    assert "this Code already belongs to “Romashka”" in refused.text
    assert f'href="/customer/{first}"' in refused.text


def test_rest_warns_in_the_answer_and_refuses_with_422(app: Any) -> None:
    anna = Client(app, "anna")
    first = anna.api("POST", "/api/v1/customer/", {"name": "Romashka", "inn": "7707083893",
                                                    "code": "R-1"})  # fmt: skip
    assert first.status_code == 201 and first.json["warnings"] == []
    twin = anna.api("POST", "/api/v1/customer/", {"name": "Twin", "inn": "7707083893"})
    assert twin.status_code == 201
    (warning,) = twin.json["warnings"]
    assert warning["field"] == "inn" and warning["id"] == first.json["id"]
    assert warning["url"] == f"/customer/{first.json['id']}"
    assert warning["message"] == "this INN already belongs to “Romashka”"
    refused = anna.api("POST", "/api/v1/customer/", {"name": "Other", "code": "R-1"})
    assert refused.status_code == 422
    assert refused.json["errors"] == {"code": "this Code already belongs to “Romashka”"}
    assert refused.json["duplicates"]["code"]["id"] == first.json["id"]


def test_a_race_on_the_unique_index_is_a_field_error(app: Any) -> None:
    """Two saves that both checked before either wrote: the index decides, and
    the loser gets the field's error, not a 500."""
    anna = Client(app, "anna")
    anna.api("POST", "/api/v1/customer/", {"name": "Romashka", "code": "R-1"})
    original = Documents._check_unique
    Documents._check_unique = lambda self, p, lookups=True: None  # type: ignore[method-assign]
    try:
        lost = anna.api("POST", "/api/v1/customer/", {"name": "Twin", "code": "R-1"})
    finally:
        Documents._check_unique = original  # type: ignore[method-assign]
    assert lost.status_code == 422
    assert "already belongs to another record" in lost.json["errors"]["code"]


def customer_id(app: Any, name: str) -> int | None:
    with app.app_context():
        t = app.extensions["crm"].models.table("Customer")
        session = app.extensions["crm"].db.session
        return session.execute(sa.select(t.c.id).where(t.c.name == name)).scalar()


def test_check_refuses_other_values(problems_of: Callable[..., list[str]]) -> None:
    bad = CRM.replace("inn:     {type: inn, unique: warn", "inn:     {type: inn, unique: maybe")
    (problem,) = problems_of({"crm.yaml": bad})
    assert re.match(r"crm\.yaml:\d+:\d+: .*unique.*must be true, false or warn", problem), problem


def test_a_layer_may_strengthen_but_not_weaken(problems_of: Callable[..., list[str]]) -> None:
    strengthen = "documents:\n  Customer:\n    fields:\n      inn: {unique: true}\n"
    weaken = "documents:\n  Customer:\n    fields:\n      code: {unique: warn}\n"
    assert problems_of({"crm.yaml": CRM, "zz.yaml": strengthen}) == []
    (problem,) = problems_of({"crm.yaml": CRM, "zz.yaml": weaken})
    assert problem.startswith("zz.yaml:4:14:") and "not undo it" in problem
    rows = CRM.replace(
        "      manager: {type: ref, to: User, default: current_user}\n",
        "      manager: {type: ref, to: User, default: current_user}\n"
        "      lines: {type: table, fields: {serial: {type: string, unique: warn}}}\n",
    )
    assert any("not to a table's rows" in p for p in problems_of({"crm.yaml": rows}))
