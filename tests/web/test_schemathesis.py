"""Property-based fuzzing of the REST API from its own OpenAPI document.

schemathesis reads /api/v1/_openapi as a logged-in client and sends every
document operation valid and invalid requests, in-process through WSGI.
Whatever it sends, the API answers without a server error, and every answer
conforms to the document: a status code it lists, its media type, headers and
the response body schema. Bounded (25 examples per operation and mode,
derandomized) to stay well under 90 s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import schemathesis
from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from engine.registry import USER

CONFIG = "name: Fuzz Ltd\nlocale: en\nregion: RU\nlayers: []\n"

FUZZ = """
roles:
  manager:    {label: Manager}
  sales_head: {label: Head of sales}
documents:
  Customer:
    title: "{{ name }}"
    owner: manager
    fields:
      name:    {type: string, required: true, max_length: 100, unique: true}
      inn:     {type: inn}
      phone:   {type: phone}
      email:   {type: email}
      site:    {type: url}
      segment: {type: enum, values: [A, B, C]}
      since:   {type: date}
      vip:     {type: boolean}
      code:    {type: string, pattern: "[A-Z]{3}"}
      source:  {type: string, readonly: true, default: web}
      manager: {type: ref, to: User, default: current_user}
    list: {columns: [name, segment, manager], search: [name]}
    access:
      manager:    {read: own, create: true, update: own}
      sales_head: {read: all, create: true, update: all, delete: true}
  Deal:
    numbering: {prefix: "D-", width: 5}
    title: "{{ number }} {{ customer }}"
    owner: manager
    fields:
      customer: {type: ref, to: Customer, required: true}
      amount:   {type: money, min: 0}
      share:    {type: decimal, digits: 5, places: 2, max: 100}
      seats:    {type: integer, min: 1, max: 1000}
      manager:  {type: ref, to: User, default: current_user}
      planned_close: {type: date}
      meeting:  {type: datetime}
      loss_reason: {type: text}
      lines:
        type: table
        fields:
          product: {type: string, required: true}
          qty:     {type: decimal, default: 1, min: 0}
          price:   {type: money}
          total:   {type: money, compute: "(qty or 0) * (price or 0)"}
      total: {type: money, compute: "lines | sum(attribute='total')"}
    statuses:
      field: stage
      initial: new
      states:
        new:      {label: New}
        proposal: {label: Proposal, require: [planned_close]}
        followup: {label: Follow-up, require_next: {document: Call, min: 1, link: deal}}
        won:      {label: Won, final: true, outcome: won}
        lost:     {label: Lost, final: true, outcome: lost, require: [loss_reason]}
      transitions:
        - {from: new, to: proposal, when: "amount and amount > 0"}
        - {from: proposal, to: won, roles: [sales_head]}
        - {from: [new, proposal], to: followup}
        - {from: "*", to: lost}
    list: {columns: [number, customer, stage, amount, manager], search: [number]}
    access:
      manager:    {read: own, create: true, update: own}
      sales_head: {read: all, create: true, update: all, delete: true}
  Call:
    title: "{{ subject }}"
    owner: manager
    fields:
      subject: {type: string, required: true}
      deal:    {type: ref, to: Deal, required: true}
      due:     {type: datetime, required: true}
      manager: {type: ref, to: User, default: current_user}
    access:
      manager:    {read: own, create: true, update: own}
      sales_head: {read: all, create: true, update: all, delete: true}
"""

#: examples per operation and generation mode
EXAMPLES = 25
#: every answer is one the document describes: its status code, media type,
#: headers and body schema
CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def seed(client: Any, headers: dict[str, str]) -> None:
    """A few records for the generated ids to hit (ids start at 1)."""
    for i in range(3):
        customer = client.post(
            "/api/v1/customer/", json={"name": f"Seed {i}"}, headers=headers
        ).json["id"]
        deal = client.post(
            "/api/v1/deal/",
            json={"customer": customer, "amount": 10, "lines": [{"product": "x", "price": 2}]},
            headers=headers,
        ).json["id"]
        client.post(
            "/api/v1/call/",
            json={"subject": f"Call {i}", "deal": deal, "due": "2031-01-01T10:00:00Z"},
            headers=headers,
        )


def test_no_request_makes_the_api_fail(crm_app: Callable[..., Flask]) -> None:
    app = crm_app(FUZZ, CONFIG)
    # the fixture's SECRET_KEY is too short to sign a JWT without a warning
    app.config["JWT_SECRET_KEY"] = "a signing key of more than thirty-two bytes"
    client = app.test_client()
    login = client.post(
        "/api/v1/security/login",
        json={"username": "admin", "password": "secret", "provider": "db"},
    )
    assert login.status_code == 200, login.text
    headers = {"Authorization": f"Bearer {login.json['access_token']}"}
    seed(client, headers)

    resources = "|".join(
        d.resource for d in app.extensions["crm"].registry.documents.values() if d.name != USER
    )
    schema = schemathesis.openapi.from_wsgi("/api/v1/_openapi", app, headers=headers).include(
        path_regex=rf"^/api/v1/({resources})/"
    )
    registry = app.extensions["crm"].registry
    refs = {  # ref fields per resource, to aim at seeded records
        f"/api/v1/{d.resource}/": [f.name for f in d.fields.values() if f.type == "ref"]
        for d in registry.documents.values()
    }
    failures: list[str] = []
    calls = {"n": 0}
    operations = [result.ok() for result in schema.get_all_operations()]
    # list, post, get, put, delete, lookup, merge, undo a merge; deal's 2 more
    assert len(operations) == 3 * 8 + 2
    # deletes last, so that the records the other operations aim at are there
    operations.sort(key=lambda op: op.method.upper() == "DELETE")

    def aim(case: Any) -> None:
        """Point the case at seeded records: its refs, and the version a PUT must send."""
        if not isinstance(case.body, dict):
            return
        for name in refs.get(case.path.split("{")[0], ()):
            if name in case.body:
                case.body[name] = 1  # the admin, and the first seeded record of each type
        if case.method == "PUT":
            current = client.get(case.formatted_path, headers=headers)
            if current.status_code == 200:
                case.body["version"] = current.json["version"]

    def fuzz(operation: Any, mode: schemathesis.GenerationMode, aimed: bool) -> None:
        """``EXAMPLES`` generated requests, ``aimed`` at seeded records or at random."""
        fixed = {"pk": 2} if aimed and "{pk}" in operation.path else None

        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=fixed))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            if aimed:
                aim(case)
            response = case.call(headers=headers)
            calls["n"] += 1
            said = (
                f"{case.method} {case.formatted_path} query={case.query} "
                f"body={case.body!r} → {response.status_code} {response.text[:200]}"
            )
            if response.status_code >= 500:
                failures.append(said)
            try:
                case.validate_response(response, checks=CONFORMANCE, headers=headers)
            except (AssertionError, BaseExceptionGroup) as exc:  # the checks that failed
                failures.append(f"{said}\n    {str(exc).strip()[:600]}")

        try:
            run()
        except Unsatisfiable:
            # negative mode with the path fixed: the operation has nothing else to spoil
            assert fixed is not None and mode == schemathesis.GenerationMode.NEGATIVE

    for operation in operations:
        for aimed in (False, True):
            for mode in (
                schemathesis.GenerationMode.POSITIVE,
                schemathesis.GenerationMode.NEGATIVE,
            ):
                fuzz(operation, mode, aimed)

    assert not failures, "\n".join(failures[:20])
    assert calls["n"] >= len(operations) * EXAMPLES  # it did call the API
