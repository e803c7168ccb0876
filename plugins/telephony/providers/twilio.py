"""The ``twilio`` provider: Twilio's Programmable Voice, in its documented format.

```yaml
plugins:
  telephony: {}
  twilio:
    account_sid: ACxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx
    auth_token: ${TWILIO_AUTH_TOKEN}         # only as an environment variable
    caller_id: "+74951234567"                # a Twilio number of yours, E.164
    agent: "sip:{extension}@acme.sip.twilio.com"   # how to reach a user's extension
    public_url: https://crm.example.com      # the CRM as Twilio reaches it
    api_base: https://api.twilio.com         # (default)
    timeout: 10
```

Click-to-call creates a call to the user (``agent`` with the extension filled
in) from ``caller_id``; when the user picks up, Twilio fetches
``/telephony/twilio/twiml?call=<CRM call id>``, which dials the client's
number. Both legs report their progress to ``/telephony/twilio/status``
(``?call=...&leg=agent`` for the user's leg, ``leg=client`` for the
client's): the CRM's call id travels in the callback URLs, so a callback that
arrives before the click-to-call transaction commits still finds its call.
Calls into a Twilio number whose status callback is
``/telephony/twilio/status`` (no ``call``) are known by their CallSid.

Every request from Twilio is checked against ``X-Twilio-Signature``:
base64 HMAC-SHA1, under the auth token, of the full URL followed by the POST
parameters sorted by name, each name then its value. A wrong one is refused
with 403 and logged. Twilio signs no timestamp: the same callback again is a
duplicate (its event id is CallSid, CallStatus and SequenceNumber) and a
no-op.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import email.utils
import hashlib
import hmac
import json
import urllib.parse
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import sqlalchemy as sa
from flask import Response, request
from flask_appbuilder import BaseView, expose
from marshmallow import fields as mf
from marshmallow import validate

from engine.api import Secret, SettingsSchema, crm, db_session, hookimpl

from .. import api
from . import webhooks

NAME = "twilio"
API_VERSION = "2010-04-01"
EVENTS = ("initiated", "ringing", "answered", "completed")
#: Twilio's CallStatus → the CRM's event kind and, for a hangup, how the call ended
STATUSES: dict[str, tuple[str, str | None]] = {
    "queued": ("ringing", None),
    "initiated": ("ringing", None),
    "ringing": ("ringing", None),
    "in-progress": ("answered", None),
    "completed": ("hangup", None),
    "busy": ("hangup", "busy"),
    "no-answer": ("hangup", "missed"),
    "failed": ("hangup", "failed"),
    "canceled": ("hangup", "failed"),
}


class TwilioSettings(SettingsSchema):
    account_sid = mf.String(
        required=True,
        validate=validate.Regexp(
            r"^AC[0-9a-fA-F]{32}$", error="is a Twilio Account SID: AC + 32 hex digits"
        ),
    )
    auth_token = Secret(required=True, validate=validate.Length(min=8))
    caller_id = mf.String(
        required=True,
        validate=validate.Regexp(
            r"^\+[1-9]\d{6,14}$", error="is a number in E.164 form: +74951234567"
        ),
    )
    agent = mf.String(
        required=True,
        validate=validate.Regexp(
            r"^.*\{extension\}.*$",
            error="names how to reach a user: `sip:{{extension}}@you.sip.twilio.com`, "
            "`client:{{extension}}` or a number with `{{extension}}` in it",
        ),
    )
    public_url = mf.Url(required=True, schemes={"http", "https"}, require_tld=False)
    api_base = mf.Url(
        load_default="https://api.twilio.com", schemes={"http", "https"}, require_tld=False
    )
    timeout = mf.Float(load_default=10.0, validate=validate.Range(min=0.5, max=120))


@hookimpl
def crm_settings_schema() -> Any:
    return TwilioSettings


def _own(settings: Mapping[str, Any]) -> dict[str, Any] | None:
    if NAME not in settings:
        return None
    own = dict(settings.get(NAME) or {})
    own.setdefault("api_base", "https://api.twilio.com")
    own.setdefault("timeout", 10.0)
    return own


def callback_url(own: Mapping[str, Any], path: str, **query: str) -> str:
    """An absolute URL of the CRM for Twilio: public_url + path + query."""
    url = str(own["public_url"]).rstrip("/") + path
    return url + ("?" + urllib.parse.urlencode(query) if query else "")


# --- click-to-call --------------------------------------------------------------------------


@hookimpl
def crm_place_call(
    session: Any, extension: str, number: str, call_id: str, settings: dict[str, Any]
) -> str | None:
    """Calls.json: ring the user's ``agent`` address; the TwiML URL then
    dials ``number``. The CRM's ``call_id`` stays the call's id: it is in
    every callback URL."""
    own = _own(settings)
    if own is None:
        return None
    form = [
        ("To", str(own["agent"]).replace("{extension}", extension)),
        ("From", own["caller_id"]),
        ("Url", callback_url(own, "/telephony/twilio/twiml", call=call_id)),
        (
            "StatusCallback",
            callback_url(own, "/telephony/twilio/status", call=call_id, leg="agent"),
        ),
        ("StatusCallbackMethod", "POST"),
        *[("StatusCallbackEvent", e) for e in EVENTS],
    ]
    body = urllib.parse.urlencode(form).encode()
    sid = str(own["account_sid"])
    credentials = base64.b64encode(f"{sid}:{own['auth_token']}".encode()).decode()
    url = f"{str(own['api_base']).rstrip('/')}/{API_VERSION}/Accounts/{sid}/Calls.json"
    headers = {
        "Authorization": f"Basic {credentials}",
        "Content-Type": "application/x-www-form-urlencoded",
        "Accept": "application/json",
    }
    _status, answer = webhooks.send(NAME, "POST", url, body, headers, float(own["timeout"]))
    with contextlib.suppress(ValueError, AttributeError):
        webhooks.log.info("twilio call %s placed for %s", json.loads(answer).get("sid"), call_id)
    return call_id


# --- Twilio's signature ---------------------------------------------------------------------


def signature(token: str, url: str, params: Mapping[str, list[str]]) -> str:
    """``X-Twilio-Signature`` of a request: base64 HMAC-SHA1 of the URL
    followed by each POST parameter (sorted by name, values sorted, repeats
    once) as name + value."""
    text = url
    for name in sorted(set(params)):
        for value in sorted(set(params[name])):
            text += name + value
    digest = hmac.new(token.encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _with_and_without_port(url: str) -> list[str]:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    default = 443 if parts.scheme == "https" else 80
    bare = parts._replace(netloc=host).geturl()
    ported = parts._replace(netloc=f"{host}:{parts.port or default}").geturl()
    return [url, bare, ported]


def genuine(own: Mapping[str, Any]) -> bool:
    """Whether this request carries Twilio's signature under the auth token,
    for the URL Twilio called (the public_url + path + query, or the URL as
    the request arrived)."""
    given = request.headers.get("X-Twilio-Signature", "").strip()
    if not given:
        return False
    query = request.query_string.decode("latin-1")
    public = str(own["public_url"]).rstrip("/") + request.path + ("?" + query if query else "")
    params = {name: request.form.getlist(name) for name in request.form}
    urls = {*_with_and_without_port(public), *_with_and_without_port(request.url)}
    return any(
        hmac.compare_digest(signature(str(own["auth_token"]), url, params).encode(), given.encode())
        for url in urls
    )


# --- the callbacks --------------------------------------------------------------------------


def _at(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def event_of(form: Mapping[str, str], call: str | None, leg: str | None) -> api.Event:
    """The call event a status callback (or a recording callback) says.
    ValueError with the reason for one that says nothing the CRM knows."""
    sid = (form.get("CallSid") or "").strip()
    if not sid:
        raise ValueError("CallSid is required")
    raw = dict(form)
    if not form.get("CallStatus") and form.get("RecordingUrl"):
        recording = str(form["RecordingUrl"])
        return api.Event(
            provider=NAME, call_id=(call or sid)[:128], kind="recording", recording=recording,
            event_id=f"{sid}:recording:{form.get('RecordingSid', '')}", raw=raw,
        )  # fmt: skip
    status = (form.get("CallStatus") or "").strip()
    if status not in STATUSES:
        raise ValueError(f"unknown CallStatus {status!r}")
    kind, ending = STATUSES[status]
    if leg == "agent" and kind == "answered":
        kind = "ringing"  # the user picked up; the client's phone rings next
    if call:  # a click-to-call: the CRM placed it
        direction = "out"
        number = None if leg == "agent" else form.get("To")
    else:
        direction = "in" if form.get("Direction", "inbound") == "inbound" else "out"
        number = form.get("From") if direction == "in" else form.get("To")
    duration = None
    if kind == "hangup" and leg != "agent" and (form.get("CallDuration") or "").isdigit():
        duration = int(form["CallDuration"])
    return api.Event(
        provider=NAME,
        call_id=(call or sid)[:128],
        kind=kind,
        direction=direction,
        number=number,
        at=_at(form.get("Timestamp")),
        status=ending,
        duration=duration if ending is None else None,
        event_id=f"{sid}:{status}:{form.get('SequenceNumber', '')}"[:150],
        raw=raw,
    )


def _twiml(xml: str, status: int = 200) -> Response:
    body = '<?xml version="1.0" encoding="UTF-8"?>' + xml
    return Response(body, status=status, mimetype="text/xml")


class TwilioView(BaseView):
    """Twilio's requests: the TwiML of a click-to-call, the status callbacks."""

    route_base = "/telephony/twilio"
    default_view = "status"

    def _checked(self) -> tuple[dict[str, Any] | None, Any]:
        own = _own(crm().registry.plugins)
        if own is None:
            return None, webhooks.refused(NAME, 404, "the twilio provider is not enabled")
        if not genuine(own):
            return None, webhooks.refused(NAME, 403, "wrong X-Twilio-Signature")
        return own, None

    @expose("/twiml", methods=["GET", "POST"])
    def twiml(self) -> Any:
        """Dial the client of the click-to-call ``?call=``."""
        own, refusal = self._checked()
        if own is None:
            return refusal
        call_id = request.args.get("call", "")
        state = crm()
        calls = state.models.table("Call")
        number = (
            db_session()
            .execute(sa.select(calls.c.number).where(calls.c.call_id == call_id[:128]))
            .scalar()
        )
        if not number:
            webhooks.log.warning("twilio asked for the TwiML of an unknown call %r", call_id)
            return _twiml("<Response><Hangup/></Response>", 404)
        events = " ".join(EVENTS)
        status_url = callback_url(own, "/telephony/twilio/status", call=call_id, leg="client")
        return _twiml(
            f"<Response><Dial callerId={quoteattr(own['caller_id'])}>"
            f'<Number statusCallbackEvent={quoteattr(events)} statusCallbackMethod="POST" '
            f"statusCallback={quoteattr(status_url)}>{escape(number)}</Number>"
            "</Dial></Response>"
        )

    @expose("/status", methods=["POST"])
    def status(self) -> Any:
        """A status callback of either leg (or of a call into a Twilio number)."""
        own, refusal = self._checked()
        if own is None:
            return refusal
        leg = request.args.get("leg")
        call = request.args.get("call") or None
        try:
            event = event_of(
                request.form.to_dict(), call, leg if leg in ("agent", "client") else None
            )
        except ValueError as exc:
            return webhooks.refused(NAME, 400, str(exc))
        return webhooks.applied(NAME, event, db_session())


@hookimpl
def crm_register_views(appbuilder: Any, registry: Any) -> None:
    if NAME in registry.plugins:
        webhooks.public(appbuilder, TwilioView())
