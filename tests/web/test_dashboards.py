"""Dashboards (`dashboards:`): the home page per role. A number card counts
what the user may read and links to the list of exactly those records; a
report card runs its report's kind; `crm check` points at every mistake; a
report the installation does not serve leaves a quiet card, not an error."""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from flask import Flask

from engine import clock
from engine.access import Principal
from engine.dashboards import available, choose, period
from engine.loader import load
from engine.registry import Registry, Report
from engine.reports import (
    KINDS,
    Chart,
    Column,
    Context,
    Kind,
    Params,
    ReportError,
    Result,
    Series,
    load_kinds,
)
from engine.reports.common import narrowing
from tests.web.conftest import SALES, Browser

TASKS = """
  Task:
    title: "{{ title }}"
    owner: assignee
    fields:
      title:    {type: string, required: true}
      assignee: {type: ref, to: User, default: current_user}
      due:      {type: datetime}
    statuses:
      initial: open
      states:
        open: {label: Open}
        done: {label: Done, final: true, outcome: done}
      transitions:
        - {from: open, to: done}
    list: {columns: [title, assignee, due, status], filters: [status, assignee]}
    access:
      manager:    {read: own, create: true, update: own}
      sales_head: {read: all, create: true, update: all}
"""

DASHBOARDS = """
reports:
  deal_funnel: {type: funnel, document: Deal, label: {en: Deal funnel, ru: Воронка сделок}}
  deals_won_lost: {type: won_lost, document: Deal, label: Won and lost}
dashboards:
  sales:
    label: {en: My day, ru: Мой день}
    roles: [manager]
    cards:
      overdue: {count: Task, filter: {status: open, due: {lt: now}, assignee: current_user}, label: {en: Overdue tasks, ru: Просроченные задачи}, tone: bad}
      open_deals: {count: Deal, filter: {stage: {nin: [won, lost]}}, label: Open deals}
      pipeline: {sum: Deal, field: amount, filter: {stage: {nin: [won, lost]}}, label: Pipeline}
      funnel_kpi: {report: deal_funnel, params: {manager: me, period: month}, label: Deals in the funnel}
      funnel: {report: deal_funnel, params: {manager: me}, show: chart}
      funnel_table: {report: deal_funnel, show: table, label: By stage}
      won_lost: {report: deals_won_lost, show: chart}
  team:
    label: Team
    roles: [sales_head, manager]
    cards:
      overdue: {count: Task, filter: {status: open, due: {lt: now}}, label: Overdue tasks of the team, tone: bad}
      open_deals: {count: Deal, filter: {stage: {nin: [won, lost]}}, label: Open deals}
"""

METADATA = SALES + TASKS + DASHBOARDS


class DealsByStage(Kind):
    """A small funnel for the tests: open deals by stage now, under the report's narrowing."""

    name = "funnel"

    def run(self, ctx: Context, report: Report, params: Params) -> Result:
        deals = ctx.models.table("Deal")
        rows = ctx.session.execute(
            sa.select(deals.c.stage, sa.func.count())
            .where(narrowing(ctx, report, params))
            .group_by(deals.c.stage)
            .order_by(deals.c.stage)
        ).all()
        columns = [Column("stage", "Stage"), Column("deals", "Deals", "count")]
        return Result(
            columns,
            [{"stage": s, "deals": n} for s, n in rows],
            total={"stage": "Total", "deals": sum(n for _, n in rows)},
            chart=Chart(
                "funnel",
                [s for s, _ in rows],
                [Series("Deals", [n for _, n in rows])],
                links=["tok"] * len(rows),
            ),
        )


class Refusing(Kind):
    """A kind that cannot answer here: its card must say so, not break the page."""

    name = "won_lost"

    def run(self, ctx: Context, report: Any, params: Params) -> Result:
        raise ReportError("the won/lost report cannot run here")


@pytest.fixture
def funnel_kind(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The test funnel registered as `funnel`; `won_lost` refusing to run."""
    load_kinds()
    monkeypatch.setitem(KINDS, "funnel", DealsByStage())
    monkeypatch.setitem(KINDS, "won_lost", Refusing())
    yield


@pytest.fixture
def app(crm_app: Callable[..., Flask], funnel_kind: None) -> Flask:
    return crm_app(METADATA)


def cards(page: str) -> dict[str, dict[str, Any]]:
    """The cards of a dashboard page: name → its href, value text and label."""
    out: dict[str, dict[str, Any]] = {}
    for m in re.finditer(r'<(a|div|section) class="(?:crm-panel )?crm-card[^"]*" data-card="(\w+)"'
                         r'(?: href="([^"]*)")?>(.*?)</\1>', page, re.S):  # fmt: skip
        body = m.group(4)
        value = re.search(r'class="crm-card-value[^"]*"[^>]*>([^<]*)<', body)
        link = m.group(3) or (re.search(r'<h4><a href="([^"]*)"', body) or [None, None])[1]
        out[m.group(2)] = {
            "href": html.unescape(link) if link else None,
            "value": value.group(1).strip() if value else None,
            "body": body,
        }
    return out


def list_count(browser: Browser, href: str) -> int:
    response = browser.get(href)
    assert response.status_code == 200, response.text[:500]
    return len(re.findall(r'<tr class="crm-row-link"', response.text))


def make_deal(b: Browser, customer: int, amount: str, stage: str | None = None) -> int:
    response = b.api("POST", "/api/v1/deal/", json={"customer": customer, "amount": amount})
    assert response.status_code == 201, response.get_json()
    deal = int(response.get_json()["id"])
    if stage == "lost":
        r = b.api("POST", f"/api/v1/deal/{deal}/transition",
                  json={"to": "lost", "fields": {"loss_reason": "price"}})  # fmt: skip
        assert r.status_code == 200, r.get_json()
    return deal


def make_task(b: Browser, title: str, due: dt.datetime) -> None:
    response = b.api("POST", "/api/v1/task/", json={"title": title, "due": due.isoformat()})
    assert response.status_code == 201, response.get_json()


def fill(app: Flask, login: Callable[[Flask, str], Browser]) -> dict[str, Browser]:
    users = {name: login(app, name) for name in ("anna", "boris", "helen")}
    now = clock.now()
    for name, n_open in (("anna", 2), ("boris", 3)):
        b = users[name]
        customer = b.api("POST", "/api/v1/customer/", json={"name": f"{name} Ltd"}).get_json()["id"]
        for i in range(n_open):
            make_deal(b, customer, f"{100 * (i + 1)}.50")
        make_deal(b, customer, "999", stage="lost")
        make_task(b, f"{name}: late", now - dt.timedelta(hours=3))
        make_task(b, f"{name}: later", now + dt.timedelta(days=2))
    make_task(users["anna"], "anna: very late", now - dt.timedelta(days=5))
    return users


def test_a_managers_cards_count_his_records_and_link_to_a_list_of_exactly_them(
    app: Flask, login: Callable[[Flask, str], Browser]
) -> None:
    users = fill(app, login)
    anna = users["anna"]
    page = anna.get("/")
    assert page.status_code == 200
    assert 'data-dashboard="sales"' in page.text
    shown = cards(page.text)
    assert shown["overdue"]["value"] == "2"  # her two late tasks; boris's is not hers
    assert shown["open_deals"]["value"] == "2"  # she reads her own deals only
    assert shown["pipeline"]["value"] == "301"  # 100.50 + 200.50, the lost deal left out
    # each number card opens the list of exactly the records it counted
    for name, expected in (("overdue", 2), ("open_deals", 2)):
        href = shown[name]["href"]
        assert href.startswith(("/task/?filter=", "/deal/?filter=")), href
        assert list_count(anna, href) == expected, name
    assert "crm-tone-bad" in re.search(r'<a class="[^"]*" data-card="overdue"', page.text)[0]

    # the head of sales opens on the team's dashboard: every record he may read
    helen = users["helen"]
    page = helen.get("/")
    assert 'data-dashboard="team"' in page.text
    team = cards(page.text)
    assert team["overdue"]["value"] == "3"
    assert team["open_deals"]["value"] == "5"
    assert list_count(helen, team["overdue"]["href"]) == 3
    assert list_count(helen, team["open_deals"]["href"]) == 5


def test_the_list_shows_the_cards_filter_as_a_chip_it_can_drop(
    app: Flask, login: Callable[[Flask, str], Browser]
) -> None:
    users = fill(app, login)
    anna = users["anna"]
    href = cards(anna.get("/").text)["overdue"]["href"]
    page = anna.get(href)
    chip = re.search(r'<div class="crm-filter-chip".*?</div>', page.text, re.S)
    assert chip, "the card's filter is shown on the list"
    text = html.unescape(chip[0])
    assert "Status: Open" in text and "Due &lt; now" not in text and "Due < now" in text
    assert "Assignee: me" in text
    without = html.unescape(re.search(r'href="([^"]*)"', chip[0])[1])
    assert "filter" not in without
    assert list_count(anna, without) == 3  # all her tasks again
    # the list's own filter narrows the card's further; the form keeps the card's filter
    assert 'type="hidden" name="filter"' in page.text
    done = href + "&f_status=done"
    assert list_count(anna, done) == 0
    # the CSV export takes the same filter
    csv = anna.get(href.replace("/task/?", "/task/export.csv?"))
    assert csv.status_code == 200
    assert len(csv.text.strip().splitlines()) == 1 + 2


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("{not json", "`filter` is not valid JSON"),
        ("[1, 2]", "`filter` must be a JSON object"),
        ('{"colour": "red"}', "no field `colour`"),
    ],
)
def test_a_wrong_filter_in_the_url_is_a_400_that_says_why(
    app: Flask, login: Callable[[Flask, str], Browser], query: str, message: str
) -> None:
    anna = login(app, "anna")
    response = anna.get("/deal/", query_string={"filter": query})
    assert response.status_code == 400
    assert message in html.unescape(response.text)
    response = anna.get("/deal/export.csv", query_string={"filter": query})
    assert response.status_code == 400


def test_report_cards_run_their_kind_and_a_kind_not_served_is_a_quiet_card(
    app: Flask, login: Callable[[Flask, str], Browser]
) -> None:
    users = fill(app, login)
    anna = users["anna"]
    page = anna.get("/")
    assert page.status_code == 200
    shown = cards(page.text)
    # a KPI: the first number of the totals row, her deals only (manager: me)
    assert shown["funnel_kpi"]["value"] == "3"
    href = urlsplit(shown["funnel_kpi"]["href"])
    assert href.path == "/reports/deal_funnel"
    query = parse_qs(href.query)
    start, end = period("month", clock.today("UTC"))  # the test config's clock
    assert query["manager"] == [str(user_id(app, "anna"))]
    assert query["from"] == [start.isoformat()] and query["to"] == [end.isoformat()]
    # the chart, drawn on the server; its bars link nowhere, the card opens the report
    chart = shown["funnel"]["body"].split("</h4>", 1)[1]
    assert "<svg" in chart and "<a " not in chart
    assert shown["funnel"]["href"].startswith("/reports/deal_funnel?")
    # a small table (her deals: the report is narrowed by her read rule)
    assert "<table" in shown["funnel_table"]["body"]
    assert re.search(r"<td>new</td><td>2</td>", shown["funnel_table"]["body"])
    # the won/lost report cannot run here: the card says so, the page stands
    assert "Not available" in shown["won_lost"]["body"]
    assert "<svg" not in shown["won_lost"]["body"]


def user_id(app: Flask, username: str) -> int:
    with app.app_context():
        return int(app.extensions["crm"].appbuilder.sm.find_user(username=username).id)


def registry_of(make_config: Callable[..., Any], files: dict[str, str]) -> Registry:
    return load(make_config(files, "name: T\nlocale: en\nlayers: []\n"))


def test_which_dashboard_a_user_opens_on(make_config: Callable[..., Any]) -> None:
    registry = registry_of(make_config, {"crm.yaml": METADATA})
    both = Principal(7, "x", frozenset({"manager", "sales_head"}))
    assert [d.name for d in available(registry, both)] == ["sales", "team"]
    assert choose(registry, both, None).name == "sales"  # type: ignore[union-attr]
    assert choose(registry, both, "team").name == "team"  # type: ignore[union-attr]
    assert choose(registry, Principal(8, "h", frozenset({"sales_head"})), "sales").name == "team"  # type: ignore[union-attr]
    assert choose(registry, Principal(9, "m", frozenset({"marketer"})), None) is None
    admin = Principal(1, "admin", frozenset({"Admin"}))
    assert [d.name for d in available(registry, admin)] == ["sales", "team"]
    # `order` puts a dashboard first for a user with several roles
    ordered = METADATA.replace("    label: Team\n", "    label: Team\n    order: -1\n")
    registry = registry_of(make_config, {"crm.yaml": ordered})
    assert choose(registry, both, None).name == "team"  # type: ignore[union-attr]


def test_a_later_layer_adds_replaces_and_removes_cards(make_config: Callable[..., Any]) -> None:
    registry = registry_of(
        make_config,
        {
            "a.yaml": METADATA,
            "b.yaml": """\
dashboards:
  team:
    label: The team
    cards:
      open_deals: null
      overdue: {count: Task, filter: {status: open}, label: Open tasks}
      deals: {count: Deal}
""",
        },
    )
    team = registry.dashboards["team"]
    assert team.label.get() == "The team" and team.roles == ("sales_head", "manager")
    assert [c.name for c in team.cards] == ["overdue", "deals"]
    assert team.cards[0].filter == {"status": "open"}


def test_a_user_without_a_dashboard_keeps_the_plain_home_page(
    crm_app: Callable[..., Flask], login: Callable[[Flask, str], Browser]
) -> None:
    only_managers = METADATA.replace("roles: [sales_head, manager]", "roles: [manager]")
    app = crm_app(only_managers)
    page = login(app, "helen").get("/")
    assert page.status_code == 200
    assert "crm-dashboard" not in page.text and "crm-home-open" in page.text
    # an administrator may open every dashboard: a chooser, the first one open
    page = login(app, "admin").get("/")
    assert 'data-dashboard="sales"' in page.text and 'href="/?dashboard=team"' in page.text
    assert 'data-dashboard="team"' in login(app, "admin").get("/?dashboard=team").text


def test_crm_check_points_at_each_mistake_of_a_dashboard(
    problems_of: Callable[..., list[str]],
) -> None:
    bad = """\
dashboards:
  sales:
    roles: [manager, sales_haed]
    cards:
      a: {count: Dael}
      b: {sum: Deal, field: customer}
      c: {count: Deal, filter: {stag: new}}
      d: {report: deal_funel}
      e: {report: deal_funnel, params: {manager: you, colour: red}}
      f: {count: Deal, show: chart}
      g: {report: deal_funnel, filter: {stage: new}}
  nobody:
    cards:
      a: {count: Deal}
"""
    got = problems_of({"crm.yaml": SALES + TASKS, "dash.yaml": bad,
                       "reports.yaml": "reports:\n  deal_funnel: {type: funnel, document: Deal}\n"},
                      config="name: T\nlocale: en\nlayers: []\n")  # fmt: skip
    assert got == [
        "dash.yaml:3:22: the dashboard `sales` names an unknown role `sales_haed` (did you mean `sales_head`?)",
        "dash.yaml:5:18: the card `a` of the dashboard `sales` counts an unknown document type `Dael` (did you mean `Deal`?)",
        "dash.yaml:6:29: the card `b` of the dashboard `sales`, `field`: `Deal.customer` is a ref, not a number (integer, decimal, money)",
        "dash.yaml:7:33: the filter of the card `c` of the dashboard `sales`: `Deal` has no field `stag` (did you mean `stage`?)",
        "dash.yaml:8:19: the card `d` of the dashboard `sales` names an unknown report `deal_funel` (did you mean `deal_funnel`?)",
        "dash.yaml:9:50: the card `e` of the dashboard `sales`, `params.manager`: `you` is not one of `me`",
        "dash.yaml:9:55: the card `e` of the dashboard `sales`: the report `deal_funnel` takes no parameter `colour`; it takes `period`, `manager`, `department`, `kind`, `segment`, `amount`",
        "dash.yaml:10:24: the card `f` of the dashboard `sales`: `show` is for a `report` card",
        "dash.yaml:11:32: the card `g` of the dashboard `sales`: `filter` is for a `count` or `sum` card",
        "dash.yaml:12:3: the dashboard `nobody` needs `roles`: the roles that open on it, or `everyone`",
    ]  # fmt: skip


def test_crm_check_refuses_a_card_with_two_things_to_show(
    problems_of: Callable[..., list[str]],
) -> None:
    got = problems_of(
        {"crm.yaml": SALES, "dash.yaml": "dashboards:\n  s:\n    roles: [manager]\n    cards:\n"
         "      a: {count: Deal, sum: Deal}\n      b: {label: Nothing}\n      c: null\n"},
        config="name: T\nlocale: en\nlayers: []\n",
    )  # fmt: skip
    assert got == [
        "dash.yaml:5:10: the card `a` of the dashboard `s` needs exactly one of `count: TYPE`, `sum: TYPE` or `report: NAME`, not `count` and `sum`",
        "dash.yaml:6:10: the card `b` of the dashboard `s` needs exactly one of `count: TYPE`, `sum: TYPE` or `report: NAME`",
        "dash.yaml:7:7: the card `c` of the dashboard `s`: no earlier layer has this card to remove",
    ]  # fmt: skip


def test_the_periods_of_a_report_card() -> None:
    day = dt.date(2027, 2, 17)  # a Wednesday
    assert period("today", day) == (day, day)
    assert period("week", day) == (dt.date(2027, 2, 15), dt.date(2027, 2, 21))
    assert period("month", day) == (dt.date(2027, 2, 1), dt.date(2027, 2, 28))
    assert period("quarter", day) == (dt.date(2027, 1, 1), dt.date(2027, 3, 31))
    assert period("quarter", dt.date(2027, 11, 30)) == (dt.date(2027, 10, 1), dt.date(2027, 12, 31))
    assert period("month", dt.date(2027, 12, 5)) == (dt.date(2027, 12, 1), dt.date(2027, 12, 31))
    assert period("year", day) == (dt.date(2027, 1, 1), dt.date(2027, 12, 31))
