"""Durations (`30m`, `4h`, `2d`, `1w`, `3bd`) and the business calendar they count on."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.api import did_you_mean, ngettext

DURATION = re.compile(r"^\s*(\d+)\s*(m|h|d|w|bd)\s*$")
UNIT_WORDS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks", "bd": "business days"}
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Calendar:
    """Working days for ``bd`` durations: weekdays and holidays (``processes``
    plugin settings ``workdays`` and ``holidays``), on the company's clock."""

    workdays: frozenset[int] = frozenset(range(5))
    holidays: frozenset[dt.date] = frozenset()
    tz: dt.tzinfo = dt.UTC

    def working(self, day: dt.date) -> bool:
        return day.weekday() in self.workdays and day not in self.holidays

    def add_business_days(self, start: dt.datetime, n: int) -> dt.datetime:
        """``n`` working days after ``start``, at the same time of day; a start
        on a day off counts from the next working day."""
        local = start.astimezone(self.tz)
        day = local.date()
        if not self.workdays:
            return start + dt.timedelta(days=n)
        while not self.working(day):
            day += dt.timedelta(days=1)
        left = n
        while left > 0:
            day += dt.timedelta(days=1)
            if self.working(day):
                left -= 1
        moved = dt.datetime.combine(day, local.timetz())
        return moved.astimezone(dt.UTC)


@dataclass(frozen=True)
class Duration:
    amount: int
    unit: str
    text: str

    def after(self, start: dt.datetime, calendar: Calendar) -> dt.datetime:
        if self.unit == "bd":
            return calendar.add_business_days(start, self.amount)
        seconds = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[self.unit]
        return start + dt.timedelta(seconds=seconds * self.amount)

    def __str__(self) -> str:
        return self.text

    def shown(self) -> str:
        """The duration as a person reads it, in their language: "2 раб. дня", "4 ч"."""
        n = self.amount
        if self.unit == "m":
            return ngettext("%(num)d min", "%(num)d min", n)
        if self.unit == "h":
            return ngettext("%(num)d h", "%(num)d h", n)
        if self.unit == "d":
            return ngettext("%(num)d day", "%(num)d days", n)
        if self.unit == "w":
            return ngettext("%(num)d wk", "%(num)d wk", n)
        return ngettext("%(num)d business day", "%(num)d business days", n)


DURATION_HINT = "write `30m`, `4h`, `2d`, `1w` or `3bd` (business days)"


def parse_duration(value: Any) -> Duration | str:
    """A Duration, or the message that says why ``value`` is not one."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return f"the duration is empty: {DURATION_HINT}"
    if isinstance(value, bool):
        return f"`{str(value).lower()}` is not a duration: {DURATION_HINT}"
    if isinstance(value, (list, tuple)):
        return "a duration is one value such as `2d`, not a list"
    if isinstance(value, Mapping):
        return "a duration is one value such as `2d`, not a map"
    if isinstance(value, (int, float)):
        return f"`{value}` has no unit: {DURATION_HINT}"
    text = str(value).strip()
    m = DURATION.match(text)
    if m:
        amount = int(m.group(1))
        if amount <= 0 or amount > 10_000:
            return f"`{text}`: a duration is between 1 and 10000 {UNIT_WORDS[m.group(2)]}"
        return Duration(amount, m.group(2), f"{amount}{m.group(2)}")
    shape = re.match(r"^([-+]?)(\d*[.,]?\d*)\s*([A-Za-z]*)$", text)
    if shape and any(c.isdigit() for c in shape.group(2)):
        sign, number, unit = shape.groups()
        if sign == "-":
            return f"`{text}`: a duration cannot be negative; {DURATION_HINT}"
        if "." in number or "," in number:
            return f"`{text}`: a duration counts whole units{_smaller(number, unit)}"
        if unit.lower() in UNIT_WORDS and unit != unit.lower():
            return f"`{text}`: write the unit in small letters: `{number}{unit.lower()}`"
        if not unit:
            return f"`{text}` has no unit: {DURATION_HINT}"
        return (
            f"`{text}`: unknown unit `{unit}`{did_you_mean(unit, UNIT_WORDS)}; "
            "units are m (minutes), h (hours), d (days), w (weeks), bd (business days)"
        )
    return f"`{text}` is not a duration: {DURATION_HINT}"


def _smaller(number: str, unit: str) -> str:
    """The hint for a fraction: ``1.5d`` → ``36h``."""
    smaller = {"w": ("d", 7), "d": ("h", 24), "h": ("m", 60)}.get(unit.lower())
    try:
        value = float(number.replace(",", "."))
    except ValueError:
        return ""
    if smaller is None or not (value * smaller[1]).is_integer():
        return ""
    return f"; write `{int(value * smaller[1])}{smaller[0]}` instead"
