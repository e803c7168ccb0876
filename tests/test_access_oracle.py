"""The permission oracle: what every channel shows equals what the rules allow.

hypothesis generates small configurations (2–4 types, refs between them, 2–3
roles with `true`/`own`/`false` read rules per type, an owner field, and
per role and type a field rule `none`/`read`/`write` on a `secret` field),
records owned by different users, and users holding one role each. A model
written here in plain Python over the generated rules and rows (no engine
code) says which records each user may see; the test then asks every channel
the web app offers through Flask's test client — HTML list, REST list and
record, counts, filters on the record's own fields and dotted through refs,
sort, search, CSV export, kanban, calendar, the record page with its
timeline, the ref picker, REST labels — and fails on any disagreement. The
`secret` field is absent where it is hidden, refused as a filter, a dotted
filter and a sort, not searched, not exported, and a write of it is refused
unless its rule is `write`.

Bounded for CI: a fixed number of examples, derandomized. Run with -s to see
how many examples and requests were checked.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from engine import migrate  # noqa: E402
from engine.app import create_app  # noqa: E402
from engine.documents import Documents  # noqa: E402
from engine.security import sync  # noqa: E402

EXAMPLES = 6
RULES = ("true", "own", "false")
LEVELS = ("none", "read", "write")
READ = {"true": True, "own": "own", "false": False}
DAY = dt.date(2026, 3, 10)
HIDDEN = "— no access"


@dataclass
class World:
    """A generated configuration and its rows, as plain data."""

    types: list[str]
    #: type → the type its ref `link` points to (or absent)
    refs: dict[str, str]
    roles: list[str]
    #: (role, type) → "true" | "own" | "false"
    rules: dict[tuple[str, str], str]
    #: user name → role
    users: dict[str, str]
    #: (role, type) → the level of the `secret` field: "none" | "read" | "write"
    levels: dict[tuple[str, str], str] = field(default_factory=dict)
    #: (type, index) → (owner user, index of the link's target in its type or None)
    rows: dict[tuple[str, int], tuple[str, int | None]] = field(default_factory=dict)


@st.composite
def worlds(draw: Any) -> World:
    n = draw(st.integers(2, 4))
    types = [f"T{i}" for i in range(n)]
    refs = {}
    for i in range(1, n):
        if draw(st.booleans()) or i == 1:
            refs[types[i]] = types[draw(st.integers(0, i - 1))]
    roles = [f"role{i}" for i in range(draw(st.integers(2, 3)))]
    rules = {(r, t): draw(st.sampled_from(RULES)) for r in roles for t in types}
    users = {f"user{i}": draw(st.sampled_from(roles)) for i in range(3)}
    levels = {(r, t): draw(st.sampled_from(LEVELS)) for r in roles for t in types}
    world = World(types, refs, roles, rules, users, levels)
    for t in types:
        for k in range(draw(st.integers(1, 4))):
            owner = draw(st.sampled_from(sorted(users)))
            target = refs.get(t)
            link = None
            if target is not None:
                count = sum(1 for (tt, _) in world.rows if tt == target)
                link = draw(st.one_of(st.none(), st.integers(0, count - 1)))
            world.rows[(t, k)] = (owner, link)
    return world


# --- the model: plain Python over the rules and rows ---------------------------------


def may_read(world: World, user: str, t: str, owner: str) -> bool:
    rule = world.rules[(world.users[user], t)]
    return rule == "true" or (rule == "own" and owner == user)


def type_readable(world: World, user: str, t: str) -> bool:
    return world.rules[(world.users[user], t)] != "false"


def name_of(t: str, k: int) -> str:
    return f"{t.lower()}n{k}secret"


def secret_of(t: str, k: int) -> str:
    """The `secret` field's value: shares no text with any name."""
    return f"zq{t.lower()}v{k}x"


def level(world: World, user: str, t: str) -> str:
    return world.levels[(world.users[user], t)]


# --- the app -------------------------------------------------------------------------


def yaml_of(world: World) -> str:
    """The configuration, written as JSON (which is YAML)."""
    documents: dict[str, Any] = {}
    for t in world.types:
        link = world.refs.get(t)
        fields: dict[str, Any] = {
            "name": {"type": "string", "required": True},
            "kind": {"type": "enum", "values": ["a", "b"], "required": True},
            "day": {"type": "date"},
            "manager": {"type": "ref", "to": "User", "default": "current_user"},
            "secret": {"type": "string"},
        }
        if link:
            fields["link"] = {"type": "ref", "to": link}
        documents[t] = {
            # a title that names its ref: pages, cards and entries must not name a hidden one
            "title": "{{ name }}{% if link %} of {{ link }}{% endif %}" if link else "{{ name }}",
            "owner": "manager",
            "fields": fields,
            "list": {
                "columns": ["name", "kind", "secret", *(["link"] if link else [])],
                "search": ["name", "secret"],
            },
            "views": {"kanban": {"by": "kind"}, "calendar": {"date": "day", "owner": "manager"}},
            "access": {
                r: {
                    "read": READ[world.rules[(r, t)]],
                    "create": True,
                    **({"fields": {"secret": world.levels[(r, t)]}} if world.levels else {}),
                }
                for r in world.roles
            },
        }
    roles = {r: {"label": r} for r in world.roles}
    return json.dumps({"roles": roles, "documents": documents}, indent=1)


def build(world: World, folder: Path, db_url: str) -> tuple[Flask, dict[tuple[str, int], int]]:
    (folder / "crm.yaml").write_text(yaml_of(world), encoding="utf-8")
    (folder / "config.yaml").write_text(
        f"name: Oracle Ltd\nlocale: en\nregion: RU\nlayers: []\ndatabase: {db_url}\n",
        encoding="utf-8",
    )
    app = create_app(
        folder,
        {
            "TESTING": True,
            "SECRET_KEY": "a-test-secret-long-enough-to-sign-tokens-0123456789",
            "WTF_CSRF_ENABLED": False,
            "FAB_PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
        },
    )
    state = app.extensions["crm"]
    engine = sa.create_engine(db_url)
    try:
        migrate.apply(state.models, engine, migrate.plan(state.models, engine))
    finally:
        engine.dispose()
    ids: dict[tuple[str, int], int] = {}
    with app.app_context():
        sync(state.appbuilder, state.registry)
        sm = state.appbuilder.sm
        uid = {}
        for user, role in world.users.items():
            u = sm.add_user(user, user, "Test", f"{user}@example.org", [sm.find_role(role)], "secret")  # fmt: skip
            uid[user] = u.id
        session = state.db.session
        for t in world.types:
            for (tt, k), (owner, link) in world.rows.items():
                if tt != t:
                    continue
                docs = Documents(state.models, session, uid[owner], ["Admin"], username=owner)
                values: dict[str, Any] = {
                    "name": name_of(t, k), "kind": "ab"[k % 2], "day": DAY, "secret": secret_of(t, k),
                }  # fmt: skip
                if link is not None:
                    values["link"] = ids[(world.refs[t], link)]
                ids[(t, k)] = docs.create(t, values).id
        session.commit()
    return app, ids


def dispose(app: Flask) -> None:
    with app.app_context():
        app.extensions["crm"].db.session.remove()
        app.extensions["crm"].db.engine.dispose()
    app.extensions["crm"].models.dispose()


def login(app: Flask, user: str) -> Any:
    client = app.test_client()
    r = client.post("/login/", data={"username": user, "password": "secret"})
    assert r.status_code == 302, f"login failed for {user}"
    return client


# --- the check -----------------------------------------------------------------------

TOTALS = {"examples": 0, "requests": 0, "types": 0, "records": 0, "none": 0, "read": 0, "write": 0}


class Asker:
    def __init__(self, client: Any, user: str):
        self.client, self.user = client, user

    def get(self, url: str) -> Any:
        TOTALS["requests"] += 1
        return self.client.get(url)

    def post_json(self, url: str, body: Any) -> Any:
        """A write as a token client (no session cookie, no CSRF token)."""
        if not hasattr(self, "token"):
            api = self.client.application.test_client()
            r = api.post(
                "/api/v1/security/login",
                json={"username": self.user, "password": "secret", "provider": "db"},
            )
            assert r.status_code == 200, r.text
            self.api, self.token = api, r.json["access_token"]
        TOTALS["requests"] += 1
        return self.api.post(url, json=body, headers={"Authorization": f"Bearer {self.token}"})


def check(world: World, app: Flask, ids: dict[tuple[str, int], int]) -> None:
    back = {(k[0], v): k for k, v in ids.items()}
    for user in world.users:
        ask = Asker(login(app, user), user)
        for t in world.types:
            res = t.lower()
            where = f"{user} ({world.users[user]}) on {t}"
            mine = sorted(
                ids[(tt, k)]
                for (tt, k), (owner, _) in world.rows.items()
                if tt == t and may_read(world, user, t, owner)
            )
            hidden = sorted(ids[(tt, k)] for (tt, k) in world.rows if tt == t and ids[(tt, k)] not in mine)  # fmt: skip
            if not type_readable(world, user, t):
                assert ask.get(f"/api/v1/{res}/").status_code == 403, where
                assert ask.get(f"/{res}/").status_code in (302, 403), where
                continue
            # REST list, count, labels
            r = ask.get(f"/api/v1/{res}/?page_size=100")
            assert r.status_code == 200, (where, r.text)
            assert sorted(r.json["ids"]) == mine, where
            assert r.json["count"] == len(mine), where
            link_type = world.refs.get(t)
            for row in r.json["result"]:
                if row.get("link") is None:
                    continue
                tk = back[(link_type, row["link"])]
                target_owner = world.rows[tk][0]
                seen = may_read(world, user, link_type, target_owner)  # type: ignore[arg-type]
                label = row["link_label"]
                assert (label == name_of(*tk)) if seen else (label.endswith(HIDDEN)), (where, row)
                # a dotted filter through the ref matches only a readable target
                spec = json.dumps({"id": row["id"], "link.name": name_of(*tk)})
                f = ask.get(f"/api/v1/{res}/?filter={spec}")
                assert f.json["count"] == (1 if seen else 0), (where, spec)
                spec = json.dumps({"id": row["id"], "link.name": {"contains": "secret"}})
                f = ask.get(f"/api/v1/{res}/?filter={spec}")
                assert f.json["count"] == (1 if seen else 0), (where, spec)
            # filters on own fields, sort, search
            spec = json.dumps({"kind": "a"})
            f = ask.get(f"/api/v1/{res}/?filter={spec}&page_size=100")
            want = sorted(i for i in mine if back[(t, i)][1] % 2 == 0)
            assert sorted(f.json["ids"]) == want, (where, spec)
            s = ask.get(f"/api/v1/{res}/?order=-name&page_size=100")
            assert s.json["ids"] == sorted(mine, key=lambda i: name_of(*back[(t, i)]), reverse=True), where  # fmt: skip
            q = ask.get(f"/api/v1/{res}/?search={t.lower()}n&page_size=100")
            assert sorted(q.json["ids"]) == mine, where
            check_fields(world, ask, t, mine, back, r.json["result"], where)
            # records one by one
            for i in mine + hidden:
                got = ask.get(f"/api/v1/{res}/{i}").status_code
                assert got == (200 if i in mine else 404), (where, i)
            # the ref picker
            p = ask.get(f"/api/v1/{res}/_lookup?q={t.lower()}")
            assert sorted(x["id"] for x in p.json["result"]) == mine, where
            # HTML list, CSV export, kanban, calendar: ids and no hidden names
            secrets = [name_of(tt, k) for (tt, k), (o, _) in world.rows.items() if not may_read(world, user, tt, o)]  # fmt: skip
            html = ask.get(f"/{res}/").text
            assert sorted({int(x) for x in re.findall(rf'/{res}/(\d+)"', html)}) == mine, where
            assert not [s for s in secrets if s in html], where
            text = ask.get(f"/{res}/export.csv").get_data(as_text=True)
            rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))[1:]
            assert sorted(int(x[0]) for x in rows if x) == mine, where
            assert not [s for s in secrets if s in text], where
            kanban = ask.get(f"/{res}/kanban")
            assert kanban.status_code == 200, where
            cards = [ask.get(f"/{res}/kanban/cards?column={c}") for c in "ab"]
            on_board = sorted(card["id"] for r in cards for card in r.json["cards"])
            assert on_board == mine, where
            for s in secrets:
                assert s not in kanban.text + "".join(r.text for r in cards), (where, s)
            cal = ask.get(f"/{res}/calendar?date={DAY:%Y-%m-%d}")
            assert cal.status_code == 200, where
            assert not [s for s in secrets if s in cal.text], where
            assert sorted({int(x) for x in re.findall(rf'/{res}/(\d+)"', cal.text)}) == mine, where
            # the record page: its refs and its timeline
            for i in mine:
                page = ask.get(f"/{res}/{i}").text
                assert not [s for s in secrets if s in page], (where, i)


def check_fields(
    world: World, ask: Asker, t: str, mine: list[int], back: dict[tuple[str, int], tuple[str, int]],
    rows: list[dict[str, Any]], where: str,
) -> None:  # fmt: skip
    """The `secret` field, by its rule: shown, filtered, sorted, searched,
    exported and written only as far as the user's level allows."""
    res, user = t.lower(), ask.user
    TOTALS[level(world, user, t)] += 1
    seen = level(world, user, t) != "none"
    for row in rows:
        assert ("secret" in row) == seen, (where, row)
        if seen:
            assert row["secret"] == secret_of(*back[(t, row["id"])]), (where, row)
    for i in mine:
        got = ask.get(f"/api/v1/{res}/{i}").json["result"]
        assert ("secret" in got) == seen, (where, i)
    # a filter, a sort and a search by it
    spec = json.dumps({"secret": {"contains": "zq"}})
    f = ask.get(f"/api/v1/{res}/?filter={spec}&page_size=100")
    if seen:
        assert f.status_code == 200 and sorted(f.json["ids"]) == mine, (where, spec)
    else:
        assert f.status_code == 400 and "hidden" in f.json["message"], (where, spec)
    o = ask.get(f"/api/v1/{res}/?order=secret&page_size=100")
    assert o.status_code == (200 if seen else 400), (where, "order")
    if seen:
        assert o.json["ids"] == sorted(mine, key=lambda i: secret_of(*back[(t, i)])), where
    q = ask.get(f"/api/v1/{res}/?search=zq{res}v&page_size=100")
    assert sorted(q.json["ids"]) == (mine if seen else []), (where, "search")
    # through the ref: the linked type's rule for the field decides
    link_type = world.refs.get(t)
    if link_type is not None:
        spec = json.dumps({"link.secret": {"contains": "zq"}})
        f = ask.get(f"/api/v1/{res}/?filter={spec}&page_size=100")
        through = level(world, user, link_type) != "none"
        assert f.status_code == (200 if through else 400), (where, spec)
    # the export and the pages
    values = [secret_of(tt, k) for (tt, k) in world.rows if tt == t]
    text = ask.get(f"/{res}/export.csv").get_data(as_text=True)
    header = text.lstrip("\ufeff").splitlines()[0]
    assert ("Secret" in header) == seen, (where, header)
    html = ask.get(f"/{res}/").text
    if not seen:
        assert not [v for v in values if v in text or v in html], where
        for i in mine:
            assert not [v for v in values if v in ask.get(f"/{res}/{i}").text], (where, i)
    # a write of it: refused by field unless the rule is `write` (the record
    # lacks its required name, so nothing is created either way)
    w = ask.post_json(f"/api/v1/{res}/", {"kind": "a", "secret": "new"})
    assert w.status_code == 422, (where, w.text)
    assert ("secret" in w.json["errors"]) == (level(world, user, t) != "write"), (where, w.json)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    # a failing world is printed as it was generated: shrinking one costs an app per try
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(world=worlds())
def test_every_channel_shows_what_the_rules_allow(world: World, pg_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if pg_url:
            engine = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
                conn.execute(sa.text("CREATE SCHEMA public"))
            engine.dispose()
            url = pg_url
        else:
            url = f"sqlite:///{Path(tmp) / 'oracle.db'}"
        app, ids = build(world, Path(tmp), url)
        try:
            check(world, app, ids)
        finally:
            dispose(app)
    TOTALS["examples"] += 1
    TOTALS["types"] += len(world.types)
    TOTALS["records"] += len(world.rows)


def test_the_oracle_checked_enough() -> None:
    """Runs after the oracle (file order): says how much it checked."""
    print(f"\naccess oracle: {TOTALS}")
    if TOTALS["examples"]:
        assert TOTALS["examples"] == EXAMPLES and TOTALS["requests"] > 100 * EXAMPLES, TOTALS
        # every field level met a user on a type they may read
        assert TOTALS["none"] and TOTALS["read"] and TOTALS["write"], TOTALS
