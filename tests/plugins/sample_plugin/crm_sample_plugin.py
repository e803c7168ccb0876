"""A sample outside plugin: the `ogrn` field type, and delivery of email and SMS.

It is installed like any plugin a partner would publish: its own distribution
whose ``crm.plugins`` entry point names this module. A config turns it on
with ``plugins: {sample: {}}``; with ``smtp_host`` and ``smtp_port`` among
its settings it sends email through that SMTP server, with ``sms_url`` it
posts SMS to that address as JSON ``{to, text, key}``.
"""

from __future__ import annotations

import json
import re
import smtplib
import urllib.request
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
    return ["sample", "email", "sms"]


@hookimpl
def crm_send_email(message: Any, settings: dict[str, Any]) -> str | None:
    """Hand the message to the SMTP server of the settings; its Message-ID is the id."""
    own = settings.get("sample") or {}
    if not own.get("smtp_host"):
        return None  # not set up to send email: the next plugin may be
    with smtplib.SMTP(own["smtp_host"], int(own.get("smtp_port", 25)), timeout=30) as smtp:
        smtp.send_message(message)
    return str(message["Message-ID"])


@hookimpl
def crm_send_sms(to: str, text: str, settings: dict[str, Any], key: str) -> str | None:
    """POST ``{to, text, key}`` to the gateway of the settings; it answers ``{"id": ...}``."""
    own = settings.get("sample") or {}
    if not own.get("sms_url"):
        return None
    request = urllib.request.Request(
        own["sms_url"],
        data=json.dumps({"to": to, "text": text, "key": key}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(json.loads(response.read())["id"])
