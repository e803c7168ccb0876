"""What a provider plugin calls: the telephony plugin's public surface.

A provider (a PBX, a cloud telephony service, an SMS gateway) is a plugin of
its own. It implements ``crm_place_call`` (hookspecs.py) and/or the engine's
``crm_send_sms``, and reports what the exchange tells it with the functions
here; it imports from ``engine.api`` and from this module, nothing else.
docs/telephony.md walks through a whole provider.

- :class:`Event` and :func:`report`: a call event (ringing, answered, hung up,
  a recording) applied to the Call record, in any order, each event once.
- :func:`sms_receipt`: a delivery receipt for an SMS the provider sent.
- :func:`verify_signature` and :func:`fresh`: checking a signed webhook.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.api import Documents, clock, crm, db_session

#: the kinds of call event the CRM understands
KINDS = ("ringing", "answered", "hangup", "recording")
#: how a call ended, as ``Event.status`` of a hangup may say
ENDINGS = ("answered", "missed", "busy", "failed")


@dataclass
class Event:
    """One thing that happened to a call, in the CRM's words.

    ``call_id`` is the provider's id of the call (unique per provider);
    ``kind`` one of :data:`KINDS`. ``number`` is the other party's number as
    the exchange writes it (normalized here), ``extension`` the CRM user's.
    ``at`` is when it happened (default: now). A hangup may say how the call
    ended (``status``, one of :data:`ENDINGS`; otherwise it is worked out
    from whether it was answered) and the talk time (``duration``, seconds).
    ``event_id`` is the provider's id of the event: the same event reported
    twice is applied once (without one, a call's event of each kind counts
    once). ``raw`` is kept in the call's event log as it came."""

    provider: str
    call_id: str
    kind: str
    direction: str | None = None
    number: str | None = None
    extension: str | None = None
    at: dt.datetime | None = None
    status: str | None = None
    duration: int | None = None
    recording: str | None = None
    event_id: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


def system_documents(session: Any = None) -> Documents:
    """The documents service acting as the engine itself (in an app
    context): what a provider's listener or webhook writes is validated and
    audited like anything else."""
    state = crm()
    return Documents(
        state.models, session if session is not None else db_session(), None, ["Admin"],
        state.pm, clock.now, username="system", trusted=True,
    )  # fmt: skip


def report(event: Event, session: Any = None, docs: Documents | None = None) -> Any:
    """Apply ``event`` to its Call (made on the first event seen) in the
    caller's transaction: ``docs`` (a job's ``engine.api.system_documents(ctx)``),
    else ``session`` (default: the request's; commit it). Returns the Call
    record, or None when the event was seen before (a duplicate is a no-op).
    Raises ``ValueError`` with a message for an event that makes no sense
    (an unknown kind, no call id)."""
    from . import calls

    return calls.apply(docs if docs is not None else system_documents(session), event)


def sms_receipt(
    provider: str,
    provider_id: str,
    status: str,
    error: str | None = None,
    at: dt.datetime | None = None,
    session: Any = None,
    docs: Documents | None = None,
) -> Any:
    """A delivery receipt: the SMS the provider knows as ``provider_id`` is
    ``delivered`` or ``failed`` (``error`` says why). A receipt for an
    unknown message, or one that would move a delivered SMS back, changes
    nothing. Returns the SmsMessage record or None."""
    from . import sms

    docs = docs if docs is not None else system_documents(session)
    return sms.receipt(docs, provider, provider_id, status, error, at)


def verify_signature(secret: str, message: bytes, signature: str) -> bool:
    """Whether ``signature`` (hex, optionally ``sha256=``-prefixed) is
    HMAC-SHA256 of ``message`` under ``secret``; compared in constant time."""
    given = signature.strip()
    if given.lower().startswith("sha256="):
        given = given[7:]
    expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given.lower())


def fresh(timestamp: str | int | float, window: int) -> bool:
    """Whether a webhook's timestamp (Unix seconds) is within ``window``
    seconds of the CRM's clock, either way."""
    try:
        moment = float(timestamp)
    except (TypeError, ValueError):
        return False
    return abs(clock.now().timestamp() - moment) <= window


__all__ = [
    "ENDINGS",
    "KINDS",
    "Event",
    "fresh",
    "report",
    "sms_receipt",
    "system_documents",
    "verify_signature",
]
