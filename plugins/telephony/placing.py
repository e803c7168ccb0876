"""Click-to-call: the CRM asks the exchange to ring the user, then the client.

:func:`place` records the outgoing Call at once (ringing, filed against the
client's records) under a CRM-made call id, then asks the enabled provider
(``crm_place_call``) in the same transaction: a refusal leaves no record
behind. The call's progress arrives as the provider's events (api.report).
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from engine.api import USER, Documents, HandledError, gettext

from . import calls, numbers, settings


def extension_of(docs: Documents, user_id: int | None) -> str | None:
    """The user's extension (the User attribute the settings name), or None."""
    own = settings.of(docs.registry)
    field = own["extension_field"]
    if user_id is None or field not in docs.registry.documents[USER].fields:
        return None
    users = docs.models.table(USER)
    value = docs.session.execute(sa.select(users.c[field]).where(users.c.id == user_id)).scalar()
    return str(value).strip() or None if value else None


def place(docs: Documents, user_id: int, number: str) -> Any:
    """Ring ``user_id``'s extension, then ``number``; the ringing Call.
    Raises HandledError with a message the user reads: no extension, not a
    phone number, no provider, or the exchange's refusal."""
    registry = docs.registry
    own = settings.of(registry)
    extension = extension_of(docs, user_id)
    if extension is None:
        raise HandledError(
            gettext("You have no phone extension: an administrator sets it on your user.")
        )
    e164 = numbers.normalize(number, own["region"])
    if e164 is None:
        raise HandledError(gettext("%(number)s is not a phone number.", number=number[:40]))
    call_id = f"crm-{uuid.uuid4().hex}"
    values: dict[str, Any] = {
        "direction": "out",
        "number": e164,
        "extension": extension[:32],
        "user": user_id,
        "status": "ringing",
        "started_at": docs.now(),
        "call_id": call_id,
        **calls.matched(docs, own, e164),
    }
    call = docs.create("Call", values)
    provider_id = docs.pm.hook.crm_place_call(
        session=docs.session, extension=extension, number=e164, call_id=call_id,
        settings=dict(registry.plugins),
    )  # fmt: skip
    if provider_id is None:
        raise HandledError(
            gettext("No telephony provider is enabled: the administrator turns one on.")
        )
    if str(provider_id) != call_id:
        docs.update("Call", call, {"call_id": str(provider_id)[:128]})
    return call
