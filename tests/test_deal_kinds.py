"""The three kinds of deal move differently: a typical sale only through its
process, a deal with manual stages through the consultant's stages in the
order they are declared, a status-only deal freely, by anyone who may edit
it. The kanban shows each kind by its own stages."""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine import clock
from engine.configuration import load_configuration
from engine.statuses import stage_control, stage_order
from engine.testing import Client, dispose, make_app

ROOT = Path(__file__).resolve().parent.parent

# the services firm's own stages, as configs/services writes them
SERVICES = """
attributes:
  Deal:
    hours: {type: integer, min: 0, label: {ru: "Трудоёмкость, ч", en: "Effort, hours"}}
    rate:  {type: money, min: 0, label: {ru: Ставка за час, en: Hourly rate}}
documents:
  Deal:
    statuses:
      states:
        presale:  {label: {ru: Пресейл, en: Presale}, require: [hours], after: qualification}
        sow:      {label: {ru: Согласование SOW, en: Statement of work}, after: presale}
      transitions:
        - {from: qualification, to: presale}
        - {from: presale, to: sow, when: "hours and rate"}
        - {from: sow, to: contract}
      control:
        stages: {typical: [new, qualification, proposal, contract, won, lost]}
"""
ALL = ["new", "qualification", "presale", "sow", "proposal", "contract", "won", "lost"]
TYPICAL = ["new", "qualification", "proposal", "contract", "won", "lost"]


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[Any]:
    users = {"admin": ["Admin"], "anna": ["manager"], "boris": ["manager"], "helen": ["sales_head"]}
    made = make_app(tmp_path / "services", SERVICES, layers=("base",),
                    plugins={"processes": {}}, database=db_url, users=users)  # fmt: skip
    yield made
    dispose(made)


def deal(client: Client, kind: str, **values: Any) -> int:
    customer = client.api("POST", "/api/v1/customer/", json={"name": f"ООО {kind}"})
    assert customer.status_code == 201, customer.text
    body = {"customer": customer.json["id"], "kind": kind, "amount": "1000", **values}
    made = client.api("POST", "/api/v1/deal/", json=body)
    assert made.status_code == 201, made.text
    return int(made.json["id"])


def move(client: Client, deal_id: int, to: str, **fields: Any) -> Any:
    return client.api(
        "POST", f"/api/v1/deal/{deal_id}/transition", json={"to": to, "fields": fields}
    )


def stage(client: Client, deal_id: int) -> str:
    return str(client.api("GET", f"/api/v1/deal/{deal_id}").json["result"]["stage"])


def targets(page: str) -> list[str]:
    """The states the record page offers, in their order, allowed ones or not."""
    found = re.findall(
        r'<span class="crm-move-refused" data-to="(\w+)"|class="crm-inline crm-move" data-to="(\w+)"'
        r'|<a class="btn btn-default btn-sm crm-transition" data-to="(\w+)"',
        page,
    )
    return [next(x for x in row if x) for row in found]


def test_the_services_config_places_its_stages_before_won_and_lost() -> None:
    registry = load_configuration(ROOT / "configs" / "services").registry
    d = registry.documents["Deal"]
    assert stage_order(d) == ALL
    assert stage_order(d, "manual") == ALL and stage_order(d, "simple") == ALL
    assert stage_order(d, "typical") == TYPICAL
    # the status field's choices (filters, forms) follow the same order
    assert list(d.fields["stage"].values) == ALL
    assert [stage_control(d, k) for k in ("typical", "manual", "simple", None)] == [
        "process", "manual", "free", "manual"
    ]  # fmt: skip


def test_a_manual_deal_moves_through_the_declared_stages_in_their_order(app: Any) -> None:
    anna = Client(app, "anna")
    d = deal(anna, "manual")
    # only the declared transitions: no jump from new to won
    jump = move(anna, d, "won")
    assert jump.status_code == 422 and "no transition from" in " ".join(jump.json["reasons"])
    planned = (clock.today() + dt.timedelta(days=30)).isoformat()
    assert move(anna, d, "qualification", planned_close=planned).status_code == 200
    # the record page offers the firm's stage where it belongs, before the base's proposal
    offered = targets(anna.get(f"/deal/{d}").text)
    assert offered.index("presale") < offered.index("proposal") < offered.index("lost")
    refused = move(anna, d, "presale")
    assert refused.status_code == 422 and refused.json["errors"] == {
        "hours": "“Effort, hours” (hours) must be filled in to enter “Presale” (presale)"
    }
    assert move(anna, d, "presale", hours=40).status_code == 200
    # the firm's gate: a statement of work needs the effort and the rate
    gate = move(anna, d, "sow")
    assert (
        gate.status_code == 422
        and "the condition `hours and rate` is not met" in gate.json["reasons"]
    )
    assert move(anna, d, "sow", rate="5000").status_code == 200
    assert move(anna, d, "contract").status_code == 200
    assert stage(anna, d) == "contract"


def test_a_status_only_deal_changes_state_freely_by_anyone_who_may_edit_it(app: Any) -> None:
    anna, boris, helen = Client(app, "anna"), Client(app, "boris"), Client(app, "helen")
    d = deal(anna, "simple")
    page = anna.get(f"/deal/{d}").text
    # every state, each a direct button: nothing to fill in, no gate
    assert targets(page) == [s for s in ALL if s != "new"]
    assert "crm-move-refused" not in page
    # new → won, though the manual stages go to won only from proposal or contract
    assert move(anna, d, "won").status_code == 200
    # a final state is left as freely, and qualification asks for no planned close
    assert move(anna, d, "qualification").status_code == 200
    # lost asks for no loss reason, sow for no hours and rate
    assert move(anna, d, "sow").status_code == 200
    assert move(anna, d, "lost").status_code == 200
    # the head (who may edit every deal) moves it too; boris may not edit anna's deal
    assert move(helen, d, "new").status_code == 200
    assert move(boris, d, "won").status_code in (403, 404)
    assert stage(anna, d) == "new"
    # its history has every move
    with app.app_context():
        state = app.extensions["crm"]
        hist = state.models.histories["Deal"].__table__
        moves = state.db.session.execute(
            sa.select(hist.c.to_state).where(hist.c.doc_id == d).order_by(hist.c.id)
        ).scalars().all()  # fmt: skip
    assert moves == ["new", "won", "qualification", "sow", "lost", "new"]


def test_a_typical_sale_is_not_moved_by_hand(app: Any) -> None:
    anna, admin = Client(app, "anna"), Client(app, "admin")
    d = deal(anna, "typical")
    assert stage(anna, d) == "qualification"  # its process moved it
    for who in (anna, admin):
        refused = move(who, d, "lost", loss_reason="no budget")
        assert refused.status_code == 422
        assert refused.json["reasons"] == [
            "“Typical sale” (typical) moves only through its process: its stages are not "
            "changed by hand"
        ]
    page = html.unescape(anna.get(f"/deal/{d}").text)
    assert targets(page) == [] and "moves only through its process" in page
    # the process moves it: its task's outcome
    tasks = anna.api("GET", "/api/v1/task/").json["result"]
    [task] = [t for t in tasks if t["doc_id"] == d]
    done = anna.api("POST", f"/api/v1/task/{task['id']}/complete", json={"outcome": "qualified"})
    assert done.status_code == 200, done.text
    assert stage(anna, d) == "proposal"


def columns(page: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for name, body in re.findall(
        r'<div class="crm-column" data-column="(\w+)"(.*?)(?=<div class="crm-column" |'
        r'<input type="hidden" id="crm-csrf")', page, re.S,
    ):  # fmt: skip
        out[name] = [
            int(i) for i in re.findall(r'crm-card[^"]*" draggable="\w+" data-id="(\d+)"', body)
        ]
    return out


def test_the_kanban_shows_each_kind_by_its_own_stages(app: Any) -> None:
    helen = Client(app, "helen")
    typical, manual, simple = deal(helen, "typical"), deal(helen, "manual"), deal(helen, "simple")
    everything = helen.get("/deal/kanban").text
    assert list(columns(everything)) == ALL
    assert 'data-kind="typical"' in everything  # the switch between kinds
    board = columns(helen.get("/deal/kanban?kind=typical").text)
    assert list(board) == TYPICAL and board["qualification"] == [typical]
    board = columns(helen.get("/deal/kanban?kind=manual").text)
    assert list(board) == ALL and board["new"] == [manual]
    board = columns(helen.get("/deal/kanban?kind=simple").text)
    assert [i for ids in board.values() for i in ids] == [simple]
    # a typical sale's card cannot be dragged; the others can
    assert f'draggable="false" data-id="{typical}"' in everything
    assert f'draggable="true" data-id="{manual}"' in everything
    # a column's next page keeps to the kind
    more = helen.get("/deal/kanban/cards?column=new&kind=typical").get_json()["cards"]
    assert more == []
    assert helen.get("/deal/kanban?kind=bogus").status_code == 400
    # a move from the board answers with the counts of the kind it shows
    moved = helen.api(
        "POST", f"/api/v1/deal/{simple}/transition?columns=new,won&kind=simple", json={"to": "won"}
    )
    assert moved.status_code == 200 and moved.json["columns"]["won"]["count"] == 1


def test_crm_check_refuses_a_wrong_control_or_place(problems_of: Callable[..., list[str]]) -> None:
    bad = """\
documents:
  Deal:
    statuses:
      states:
        presale: {after: qualifcation}
        sow: {after: sow2}
        sow2: {after: sow}
      control:
        field: kinds
        stages: {typical: [new, qualification]}
"""
    config = "name: X\nlayers: [base]\n"
    found = problems_of({"deal2.yaml": bad}, config=config)
    assert "deal2.yaml:5:26: `after` of the state `presale` of `Deal` names an unknown state " \
           "`qualifcation` (did you mean `qualification`?)" in found  # fmt: skip
    assert any(p.startswith("deal2.yaml:6:22: `after` of the state `sow` of `Deal` goes round")
               for p in found)  # fmt: skip
    assert any(p.startswith("deal2.yaml:9:16: `statuses.control` of `Deal`: `field` must be an "
                            "enum field") for p in found)  # fmt: skip
    wrong = """\
documents:
  Deal:
    statuses:
      control:
        free: [simple, smiple]
        stages: {typical: [qualification, won], simple: [new, wonn]}
        gates: false
"""
    found = problems_of({"deal2.yaml": wrong}, config=config)
    assert any("deal2.yaml:7:9" in p and "gates" in p for p in found), found
    wrong = wrong.replace("        gates: false\n", "")
    found = problems_of({"deal2.yaml": wrong}, config=config)
    assert found == [
        "deal2.yaml:5:24: `statuses.control` of `Deal`: `free` names `smiple`, not a value of "
        "`Deal.kind` (did you mean `simple`?); its values are `typical`, `manual`, `simple`",
        "deal2.yaml:6:27: `statuses.control` of `Deal`: the stages of `typical` must include "
        "the initial state `new`: a new record starts there",
        "deal2.yaml:6:63: `statuses.control` of `Deal`: the stages of `simple` name an unknown "
        "state `wonn` (did you mean `won`?)",
    ]
