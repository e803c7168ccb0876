"""Dashboards: the home page per role, declared under ``dashboards:``
(docs/reports.md, "Dashboards").

Which dashboard a user opens on: the dashboards whose ``roles`` hold one of
the user's roles (or ``everyone``), by ``order`` and then in declared order;
the first is the default, the others are offered beside it. An administrator
may open every dashboard. A user no dashboard names keeps the plain home
page (what is open, what to create).

Each card is one statement under the user's read rule:

- ``count`` / ``sum``: one aggregate of the type's records matching the
  card's filter, linked to the type's list with that same filter
  (``?filter=<json>``), so the number on the card and the list agree;
- ``report``: the report's kind run directly, shown as a KPI, its chart or a
  small table, linked to the report's page with the card's parameters.

A card the user may not read (the type or the report) is left out; a card
that cannot be computed (a report kind this installation does not serve, a
parameter the user has no value for) shows as not available, never as an
error page.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from markupsafe import Markup
from sqlalchemy.orm import Session

from engine import access
from engine.access import Principal
from engine.filters import FilterError, compile_filter
from engine.i18n import gettext
from engine.registry import EVERYONE, USER, Card, Dashboard, Registry

log = logging.getLogger(__name__)

#: how many rows a table card shows, and how many columns: its first text
#: columns (what a row is about) and its first figures, in the report's order
TABLE_ROWS = 5
TABLE_TEXT_COLUMNS = 2
TABLE_NUMBER_COLUMNS = 3
#: a report card's period when its params name none
DEFAULT_PERIOD = "month"


def available(registry: Registry, principal: Principal) -> list[Dashboard]:
    """The dashboards the principal may open, the one to open on first."""
    ordered = sorted(
        enumerate(registry.dashboards.values()), key=lambda item: (item[1].order, item[0])
    )
    mine = [d for _, d in ordered if EVERYONE in d.roles or principal.roles.intersection(d.roles)]
    if principal.admin:
        mine += [d for _, d in ordered if d not in mine]
    return mine


def choose(registry: Registry, principal: Principal, name: str | None) -> Dashboard | None:
    """The dashboard asked for by name when the principal may open it, else their first."""
    options = available(registry, principal)
    for d in options:
        if d.name == name:
            return d
    return options[0] if options else None


@dataclass
class Shown:
    """A card as the page draws it."""

    card: Card
    label: str
    href: str | None = None
    #: number (count, sum, a report's KPI), chart, table, or unavailable
    kind: str = "number"
    value: Any = None
    text: str = ""
    svg: Markup = field(default_factory=Markup)
    columns: list[Any] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    reason: str = ""

    @property
    def wide(self) -> bool:
        return self.card.what == "report" and self.card.show in ("chart", "table")


@dataclass(frozen=True)
class Env:
    """What cards are computed with."""

    models: Any
    session: Session
    principal: Principal
    tz: dt.tzinfo
    now: dt.datetime
    locale: str

    @property
    def registry(self) -> Registry:
        registry: Registry = self.models.registry
        return registry


class Unavailable(Exception):
    """The card cannot be computed for this user here: shown as not available."""


def cards(env: Env, dashboard: Dashboard) -> list[Shown]:
    """Every card of the dashboard the principal may see, computed."""
    out: list[Shown] = []
    for card in dashboard.cards:
        if not _visible(env, card):
            continue
        shown = Shown(card, _label(env, card))
        try:
            with env.session.begin_nested():  # a failing card leaves the others' transaction
                if card.what == "report":
                    _report(env, card, shown)
                else:
                    _aggregate(env, card, shown)
        except Unavailable as exc:
            shown.kind, shown.reason = "unavailable", str(exc)
        except (FilterError, ValueError) as exc:
            shown.kind, shown.reason = "unavailable", str(exc)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("dashboard card %s.%s: %s", dashboard.name, card.name, exc)
            shown.kind, shown.reason = "unavailable", ""
        out.append(shown)
    return out


def _visible(env: Env, card: Card) -> bool:
    registry = env.registry
    if card.what == "report":
        report = registry.reports.get(card.target)
        if report is None or report.document not in registry.documents:
            return False
        roles = report.options.get("roles")
        if roles and not env.principal.admin and not env.principal.roles.intersection(roles):
            return False
        return access.allowed(registry, env.principal, report.document, "read")
    return card.target in registry.documents and access.allowed(
        registry, env.principal, card.target, "read"
    )


def _label(env: Env, card: Card) -> str:
    if card.label is not None:
        return card.label.get(env.locale)
    if card.what == "report":
        report = env.registry.reports[card.target]
        label = report.options.get("label")
        if isinstance(label, Mapping):
            return str(label.get(env.locale) or label.get("en") or next(iter(label.values())))
        return str(label or report.name)
    return env.registry.documents[card.target].label.get(env.locale)


# -- count and sum ----------------------------------------------------------------------


def aggregate_query(env: Env, card: Card) -> sa.Select[Any]:
    """The card's one statement: COUNT(*) or SUM(field) of the readable records its filter matches."""
    d = env.registry.documents[card.target]
    table = env.models.table(d.name)
    where = sa.and_(
        access.where(env.models, env.principal, d.name, "read"),
        compile_filter(
            env.models, d.name, card.filter, env.principal.user_id, env.now, env.principal
        ),
    )
    if card.what == "sum":
        f = d.fields[card.summed or ""]
        if not access.field_rights(env.registry, env.principal, d.name).readable(f.name):
            raise Unavailable(gettext("`%(field)s` is hidden from you", field=f.name))
        measure: Any = sa.func.coalesce(sa.func.sum(table.c[f.column]), 0)
    else:
        measure = sa.func.count()
    return sa.select(measure).select_from(table).where(where)


def _aggregate(env: Env, card: Card, shown: Shown) -> None:
    from engine.reports.charts import number

    value = env.session.execute(aggregate_query(env, card)).scalar_one()
    shown.value = value
    d = env.registry.documents[card.target]
    fmt = "count" if card.what == "count" else d.fields[card.summed or ""].type
    shown.text = number(
        value, "money" if fmt == "money" else "count" if fmt == "count" else "number"
    )
    shown.href = list_href(env.registry, card.target, card.filter)


def list_href(registry: Registry, doctype: str, spec: Mapping[str, Any]) -> str:
    """The type's list filtered to exactly the records ``spec`` matches."""
    d = registry.documents[doctype]
    if not spec:
        return f"/{d.resource}/"
    text = json.dumps(_plain(spec), ensure_ascii=False, separators=(",", ":"), default=str)
    return f"/{d.resource}/?" + urlencode({"filter": text})


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# -- reports ----------------------------------------------------------------------------


def period(name: str, today: dt.date) -> tuple[dt.date, dt.date]:
    """today, week, month, quarter or year around ``today``: both ends included."""
    if name == "today":
        return today, today
    if name == "week":
        start = today - dt.timedelta(days=today.weekday())
        return start, start + dt.timedelta(days=6)
    if name == "year":
        return today.replace(month=1, day=1), today.replace(month=12, day=31)
    first_month = (today.month - 1) // 3 * 3 + 1 if name == "quarter" else today.month
    start = today.replace(month=first_month, day=1)
    months = 3 if name == "quarter" else 1
    year, month = divmod(first_month - 1 + months, 12)
    return start, dt.date(today.year + year, month + 1, 1) - dt.timedelta(days=1)


def _department(env: Env) -> int:
    users = env.models.table(USER)
    f = env.registry.documents[USER].fields.get("department")
    if f is None or not f.stored or env.principal.user_id is None:
        raise Unavailable(gettext("users have no department here"))
    value = env.session.execute(
        sa.select(users.c[f.column]).where(users.c.id == env.principal.user_id)
    ).scalar_one_or_none()
    if value is None:
        raise Unavailable(gettext("you belong to no department"))
    return int(value)


def report_params(env: Env, card: Card) -> tuple[Any, dict[str, str]]:
    """The card's ``params`` as the report's :class:`~engine.reports.Params`, and as
    the query string of the report's page (from, to, manager, department, kind,
    segment and the kind's options)."""
    from engine import clock
    from engine.reports import Params

    raw = {str(k): v for k, v in card.params.items()}
    start, end = period(str(raw.pop("period", DEFAULT_PERIOD)), clock.today(env.tz))
    query: dict[str, str] = {"from": start.isoformat(), "to": end.isoformat()}
    manager = department = None
    if raw.pop("manager", None) == "me":
        if env.principal.user_id is None:
            raise Unavailable(gettext("only a signed-in user has a plan of their own"))
        manager = env.principal.user_id
        query["manager"] = str(manager)
    if raw.pop("department", None) == "mine":
        department = _department(env)
        query["department"] = str(department)
    kind = raw.pop("kind", None)
    segment = raw.pop("segment", None)
    for key, value in (("kind", kind), ("segment", segment)):
        if value is not None:
            query[key] = str(value)
    extra = {k: str(v) for k, v in raw.items()}
    query.update(extra)
    params = Params(
        start, end, manager, department,
        None if kind is None else str(kind), None if segment is None else str(segment), extra,
    )  # fmt: skip
    return params, query


def report_href(name: str, query: Mapping[str, str]) -> str:
    return f"/reports/{name}?" + urlencode(dict(query))


def _report(env: Env, card: Card, shown: Shown) -> None:
    from engine.reports import KINDS, Context, load_kinds
    from engine.reports.charts import number, svg

    report = env.registry.reports[card.target]
    kind = KINDS.get(report.type) or load_kinds().get(report.type)
    if kind is None:
        raise Unavailable(
            gettext("reports of the type `%(type)s` are not served here", type=report.type)
        )
    params, query = report_params(env, card)
    shown.href = report_href(report.name, query)
    ctx = Context(env.models, env.session, env.principal, env.tz, env.now)
    result = kind.run(ctx, report, params)
    if card.show == "chart":
        chart = chart_without_links(result.chart)
        if chart is None:
            raise Unavailable(gettext("the report draws no chart"))
        shown.kind, shown.svg = "chart", svg(chart)
        return
    if card.show == "table":
        texts = [c for c in result.columns if c.format in ("text", "date")][:TABLE_TEXT_COLUMNS]
        figures = [c for c in result.columns if c.format not in ("text", "date")]
        keep = {id(c) for c in texts + figures[:TABLE_NUMBER_COLUMNS]}
        columns = [c for c in result.columns if id(c) in keep]
        shown.kind, shown.columns = "table", [c.label for c in columns]
        shown.rows = [
            [_cell(row.get(c.key), c.format) for c in columns] for row in result.rows[:TABLE_ROWS]
        ]
        return
    row = result.total if result.total is not None else (result.rows[0] if result.rows else None)
    if card.value is not None:
        column = next((c for c in result.columns if c.key == card.value), None)
        if column is None:
            raise Unavailable(gettext("the report has no column `%(key)s`", key=card.value))
    else:
        numbers = _number_columns(result.columns)
        column = numbers[0] if numbers else None
    if column is None:
        raise Unavailable(gettext("the report has no number to show"))
    shown.value = None if row is None else row.get(column.key)
    shown.text = number(shown.value or 0, column.format)


def _cell(value: Any, fmt: str) -> str:
    from engine.reports.charts import number

    if value is None:
        return "—"
    if fmt == "text" or isinstance(value, (str, dt.date, dt.datetime)):
        return str(value)
    return number(value, fmt)  # type: ignore[arg-type]


def _number_columns(columns: Iterable[Any]) -> list[Any]:
    return [c for c in columns if c.format != "text"]


def chart_without_links(chart: Any) -> Any:
    """A card's chart links nowhere bar by bar: the whole card opens the report."""
    return dataclasses.replace(chart, links=()) if chart is not None else None
