"""The ``cloudpbx`` provider: a cloud PBX over HTTP with signed webhooks.

```yaml
plugins:
  telephony: {}
  cloudpbx:
    url: https://pbx.example.com/api    # the PBX's REST base: click-to-call is POST {url}/calls
    secret: ${CLOUDPBX_SECRET}          # the shared HMAC key (only as an environment variable)
    account: acme                       # optional: sent with every request
    timeout: 10                         # seconds to wait for the PBX
```

Both ways a request is signed alike: ``X-Timestamp`` is Unix seconds and
``X-Signature`` is ``sha256=`` and the hex HMAC-SHA256, under the shared
secret, of ``"<timestamp>.<raw body>"``.

The PBX posts call events to ``POST /telephony/cloudpbx/events`` (no login,
no CSRF token) as a JSON object (docs/telephony.md has the format). A wrong
or missing signature or a timestamp outside the telephony ``webhook_window``
is refused with 401; the very same signed request seen again (a replay: its
signature is kept in ``WebhookSignature``, in the database, so that every web
worker knows it) with 409; a body that is no event with 400 — each logged
with the reason. An event whose ``event_id`` was applied before (the PBX
retrying in a new signed request) is a no-op answered 200; events of a call
may come in any order (plugins.telephony.calls).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any

from flask import request
from flask_appbuilder import BaseView, expose
from marshmallow import fields as mf
from marshmallow import validate

from engine.api import (
    JobContext,
    Secret,
    SettingsSchema,
    clock,
    crm,
    db_session,
    hookimpl,
)

from .. import api
from . import webhooks

NAME = "cloudpbx"
PRUNE_JOB = "cloudpbx.prune"
PRUNE_EVERY = 3600  # seconds
DEFAULT_WINDOW = 300
SIGNATURE = re.compile(r"^(sha256=)?[0-9a-fA-F]{64}$")
#: the event types of the webhook: the CRM's kinds
TYPES = api.KINDS
DIRECTIONS = ("in", "out")


class CloudPbxSettings(SettingsSchema):
    url = mf.Url(required=True, schemes={"http", "https"}, require_tld=False)
    secret = Secret(required=True, validate=validate.Length(min=16))
    account = mf.String(validate=validate.Length(min=1, max=200))
    timeout = mf.Float(load_default=10.0, validate=validate.Range(min=0.5, max=120))


@hookimpl
def crm_settings_schema() -> Any:
    return CloudPbxSettings


def _own(settings: Mapping[str, Any]) -> dict[str, Any] | None:
    if NAME not in settings:
        return None
    own = dict(settings.get(NAME) or {})
    own.setdefault("timeout", 10.0)
    return own


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Signature`` of a request: ``sha256=`` + hex HMAC-SHA256 of
    ``"<timestamp>.<body>"``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def signed_headers(secret: str, body: bytes) -> dict[str, str]:
    """The headers of a signed request sent now."""
    timestamp = str(int(clock.now().timestamp()))
    return {
        "Content-Type": "application/json",
        "X-Timestamp": timestamp,
        "X-Signature": sign(secret, timestamp, body),
    }


# --- click-to-call --------------------------------------------------------------------------


@hookimpl
def crm_place_call(
    session: Any, extension: str, number: str, call_id: str, settings: dict[str, Any]
) -> str | None:
    """POST {url}/calls {extension, number, call_id[, account]}, signed. The
    PBX rings the extension, then the number, and reports the call's events
    under ``call_id`` (or answers ``{"call_id": ...}`` with its own)."""
    own = _own(settings)
    if own is None:
        return None
    payload: dict[str, Any] = {"extension": extension, "number": number, "call_id": call_id}
    if own.get("account"):
        payload["account"] = own["account"]
    body = json.dumps(payload).encode()
    url = str(own["url"]).rstrip("/") + "/calls"
    _status, answer = webhooks.send(
        NAME, "POST", url, body, signed_headers(own["secret"], body), float(own["timeout"])
    )
    try:
        theirs = json.loads(answer or b"{}").get("call_id")
    except (ValueError, AttributeError):
        theirs = None
    return str(theirs) if theirs else call_id


# --- the webhook ----------------------------------------------------------------------------


class BadEvent(ValueError):
    """A signed body that is no call event: the reason, for a 400."""


def _text(data: Mapping[str, Any], key: str, limit: int) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise BadEvent(f"`{key}` is text")
    text = str(value).strip()
    if len(text) > limit:
        raise BadEvent(f"`{key}` is longer than {limit} characters")
    return text or None


def _moment(value: Any) -> dt.datetime | None:
    if value is None or value == "":
        return None
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return dt.datetime.fromtimestamp(float(value), dt.UTC)
        if isinstance(value, str):
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    except (ValueError, OverflowError, OSError):
        pass
    raise BadEvent("`timestamp` is Unix seconds or an ISO 8601 date and time")


def event_of(data: Any) -> api.Event:
    """The call event a webhook body describes (docs/telephony.md); BadEvent
    says what is wrong."""
    if not isinstance(data, dict):
        raise BadEvent("the body is a JSON object")
    missing = [k for k in ("event_id", "call_id", "type") if not data.get(k)]
    if missing:
        raise BadEvent("missing " + ", ".join(f"`{k}`" for k in missing))
    kind = _text(data, "type", 32)
    if kind not in TYPES:
        raise BadEvent(f"`type` is one of {', '.join(TYPES)}")
    direction = _text(data, "direction", 8)
    if direction is not None and direction not in DIRECTIONS:
        raise BadEvent("`direction` is in or out")
    status = _text(data, "status", 16)
    if status is not None and status not in api.ENDINGS:
        raise BadEvent(f"`status` is one of {', '.join(api.ENDINGS)}")
    duration = data.get("duration")
    if duration is not None and (
        isinstance(duration, bool) or not isinstance(duration, int) or not 0 <= duration < 10**7
    ):
        raise BadEvent("`duration` is whole seconds")
    recording = _text(data, "recording_url", 2000)
    if recording is not None and not re.match(r"^https?://", recording):
        raise BadEvent("`recording_url` is an http(s) URL")
    if kind == "recording" and recording is None:
        raise BadEvent("a recording event needs `recording_url`")
    number = _text(data, "number", 40)
    if number is None:  # the other party: who called in, or whom the call went to
        number = _text(data, "from" if direction == "in" else "to", 40)
    return api.Event(
        provider=NAME,
        call_id=_text(data, "call_id", 128) or "",
        kind=kind,
        direction=direction,
        number=number,
        extension=_text(data, "extension", 32),
        at=_moment(data.get("timestamp")),
        status=status,
        duration=duration,
        recording=recording,
        event_id=_text(data, "event_id", 150),
        raw=data,
    )


def window(registry: Any) -> int:
    """The telephony ``webhook_window``: seconds a timestamp may be off."""
    return int((registry.plugins.get("telephony") or {}).get("webhook_window") or DEFAULT_WINDOW)


class CloudPbxEventsView(BaseView):
    """``POST /telephony/cloudpbx/events``: the PBX's signed call events."""

    route_base = "/telephony/cloudpbx"
    default_view = "events"

    @expose("/events", methods=["POST"])
    def events(self) -> Any:
        state = crm()
        own = _own(state.registry.plugins)
        if own is None:
            return webhooks.refused(NAME, 404, "the cloudpbx provider is not enabled")
        body = request.get_data(cache=False)
        timestamp = request.headers.get("X-Timestamp", "").strip()
        signature = request.headers.get("X-Signature", "").strip()
        if not timestamp or not signature:
            return webhooks.refused(NAME, 401, "X-Timestamp and X-Signature are required")
        if not SIGNATURE.match(signature) or not api.verify_signature(
            own["secret"], timestamp.encode() + b"." + body, signature
        ):
            return webhooks.refused(NAME, 401, "wrong signature")
        if not api.fresh(timestamp, window(state.registry)):
            return webhooks.refused(NAME, 401, "the timestamp is outside the time window")
        try:
            event = event_of(json.loads(body))
        except ValueError as exc:  # BadEvent, or no JSON at all
            reason = str(exc) if isinstance(exc, BadEvent) else "the body is no JSON"
            return webhooks.refused(NAME, 400, reason)
        session = db_session()
        try:
            key = signature.lower().removeprefix("sha256=")
            if webhooks.seen_before(session, state.models, NAME, key):
                session.rollback()
                return webhooks.refused(NAME, 409, "replay: this signed request was seen before")
        except Exception:
            session.rollback()
            raise
        return webhooks.applied(NAME, event, session)


@hookimpl
def crm_register_views(appbuilder: Any, registry: Any) -> None:
    if NAME in registry.plugins:
        webhooks.public(appbuilder, CloudPbxEventsView())


# --- housekeeping ---------------------------------------------------------------------------


def prune_job(ctx: JobContext, payload: Mapping[str, Any]) -> Any:
    """``cloudpbx.prune``: forget the signatures too old to be replayed."""
    return {"pruned": webhooks.prune(ctx.session, ctx.models, window(ctx.registry))}


@hookimpl
def crm_jobs() -> dict[str, Any]:
    return {PRUNE_JOB: prune_job}


@hookimpl
def crm_schedules() -> list[tuple[str, int]]:
    return [(PRUNE_JOB, PRUNE_EVERY)]
