"""Reports: what a consultant declares under ``reports:``, served as pages,
JSON, CSV/XLSX and dashboard cards (docs/reports.md).

A report's ``type:`` names a :class:`Kind`. A kind

- checks the report's options at ``crm check`` (:meth:`Kind.check`): a key
  it does not act on is refused there, never silently ignored;
- runs as one SQL statement (or a fixed few) whatever the data size, under
  the principal's read rule (:meth:`Kind.run` → :class:`Result`);
- tells, for any cell it marked as drillable, exactly which records were
  counted in it (:meth:`Kind.drill`): the list the cell links to is filtered
  to ``id IN (that select)``, so the count in the cell and in the list agree.

Kinds live in the modules of this package, one module per family
(``history``: funnel, conversion, by manager/department, time in stage;
``deals``: plan/fact, forecast, won/lost, loss reasons, stale, sources,
table; ``abc_xyz``; ``quality``). Plugins add theirs through the
``crm_report_kinds`` hook (``engine.api.Kind`` subclasses).
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from engine.access import Principal
from engine.errors import Problem
from engine.registry import Registry, Report

#: how a column's values are shown (and exported: numbers stay numbers)
Format = Literal["text", "count", "number", "money", "percent", "days", "hours", "date"]


@dataclass(frozen=True)
class Params:
    """What the user asked for: the period (days on the company's clock, both
    ends included) and the narrowing parameters every report takes. ``kind``
    is a deal kind (the value of the type's ``kind`` field), ``segment`` the
    name of a segment of the report's type (the consultant's or a saved
    one). ``extra`` holds a kind's own parameters (``days`` of the stale
    report, ``group`` = month/week/quarter, ...)."""

    start: dt.date
    end: dt.date
    manager: int | None = None
    department: int | None = None
    kind: str | None = None
    segment: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    """What a kind runs with: whose rules apply, on which database, on whose clock."""

    models: Any  # engine.models.Models
    session: Session
    principal: Principal | None  # None: the engine's own work (a job) sees everything
    tz: dt.tzinfo
    now: dt.datetime

    @property
    def registry(self) -> Registry:
        registry: Registry = self.models.registry
        return registry

    @property
    def dialect(self) -> str:
        return self.session.get_bind().dialect.name

    def text(self, label: Any) -> str:
        """A metadata label in the reader's language (the config's outside a request)."""
        from engine.i18n import _request_locale

        return str(label.get(_request_locale() or self.registry.locale))

    def readable(self, doctype: str) -> sa.ColumnElement[bool]:
        """The SQL condition of the rows of ``doctype`` the principal may read."""
        from engine import access

        if self.principal is None:
            return access.live(self.models, doctype)  # never the records a merge archived
        return access.where(self.models, self.principal, doctype, "read")


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    format: Format = "text"


@dataclass(frozen=True)
class Series:
    label: str
    values: Sequence[float | None]


@dataclass(frozen=True)
class Chart:
    """What a report draws (``engine.reports.charts.svg`` renders it):

    - ``bar``: one horizontal bar per label, a series beside the other;
    - ``funnel``: centred bars narrowing stage by stage (one series);
    - ``column``: vertical bars per period, series side by side;
    - ``line``: series over periods.
    """

    kind: Literal["bar", "funnel", "column", "line"]
    labels: Sequence[str]
    series: Sequence[Series]
    format: Format = "count"
    #: where each label's bar links (a drill-down), by index; None: nowhere
    links: Sequence[str | None] = ()


@dataclass
class Result:
    """A report's answer: the table (rows of cells by column key), its totals
    row, the chart, and the drillable cells. ``drill[(row_index, key)]`` is
    the cell's token for :meth:`Kind.drill`; the totals row is row index -1."""

    columns: list[Column]
    rows: list[dict[str, Any]]
    total: dict[str, Any] | None = None
    chart: Chart | None = None
    drill: dict[tuple[int, str], str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class ReportError(ValueError):
    """A parameter the report cannot take: a 400 (form error / JSON error) with this message."""


class Kind(ABC):
    """One ``type:`` of report. Subclasses set ``name``, the options they take
    (``options``: key → a short description for docs/reports.md), and
    implement :meth:`run` and, where cells are drillable, :meth:`drill`."""

    name: ClassVar[str] = ""
    #: the options of the report this kind reads, beyond type/document/label/roles
    options: ClassVar[Mapping[str, str]] = {}
    #: the options a user may change per request, on the page and over REST
    #: (name → its label, translated): the others are the consultant's alone
    #: (a request could otherwise group by a field hidden from its user)
    parameters: ClassVar[Mapping[str, Any]] = {}

    def check(self, registry: Registry, report: Report) -> Iterator[Problem]:
        """Problems of the report's options (unknown keys are refused by the
        engine from ``options``; this checks their values)."""
        return iter(())

    @abstractmethod
    def run(self, ctx: Context, report: Report, params: Params) -> Result:
        """The report's figures for ``params`` (one SQL statement or a fixed few)."""

    def drill_document(self, registry: Registry, report: Report, cell: str) -> str:
        """The document type whose list a cell's token opens (what
        :meth:`drill` returns first): the report's own type unless the kind
        counts another one (a customer per cell of an order report)."""
        return report.document

    def drill(
        self, ctx: Context, report: Report, params: Params, cell: str
    ) -> tuple[str, sa.Select[Any]]:
        """The document type a cell counts and the SELECT of those records'
        ids (under the same rules as :meth:`run`)."""
        raise ReportError("this cell has no list")


#: every kind the engine serves, by ``type:`` (the enabled plugins' come
#: from the ``crm_report_kinds`` hook, per configuration)
KINDS: dict[str, Kind] = {}

#: the options every report takes, whatever its kind
COMMON_OPTIONS = frozenset({"type", "document", "label", "roles", "filter"})


def kind(cls: type[Kind]) -> type[Kind]:
    """Class decorator: register one of the engine's kinds (a plugin returns
    its kinds from the ``crm_report_kinds`` hook instead)."""
    KINDS[cls.name] = cls()
    return cls


def load_kinds() -> Mapping[str, Kind]:
    """Import the engine's kind modules (each registers its kinds)."""
    from engine.reports import abc_xyz, deals, history, history_kinds, plans, quality  # noqa: F401

    return KINDS
