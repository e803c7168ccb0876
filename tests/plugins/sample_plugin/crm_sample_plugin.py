"""A sample outside plugin, written against ``engine.api`` alone.

It is installed like any plugin a partner would publish: its own distribution
whose ``crm.plugins`` entry point names this module. A config turns it on
with ``plugins: {sample: {...}}``. It shows one of each thing a plugin does:

- a field type, ``ogrn`` (a Russian company registration number);
- typed settings (``SampleSettings``), checked by the loader at their
  ``file:line:col``, and a check of its own that needs the whole
  configuration (``watch`` must name a document type with a text field
  ``note_field``);
- a status reaction through a job: when a watched document changes state,
  the job ``sample.note`` writes ``"<greeting>: <state>"`` to its note field,
  after the change has committed;
- a record-page section that shows the greeting on watched records;
- delivery of email (``smtp_host``, ``smtp_port``) and SMS (``sms_url``,
  posted as JSON ``{to, text, key}``).
"""

from __future__ import annotations

import json
import re
import smtplib
import urllib.request
from typing import Any

import sqlalchemy as sa
from markupsafe import Markup
from marshmallow import fields

from engine.api import (
    Context,
    DocType,
    Field,
    FieldType,
    Invalid,
    JobContext,
    Problem,
    Registry,
    SettingsSchema,
    did_you_mean,
    enqueue,
    hookimpl,
    setting_loc,
    system_documents,
)

NOTE_JOB = "sample.note"


def _ogrn(value: Any, f: Field, ctx: Context) -> str:
    """A Russian company registration number: 13 digits, the last a check digit."""
    text = re.sub(r"[\s-]", "", str(value))
    if not re.fullmatch(r"\d{13}", text):
        raise Invalid("must be a registration number of 13 digits")
    if int(text[:12]) % 11 % 10 != int(text[12]):
        raise Invalid("has a wrong check digit")
    return text


OGRN = FieldType("ogrn", lambda f: sa.String(13), _ogrn, python=str)


class SampleSettings(SettingsSchema):
    """``plugins: {sample: {...}}`` in config.yaml."""

    greeting = fields.String(load_default="hello")
    smtp_host = fields.String()
    smtp_port = fields.Integer(load_default=25)
    sms_url = fields.String()
    watch = fields.String()  # a document type whose status changes get a note
    note_field = fields.String(load_default="note")


@hookimpl
def crm_settings_schema() -> type[SampleSettings]:
    return SampleSettings


@hookimpl
def crm_field_types() -> list[FieldType]:
    return [OGRN]


@hookimpl
def crm_check(registry: Registry) -> list[Problem]:
    """``watch`` names a document type that has the text field ``note_field``."""
    own = registry.plugins.get("sample") or {}
    watched = own.get("watch")
    if watched is None:
        return []
    d = registry.documents.get(watched)
    if d is None:
        return [
            Problem(
                setting_loc(registry, "sample", "watch"),
                f"the `sample` plugin watches an unknown document type `{watched}`"
                f"{did_you_mean(watched, registry.documents)}",
            )
        ]
    note = d.fields.get(own["note_field"])
    if note is None or note.type not in ("string", "text"):
        return [
            Problem(
                setting_loc(registry, "sample", "note_field"),
                f"the `sample` plugin writes its note to `{watched}.{own['note_field']}`, "
                "which must be a string or text field",
            )
        ]
    return []


def _watches(registry: Registry, doctype: DocType) -> bool:
    return (registry.plugins.get("sample") or {}).get("watch") == doctype.name


@hookimpl
def crm_status_changed(doctype: DocType, doc: Any, target: str, docs: Any) -> None:
    """Queue the note in the change's own transaction: it is written only if
    the change commits, and by a job, so the change does not wait for it."""
    if _watches(docs.registry, doctype):
        payload = {"doctype": doctype.name, "id": doc.id, "state": target}
        enqueue(docs.session, NOTE_JOB, payload, key=f"{NOTE_JOB}:{doctype.name}:{doc.id}:{target}")


def note_job(ctx: JobContext, payload: dict[str, Any]) -> None:
    own = ctx.registry.plugins["sample"]
    docs = system_documents(ctx)
    docs.update(
        payload["doctype"],
        payload["id"],
        {own["note_field"]: f"{own['greeting']}: {payload['state']}"},
    )


@hookimpl
def crm_jobs() -> dict[str, Any]:
    return {NOTE_JOB: note_job}


@hookimpl
def crm_record_sections(models: Any, doctype: DocType, doc: Any, principal: Any) -> list[Any]:
    if not _watches(models.registry, doctype):
        return []
    own = models.registry.plugins["sample"]
    return [("Sample", Markup("<p class='sample-greeting'>{}</p>").format(own["greeting"]))]


@hookimpl
def crm_record_actions(doctype: DocType, doc: Any, principal: Any) -> list[Any]:
    """A record the plugin watches offers to write to the sample's address."""
    if doctype.name not in ("Customer", "Deal"):
        return []
    return [
        {"label": "Write", "url": "mailto:sample@example.com", "icon": "fa-envelope"},
        {"label": "Elsewhere", "url": "https://example.com/"},  # not a safe link: dropped
    ]


@hookimpl(optionalhook=True)  # a hook of the processes plugin, when it is on
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
