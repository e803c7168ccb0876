"""`crm check` of reports: a type no kind serves, an option the kind does
not read, a role that does not exist and a funnel's amount that is no
number are refused where they are written; the shipped configs load."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.loader import load

ROOT = Path(__file__).resolve().parents[2]
DEAL = """\
roles:
  manager: {label: Manager}
documents:
  Deal:
    owner: manager
    fields:
      amount:  {type: money}
      note:    {type: string}
      manager: {type: ref, to: User}
    statuses:
      initial: new
      states:
        new:  {label: New}
        won:  {label: Won, final: true, outcome: won}
        lost: {label: Lost, final: true, outcome: lost}
    access:
      manager: {read: own}
  Note:
    fields:
      text: {type: string}
"""


def test_unknown_types_and_options_are_refused_where_written(
    problems_of: Callable[..., list[str]],
) -> None:
    problems = problems_of(
        {
            "deal.yaml": DEAL + "reports:\n"
            "  one: {type: funel, document: Deal}\n"
            "  two: {type: funnel, document: Deal, amout: amount, by: [manager]}\n"
            "  three: {type: funnel, document: Deal, amount: note, roles: [manger]}\n"
            "  four: {type: funnel, document: Note}\n"
        }
    )
    assert problems == [
        "deal.yaml:22:15: the report `one` has an unknown type `funel` (did you mean `funnel`?); "
        "types are abc_xyz, by_department, by_manager, conversion, forecast, funnel, "
        "loss_reasons, plan_fact, quality, sources, stage_time, stale, table, won_lost",
        "deal.yaml:23:39: the report `two`: a `funnel` report does not read `amout` "
        "(did you mean `amount`?); its options are amount, filter, label, roles",
        "deal.yaml:23:54: the report `two`: a `funnel` report does not read `by`; "
        "its options are amount, filter, label, roles",
        "deal.yaml:24:49: the report `three`, `amount`: it must be a number field of Deal "
        "(not a field of another type)",
        "deal.yaml:24:63: the report `three`, `roles`: there is no role `manger` "
        "(did you mean `manager`?)",
        "deal.yaml:25:34: the report `four`: a funnel needs a type with statuses, Note has none",
    ]


def test_a_plugins_kind_is_served_and_checked(
    problems_of: Callable[..., list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine import reports
    from engine.reports import service

    class Meetings(reports.Kind):
        name = "meetings"
        options = {"days": "how many days back"}  # noqa: RUF012

        def run(
            self, ctx: reports.Context, report: object, params: reports.Params
        ) -> reports.Result:
            return reports.Result(columns=[], rows=[])

    monkeypatch.setattr(service, "plugin_kinds", lambda pm, registry: {"meetings": Meetings()})
    text = DEAL + "reports:\n  m: {type: meetings, document: Deal, days: 7, weeks: 1}\n"
    assert problems_of({"deal.yaml": text}) == [
        "deal.yaml:22:48: the report `m`: a `meetings` report does not read `weeks`; "
        "its options are days, filter, label, roles"
    ]


@pytest.mark.parametrize("config", ["demo", "services", "wholesale"])
def test_the_shipped_configs_reports_load(config: str) -> None:
    registry = load(ROOT / "configs" / config, env={})
    funnels = [r for r in registry.reports.values() if r.type == "funnel"]
    assert len(funnels) >= 3  # the base layer's three, and the config's own
    assert {"deal_funnel", "interest_funnel", "order_funnel"} <= set(registry.reports)
