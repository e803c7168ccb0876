"""Values as a person reads them: enum labels, formatted money and phones,
dates in the config's locale and moments on the company's clock, refs by
their title. Autoescaping does the rest: nothing here returns markup."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.fieldtypes import format_phone
from engine.registry import Field

YES_NO = {"en": ("Yes", "No"), "ru": ("Да", "Нет")}


def zone(name: str | None) -> dt.tzinfo:
    """The company's time zone (``timezone`` in config.yaml), UTC when unknown."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def local(value: dt.datetime, tz: dt.tzinfo | None) -> dt.datetime:
    """A stored moment on the company's clock (SQLite hands them back naive, in UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(tz or dt.UTC)


def group_digits(text: str, sep: str) -> str:
    head, _, tail = text.partition(".")
    sign = "-" if head.startswith("-") else ""
    head = head.lstrip("-")
    groups: list[str] = []
    while head:
        groups.insert(0, head[-3:])
        head = head[:-3]
    return (
        sign
        + sep.join(groups or ["0"])
        + (("," if sep == "\u00a0" else ".") + tail if tail else "")
    )


def plain_number(f: Field, value: Decimal | int | float) -> str:
    """A number as typed into an input: ``1500.50`` for money, ``2`` rather than ``2.0000``."""
    if f.type == "money":
        return f"{Decimal(value):.2f}"
    if isinstance(value, Decimal):
        text = format(value, "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    return str(value)


def show(f: Field, value: Any, locale: str, tz: dt.tzinfo | None = None) -> str:
    if value is None or value == "":
        return ""
    if f.type == "enum":
        label = f.values.get(str(value))
        return label.get(locale) if label else str(value)
    if f.type == "boolean":
        yes, no = YES_NO.get(locale, YES_NO["en"])
        return yes if value else no
    if f.type in ("money", "decimal") and isinstance(value, (Decimal, int, float)):
        places = 2 if f.type == "money" else (f.places if f.places is not None else 4)
        text = f"{Decimal(value):.{places}f}"
        if f.type == "decimal":
            text = text.rstrip("0").rstrip(".") if "." in text else text
        return group_digits(text, "\u00a0" if locale == "ru" else ",")
    if f.type == "integer" and isinstance(value, int):
        return group_digits(str(value), "\u00a0" if locale == "ru" else ",")
    if f.type == "datetime" and isinstance(value, dt.datetime):
        moment = local(value, tz)
        return moment.strftime("%d.%m.%Y %H:%M" if locale == "ru" else "%Y-%m-%d %H:%M")
    if f.type == "date" and isinstance(value, dt.date):
        return value.strftime("%d.%m.%Y" if locale == "ru" else "%Y-%m-%d")
    if f.type == "phone":
        return format_phone(str(value))
    return str(value)


def input_value(f: Field, value: Any, tz: dt.tzinfo | None = None, locale: str = "en") -> str:
    """The value an HTML input is pre-filled with: dates as the user writes
    them (``31.12.2026`` in Russian, ISO otherwise: a date input is a text
    input, the server reads both), moments on the company's clock as
    ``datetime-local`` wants them, plain numbers (a decimal comma in Russian).
    A value sent back by a refused form is a string and stays as typed."""
    if value is None:
        return ""
    if f.type == "datetime" and isinstance(value, dt.datetime):
        return local(value, tz).strftime("%Y-%m-%dT%H:%M")
    if f.type == "date" and isinstance(value, dt.date):
        return value.strftime("%d.%m.%Y") if locale == "ru" else value.isoformat()
    if f.type == "boolean":
        return "1" if value else ""
    if f.type in ("money", "decimal", "integer") and isinstance(value, (Decimal, int, float)):
        text = plain_number(f, value)
        return text.replace(".", ",") if locale == "ru" else text
    return str(value)
