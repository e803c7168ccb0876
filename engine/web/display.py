"""Values as a person reads them: enum labels, formatted money and phones,
dates in the config's locale, refs by their title. Autoescaping does the
rest: nothing here returns markup."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from engine.fieldtypes import format_phone
from engine.registry import Field

YES_NO = {"en": ("Yes", "No"), "ru": ("Да", "Нет")}


def group_digits(text: str, sep: str) -> str:
    head, _, tail = text.partition(".")
    sign = "-" if head.startswith("-") else ""
    head = head.lstrip("-")
    groups = []
    while head:
        groups.insert(0, head[-3:])
        head = head[:-3]
    return (
        sign
        + sep.join(groups or ["0"])
        + (("," if sep == "\u00a0" else ".") + tail if tail else "")
    )


def show(f: Field, value: Any, locale: str) -> str:
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
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.strftime("%d.%m.%Y %H:%M" if locale == "ru" else "%Y-%m-%d %H:%M")
    if f.type == "date" and isinstance(value, dt.date):
        return value.strftime("%d.%m.%Y" if locale == "ru" else "%Y-%m-%d")
    if f.type == "phone":
        return format_phone(str(value))
    return str(value)


def input_value(f: Field, value: Any) -> str:
    """The value an HTML input is pre-filled with (ISO dates, plain numbers)."""
    if value is None:
        return ""
    if f.type == "datetime" and isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M")
    if f.type == "date" and isinstance(value, dt.date):
        return value.isoformat()
    if f.type == "boolean":
        return "1" if value else ""
    return str(value)
