"""Telephony: calls and SMS in the CRM, whatever the exchange.

Turned on with ``plugins: {telephony: {...settings}}`` in a config
(settings.py), beside one or more providers — each a plugin of its own
(providers/: simulator, asterisk, cloudpbx, twilio, sms_gateway, smpp) that
places calls, reports call events and sends SMS through the hooks in
hookspecs.py and the functions in api.py.

Its document types — Call, CallEvent, Campaign, CampaignCall, SmsMessage,
SmsTemplate, SmsOptOut — come as the metadata layer ``telephony``
(metadata/). The parts:

- calls.py, lookup.py, placing.py: a call's life from the provider's events,
  who is calling, click-to-call;
- phones.py: the call button beside every phone, the caller card, the call log;
- desk.py: the telemarketing desk and campaigns;
- sms.py: SMS from a record, templates, the outbox, the ``sms`` channel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.api import USER, Problem, hookimpl, setting_loc

from . import hookspecs
from .settings import TelephonySettings

METADATA = Path(__file__).parent / "metadata"


def _on(registry: Any) -> bool:
    return "telephony" in registry.plugins


def _parts() -> list[Any]:
    from . import desk, phones, sms

    return [phones, desk, sms]


@hookimpl
def crm_metadata_layers() -> list[tuple[str, Path]]:
    return [("telephony", METADATA)] if METADATA.is_dir() else []


@hookimpl
def crm_add_hookspecs(pm: Any) -> None:
    """The provider hooks (hookspecs.py): ``crm_place_call``, ``crm_call_event``."""
    pm.add_hookspecs(hookspecs)


@hookimpl
def crm_settings_schema() -> Any:
    return TelephonySettings


@hookimpl
def crm_check(registry: Any, pm: Any) -> list[Any]:
    """The user attribute that holds extensions, and the types callers are
    looked up in, must exist; each part checks its own."""
    if not _on(registry):
        return []
    from . import settings

    own = settings.of(registry)
    problems: list[Any] = []
    field = own["extension_field"]
    if field not in registry.documents[USER].fields:
        problems.append(
            Problem(
                setting_loc(registry, "telephony", "extension_field"),
                f"the telephony plugin reads each user's extension from `User.{field}`, which "
                f"does not exist: add it under `attributes: User:` (`{field}: {{type: string, "
                "max_length: 16, index: true}`) or name another with `extension_field`",
            )
        )
    for i, name in enumerate(own.get("match") or ()):
        d = registry.documents.get(name)
        if d is None or not any(f.type == "phone" for f in d.fields.values()):
            problems.append(
                Problem(
                    setting_loc(registry, "telephony", "match", i),
                    f"`match` names `{name}`, "
                    + ("which is no document type" if d is None else "which has no phone field")
                    + ": callers are looked up in types with a `phone` field",
                )
            )
    for part in _parts():
        check = getattr(part, "check", None)
        if check is not None:
            problems += check(registry)
    return problems


@hookimpl(optionalhook=True)
def crm_notification_channels() -> list[str]:
    return ["sms"]


@hookimpl
def crm_jobs() -> dict[str, Any]:
    return {name: job for part in _parts() for name, job in getattr(part, "JOBS", {}).items()}


@hookimpl
def crm_schedules() -> list[tuple[str, int]]:
    return [s for part in _parts() for s in getattr(part, "SCHEDULES", [])]


@hookimpl
def crm_register_views(appbuilder: Any, registry: Any) -> None:
    if not _on(registry):
        return
    for part in _parts():
        part.register(appbuilder, registry)


@hookimpl
def crm_record_actions(doctype: Any, doc: Any, principal: Any) -> list[Any]:
    return [a for part in _parts() for a in part.record_actions(doctype, doc, principal)]


@hookimpl
def crm_record_sections(models: Any, doctype: Any, doc: Any, principal: Any) -> list[Any]:
    if not _on(models.registry):
        return []
    return [s for part in _parts() for s in part.record_sections(models, doctype, doc, principal)]
