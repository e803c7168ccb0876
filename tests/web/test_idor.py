"""Nobody reaches another user's record by its id through the REST API.

For every document type of a configuration (the registry is walked, so a
type added tomorrow is covered), anna creates a record; boris holds the same
role with `own` access and must not learn that it exists: 404 on every
endpoint that takes its id, absent from lists, counts, searches and
lookups, refused as a ref. helen reads everything. A role no rule mentions
gets 403.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from engine import access, clock
from engine.access import Principal
from engine.registry import USER, DocType, Field, Registry

CONFIG = "name: Own Ltd\nlocale: en\nregion: RU\nlayers: []\n"
BASE = "name: Base Ltd\nlocale: en\nregion: RU\nlayers: [base]\n"

#: every type is `own` for managers, with every field type, a table, statuses
#: and refs between types
OWN = """
roles:
  manager:    {label: Manager}
  sales_head: {label: Head of sales}
  operator:   {label: Operator}
documents:
  Customer:
    title: "{{ name }}"
    owner: manager
    fields:
      name:    {type: string, required: true}
      phone:   {type: phone}
      manager: {type: ref, to: User, default: current_user}
    access:
      manager:    {read: own, create: true, update: own, delete: own}
      sales_head: {read: all, create: true, update: all, delete: true}
  Deal:
    numbering: {prefix: "D-", width: 5}
    title: "{{ number }} {{ customer }}"
    owner: manager
    fields:
      customer: {type: ref, to: Customer, required: true}
      amount:   {type: money, required: true}
      kind:     {type: enum, values: [new, repeat], required: true}
      manager:  {type: ref, to: User, default: current_user}
      lines:
        type: table
        required: true
        fields:
          product: {type: string, required: true}
          qty:     {type: decimal, required: true}
    statuses:
      field: stage
      initial: new
      states: {new: {}, won: {final: true}, lost: {final: true}}
    access:
      manager:    {read: own, create: true, update: own, delete: own}
      sales_head: {read: all, create: true, update: all, delete: true}
  Visit:
    title: "{{ topic }}"
    owner: owner
    fields:
      topic:   {type: string, required: true}
      deal:    {type: ref, to: Deal, required: true}
      day:     {type: date, required: true}
      at:      {type: datetime, required: true}
      minutes: {type: integer, required: true, min: 5}
      paid:    {type: boolean}
      email:   {type: email, required: true}
      site:    {type: url, required: true}
      notes:   {type: text, required: true}
      owner:   {type: ref, to: User, required: true}
    statuses: {initial: planned, states: {planned: {}, done: {}}}
    access:
      manager:    {read: own, create: true, update: own, delete: own}
      sales_head: {read: all, create: true, update: all, delete: true}
"""

_numbers = itertools.count(1)


def user_ids(app: Flask) -> dict[str, int]:
    with app.app_context():
        state = app.extensions["crm"]
        users = state.models.table(USER)
        rows = state.db.session.execute(sa.select(users.c.username, users.c.id))
        return {name: ident for name, ident in rows}


def principal(app: Flask, username: str) -> Principal:
    with app.app_context():
        user = app.extensions["crm"].appbuilder.sm.find_user(username=username)
        return Principal(user.id, username, frozenset(r.name for r in user.roles))


def sample(f: Field, ref: Callable[[str], int]) -> Any:
    """A valid value for a required field."""
    n = next(_numbers)
    values: dict[str, Any] = {
        "string": f"{f.name} {n}", "text": f"{f.name} {n}", "decimal": "2.5", "money": "100.00",
        "boolean": True, "date": "2031-01-15", "datetime": "2031-01-15T10:00:00+00:00",
        "phone": "+7 495 123-45-67", "email": f"x{n}@example.org", "url": "https://example.org",
        "inn": "7707083893",
    }  # fmt: skip
    if f.type == "integer":
        return max(int(f.min or 1), 1)
    if f.type == "enum":
        return next(iter(f.values))
    if f.type == "ref":
        return ref(f.to or USER)
    if f.type not in values:
        pytest.fail(f"no sample value for the field type `{f.type}` of `{f.name}`")
    return values[f.type]


def required_values(
    d: DocType, fields: dict[str, Field], ref: Callable[[str], int]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields.values():
        if not f.required or f.default is not None or f.system or f.compute or f.readonly:
            continue
        if d.statuses is not None and f.name == d.statuses.field:
            continue
        if f.type == "table":
            out[f.name] = [required_values(d, f.fields, ref)]
        else:
            out[f.name] = sample(f, ref)
    return out


class Creator:
    """Makes records as one user, with whatever records their required refs need."""

    def __init__(self, app: Flask, browser: Any, username: str):
        self.registry: Registry = app.extensions["crm"].registry
        self.browser = browser
        self.user_id = user_ids(app)[username]
        self.made: dict[str, int] = {}

    def ref(self, doctype: str) -> int:
        if doctype == USER:
            return self.user_id
        if doctype not in self.made:
            self.make(doctype)
        return self.made[doctype]

    def values(self, doctype: str) -> dict[str, Any]:
        d = self.registry.documents[doctype]
        return required_values(d, d.fields, self.ref)

    def make(self, doctype: str) -> int:
        d = self.registry.documents[doctype]
        response = self.browser.api("POST", f"/api/v1/{d.resource}/", self.values(doctype))
        assert response.status_code == 201, (doctype, response.text)
        self.made[doctype] = response.json["id"]
        return self.made[doctype]


def types_of(app: Flask) -> Iterator[DocType]:
    yield from (d for d in app.extensions["crm"].registry.documents.values() if not d.builtin)


@pytest.mark.parametrize("metadata, config", [(OWN, CONFIG), ("{}", BASE)], ids=["own", "base"])
def test_another_users_record_is_not_found_through_the_api(
    crm_app: Callable[..., Flask], login: Callable[..., Any], metadata: str, config: str
) -> None:
    app = crm_app(metadata, config)
    registry: Registry = app.extensions["crm"].registry
    anna, boris, helen = login(app, "anna"), login(app, "boris"), login(app, "helen")
    as_boris = principal(app, "boris")
    makers = {"anna": Creator(app, anna, "anna"), "boris": Creator(app, boris, "boris"),
              "helen": Creator(app, helen, "helen")}  # fmt: skip

    def maker(name: str, doctype: str) -> Creator:
        """anna's, unless managers may not create the type: then the head's."""
        if name == "anna" and not access.allowed(
            registry, principal(app, "anna"), doctype, "create"
        ):
            return makers["helen"]
        return makers[name]

    def engine_made(doctype: str) -> int:
        """A record of a type no role may create, which the engine writes itself
        (the ABC/XYZ history): inserted as the engine does, anna's."""
        d, anna_makes = registry.documents[doctype], makers["anna"]
        values: dict[str, Any] = {}
        for f in d.fields.values():
            if f.required and f.stored:
                values[f.column] = (
                    clock.now() if f.type == "datetime" else sample(f, anna_makes.ref)
                )
        if d.owner:
            values[d.fields[d.owner].column] = anna_makes.user_id
        with app.app_context():
            session = app.extensions["crm"].db.session
            table = app.extensions["crm"].models.table(doctype)
            made = session.execute(table.insert().values(values)).inserted_primary_key[0]
            session.commit()
        return int(made)

    def nobody_creates(doctype: str) -> bool:
        return not any(
            access.allowed(registry, principal(app, who), doctype, "create")
            for who in ("anna", "helen")
        )

    theirs = {
        d.name: engine_made(d.name) if nobody_creates(d.name) else maker("anna", d.name).ref(d.name)
        for d in types_of(app)
    }
    mine = {
        d.name: makers["boris"].ref(d.name)
        for d in types_of(app)
        if access.allowed(registry, as_boris, d.name, "create")
    }
    if metadata == OWN:  # the strict case: every type is `own` for boris
        assert all(access.rule(registry, as_boris, t, "read") == "own" for t in theirs)

    checked = 0
    for d in types_of(app):
        base = f"/api/v1/{d.resource}/"
        ident = theirs[d.name]
        seen = helen.api("GET", f"{base}{ident}")
        assert seen.status_code == 200, (d.name, seen.text)  # the head reads all
        version = seen.json["version"]
        helen_lookup = {
            m["id"]: m["text"] for m in helen.api("GET", f"{base}_lookup?q=").json["result"]
        }
        assert ident in helen_lookup and ident in helen.api("GET", base).json["ids"]
        if d.statuses is not None:
            assert helen.api("GET", f"{base}{ident}/history").status_code == 200

        rule = {a: access.rule(registry, as_boris, d.name, a) for a in ("read", "update", "delete")}
        calls = {
            "read": [boris.api("GET", f"{base}{ident}"),
                     boris.api("GET", f"{base}{ident}/history")],
            "update": [boris.api("PUT", f"{base}{ident}", {"version": version}),
                       boris.api("POST", f"{base}{ident}/transition", {"to": "lost", "version": version})],
            "delete": [boris.api("DELETE", f"{base}{ident}")],
        }  # fmt: skip
        for action, responses in calls.items():
            if rule[action] is True:
                continue
            for response in responses:
                expected = 403 if rule[action] is False else 404
                if d.statuses is None and response.request.path.endswith(
                    ("/history", "/transition")
                ):
                    expected = 404  # no such endpoint for a type without statuses
                assert response.status_code == expected, (d.name, action, response.request.path)
                assert response.mimetype == "application/json"
                checked += 1
        if rule["read"] is True:
            continue
        if rule["read"] is False:
            assert boris.api("GET", base).status_code == 403
            assert boris.api("GET", f"{base}_lookup?q=").status_code == 403
            continue
        # lists, counts, filters, searches and lookups: as if it did not exist
        own = [mine[d.name]] if d.name in mine else []
        page = boris.api("GET", base).json
        assert page["ids"] == own and page["count"] == len(own), d.name
        assert boris.api("GET", f'{base}?filter={{"id": {ident}}}').json["count"] == 0
        text = helen_lookup[ident]
        assert ident not in boris.api("GET", base, query_string={"search": text}).json["ids"]
        for q in ("", text[:3], text):
            found = boris.api("GET", f"{base}_lookup", query_string={"q": q}).json["result"]
            assert ident not in [m["id"] for m in found], (d.name, q)
        checked += 1
    assert checked >= 3 * len(theirs) if metadata == OWN else checked > 0

    # nor may boris point at it: a ref to a record he cannot read is refused
    refs = 0
    for d in types_of(app):
        if not access.allowed(registry, as_boris, d.name, "create"):
            continue
        for f in d.fields.values():
            target = f.to or USER
            if (
                f.type != "ref"
                or target == USER
                or access.rule(registry, as_boris, target, "read") is True
            ):
                continue
            values = {**makers["boris"].values(d.name), f.name: theirs[target]}
            response = boris.api("POST", f"/api/v1/{d.resource}/", values)
            assert response.status_code == 422, (d.name, f.name, response.text)
            assert response.json["errors"][f.name].startswith("there is no"), response.json
            refs += 1
    assert refs > 0

    # and after all that, everything of anna's is as it was
    for d in types_of(app):
        assert helen.api("GET", f"/api/v1/{d.resource}/{theirs[d.name]}").json["version"] == 1


def test_a_role_no_rule_mentions_is_forbidden(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(OWN, CONFIG)
    with app.app_context():
        sm = app.extensions["crm"].appbuilder.sm
        sm.add_user(
            "olga", "Olga", "Test", "olga@example.org", [sm.find_role("operator")], "secret"
        )
    anna = login(app, "anna")
    theirs = {d.name: Creator(app, anna, "anna").ref(d.name) for d in types_of(app)}
    olga = login(app, "olga")
    # olga can open no form, so she has no CSRF token: she calls with a JWT
    app.config["JWT_SECRET_KEY"] = "a signing key of more than thirty-two bytes"
    token = (
        app.test_client()
        .post(
            "/api/v1/security/login",
            json={"username": "olga", "password": "secret", "provider": "db"},
        )
        .json["access_token"]
    )
    for headers in ({}, {"Authorization": f"Bearer {token}"}):
        for d in types_of(app):
            base, ident = f"/api/v1/{d.resource}/", theirs[d.name]
            urls = [("GET", base), ("GET", f"{base}_lookup?q="), ("GET", f"{base}{ident}"),
                    ("PUT", f"{base}{ident}"), ("DELETE", f"{base}{ident}")]  # fmt: skip
            if d.statuses is not None:
                urls += [("GET", f"{base}{ident}/history"), ("POST", f"{base}{ident}/transition")]
            urls.append(("POST", base))
            if not headers:  # without a token a session's writes stop at CSRF
                urls = [u for u in urls if u[0] == "GET"]
            for method, url in urls:
                response = olga.client.open(
                    url, method=method, json={"version": 1}, headers=headers
                )
                assert response.status_code == 403, (method, url, response.text)
                assert response.json["message"].startswith("Your roles may not")


def test_records_a_transition_creates_cannot_point_at_hidden_records(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    """The next Interaction a done one requires is a new record like any other."""
    app = crm_app("{}", BASE)
    anna, boris = login(app, "anna"), login(app, "boris")
    hidden = anna.api("POST", "/api/v1/customer/", {"name": "Anna's"}).json["id"]
    mine = boris.api("POST", "/api/v1/customer/", {"name": "Boris's"}).json["id"]
    interest = boris.api("POST", "/api/v1/interest/", {"subject": "S", "customer": mine}).json["id"]
    first = boris.api("POST", "/api/v1/interaction/", {
        "subject": "First", "planned_at": "2031-01-01T10:00:00Z", "customer": mine, "interest": interest,
    }).json["id"]  # fmt: skip
    url = f"/api/v1/interaction/{first}/transition"
    planned = {"subject": "Next", "planned_at": "2031-02-01T10:00:00Z"}
    for customer in (hidden, 999_999):  # hidden and missing read alike
        response = boris.api("POST", url, {
            "to": "done", "fields": {"result": "Done"}, "next": [{**planned, "customer": customer}],
        })  # fmt: skip
        assert response.status_code == 422, response.text
        assert response.json["errors"] == {"next.0.customer": f"there is no “Customer” #{customer}"}
    assert boris.api("GET", "/api/v1/interaction/").json["count"] == 1
    response = boris.api("POST", url, {
        "to": "done", "fields": {"result": "Done"}, "next": [{**planned, "customer": mine}],
    })  # fmt: skip
    assert response.status_code == 200, response.text
    assert boris.api("GET", "/api/v1/interaction/").json["count"] == 2
