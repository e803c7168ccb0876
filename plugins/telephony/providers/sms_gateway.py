"""The ``sms_gateway`` provider: a generic HTTP SMS gateway.

```yaml
plugins:
  telephony: {}
  sms_gateway:
    url: https://sms.example.com/api/messages   # where messages are POSTed
    token: ${SMS_GATEWAY_TOKEN}                 # sent as `Authorization: Bearer ...`
    sender: Romashka                            # the `from` of every message (optional)
    receipt_secret: ${SMS_GATEWAY_SECRET}       # signs the delivery-receipt webhook
    timeout: 10                                 # seconds to wait for the gateway
```

Sending: ``POST url`` with the JSON ``{to, text, from, reference}``
(``reference`` is the CRM's idempotency key of the message: a gateway that
sees it twice sends once). A 2xx answer ``{"id": ...}`` means sent; a 4xx
is a refusal for good (the message is failed with the gateway's answer);
a 5xx, a timeout or no connection is tried again later.

Receipts: the gateway POSTs ``{"id", "status": "delivered" | "failed",
"error"?}`` to ``/telephony/sms_gateway/receipts`` with the headers
``X-Timestamp`` (Unix seconds) and ``X-Signature``: the hex HMAC-SHA256 of
``timestamp + "." + raw body`` under ``receipt_secret``. A wrong signature
is 401, a timestamp outside the telephony ``webhook_window`` 400 (both
logged); a repeated receipt changes nothing (200); a receipt for a message
the CRM does not know (yet) is 404, so that the gateway tries it again.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, request
from marshmallow import fields as mf
from marshmallow import validate

from engine.api import JobError, Secret, SettingsSchema, crm, db_session, hookimpl, json_error

from .. import api

NAME = "sms_gateway"
RECEIPTS = "/telephony/sms_gateway/receipts"
DEFAULT_TIMEOUT = 10.0
log = logging.getLogger("crm.telephony.sms_gateway")


class SmsGatewaySettings(SettingsSchema):
    url = mf.Url(required=True, schemes={"http", "https"}, require_tld=False)
    token = Secret()
    sender = mf.String(validate=validate.Length(min=1, max=20))
    receipt_secret = Secret()
    timeout = mf.Float(load_default=DEFAULT_TIMEOUT, validate=validate.Range(min=0.1, max=120))


@hookimpl
def crm_settings_schema() -> Any:
    return SmsGatewaySettings


def _answer(body: bytes) -> str:
    return body.decode("utf-8", "replace").strip()[:300]


def post(own: Mapping[str, Any], to: str, text: str, key: str) -> str:
    """Send one message; the gateway's id. JobError(retry=False) for a
    refusal, JobError for a failure worth another attempt."""
    body = json.dumps(
        {"to": to, "text": text, "from": own.get("sender"), "reference": key}, ensure_ascii=False
    ).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if own.get("token"):
        headers["Authorization"] = f"Bearer {own['token']}"
    url = str(own["url"])  # http or https: the settings schema allows no other scheme
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    timeout = float(own.get("timeout") or DEFAULT_TIMEOUT)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:  # noqa: S310 (a configured URL)
            raw = response.read()
    except urllib.error.HTTPError as exc:
        answer = f"{exc.code} {_answer(exc.read() or b'') or exc.reason}"
        raise JobError(f"the SMS gateway answered {answer}", retry=exc.code >= 500) from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise JobError(f"the SMS gateway cannot be reached: {reason}") from exc
    try:
        found = json.loads(raw or b"{}")
        ident = found.get("id") if isinstance(found, dict) else None
    except ValueError:
        ident = None
    if ident in (None, ""):
        raise JobError(f"the SMS gateway's answer has no id: {_answer(raw)}")
    return str(ident)


@hookimpl
def crm_send_sms(to: str, text: str, settings: dict[str, Any], key: str) -> str | None:
    own = settings.get(NAME)
    if own is None:
        return None
    return post(own, to, text, key)


# --- the receipts' webhook -------------------------------------------------------------------

receipts = Blueprint("telephony_sms_gateway", __name__)


@receipts.route(RECEIPTS, methods=["POST"])
def receive() -> Any:
    state = crm()
    own = state.registry.plugins.get(NAME)
    if own is None:
        return json_error(404, "the sms_gateway provider is not on")
    secret = own.get("receipt_secret")
    if not secret:
        return json_error(404, "no receipt_secret is set for sms_gateway receipts")
    raw = request.get_data(cache=False)
    stamp = request.headers.get("X-Timestamp", "")
    signature = request.headers.get("X-Signature", "")
    if not signature or not api.verify_signature(secret, stamp.encode() + b"." + raw, signature):
        log.warning("sms_gateway receipt refused: bad signature from %s", request.remote_addr)
        return json_error(401, "bad signature")
    window = int((state.registry.plugins.get("telephony") or {}).get("webhook_window") or 300)
    if not api.fresh(stamp, window):
        log.warning("sms_gateway receipt refused: stale timestamp %r", stamp[:40])
        return json_error(400, f"the timestamp is more than {window} s off the CRM's clock")
    try:
        body = json.loads(raw)
    except ValueError:
        return json_error(400, "the body is not JSON")
    if not isinstance(body, dict) or not body.get("id"):
        return json_error(400, "a receipt is {id, status, error?}")
    status = body.get("status")
    if status not in ("delivered", "failed"):
        return json_error(400, "`status` is delivered or failed")
    session = db_session()
    model = state.models.cls("SmsMessage")
    known = session.query(model.id).filter(
        model.provider == NAME, model.provider_id == str(body["id"])[:128]
    ).first()  # fmt: skip
    if known is None:
        return json_error(404, "no such message")
    try:
        row = api.sms_receipt(NAME, str(body["id"]), status, body.get("error"), session=session)
        session.commit()
    except Exception:
        session.rollback()
        raise
    return {"ok": True, "changed": row is not None}


@hookimpl
def crm_register_views(appbuilder: Any, registry: Any) -> None:
    if NAME not in registry.plugins:
        return
    from flask import current_app

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if receipts.name not in app.blueprints:
        app.register_blueprint(receipts)
        app.extensions["csrf"].exempt(receipts)
