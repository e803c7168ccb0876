"""The deal funnel from the status history: its numbers equal a computation
record by record, every cell opens the list of exactly the records it
counts, and what a user may read bounds what they count."""

from __future__ import annotations

import csv
import io
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from openpyxl import load_workbook

from tests.reports.conftest import STEPS, World


def funnel(world: World, who: str, query: str = "", name: str = "deal_funnel") -> dict[str, Any]:
    response = world.login(world.app, who).get(f"/api/v1/reports/{name}?{world.args}{query}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def numbers(data: dict[str, Any]) -> dict[str, Any]:
    """The JSON's figures in the shape of World.expected."""
    rows = {r["stage"]: r for r in data["rows"]}
    labels = dict(zip(STEPS, ["New", "Qualification", "Proposal", "Contract", "Won"], strict=True))
    return {
        "reached": {s: rows[labels[s]]["reached"] for s in STEPS},
        "amount": {s: rows[labels[s]]["amount"] for s in STEPS},
        "lost": rows["Lost"]["reached"],
        "lost_amount": rows["Lost"]["amount"],
        "now": {**{s: rows[labels[s]]["now"] for s in STEPS}, "lost": rows["Lost"]["now"]},
        "total": data["total"]["reached"],
    }


def test_the_funnel_counts_what_reached_each_stage_in_the_period(world: World) -> None:
    data = funnel(world, "helen")
    expected = world.expected()
    assert expected["total"] > 40 and expected["lost"] > 3  # the data set exercises the funnel
    assert numbers(data) == expected
    # a funnel narrows stage by stage; the lost are apart, not a stage
    reached = [expected["reached"][s] for s in STEPS]
    assert reached == sorted(reached, reverse=True)
    assert data["chart"]["kind"] == "funnel"
    assert data["chart"]["labels"] == ["New", "Qualification", "Proposal", "Contract", "Won"]
    assert data["chart"]["series"][0]["values"] == reached


@pytest.mark.parametrize(
    "query, narrowing",
    [
        ("&manager={anna}", {"manager": "anna"}),
        ("&department={Key accounts}", {"department": "Key accounts"}),
        ("&kind=typical", {"kind": "typical"}),
        ("&segment=big_deals", {"min_amount": 5000}),
        ("&manager={boris}&kind=simple", {"manager": "boris", "kind": "simple"}),
    ],
)
def test_parameters_narrow_the_funnel(world: World, query: str, narrowing: dict[str, Any]) -> None:
    query = query.replace("{anna}", str(world.users["anna"])).replace(
        "{boris}", str(world.users["boris"])
    )
    query = query.replace("{Key accounts}", str(world.departments["Key accounts"]))
    assert numbers(funnel(world, "helen", query)) == world.expected(**narrowing)


def test_a_shorter_period_counts_fewer(world: World) -> None:
    import datetime as dt

    whole = funnel(world, "helen")
    world.start = world.end - dt.timedelta(days=7)
    week = funnel(world, "helen")
    assert numbers(week) == world.expected()
    assert week["total"]["reached"] < whole["total"]["reached"]


def test_a_manager_counts_only_their_own_deals(world: World) -> None:
    mine = funnel(world, "anna")
    assert numbers(mine) == world.expected("anna")
    assert numbers(mine) != numbers(funnel(world, "helen"))
    # asking for someone else's deals gives nothing they may not read
    other = funnel(world, "anna", f"&manager={world.users['boris']}")
    assert other["total"]["reached"] == 0


def _list_count(world: World, who: str, url: str) -> int:
    token = parse_qs(urlparse(url).query)["drill"][0]
    resource = urlparse(url).path.strip("/")
    response = world.login(world.app, who).get(
        f"/api/v1/{resource}/", query_string={"drill": token, "page_size": 100}
    )
    assert response.status_code == 200, response.get_json()
    return int(response.get_json()["count"])


@pytest.mark.parametrize("who", ["helen", "anna"])
def test_every_cell_opens_the_list_of_exactly_its_records(world: World, who: str) -> None:
    data = funnel(world, who)
    cells = {(d["row"], d["column"]): d["url"] for d in data["drill"]}
    assert (
        len(cells) == (len(data["rows"]) + 1) * 3
    )  # reached, amount, now: every row and the totals
    for (row, column), url in cells.items():
        shown = data["total"] if row == -1 else data["rows"][row]
        if column == "amount":
            continue  # the amount's cell opens the same records as `reached`
        assert _list_count(world, who, url) == shown[column], (row, column)


def test_the_list_page_shows_the_cell_with_a_way_back(world: World) -> None:
    helen = world.login(world.app, "helen")
    data = funnel(world, "helen")
    proposal = next(i for i, r in enumerate(data["rows"]) if r["stage"] == "Proposal")
    url = next(d["url"] for d in data["drill"] if d["row"] == proposal and d["column"] == "reached")
    page = helen.get(url)
    assert page.status_code == 200
    assert "From the report Deal funnel: Proposal · Reached" in page.text
    assert 'class="crm-drill-back" href="/reports/deal_funnel?' in page.text
    count = data["rows"][proposal]["reached"]
    assert f">{count}<" in page.text.replace("\u00a0", "") or f"{count}" in page.text
    exported = helen.get(url.replace("/deal/?", "/deal/export.csv?"))
    assert exported.status_code == 200
    assert len(list(csv.reader(io.StringIO(exported.data.decode("utf-8-sig"))))) == count + 1
    # a forged or altered token narrows nothing: a 400
    assert helen.get("/deal/?drill=forged").status_code == 400
    assert helen.get("/api/v1/deal/?drill=" + "x" + url.split("drill=")[1]).status_code == 400
    # the token of a deal cell is not one of another list
    assert helen.get(url.replace("/deal/?", "/customer/?")).status_code == 400


def test_a_managers_token_opens_nothing_more_for_them(world: World) -> None:
    helen_url = next(
        d["url"]
        for d in funnel(world, "helen")["drill"]
        if d["row"] == -1 and d["column"] == "reached"
    )
    # the head's token in a manager's hands: still only what the manager may read
    assert _list_count(world, "anna", helen_url) == world.expected("anna")["total"]


def test_the_page_the_files_and_the_print(world: World) -> None:
    helen = world.login(world.app, "helen")
    page = helen.get(f"/reports/deal_funnel?{world.args}")
    assert page.status_code == 200
    assert "<svg" in page.text and "crm-report-table" in page.text and "crm-drill" in page.text
    assert "crm-sidebar" in page.text
    expected = world.expected()
    rows = list(
        csv.reader(
            io.StringIO(
                helen.get(f"/reports/deal_funnel/csv?{world.args}").data.decode("utf-8-sig")
            )
        )
    )
    assert rows[0][:3] == ["Stage", "Reached", "Amount"]
    assert rows[1][:2] == ["New", str(expected["reached"]["new"])]
    assert rows[-1][:2] == ["In the period", str(expected["total"])]
    book = load_workbook(io.BytesIO(helen.get(f"/reports/deal_funnel/xlsx?{world.args}").data))
    sheet = list(book.active.values)
    assert sheet[1][0] == "New" and sheet[1][1] == expected["reached"]["new"]
    assert sheet[-1][1] == expected["total"]
    printed = helen.get(f"/reports/deal_funnel?{world.args}&print=1")
    assert printed.status_code == 200
    assert "<svg" in printed.text and "crm-sidebar" not in printed.text
    assert world.start.isoformat() in printed.text


def test_the_reports_list_and_the_menu(world: World) -> None:
    helen, anna = world.login(world.app, "helen"), world.login(world.app, "anna")
    listed = helen.get("/reports/")
    assert listed.status_code == 200
    assert "Deal funnel" in listed.text and "Heads&#39; funnel" in listed.text
    assert "Heads&#39; funnel" not in anna.get("/reports/").text
    assert 'href="/reports/"' in helen.get("/deal/").text
    names = [r["name"] for r in helen.get("/api/v1/reports/").get_json()["result"]]
    assert "deal_funnel" in names and "heads_funnel" in names
    assert "heads_funnel" not in [
        r["name"] for r in anna.get("/api/v1/reports/").get_json()["result"]
    ]


def test_bad_requests_are_4xx_never_500(world: World) -> None:
    helen, anna = world.login(world.app, "helen"), world.login(world.app, "anna")
    for query in ("from=yesterday", "from=2026-02-30", "from=2026-03-01&to=2026-02-01",
                  "to=99999-01-01", "manager=abc", "kind=wholesale", "segment=nope", "period=decade"):  # fmt: skip
        page = helen.get(f"/reports/deal_funnel?{query}")
        assert page.status_code == 400, query
        assert "crm-report-error" in page.text
        api = helen.get(f"/api/v1/reports/deal_funnel?{query}")
        assert api.status_code == 400 and api.get_json()["message"], query
        assert helen.get(f"/reports/deal_funnel/csv?{query}").status_code == 400
    assert anna.get("/reports/heads_funnel").status_code == 403
    assert anna.get("/api/v1/reports/heads_funnel").status_code == 403
    assert helen.get("/reports/no_such_report").status_code == 404
    assert helen.get("/api/v1/reports/no_such_report").status_code == 404
    assert world.app.test_client().get("/api/v1/reports/deal_funnel").status_code == 401


def test_the_interest_and_order_funnels_run(world: World) -> None:
    for name in ("interest_funnel", "order_funnel"):
        data = funnel(world, "helen", name=name)
        assert data["total"]["reached"] == 0
        assert data["rows"], name
    order = funnel(world, "helen", name="order_funnel")
    stages = [r["stage"] for r in order["rows"]]
    assert stages == ["New", "Confirmed", "Shipped", "Closed", "Cancelled"]
    assert order["rows"][-1]["stage"] == "Cancelled"
