"""The quality check of the client base (``type: quality``): each group
finds exactly the problems planted in a generated base (checked against an
independent computation in Python), similar names within blocks, access
rules on counts and drill-downs, bulk assignment of a manager and fixing a
field in place from the quality page."""

from __future__ import annotations

import datetime as dt
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine import clock
from engine.access import Principal
from engine.errors import MetadataError
from engine.fieldtypes import inn_is_valid
from engine.reports import Context, Params, load_kinds
from engine.reports import quality as Q
from engine.testing import Client, dispose, make_app

USERS = {"admin": ["Admin"], "anna": ["manager"], "boris": ["manager"], "head": ["sales_head"],
         "gone": ["manager"]}  # fmt: skip
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
SYLLABLES = ("ка", "ло", "ми", "ре", "ту", "зо", "ва", "ни", "пе", "гу", "ды", "шо", "бра", "стел")
N = 240


def valid_inn(rng: random.Random) -> str:
    while True:
        head = "".join(rng.choice("0123456789") for _ in range(9))
        weights = (2, 4, 10, 3, 5, 9, 4, 6, 8)
        check = sum(w * int(c) for w, c in zip(weights, head, strict=True)) % 11 % 10
        if inn_is_valid(head + str(check)):
            return head + str(check)


def word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(4)).capitalize()


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[Any]:
    app = make_app(tmp_path / "config", "{}\n", layers=("base",), database=db_url, users=USERS)
    yield app
    dispose(app)


def user_ids(app: Any) -> dict[str, int]:
    state = app.extensions["crm"]
    users = state.models.table("User")
    with app.app_context():
        rows = state.db.session.execute(sa.select(users.c.username, users.c.id)).all()
    return {name: ident for name, ident in rows}


def plant(app: Any) -> dict[str, Any]:
    """A generated base of N customers (valid, distinct, recently active)
    with problems planted among them; written with plain INSERTs, as an
    import from elsewhere or old data would be."""
    rng = random.Random(7)
    state = app.extensions["crm"]
    models = state.models
    users = user_ids(app)
    now = clock.now()
    old = now - dt.timedelta(days=400)
    customers: list[dict[str, Any]] = []
    names: set[str] = set()
    for n in range(1, N + 1):
        name = word(rng)
        while name in names:
            name = word(rng)
        names.add(name)
        customers.append({
            "id": n, "name": f"ООО «{name}»" if n % 3 else name, "kind": "company",
            "inn": valid_inn(rng), "phone": f"+7495{n:07d}", "phone2": None,
            "email": f"c{n}@example.org", "manager_id": users["anna"] if n % 2 else users["boris"],
            "version": 1, "created_at": old,
        })  # fmt: skip
    c = {row["id"]: row for row in customers}
    # duplicates: the same INN (a pair and a triple), the same phone across
    # fields and through a contact person, the same email in another case
    c[2]["inn"] = c[1]["inn"]
    c[5]["inn"] = c[4]["inn"]
    c[6]["inn"] = c[4]["inn"]
    c[8]["phone2"] = c[7]["phone"]
    c[10]["email"] = c[9]["email"].upper()
    # similar names: legal form moved, a Latin letter in a Cyrillic word
    c[11]["name"], c[12]["name"], c[13]["name"] = "ООО Ромашка", "Ромашка ООО", "Ромашкa"
    c[14]["name"], c[15]["name"] = 'ООО "Вектор-1"', "Вектор-2"  # numbers differ: not similar
    c[16]["name"], c[17]["name"] = "ИП Кузнецов Андрей", "Андрей Кузнецов"
    # invalid data that went around the field types
    c[20]["inn"], c[21]["inn"] = "1234567890", "77070838"
    c[22]["phone"] = None  # no phone at all
    c[23]["phone"], c[23]["phone2"] = None, None
    c[24]["phone"] = "8 (495) 123"
    c[25]["email"], c[26]["email"], c[27]["email"] = None, "ivan@", "no at all"
    c[28]["manager_id"], c[29]["manager_id"] = None, users["gone"]
    contacts = [
        {"id": 1, "customer_id": 22, "name": "Contact", "phone": "+79161234567", "version": 1,
         "created_at": old},
        {"id": 2, "customer_id": 30, "name": "Contact", "phone": c[31]["phone"], "version": 1,
         "created_at": old},
    ]  # fmt: skip
    # activity: every customer but 32..35 had an interaction lately
    inactive = {32, 33, 34, 35}
    interactions = [
        {"id": n, "kind": "call", "subject": "Call", "planned_at": now, "customer_id": n,
         "manager_id": c[n]["manager_id"], "version": 1, "status": "planned",
         "created_at": now - dt.timedelta(days=3)}
        for n in c if n not in inactive
    ]  # fmt: skip
    idd = models.registry.documents["Interaction"]
    status_col = idd.fields[idd.statuses.field].column if idd.statuses else None
    for row in interactions:
        row[status_col or "status"] = row.pop("status")
    interactions.append({**interactions[0], "id": N + 1, "customer_id": 33,
                         "created_at": now - dt.timedelta(days=300)})  # fmt: skip
    with app.app_context():
        session = state.db.session
        session.execute(sa.insert(models.table("Customer")), customers)
        session.execute(sa.insert(models.table("ContactPerson")), contacts)
        session.execute(sa.insert(models.table("Interaction")), interactions)
        session.execute(sa.update(models.table("User")).where(models.table("User").c.id == users["gone"]).values(active=False))  # fmt: skip
        if session.get_bind().dialect.name == "postgresql":
            for t in ("Customer", "ContactPerson", "Interaction"):
                name = models.table(t).name
                session.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), 10000)"))  # fmt: skip
        session.commit()
    return {"customers": c, "contacts": contacts, "users": users, "inactive": inactive,
            "recent": {i["customer_id"] for i in interactions if i["created_at"] > now - dt.timedelta(days=180)}}  # fmt: skip


def expected(data: dict[str, Any], visible: set[int] | None = None) -> dict[str, set[int]]:
    """Each group computed in Python from the planted rows, by the rules the
    docs state (not by the report's SQL)."""
    c = {k: v for k, v in data["customers"].items() if visible is None or k in visible}
    contacts = [p for p in data["contacts"] if p["customer_id"] in c]

    def dups(pairs: list[tuple[int, str]]) -> set[int]:
        owners: dict[str, set[int]] = defaultdict(set)
        for ident, key in pairs:
            if key:
                owners[key].add(ident)
        return {i for ids in owners.values() if len(ids) > 1 for i in ids}

    phones = [(i, r[f]) for i, r in c.items() for f in ("phone", "phone2")] + [
        (p["customer_id"], p["phone"]) for p in contacts
    ]
    emails = [(i, (r["email"] or "").lower()) for i, r in c.items()]
    has_phone = {i for i, p in phones if p}
    gone = data["users"]["gone"]
    return {
        "dup_inn": dups([(i, r["inn"]) for i, r in c.items()]),
        "dup_phone": dups(phones),
        "dup_email": dups(emails),
        "dup_name": similar_by_brute_force(c),
        "bad_inn": {i for i, r in c.items() if r["inn"] and not inn_is_valid(r["inn"])},
        "no_phone": set(c) - has_phone,
        "bad_phone": {
            i
            for i, r in c.items()
            if any(r[f] and not E164.match(r[f]) for f in ("phone", "phone2"))
        },
        "no_email": {i for i, r in c.items() if not r["email"]},
        "bad_email": {
            i
            for i, r in c.items()
            if r["email"] and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", r["email"])
        },
        "no_manager": {i for i, r in c.items() if r["manager_id"] in (None, gone)},
        "inactive": set(c) - data["recent"],
    }


def similar_by_brute_force(c: dict[int, dict[str, Any]]) -> set[int]:
    """Every pair compared (no blocks): what the blocked pass must find here."""
    from rapidfuzz import fuzz

    def norm(name: str) -> tuple[str, list[str]]:
        words = Q.normalize(name)
        return " ".join(sorted(words)), sorted(w for w in words if w.isdigit())

    names = {i: norm(r["name"]) for i, r in c.items()}
    out: set[int] = set()
    for i, (a, da) in names.items():
        for j, (b, db) in names.items():
            if i < j and da == db and fuzz.ratio(a, b) >= Q.DEFAULT_SIMILARITY:
                out |= {i, j}
    return out


def context(app: Any, who: Principal | None) -> Context:
    state = app.extensions["crm"]
    return Context(state.models, state.db.session, who, dt.UTC, clock.now())


def principal(app: Any, username: str, roles: tuple[str, ...]) -> Principal:
    return Principal(user_ids(app)[username], username, frozenset(roles))


def found(app: Any, who: Principal | None) -> tuple[dict[str, int], dict[str, set[int]]]:
    """The report's counts by group and each group's drill-down ids."""
    state = app.extensions["crm"]
    report = state.registry.reports["base_quality"]
    kind = load_kinds()["quality"]
    today = clock.today(dt.UTC)
    params = Params(today, today)
    with app.app_context():
        ctx = context(app, who)
        result = kind.run(ctx, report, params)
        counts, ids = {}, {}
        for (i, key), token in result.drill.items():
            assert key == "records"
            counts[token] = result.rows[i]["records"]
            doctype, select = kind.drill(ctx, report, params, token)
            assert doctype == "Customer"
            ids[token] = set(ctx.session.execute(select).scalars())
    return counts, ids


def test_each_group_finds_exactly_the_planted_problems(app: Any) -> None:
    data = plant(app)
    want = expected(data)
    assert want["dup_inn"] == {1, 2, 4, 5, 6} and want["dup_phone"] == {7, 8, 30, 31}
    assert want["bad_inn"] == {20, 21} and want["no_manager"] == {28, 29}
    assert want["inactive"] == {32, 33, 34, 35} and want["no_phone"] == {23}
    assert {11, 12, 13, 16, 17} <= want["dup_name"] and not {14, 15} & want["dup_name"]
    counts, ids = found(app, None)
    assert set(ids) == set(want)  # no mail plugin: no bounce group
    for group, records in want.items():
        assert ids[group] == records, group
        assert counts[group] == len(records), group


def test_a_manager_counts_and_drills_only_their_own_customers(app: Any) -> None:
    data = plant(app)
    anna = principal(app, "anna", ("manager",))
    mine = {i for i, r in data["customers"].items() if r["manager_id"] == anna.user_id}
    counts, ids = found(app, anna)
    want = expected(data, mine)
    for group, records in want.items():
        if group == "no_manager":
            continue
        assert ids[group] == records, group
        assert counts[group] == len(records)
    # a duplicate of a customer she may not read is no duplicate for her
    assert 2 not in ids["dup_inn"] and 1 not in ids["dup_inn"]
    assert ids["no_manager"] == set()


def test_similar_names_are_found_within_blocks() -> None:
    rows = [(1, "ООО Ромашка"), (2, "Ромашка ООО"), (3, "Ромашкa"), (4, "ООО «Ромашко»"),
            (5, "Вектор-1"), (6, "Вектор 2"), (7, "Лютик"), (8, 'ЗАО "Лютик"'),
            (9, "Василёк"), (10, "Василек LLC"), (11, "Ландыш")]  # fmt: skip
    assert Q.normalize("ООО «Ромашкa»") == ["ромашка"]
    assert Q.blocks_of(Q.normalize("Торговый дом Ромашка")) == {"торг", "рома"}
    assert Q.similar_clusters(rows, 85, 100) == [[1, 2, 3, 4], [7, 8], [9, 10]]
    # a block over the cap is compared in windows of its sorted names: the
    # same names sort side by side and are still found (a typo may sort away)
    many = [(100 + i, f"Ромашка {word(random.Random(i))}") for i in range(300)]
    first = Q.similar_clusters(rows + many, 85, 20)[0]
    assert first[:3] == [1, 2, 3] and all(i == 4 or i >= 100 for i in first[3:])


def test_a_large_block_costs_windows_not_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = Counter[str]()
    real = Q.process.extract

    def counted(query: str, choices: list[str], **kw: Any) -> Any:
        calls["compared"] += len(choices)
        return real(query, choices, **kw)

    monkeypatch.setattr(Q.process, "extract", counted)
    rows = [(i, f"Ромашка {i}") for i in range(2000)]
    Q.similar_clusters(rows, 85, 50)
    assert calls["compared"] < 2000 * 50  # not 2000² / 2


# --- the quality page: counts, clusters, merge links, fixing, assigning ------------------


def row_of(app: Any, ident: int) -> Any:
    state = app.extensions["crm"]
    table = state.models.table("Customer")
    with app.app_context():
        return state.db.session.execute(sa.select(table).where(table.c.id == ident)).one()


def page_counts(html: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r'data-group="(\w+)" data-count="(\d+)"', html)}


def test_the_page_shows_each_group_with_its_count_under_the_reader_s_rules(app: Any) -> None:
    data = plant(app)
    admin = Client(app, "admin")
    page = admin.get("/quality/base_quality/")
    assert page.status_code == 200
    assert page_counts(page.text) == {k: len(v) for k, v in expected(data).items()}
    assert 'id="quality-no-bounces"' in page.text
    anna = Client(app, "anna")
    mine = {i for i, r in data["customers"].items() if r["manager_id"] == user_ids(app)["anna"]}
    counts = page_counts(anna.get("/quality/base_quality/").text)
    assert counts == {k: len(v) for k, v in expected(data, mine).items() if k != "no_manager"} | {
        "no_manager": 0
    }
    assert "/quality/" in admin.get("/").text  # the menu item
    assert anna.get("/quality/nonexistent/").status_code == 404
    assert admin.get("/quality/base_quality/nonexistent").status_code == 404


def test_duplicate_clusters_link_to_the_merge_page(app: Any) -> None:
    plant(app)
    admin = Client(app, "admin")
    html = admin.get("/quality/base_quality/dup_inn").text
    clusters = re.findall(r'class="crm-panel quality-cluster" data-ids="([\d,]+)"', html)
    assert sorted(clusters) == ["1,2", "4,5,6"]
    assert 'href="/merge/customer/?ids=4,5,6"' in html
    names = admin.get("/quality/base_quality/dup_name").text
    assert 'data-ids="11,12,13"' in names and 'data-ids="16,17"' in names
    # a manager's clusters hold only what she may read: 1 is anna's, 2 boris's
    anna = Client(app, "anna").get("/quality/base_quality/dup_inn").text
    assert 'data-ids="1,2"' not in anna


def test_fixing_a_field_in_place_validates_and_audits(app: Any) -> None:
    plant(app)
    admin = Client(app, "admin")
    url = "/quality/base_quality/bad_inn"
    before = row_of(app, 20)
    bad = admin.post_form(f"{url}/fix/20", {"field": "inn", "value": "1234567891",
                                            "_version": str(before.version)})  # fmt: skip
    assert bad.status_code == 422
    assert re.search(
        r'class="help-block quality-error" data-field="inn">[^<]*wrong check digit', bad.text
    )
    assert 'value="1234567891"' in bad.text  # what was typed stays in the field
    assert row_of(app, 20).inn == "1234567890"
    good = admin.post_form(f"{url}/fix/20", {"field": "inn", "value": "7707083893",
                                             "_version": str(before.version)})  # fmt: skip
    assert good.status_code == 302
    after = row_of(app, 20)
    assert after.inn == "7707083893" and after.version == before.version + 1
    assert after.updated_by_id == user_ids(app)["admin"]
    assert 'data-ids="20,' not in admin.get(url).text and 'data-id="20"' not in admin.get(url).text
    stale = admin.post_form(
        f"{url}/fix/21", {"field": "inn", "value": "7707083893", "_version": "99"}
    )
    assert stale.status_code == 409
    # a field the group does not fix, a record she may not update
    assert admin.post_form(f"{url}/fix/21", {"field": "name", "value": "X",
                                             "_version": "1"}).status_code == 403  # fmt: skip
    anna = Client(app, "anna")
    boris_s = next(i for i in (20, 21) if row_of(app, i).manager_id == user_ids(app)["boris"])
    assert anna.post_form(f"{url}/fix/{boris_s}", {"field": "inn", "value": "7707083893",
                                                   "_version": "1"}).status_code == 404  # fmt: skip


def test_assigning_a_manager_to_a_group_respects_rights_and_audits(app: Any) -> None:
    data = plant(app)
    ids = user_ids(app)
    url = "/quality/base_quality/no_manager"
    anna = Client(app, "anna")
    assert 'id="quality-assign"' not in anna.get(url).text
    assert (
        anna.post_form(f"{url}/assign", {"manager": ids["anna"], "scope": "all"}).status_code == 403
    )
    head = Client(app, "head")
    page = head.get(url).text
    assert 'id="quality-assign"' in page and 'class="quality-pick"' in page
    refused = head.post_form(f"{url}/assign", {"manager": ids["gone"], "scope": "all"})
    assert refused.status_code == 422 and 'id="quality-alert"' in refused.text
    # selected rows: a record outside the group is not touched
    picked = head.post_form(f"{url}/assign", {"manager": ids["boris"], "ids": ["28", "40"]})
    assert picked.status_code == 302
    assert row_of(app, 28).manager_id == ids["boris"]
    assert row_of(app, 40).manager_id == data["customers"][40]["manager_id"]
    assert row_of(app, 40).version == 1
    done = head.post_form(f"{url}/assign", {"manager": ids["boris"], "scope": "all"})
    assert done.status_code == 302
    assert "1 record assigned to" in head.get(done.headers["Location"]).text
    after = row_of(app, 29)
    assert after.manager_id == ids["boris"] and after.updated_by_id == ids["head"]
    assert after.version == 2
    assert page_counts(head.get("/quality/base_quality/").text)["no_manager"] == 0


def test_the_duplicate_search_benchmark_runs_and_finds_what_was_planted(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.__main__ import main

    # bench.quality.report checks each exact group's count against the
    # hand-written SQL's and the planted duplicates (a miss is a non-zero exit)
    assert main(["--quality", "--rows", "1000", "--db", db_url]) == 0
    out = capsys.readouterr().out
    assert "found dup_inn 18, dup_phone 18, dup_email 18, dup_name 8" in out
    assert "10,000: found dup_inn 198, dup_phone 198, dup_email 198, dup_name 98" in out


def test_the_kind_checks_its_options_where_they_are_written(load_config: Any) -> None:
    with pytest.raises(MetadataError) as caught:  # crm check runs each kind's own check
        load_config(
        {"reports.yaml": """
            reports:
              q:
                type: quality
                document: Customer
                phones: [phone, name]
                contacts: {document: ContactPerson, ref: name, colour: red}
                activity: [Department]
                similarity: 120
            """},
        config="name: T\nlocale: en\nlayers: [base]\n",
    )  # fmt: skip
    problems = [p for p in str(caught.value).splitlines() if "the report `q`" in p]
    assert any(":6:" in p and "`name` is of type string, not phone" in p for p in problems)
    assert any(":7:" in p and "`ref` must name a ref of ContactPerson to Customer" in p
               for p in problems)  # fmt: skip
    assert any(":7:" in p and "unknown key `colour`" in p for p in problems)
    assert any(
        ":8:" in p and "`Department` is no type with a ref to Customer" in p for p in problems
    )
    assert any(":9:" in p and "`similarity`: it must be a whole number from 50 to 100" in p
               for p in problems)  # fmt: skip
    assert len(problems) == 5
    base = load_config(config="name: T\nlocale: en\nlayers: [base]\n")
    assert list(load_kinds()["quality"].check(base, base.reports["base_quality"])) == []
