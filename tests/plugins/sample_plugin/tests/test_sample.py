"""The sample plugin's own test: written as its author would, with only the
public API and the fixtures the framework ships (``crm_app``, ``crm_login``,
``crm_drain``, from the ``pytest11`` entry point ``crm``)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.api import MetadataError

METADATA = """
roles:
  manager: {label: Manager}
documents:
  Company:
    title: "{{ name }}"
    fields:
      name: {type: string, required: true}
      ogrn: {type: ogrn}
      note: {type: string}
    statuses:
      initial: lead
      states: {lead: {label: Lead}, client: {label: Client}}
      transitions: [{from: lead, to: client}]
    access:
      manager: {read: all, create: true, update: all}
"""
SETTINGS = {"sample": {"greeting": "Welcome", "watch": "Company"}}


def test_a_status_change_gets_its_note_from_the_job_and_the_page_shows_the_section(
    crm_app: Any, crm_login: Any, crm_drain: Any
) -> None:
    app = crm_app(METADATA, plugins=SETTINGS)
    anna = crm_login(app, "manager")
    made = anna.api("POST", "/api/v1/company/", json={"name": "Romashka", "ogrn": "1027700132195"})
    assert made.status_code == 201, made.text
    company = made.json["id"]
    moved = anna.api("POST", f"/api/v1/company/{company}/transition", json={"to": "client"})
    assert moved.status_code == 200, moved.text
    assert anna.api("GET", f"/api/v1/company/{company}").json["result"]["note"] is None

    assert crm_drain(app) >= 1

    assert anna.api("GET", f"/api/v1/company/{company}").json["result"]["note"] == "Welcome: client"
    page = anna.get(f"/company/{company}")
    assert "sample-greeting" in page.text and "Welcome" in page.text


def test_the_field_type_refuses_a_wrong_check_digit(crm_app: Any, crm_login: Any) -> None:
    app = crm_app(METADATA, plugins=SETTINGS)
    anna = crm_login(app, "manager")
    bad = anna.api("POST", "/api/v1/company/", json={"name": "R", "ogrn": "1027700132196"})
    assert bad.status_code == 422
    assert "check digit" in bad.text


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"watch": "Compny"}, "the `sample` plugin watches an unknown document type `Compny` "
                              "(did you mean `Company`?)"),
        ({"watch": "Company", "note_field": "ogrn"}, "the `sample` plugin writes its note to "
         "`Company.ogrn`, which must be a string or text field"),
        ({"smtp_port": "twenty-five"}, "the settings of the `sample` plugin: `smtp_port` not "
                                       "a valid integer"),
        ({"wacth": "Company"}, "unknown key `wacth` in the settings of the `sample` plugin "
                               "(did you mean `watch`?)"),
    ],
)  # fmt: skip
def test_a_wrong_setting_is_one_line_at_its_place(
    crm_app: Any, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(MetadataError) as caught:
        crm_app(METADATA, plugins={"sample": settings})
    [problem] = caught.value.problems
    assert problem.message == message
    assert problem.loc.file.endswith("config.yaml")
