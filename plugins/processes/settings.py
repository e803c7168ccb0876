"""The ``processes`` plugin's settings in config.yaml, and the business calendar they make.

```yaml
plugins:
  processes:
    workdays: [mon, tue, wed, thu, fri]   # the working weekdays (the default)
    holidays: [2027-01-01, 2027-01-07]    # days off besides the weekend
```

The engine validates them with this schema (``crm_settings_schema``): a
wrong weekday or date is one ``file:line:col`` problem at that item.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from marshmallow import ValidationError
from marshmallow import fields as mf

from engine.api import Registry, SettingsSchema

from .calendar import WEEKDAYS, Calendar

FULL_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
WORKDAYS_HINT = "e.g. `[mon, tue, wed, thu, fri]`"


def _weekday(value: Any) -> int | None:
    """``mon``, ``Monday``, ``tues`` → 0, 0, 1; None for anything else."""
    name = value.strip().lower() if isinstance(value, str) else ""
    if name[:3] in WEEKDAYS and (len(name) == 3 or any(w.startswith(name) for w in FULL_WEEKDAYS)):
        return WEEKDAYS.index(name[:3])
    return None


def _date(value: Any) -> dt.date | None:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    try:
        return dt.date.fromisoformat(value.strip()) if isinstance(value, str) else None
    except ValueError:
        return None


class Weekdays(mf.Field):
    """A list of weekdays (or one): the set of their numbers, Monday 0."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> frozenset[int]:
        if not isinstance(value, (list, str)):
            raise ValidationError(f"lists the working weekdays, {WORKDAYS_HINT}")
        if value == []:
            raise ValidationError(
                "is empty, so business days (`bd`) would never pass; "
                f"list the working weekdays, {WORKDAYS_HINT}"
            )
        items = value if isinstance(value, list) else [value]
        days = [_weekday(v) for v in items]
        bad = {
            i: [f"`{v}` is not a weekday: write mon, tue, wed, thu, fri, sat or sun"]
            for i, (v, d) in enumerate(zip(items, days, strict=True))
            if d is None
        }
        if bad:
            raise ValidationError(bad if isinstance(value, list) else bad[0])
        return frozenset(d for d in days if d is not None)


class Dates(mf.Field):
    """A list of dates (or one)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> frozenset[dt.date]:
        if isinstance(value, Mapping) or not isinstance(value, (list, str, dt.date)):
            raise ValidationError("lists dates, e.g. `[2027-01-01, 2027-01-07]`")
        items = value if isinstance(value, list) else [value]
        dates = [_date(v) for v in items]
        bad = {
            i: [f"`{v}` is not a date such as 2027-01-07"]
            for i, (v, d) in enumerate(zip(items, dates, strict=True))
            if d is None
        }
        if bad:
            raise ValidationError(bad if isinstance(value, list) else bad[0])
        return frozenset(d for d in dates if d is not None)


class ProcessesSettings(SettingsSchema):
    """``plugins: {processes: {workdays: [...], holidays: [...]}}``."""

    workdays = Weekdays(load_default=frozenset(range(5)))
    holidays = Dates(load_default=frozenset())


def calendar_of(registry: Registry) -> Calendar:
    """The business calendar of the plugin's settings, on the company's clock."""
    settings = registry.plugins.get("processes") or {}
    try:
        tz: dt.tzinfo = ZoneInfo(str(registry.settings.get("timezone") or "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        tz = dt.UTC
    return Calendar(
        frozenset(settings.get("workdays", range(5))),
        frozenset(settings.get("holidays", ())),
        tz,
    )
