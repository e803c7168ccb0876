"""Charts drawn on the server as inline SVG: no script, no CDN, printable,
readable without JavaScript and identical in every browser.

``svg(chart)`` renders a :class:`engine.reports.Chart`. Colours come from CSS
classes (``crm-chart-s0`` … ``crm-chart-s5`` in crm.css), so a theme or the
print stylesheet restyles every chart at once. Each bar carries a ``<title>``
(the browser's tooltip) with its label and value, and links to its drill-down
when the chart has one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from decimal import Decimal
from html import escape

from markupsafe import Markup

from engine.reports import Chart, Format

WIDTH = 640
BAR = 22  # a horizontal bar's thickness
GAP = 8
LABEL_W = 190  # room for the labels left of horizontal bars
HEIGHT = 240  # of column and line charts
SERIES = 6  # colour classes


def number(value: float | Decimal | int | dt.date | str | None, fmt: Format = "number") -> str:
    """A value as the chart's labels show it: thin-space thousands, a % sign, one decimal where it matters."""
    if value is None:
        return "—"
    if isinstance(value, dt.date):  # a date column (a datetime is a date too)
        return value.strftime("%d.%m.%Y %H:%M" if isinstance(value, dt.datetime) else "%d.%m.%Y")
    if isinstance(value, str):
        return value
    v = float(value)
    if fmt == "percent":
        return f"{v:.1f}\u00a0%"
    if fmt in ("days", "hours"):
        return f"{v:.1f}"
    text = f"{v:,.0f}" if fmt in ("count", "money") or v == int(v) else f"{v:,.1f}"
    return text.replace(",", "\u202f")


def _a(href: str | None, body: str) -> str:
    return f'<a href="{escape(href)}">{body}</a>' if href else body


def _title(label: str, series: str, value: str) -> str:
    what = f"{label} · {series}" if series else label
    return f"<title>{escape(what)}: {escape(value)}</title>"


def _bars(chart: Chart, fmt: Callable[[float | None], str]) -> str:
    n_series = max(1, len(chart.series))
    top = max((v or 0) for s in chart.series for v in s.values) if chart.series else 0
    top = top or 1
    group = n_series * BAR + GAP
    legend = 20 if n_series > 1 else 0
    height = legend + len(chart.labels) * group + GAP
    span = WIDTH - LABEL_W - 90
    parts: list[str] = []
    for i, label in enumerate(chart.labels):
        y0 = legend + i * group + GAP // 2
        link = chart.links[i] if i < len(chart.links) else None
        parts.append(
            f'<text class="crm-chart-label" x="{LABEL_W - 6}" y="{y0 + n_series * BAR / 2 + 4:.0f}" '
            f'text-anchor="end">{_a(link, escape(_cut(label, 22)))}</text>'
        )
        for k, s in enumerate(chart.series):
            value = s.values[i] if i < len(s.values) else None
            w = max(0.0, (value or 0) / top * span)
            x = LABEL_W + (span - w) / 2 if chart.kind == "funnel" else LABEL_W
            y = y0 + k * BAR
            bar = (
                f'<rect class="crm-chart-s{k % SERIES}" x="{x:.1f}" y="{y}" width="{w:.1f}" '
                f'height="{BAR - 3}">{_title(label, s.label if n_series > 1 else "", fmt(value))}</rect>'
            )
            parts.append(_a(link, bar))
            tx = LABEL_W + span + 6 if chart.kind == "funnel" else LABEL_W + w + 6
            parts.append(
                f'<text class="crm-chart-value" x="{tx:.1f}" y="{y + BAR / 2 + 2:.0f}">'
                f"{escape(fmt(value))}</text>"
            )
    return _frame(height, _legend(chart) + "".join(parts))


def _columns(chart: Chart, fmt: Callable[[float | None], str]) -> str:
    values = [v or 0 for s in chart.series for v in s.values]
    top = max(values, default=0) or 1
    legend = 20 if len(chart.series) > 1 else 0
    plot_h = HEIGHT - 40 - legend
    n = max(1, len(chart.labels))
    slot = (WIDTH - 60) / n
    parts: list[str] = [
        f'<line class="crm-chart-axis" x1="50" y1="{legend + plot_h}" x2="{WIDTH - 10}" '
        f'y2="{legend + plot_h}"/>',
        f'<text class="crm-chart-value" x="46" y="{legend + 10}" text-anchor="end">'
        f"{escape(fmt(top))}</text>",
    ]
    every = max(1, n // 12)  # at most a dozen labels under the axis
    for i, label in enumerate(chart.labels):
        x0 = 50 + i * slot
        link = chart.links[i] if i < len(chart.links) else None
        if i % every == 0:
            parts.append(
                f'<text class="crm-chart-label" x="{x0 + slot / 2:.1f}" y="{legend + plot_h + 16}" '
                f'text-anchor="middle">{_a(link, escape(_cut(label, 12)))}</text>'
            )
        if chart.kind == "column":
            k_n = max(1, len(chart.series))
            w = max(2.0, (slot - 6) / k_n)
            for k, s in enumerate(chart.series):
                value = s.values[i] if i < len(s.values) else None
                h = (value or 0) / top * plot_h
                bar = (
                    f'<rect class="crm-chart-s{k % SERIES}" x="{x0 + 3 + k * w:.1f}" '
                    f'y="{legend + plot_h - h:.1f}" width="{w - 1:.1f}" height="{h:.1f}">'
                    f"{_title(label, s.label, fmt(value))}</rect>"
                )
                parts.append(_a(link, bar))
    if chart.kind == "line":
        for k, s in enumerate(chart.series):
            points = [
                (50 + (i + 0.5) * slot, legend + plot_h - (v or 0) / top * plot_h)
                for i, v in enumerate(s.values)
            ]
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(
                f'<polyline class="crm-chart-line crm-chart-s{k % SERIES}" points="{path}"/>'
            )
            for (x, y), label, v in zip(points, chart.labels, s.values, strict=False):
                parts.append(
                    f'<circle class="crm-chart-s{k % SERIES}" cx="{x:.1f}" cy="{y:.1f}" r="3">'
                    f"{_title(label, s.label, fmt(v))}</circle>"
                )
    return _frame(HEIGHT, _legend(chart) + "".join(parts))


def _legend(chart: Chart) -> str:
    if len(chart.series) < 2:
        return ""
    out, x = [], 0
    for k, s in enumerate(chart.series):
        out.append(
            f'<rect class="crm-chart-s{k % SERIES}" x="{x}" y="2" width="12" height="12"/>'
            f'<text class="crm-chart-label" x="{x + 16}" y="12">{escape(_cut(s.label, 24))}</text>'
        )
        x += 28 + 8 * min(len(s.label), 24)
    return "".join(out)


def _frame(height: int, body: str) -> str:
    return (
        f'<svg class="crm-chart" role="img" viewBox="0 0 {WIDTH} {height}" '
        f'width="100%" preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">'
        f"{body}</svg>"
    )


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def svg(chart: Chart | None) -> Markup:
    """The chart as inline SVG markup ('' for no chart or no data)."""
    if chart is None or not chart.labels or not chart.series:
        return Markup("")

    def fmt(v: float | None) -> str:
        return number(v, chart.format)

    if chart.kind in ("bar", "funnel"):
        return Markup(_bars(chart, fmt))  # noqa: S704 (every text in it is escaped)
    return Markup(_columns(chart, fmt))  # noqa: S704 (every text in it is escaped)


def sparkline(values: Sequence[float | None], width: int = 120, height: int = 28) -> Markup:
    """A small line for a KPI card: the trend without axes."""
    pts = [v or 0 for v in values]
    if len(pts) < 2:
        return Markup("")
    top, low = max(pts), min(pts)
    span = (top - low) or 1
    step = width / (len(pts) - 1)
    path = " ".join(
        f"{i * step:.1f},{height - (v - low) / span * (height - 4) - 2:.1f}"
        for i, v in enumerate(pts)
    )
    return Markup(  # noqa: S704 (numbers only)
        f'<svg class="crm-spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg"><polyline class="crm-chart-line crm-chart-s0" points="{path}"/></svg>'
    )
