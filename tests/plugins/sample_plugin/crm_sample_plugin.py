"""A sample outside plugin: the `ogrn` field type and a `sample` notification channel.

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


def _ogrn(value: Any, f: Field, ctx: Context) -> str:
    """A Russian company registration number: 13 digits, the last a check digit."""
    text = re.sub(r"[\s-]", "", str(value))
    if not re.fullmatch(r"\d{13}", text):
        raise Invalid("must be a registration number of 13 digits")
    if int(text[:12]) % 11 % 10 != int(text[12]):
        raise Invalid("has a wrong check digit")
    return text


OGRN = FieldType("ogrn", lambda f: sa.String(13), _ogrn, python=str)


@hookimpl
def crm_field_types() -> list[FieldType]:
    return [OGRN]


@hookimpl
def crm_notification_channels() -> list[str]:
    return ["sample"]
