"""A route map is a picture: one node per step, the current steps
highlighted, YAML text escaped, the same picture every time. The page of
route maps counts running instances per step in one statement, as far as
the reader may see them; a deal's page shows where its process stands."""

from __future__ import annotations

import datetime as dt
import itertools
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import Session

from engine.access import Principal
from engine.documents import Documents
from plugins.processes import definitions_for, maps
from plugins.processes import tasks as task_api
from plugins.processes.definitions import Process
from plugins.processes.runtime import Runtime
from tests.web.conftest import Browser, crm_app  # noqa: F401 - its fixture, used by `app`
from tests.web.test_costs import statements_of

SVG = "{http://www.w3.org/2000/svg}"

# the SALE map of test_route_maps without its wait step, so that the counts
# per step need no job runner: the picture still has a task, an if, a
# parallel split and its join, a notification, outcomes and two ends
SALE = """
processes:
  typical_sale:  # replaces the layer's typical sale
    label: Big sale
    document: Deal
    start: {on: create, when: "kind == 'typical'"}
    steps:
      qualify:
        task: {title: "Qualify {{ doc.number }}", assignee: owner, due: 2d}
        outcomes: {ok: check_amount, reject: lost}
      check_amount:
        if: "doc.amount >= 1000000"
        then: approve
        else: split
      approve:
        set: {stage: proposal}
        task: {title: "Approve the discount on {{ doc.number }}", assignee: {role: sales_head}, due: 1bd}
        outcomes: {approved: split, rejected: lost}
      split:
        parallel: [call_client, tell_client]
        join: contract
      call_client:
        task: {title: "Call {{ doc.customer.name }}", assignee: owner, due: 4h}
        next: contract
      tell_client:
        notify: {channel: user, to: owner, text: "Offer {{ doc.number }} is ready"}
        next: contract
      contract:
        set: {stage: contract}
        task: {title: "Sign the contract", assignee: owner, due: 3bd}
        outcomes: {signed: won, lost: lost}
      won:  {end: true, set: {stage: won}}
      lost: {end: true, set: {stage: lost}}
"""

HOSTILE = """
processes:
  typical_sale:
    label: "<script>alert('map')</script>"
    document: Deal
    steps:
      qualify:
        label: "<img src=x onerror=alert(1)>"
        task: {title: "<script>alert(1)</script> & co", assignee: owner}
        outcomes: {ok: done, "no<b>": done}
      done: {end: true, set: {stage: won}}
"""

# fifteen steps: a retry loop, a three-way split with a loop inside a
# branch, a wait until a date, settings, notifications and one end
BIG = """
processes:
  onboarding:
    label: Onboarding
    document: Deal
    start: {on: {status: won}}
    steps:
      kickoff:
        task: {title: "Kick-off call", assignee: owner, due: 1d}
        outcomes: {done: check_size, no_answer: remind}
      remind:
        notify: {channel: user, to: owner, text: "Call {{ doc.number }} again"}
        next: retry_wait
      retry_wait:
        wait: 2d
        next: kickoff
      check_size:
        if: "doc.amount > 500000"
        then: fork
        else: paperwork
      fork:
        parallel: [legal, setup, training]
        join: review
      legal:
        task: {title: "Legal review", assignee: {role: sales_head}, due: 3bd}
        outcomes: {ok: review, fix: legal_fix}
      legal_fix:
        task: {title: "Fix the contract", assignee: owner, due: 2d}
        next: legal
      setup:
        task: {title: "Set up the account", assignee: owner, due: 2d}
        next: review
      training:
        wait: {until: planned_close}
        next: train
      train:
        task: {title: "Train the users", assignee: owner, due: 1w}
        next: review
      paperwork:
        set: {probability: 90}
        next: send_docs
      send_docs:
        task: {title: "Send the documents", assignee: owner}
        next: review
      review:
        task: {title: "Review the onboarding", assignee: {role: sales_head}, due: 1d}
        outcomes: {accepted: celebrate, again: kickoff}
      celebrate:
        notify: {channel: user, to: {role: sales_head}, text: "{{ doc.number }} is onboarded"}
        next: finished
      finished: {end: true}
"""

CONFIG = "name: Test sales\nlocale: {locale}\nlayers: [base]\nplugins:\n  processes: {{}}\n"


def process_of(load_config: Callable[..., Any], text: str, name: str = "typical_sale",
               locale: str = "en") -> Process:  # fmt: skip
    registry = load_config({"p.yaml": text} if text else {}, CONFIG.format(locale=locale))
    defs = definitions_for(registry)
    assert not defs.problems, defs.problems
    return defs.processes[name]


def parse(svg: Any) -> ET.Element:
    return ET.fromstring(str(svg))


def step_nodes(root: ET.Element) -> dict[str, ET.Element]:
    return {g.attrib["data-step"]: g for g in root.iter(f"{SVG}g") if "data-step" in g.attrib}


def box(g: ET.Element) -> tuple[float, float, float, float]:
    """The step's shape as (left, top, right, bottom)."""
    shape = next(e for e in g if e.tag != f"{SVG}title")
    a = shape.attrib
    if shape.tag == f"{SVG}rect":
        x, y = float(a["x"]), float(a["y"])
        return x, y, x + float(a["width"]), y + float(a["height"])
    if shape.tag == f"{SVG}circle":
        cx, cy, r = float(a["cx"]), float(a["cy"]), float(a["r"])
        return cx - r, cy - r, cx + r, cy + r
    points = [tuple(map(float, p.split(","))) for p in a["points"].split()]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def assert_readable(root: ET.Element, p: Process) -> None:
    """One node per step, inside the viewBox, none over another."""
    nodes = step_nodes(root)
    assert list(nodes) == list(p.steps)
    _, _, width, height = map(float, root.attrib["viewBox"].split())
    boxes = {name: box(g) for name, g in nodes.items()}
    for (a, (l1, t1, r1, b1)), (b, (l2, t2, r2, b2)) in itertools.combinations(boxes.items(), 2):
        assert r1 <= l2 or r2 <= l1 or b1 <= t2 or b2 <= t1, f"{a} and {b} overlap"
    for left, top, right, bottom in boxes.values():
        assert left >= 0 and top >= 0 and right <= width and bottom <= height
    # the first step on top, the ends at the bottom
    tops = {name: b[1] for name, b in boxes.items()}
    assert tops[p.first] == min(tops.values())
    ends = [n for n, s in p.steps.items() if s.kind == "end"]
    assert all(tops[e] == max(tops.values()) for e in ends)


# --- the picture --------------------------------------------------------------------------


def test_the_sale_map_is_one_node_per_step_with_its_kinds_and_outcomes(
    load_config: Callable[..., Any],
) -> None:
    p = process_of(load_config, SALE)
    svg = maps.draw(p)
    root = parse(svg)
    assert root.tag == f"{SVG}svg" and root.attrib["data-process"] == "typical_sale"
    assert re.fullmatch(r"0 0 [\d.]+ [\d.]+", root.attrib["viewBox"])
    assert_readable(root, p)
    nodes = step_nodes(root)
    assert {n: g.attrib["data-kind"] for n, g in nodes.items()} == {
        "qualify": "task", "check_amount": "if", "approve": "task", "split": "parallel",
        "call_client": "task", "tell_client": "notify", "contract": "task", "won": "end",
        "lost": "end",
    }  # fmt: skip
    # shapes by kind: a diamond, a bar, double circles
    assert nodes["check_amount"].find(f"{SVG}polygon") is not None
    assert len(nodes["won"].findall(f"{SVG}circle")) == 2
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "Qualify ‹number›" in texts and "owner · due 2 days" in texts
    assert any((t or "").startswith("role sales_head · due 1 busin") for t in texts), texts
    labels = sorted(
        t.text or "" for t in root.iter(f"{SVG}text") if t.get("class") == "crm-edge-label"
    )
    assert labels == sorted(["ok", "reject", "yes", "no", "approved", "rejected", "signed", "lost"])
    # the branches meet at the join's bar before the contract
    assert len([g for g in root.iter(f"{SVG}g") if g.get("class") == "crm-map-join"]) == 1
    assert "crm-step-current" not in svg and 'class="crm-step-count"' not in svg


def test_current_steps_are_highlighted_and_counts_shown(load_config: Callable[..., Any]) -> None:
    p = process_of(load_config, SALE)
    root = parse(maps.draw(p, counts={"qualify": 3, "call_client": 12, "won": 0},
                           current={"call_client", "contract"}))  # fmt: skip
    nodes = step_nodes(root)
    current = {n for n, g in nodes.items() if "crm-step-current" in g.attrib["class"].split()}
    assert current == {"call_client", "contract"}
    fills = {n: next(e for e in g if e.tag == f"{SVG}rect").attrib["fill"]
             for n, g in nodes.items() if g.attrib["data-kind"] == "task"}  # fmt: skip
    assert fills["call_client"] == fills["contract"] == maps.CURRENT[0]
    assert fills["qualify"] == fills["approve"] == maps.COLORS["task"][0]
    counted = {n: g.attrib["data-count"] for n, g in nodes.items() if "data-count" in g.attrib}
    assert counted == {"qualify": "3", "call_client": "12"}
    badge = next(
        g for g in nodes["call_client"].iter(f"{SVG}g") if g.get("class") == "crm-step-count"
    )
    assert [t.text for t in badge.iter(f"{SVG}text")] == ["12"]


def test_the_same_map_gives_the_same_picture(load_config: Callable[..., Any]) -> None:
    p = process_of(load_config, SALE)
    again = process_of(load_config, SALE)
    first = maps.draw(p, counts={"qualify": 1, "approve": 2}, current={"qualify", "approve"})
    second = maps.draw(again, counts={"approve": 2, "qualify": 1}, current={"approve", "qualify"})
    assert str(first) == str(second)


def test_text_from_yaml_is_escaped(load_config: Callable[..., Any]) -> None:
    p = process_of(load_config, HOSTILE)
    svg = str(maps.draw(p, current={"qualify"}))
    assert "<script" not in svg and "<img" not in svg and "<b>" not in svg
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in svg
    root = parse(svg)  # still well-formed XML
    assert root.attrib["aria-label"] == "<script>alert('map')</script>"
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "<script>alert(1)</script> & co" in texts
    assert "no<b>" in texts
    assert_readable(root, p)


def test_the_typical_sale_in_russian_with_its_loop_back(load_config: Callable[..., Any]) -> None:
    p = process_of(load_config, "", locale="ru")  # the processes layer's own
    root = parse(maps.draw(p, current={"approve"}, locale="ru"))
    assert_readable(root, p)
    # `rework: offer` goes back up: a dashed arrow, laid out between the boxes
    back = [e for e in root.iter(f"{SVG}path") if e.get("class") == "crm-edge-back"]
    assert len(back) == 1


def test_fifteen_steps_stay_readable(load_config: Callable[..., Any]) -> None:
    p = process_of(load_config, BIG, "onboarding")
    assert len(p.steps) == 15
    root = parse(maps.draw(p, counts={"legal": 2, "train": 1}, current={"legal_fix", "review"}))
    assert_readable(root, p)
    assert len([e for e in root.iter(f"{SVG}path") if e.get("class") == "crm-edge-back"]) == 3
    _, _, width, height = map(float, root.attrib["viewBox"].split())
    assert width < 1200 and height < 1200


# --- where the instances stand --------------------------------------------------------------


def open_task(w: Any, s: Session, deal: Any, step: str) -> Any:
    cls = w.models.cls("Task")
    return s.execute(
        sa.select(cls).where(cls.doc_id == deal.id, cls.step == step, cls.status == "open")
    ).scalar_one()


def principal(w: Any, user: str, role: str) -> Principal:
    return Principal(w.users[user], user, frozenset({role}))


def test_instances_by_step_in_one_statement(world_for: Any) -> None:
    w = world_for({"sale.yaml": SALE})
    s = w.session()
    customer = w.customer(s)
    big = w.docs(s).create(
        "Deal", {"customer": customer.id, "kind": "typical", "amount": 2_000_000}
    )
    small = w.docs(s).create("Deal", {"customer": customer.id, "kind": "typical", "amount": 10})
    doomed = w.docs(s, "boris").create("Deal", {"customer": customer.id, "kind": "typical"})
    w.docs(s, "boris").create("Deal", {"customer": customer.id, "kind": "typical"})
    w.docs(s).create("Deal", {"customer": customer.id, "kind": "manual"})  # no process
    s.commit()
    head = principal(w, "head1", "sales_head")
    assert maps.in_progress(w.models, s, head) == {"typical_sale": {"qualify": 4}}

    task_api.complete(w.docs(s), open_task(w, s, big, "qualify").id, "ok")
    task_api.complete(w.docs(s), open_task(w, s, small, "qualify").id, "ok")
    task_api.complete(w.docs(s, "boris"), open_task(w, s, doomed, "qualify").id, "reject")
    s.commit()
    with statements_of(w.engine) as seen:
        found = maps.in_progress(w.models, s, head)
    assert len(seen) == 1 and "GROUP BY" in seen[0]
    # the small deal waits on the call while its other branch waits at the join
    assert found == {"typical_sale": {"qualify": 1, "approve": 1, "call_client": 1, "contract": 1}}
    # managers count their own instances only
    assert maps.in_progress(w.models, s, principal(w, "anna", "manager")) == {
        "typical_sale": {"approve": 1, "call_client": 1, "contract": 1}
    }
    assert maps.in_progress(w.models, s, principal(w, "boris", "manager")) == {
        "typical_sale": {"qualify": 1}
    }
    assert maps.in_progress(w.models, s, Principal(w.users["anna"], "anna", frozenset())) == {}

    # both branches in: one instance at the contract, no longer at the call
    task_api.complete(w.docs(s), open_task(w, s, small, "call_client").id, None)
    task_api.complete(
        w.docs(s, "head1", ("sales_head",)), open_task(w, s, big, "approve").id, "rejected"
    )
    s.commit()
    found = maps.in_progress(w.models, s, head)
    assert found == {"typical_sale": {"qualify": 1, "contract": 1}}
    assert maps.in_progress(w.models, s, head, "typical_sale") == found
    defs = definitions_for(w.models.registry, w.pm)
    assert maps.in_progress_rows(defs, found) == [
        {"process": "typical_sale", "step": "qualify", "count": 1},
        {"process": "typical_sale", "step": "contract", "count": 1},
    ]


def test_a_record_shows_its_recent_processes_in_one_query(world_for: Any) -> None:
    w = world_for({"sale.yaml": SALE})
    s = w.session()
    customer = w.customer(s)
    deal = w.docs(s).create("Deal", {"customer": customer.id, "kind": "typical", "amount": 10})
    s.commit()
    task_api.complete(w.docs(s), open_task(w, s, deal, "qualify").id, "ok")
    s.commit()
    defs = definitions_for(w.models.registry, w.pm)
    registry = w.models.registry
    d = registry.documents["Deal"]
    s.refresh(deal)  # as a record's page has it
    with statements_of(w.engine) as seen:
        [(title, html)] = maps.record_sections(
            w.models, defs, d, deal, principal(w, "anna", "manager")
        )
    assert len(seen) == 1
    assert title == "Big sale"
    svg = re.search(r"<svg.*</svg>", str(html), re.S)
    assert svg is not None
    current = {n for n, g in step_nodes(parse(svg.group(0))).items()
               if "crm-step-current" in g.attrib["class"]}  # fmt: skip
    assert current == {"call_client", "contract"}  # waiting, and joined

    # another manager sees none of it, nor does a type without processes cost a query
    assert maps.record_sections(w.models, defs, d, deal, principal(w, "boris", "manager")) == []
    with statements_of(w.engine) as seen:
        assert maps.record_sections(
            w.models, defs, registry.documents["Customer"], customer,
            principal(w, "anna", "manager"),
        ) == []  # fmt: skip
    assert seen == []

    # at most three, the latest first
    rt = Runtime(w.docs(s), defs)
    for _ in range(3):
        w.now += dt.timedelta(minutes=1)
        rt.start(defs.processes["typical_sale"], d, deal)
    s.commit()
    sections = maps.record_sections(w.models, defs, d, deal, principal(w, "head1", "sales_head"))
    ids = [int(re.search(r'data-instance="(\d+)"', str(h)).group(1)) for _, h in sections]  # type: ignore[union-attr]
    assert len(ids) == 3 and ids == sorted(ids, reverse=True)

    # an instance's own page: its map, where it stands
    instance = s.get(w.models.cls("ProcessInstance"), ids[-1])
    [(_, html)] = maps.record_sections(
        w.models, defs, registry.documents["ProcessInstance"], instance,
        principal(w, "anna", "manager"),
    )  # fmt: skip
    assert 'data-step="qualify"' in str(html) and "crm-step-current" in str(html)


# --- the pages ------------------------------------------------------------------------------


@pytest.fixture
def app(request: pytest.FixtureRequest) -> Flask:
    """The base layer with the processes plugin and SALE; users admin, anna
    and boris (managers), helen (head of sales), guest (no role of the config)."""
    app: Flask = request.getfixturevalue("crm_app")(SALE, CONFIG.format(locale="en"))
    with app.app_context():
        sm = app.extensions["crm"].appbuilder.sm
        sm.add_user("guest", "Guest", "Test", "guest@example.org", [sm.add_role("guest")], "secret")
    return app


def deals(app: Flask) -> dict[str, int]:
    """anna: a big deal at the approval, a small one at the call; boris: one at qualify."""
    state = app.extensions["crm"]
    with app.app_context():
        users = state.models.table("User")
        session = state.db.session
        ids = dict(session.execute(sa.select(users.c.username, users.c.id)).tuples().all())

        def docs(user: str, role: str) -> Documents:
            return Documents(state.models, session, ids[user], [role], state.pm, username=user)

        customer = docs("anna", "manager").create("Customer", {"name": "ООО Ромашка"})
        out = {}
        for name, user, amount in (("big", "anna", 2_000_000), ("small", "anna", 10),
                                   ("borises", "boris", 10)):  # fmt: skip
            deal = docs(user, "manager").create(
                "Deal", {"customer": customer.id, "kind": "typical", "amount": amount}
            )
            out[name] = deal.id
        session.commit()
        tasks = state.models.cls("Task")
        for name in ("big", "small"):
            task = session.execute(
                sa.select(tasks).where(tasks.doc_id == out[name], tasks.step == "qualify")
            ).scalar_one()
            task_api.complete(docs("anna", "manager"), task.id, "ok")
        session.commit()
        return out


def counts_on(page: str) -> dict[str, int]:
    return {
        step: int(n)
        for step, n in re.findall(r'<tr data-step="(\w+)"><td>[^<]*</td><td class="crm-count">(\d+)</td>', page)
    }  # fmt: skip


def test_the_page_of_route_maps(app: Flask) -> None:
    ids = deals(app)
    helen = Browser(app, "helen", "secret")
    with app.app_context():
        engine = app.extensions["crm"].db.engine
    with statements_of(engine) as seen:
        page = helen.get("/processes/")
    assert page.status_code == 200
    # the chrome's two statements, and one for every map's counts
    assert len(seen) == 3, seen
    assert len([st for st in seen if "GROUP BY process_instance.process" in st]) == 1
    assert 'href="/processes/"' in page.text and "Route maps" in page.text
    assert page.text.count('class="crm-route-map"') == 1
    assert counts_on(page.text) == {"qualify": 1, "approve": 1, "call_client": 1, "contract": 1}
    assert 'data-step="approve" data-kind="task" data-count="1"' in page.text
    one = helen.get("/processes/typical_sale")
    assert one.status_code == 200 and 'data-process="typical_sale"' in one.text
    assert helen.get("/processes/nothing").status_code == 404
    api = helen.get("/processes/api/in_progress")
    assert api.status_code == 200
    assert api.json == [
        {"process": "typical_sale", "step": "qualify", "count": 1},
        {"process": "typical_sale", "step": "approve", "count": 1},
        {"process": "typical_sale", "step": "call_client", "count": 1},
        {"process": "typical_sale", "step": "contract", "count": 1},
    ]
    # the deal's page: where its process stands
    deal_page = helen.get(f"/deal/{ids['small']}")
    assert deal_page.status_code == 200
    current = set(
        re.findall(
            r'class="crm-step crm-step-\w+ crm-step-current" data-step="(\w+)"', deal_page.text
        )
    )
    assert current == {"call_client", "contract"}


def test_a_manager_sees_own_instances_and_a_stranger_nothing(app: Flask) -> None:
    ids = deals(app)
    anna, boris = Browser(app, "anna", "secret"), Browser(app, "boris", "secret")
    assert counts_on(anna.get("/processes/").text) == {
        "qualify": 0, "approve": 1, "call_client": 1, "contract": 1,
    }  # fmt: skip
    page = boris.get("/processes/").text
    assert counts_on(page) == {"qualify": 1, "approve": 0, "call_client": 0, "contract": 0}
    assert 'data-step="approve" data-kind="task" data-count' not in page
    assert boris.get("/processes/api/in_progress").json == [
        {"process": "typical_sale", "step": "qualify", "count": 1}
    ]
    assert boris.get(f"/deal/{ids['big']}").status_code == 404

    # a user with no role of the config may not read processes at all
    guest = Browser(app, "guest", "secret")
    assert guest.get("/processes/").status_code == 403
    assert guest.get("/processes/typical_sale").status_code == 403
    refused = guest.get("/processes/api/in_progress")
    assert refused.status_code == 403 and refused.json["message"]
    assert app.test_client().get("/processes/api/in_progress").status_code in (302, 401)


def test_a_russian_map_reads_as_labels_not_keys(request: pytest.FixtureRequest) -> None:
    """The page of route maps in a Russian config: steps, outcomes, ends,
    durations, the condition, the start and the stages by their labels; no
    key, no `2bd`, no expression is left in the picture or its table."""
    app = request.getfixturevalue("crm_app")("", CONFIG.format(locale="ru"))
    page = Browser(app, "helen", "secret").get("/processes/")
    assert page.status_code == 200
    svg = page.text[page.text.index("<svg") : page.text.index("</svg>") + 6]
    root = parse(svg)
    texts = {t.text for t in root.iter(f"{SVG}text")}
    assert {"Квалификация", "Предложение", "Согласование", "Договор"} <= texts
    assert {"Выиграна", "Проиграна", "От 1 млн ₽?", "да", "нет"} <= texts
    assert "Создана типовая сделка" in texts
    assert {"ответственный · срок 2 раб. дня", "ответственный · срок 5 раб. дней"} <= texts
    assert any(t and t.startswith("роль Руководитель") for t in texts), texts
    assert "роль Руководитель отдела продаж · срок 1 раб. день" in svg  # its tip says it whole
    assert "Этап → Квалификация" in texts
    edges = {t.text for t in root.iter(f"{SVG}text") if t.get("class") == "crm-edge-label"}
    assert {"Квалифицирована", "Не наш клиент", "Договор подписан", "Переделать КП"} <= edges
    shown = " ".join(t or "" for t in texts) + " ".join(
        e.text or "" for e in root.iter(f"{SVG}title")
    )
    for raw in ("qualify", "qualified", "rejected", "2bd", "kind ==", "doc.amount", "stage →",
                "qualification", "won", "lost", "owner"):  # fmt: skip
        assert raw not in shown, raw
    table = page.text[page.text.index("crm-in-progress") :]
    assert ">Квалификация<" in table and ">qualify<" not in table


def test_the_list_of_processes_names_documents_and_people(app: Flask) -> None:
    """`/process_instance/` shows each process's document by its title, linked,
    and its owner by name; a document the reader may not see says so, by id."""
    ids = deals(app)
    state = app.extensions["crm"]
    with app.app_context():
        users = state.models.table("User")
        session = state.db.session
        anna = session.execute(sa.select(users.c.id).where(users.c.username == "anna")).scalar()
        instances = state.models.table("ProcessInstance")
        # boris's deal's process handed to anna, who may not read boris's deals
        session.execute(
            instances.update().where(instances.c.doc_id == ids["borises"]).values(owner_id=anna)
        )
        session.commit()
    page = Browser(app, "helen", "secret").get("/process_instance/")
    assert page.status_code == 200
    cells = re.findall(r'href="/deal/(\d+)">([^<]+)</a>', page.text)
    assert {int(i) for i, _ in cells} == set(ids.values())
    assert all(text.startswith("D-") and "ООО Ромашка" in text for _, text in cells)
    assert "<td>Anna Test</td>" in page.text
    assert ">anna<" not in page.text and ">boris<" not in page.text
    mine = Browser(app, "anna", "secret").get("/process_instance/")
    assert mine.status_code == 200
    assert f"#{ids['borises']} — no access" in mine.text
    assert f'href="/deal/{ids["borises"]}"' not in mine.text
    assert {int(i) for i in re.findall(r'href="/deal/(\d+)">', mine.text)} == {
        ids["big"],
        ids["small"],
    }
    # a process's page: its document by title, the task it waits on by its title
    with app.app_context():
        instance = state.db.session.execute(
            sa.select(instances.c.id).where(instances.c.doc_id == ids["borises"])
        ).scalar()
    page = Browser(app, "helen", "secret").get(f"/process_instance/{instance}")
    assert page.status_code == 200
    assert f'href="/deal/{ids["borises"]}">D-' in page.text
    rows = page.text.split('class="table table-condensed crm-rows"', 1)[1].split("</table>", 1)[0]
    assert f"<td>Qualify D-{ids['borises']:06d}</td>" in rows, rows
