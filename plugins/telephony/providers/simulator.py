"""The simulator: a telephone exchange that lives in the CRM, for the demo
and the tests. Turned on with ``simulator: {}`` under ``plugins`` (beside
``telephony``).

An outgoing call (click-to-call) rings, is answered ``answer_after`` seconds
later and hung up after ``talk`` seconds of conversation — each step a
background job reporting an ordinary call event, as a real provider's would.
Incoming calls are rung in from its page (``/telephony/simulator``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from marshmallow import fields as mf
from marshmallow import validate

from engine.api import JobContext, SettingsSchema, clock, enqueue, hookimpl, system_documents

from .. import api

NAME = "simulator"
EVENT_JOB = "simulator.event"


class SimulatorSettings(SettingsSchema):
    answer_after = mf.Float(load_default=3.0, validate=validate.Range(min=0, max=600))
    talk = mf.Float(load_default=8.0, validate=validate.Range(min=0, max=3600))


@hookimpl
def crm_settings_schema() -> Any:
    return SimulatorSettings


def _own(settings: Mapping[str, Any]) -> dict[str, Any] | None:
    if NAME not in settings:
        return None
    own = dict(settings.get(NAME) or {})
    own.setdefault("answer_after", 3.0)
    own.setdefault("talk", 8.0)
    return own


def later(session: Any, call_id: str, kind: str, seconds: float, **extra: Any) -> None:
    """Report ``kind`` for the call ``seconds`` from now (a queued job)."""
    at = clock.now() + dt.timedelta(seconds=seconds)
    enqueue(
        session, EVENT_JOB, {"call_id": call_id, "kind": kind, "at": at.isoformat(), **extra},
        key=f"sim:{call_id}:{kind}", run_after=at,
    )  # fmt: skip


@hookimpl
def crm_place_call(
    session: Any, extension: str, number: str, call_id: str, settings: dict[str, Any]
) -> str | None:
    own = _own(settings)
    if own is None:
        return None
    answer, talk = float(own["answer_after"]), float(own["talk"])
    later(session, call_id, "answered", answer)
    later(session, call_id, "hangup", answer + talk)
    return call_id


def event_job(ctx: JobContext, payload: Mapping[str, Any]) -> Any:
    """``simulator.event``: report one call event, now."""
    event = api.Event(
        provider=NAME,
        call_id=str(payload["call_id"]),
        kind=str(payload["kind"]),
        direction=payload.get("direction"),
        number=payload.get("number"),
        extension=payload.get("extension"),
        status=payload.get("status"),
        at=dt.datetime.fromisoformat(payload["at"]) if payload.get("at") else ctx.now(),
        raw=dict(payload),
    )
    call = api.report(event, docs=system_documents(ctx))
    return {"call": call.id if call is not None else None}


@hookimpl
def crm_jobs() -> dict[str, Any]:
    return {EVENT_JOB: event_job}


# --- SMS: the simulator "delivers" every SMS it is given ---------------------------------------
#
# ``crm_send_sms`` answers with an id made from the outbox's key (the same
# message asked twice gets the same id: delivered once). The hook has no
# database session, so the receipt is queued where there is one: when the
# telephony plugin records the message as sent by this provider (the
# engine's ``crm_document_updated``, in the ``sms.send`` job's transaction),
# a telephony ``sms.receipt`` job is queued for SMS_DELIVERY seconds later
# and reports it ``delivered`` — as a real gateway's receipt would arrive.
# A number ending in 000 stands for one that cannot be reached: its receipt
# says ``failed``.

SMS_DELIVERY = 2.0  # seconds from "sent" to "delivered"
SMS_RECEIPT_JOB = "sms.receipt"  # the telephony plugin's job (plugins/telephony/sms.py)


@hookimpl
def crm_send_sms(to: str, text: str, settings: dict[str, Any], key: str) -> str | None:
    if NAME not in settings:
        return None
    return f"sim-{key}"[:128]


@hookimpl
def crm_document_updated(
    session: Any, doctype: Any, doc: Any, user: Any, changes: dict[str, Any], docs: Any
) -> None:
    if doctype.name != "SmsMessage" or getattr(doc, "provider", None) != NAME:
        return
    if "status" not in changes or changes["status"][1] != "sent" or not doc.provider_id:
        return
    at = clock.now() + dt.timedelta(seconds=SMS_DELIVERY)
    failed = str(doc.number or "").endswith("000")
    enqueue(
        session, SMS_RECEIPT_JOB,
        {"provider": NAME, "provider_id": doc.provider_id, "at": at.isoformat(),
         "status": "failed" if failed else "delivered",
         "error": "the simulator cannot reach numbers ending in 000" if failed else None},
        key=f"sim-sms:{doc.provider_id}", run_after=at,
    )  # fmt: skip
