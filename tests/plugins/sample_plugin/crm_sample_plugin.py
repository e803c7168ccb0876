"""A sample outside plugin: the `inn` field type and a `sample` notification channel.

It is installed like any plugin a partner would publish: its own distribution
whose ``crm.plugins`` entry point names this module. A config turns it on
with ``plugins: {sample: {}}``.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

from engine.fieldtypes import Context, FieldType, Invalid
from engine.hookspecs import hookimpl
from engine.registry import Field


def _inn(value: Any, f: Field, ctx: Context) -> str:
    """A Russian taxpayer number: 10 digits for a company, 12 for a person."""
    text = re.sub(r"[\s-]", "", str(value))
    if not re.fullmatch(r"\d{10}|\d{12}", text):
        raise Invalid("must be a taxpayer number of 10 or 12 digits")
    return text


INN = FieldType("inn", lambda f: sa.String(12), _inn, python=str)


@hookimpl
def crm_field_types() -> list[FieldType]:
    return [INN]


@hookimpl
def crm_notification_channels() -> list[str]:
    return ["sample"]
