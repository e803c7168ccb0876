"""The ``smpp`` provider: an SMSC over SMPP 3.4, through smpplib.

```yaml
plugins:
  telephony: {}
  smpp:
    host: smsc.example.com
    port: 2775
    system_id: romashka
    password: ${SMPP_PASSWORD}
    system_type: ""          # if the SMSC asks for one
    source_addr: Romashka    # the sender shown on the phone
    timeout: 10              # seconds to wait for the SMSC's answers
    enquire_link: 30         # seconds between keep-alives of the receipt listener
```

Sending (``crm_send_sms``, in the ``sms.send`` job): connect, ``bind_transmitter``,
one ``submit_sm`` per part (GSM-7 or UCS-2, long texts split with a UDH by
smpplib) with ``registered_delivery=1``, the ``message_id`` of the first
part's ``submit_sm_resp`` as the provider's id, ``unbind``. A bind or submit
the SMSC refuses (an error status) fails the message for good, with the
SMSC's status; a connection that fails or times out is tried again.

Receipts: a long-running service of ``crm worker`` (``crm_worker_services``)
stays bound as a transceiver, answers ``enquire_link``, sends its own every
``enquire_link`` seconds, and reads ``deliver_sm`` delivery receipts
(``esm_class`` bit 0x04): the ``receipted_message_id`` and ``message_state``
TLVs when present, else the ``id:... stat:...`` text of the receipt.
DELIVRD means delivered; UNDELIV, REJECTD, EXPIRED and DELETED failed.
A receipt is applied at once (``sms_receipt``); one for a message the CRM
has not recorded as sent yet (the job's transaction may not have committed)
is queued as an ``sms.receipt`` job that tries again. When the connection
drops the service ends and the worker starts it again with backoff.

Sending binds as a transmitter on purpose: an SMSC hands receipts to bound
receivers and transceivers, and the sending job cannot record one (its
message is not committed yet); they all reach the listener.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

from marshmallow import fields as mf
from marshmallow import validate

from engine.api import JobError, Secret, SettingsSchema, clock, crm, db_session, enqueue, hookimpl

from .. import api

NAME = "smpp"
DEFAULT_TIMEOUT = 10.0
log = logging.getLogger("crm.telephony.smpp")
FAILED_STATES = {"UNDELIV", "REJECTD", "EXPIRED", "DELETED"}
#: SMPP 3.4 message_state values (5.2.28)
MESSAGE_STATES = {1: "ENROUTE", 2: "DELIVRD", 3: "EXPIRED", 4: "DELETED", 5: "UNDELIV",
                  6: "ACCEPTD", 7: "UNKNOWN", 8: "REJECTD"}  # fmt: skip
RECEIPT_TEXT = re.compile(r"id:(?P<id>\S+).*?stat:(?P<stat>\w+)(?:.*?err:(?P<err>\w+))?", re.S)


class SmppSettings(SettingsSchema):
    host = mf.String(required=True, validate=validate.Length(min=1, max=255))
    port = mf.Integer(load_default=2775, validate=validate.Range(min=1, max=65535))
    system_id = mf.String(required=True, validate=validate.Length(min=1, max=15))
    password = Secret()
    system_type = mf.String(load_default="", validate=validate.Length(max=12))
    source_addr = mf.String(load_default="", validate=validate.Length(max=20))
    timeout = mf.Float(load_default=DEFAULT_TIMEOUT, validate=validate.Range(min=0.1, max=120))
    enquire_link = mf.Float(load_default=30.0, validate=validate.Range(min=0.5, max=600))


@hookimpl
def crm_settings_schema() -> Any:
    return SmppSettings


def _client(own: Mapping[str, Any]) -> Any:
    import smpplib.client

    client = smpplib.client.Client(
        str(own["host"]), int(own.get("port") or 2775),
        timeout=float(own.get("timeout") or DEFAULT_TIMEOUT), allow_unknown_opt_params=True,
    )  # fmt: skip
    client.connect()
    return client


def _bind_args(own: Mapping[str, Any]) -> dict[str, Any]:
    return {"system_id": str(own["system_id"]), "password": str(own.get("password") or ""),
            "system_type": str(own.get("system_type") or "")}  # fmt: skip


def _close(client: Any) -> None:
    try:
        client.unbind()
    except Exception as exc:  # the SMSC went away first: nothing to unbind
        log.debug("unbind: %s", exc)
    try:
        client.disconnect()
    except Exception as exc:
        log.debug("disconnect: %s", exc)


def submit(own: Mapping[str, Any], to: str, text: str) -> str:
    """Send one SMS; the SMSC's message id (of its first part)."""
    import smpplib.consts
    import smpplib.exceptions
    import smpplib.gsm

    parts, coding, esm_class = smpplib.gsm.make_parts(text)
    try:
        client = _client(own)
    except (OSError, smpplib.exceptions.ConnectionError) as exc:
        raise JobError(f"the SMSC cannot be reached: {str(exc) or type(exc).__name__}") from exc
    try:
        client.bind_transmitter(**_bind_args(own))
        first = None
        for part in parts:
            client.send_message(
                source_addr_ton=smpplib.consts.SMPP_TON_ALNUM if own.get("source_addr") else 0,
                source_addr=str(own.get("source_addr") or ""),
                dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
                dest_addr_npi=smpplib.consts.SMPP_NPI_ISDN,
                destination_addr=to.lstrip("+"),
                short_message=part, data_coding=coding, esm_class=esm_class,
                registered_delivery=1,
            )  # fmt: skip
            resp = client.read_pdu()
            while resp.command != "submit_sm_resp":
                if resp.command == "enquire_link":
                    client._enquire_link_received(resp)
                resp = client.read_pdu()
            if resp.is_error():
                raise JobError(f"the SMSC refused the SMS: status {resp.status}", retry=False)
            message_id = resp.message_id
            if isinstance(message_id, bytes):
                message_id = message_id.decode("ascii", "replace")
            first = first or str(message_id)
        if not first:
            raise JobError("the SMSC's answer has no message id")
        return first
    except smpplib.exceptions.PDUError as exc:
        raise JobError(
            f"the SMSC refused: {exc.args[0] if exc.args else exc}", retry=False
        ) from exc
    except (OSError, smpplib.exceptions.ConnectionError) as exc:
        raise JobError(
            f"the connection to the SMSC failed: {str(exc) or type(exc).__name__}"
        ) from exc
    finally:
        _close(client)


@hookimpl
def crm_send_sms(to: str, text: str, settings: dict[str, Any], key: str) -> str | None:
    """SMPP 3.4 has no client reference to send ``key`` as: a repeated
    attempt after the SMSC accepted the message but before the CRM recorded
    it (a worker killed between the two) would send it again."""
    own = settings.get(NAME)
    if own is None:
        return None
    return submit(own, to, text)


# --- receipts ------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1", "replace")
    return str(value or "")


def read_receipt(pdu: Any) -> tuple[str, str, str | None] | None:
    """A deliver_sm's receipt as (message id, status, error), or None when
    it is no receipt or says nothing final (ENROUTE, ACCEPTD)."""
    if not (int(getattr(pdu, "esm_class", 0) or 0) & 0x04):
        return None  # a message from a phone, not a receipt
    found = RECEIPT_TEXT.search(_text(getattr(pdu, "short_message", b"")))
    ident = _text(getattr(pdu, "receipted_message_id", None)) or (found["id"] if found else "")
    state = getattr(pdu, "message_state", None)
    stat = MESSAGE_STATES.get(int(state)) if state else (found["stat"] if found else None)
    if not ident or not stat:
        return None
    if stat == "DELIVRD":
        return ident, "delivered", None
    if stat in FAILED_STATES:
        err = found["err"] if found and found["err"] else None
        return ident, "failed", f"{stat}" + (f" (err {err})" if err else "")
    return None


def apply_receipt(ident: str, status: str, error: str | None) -> None:
    """Apply a receipt now, or queue it for when its message is recorded."""
    state = crm()
    session = db_session()
    try:
        model = state.models.cls("SmsMessage")
        known = (
            session.query(model.id)
            .filter(model.provider == NAME, model.provider_id == ident[:128])
            .first()
        )
        if known is not None:
            api.sms_receipt(NAME, ident, status, error, session=session)
        else:
            enqueue(
                session, "sms.receipt",
                {"provider": NAME, "provider_id": ident, "status": status, "error": error,
                 "at": clock.now().isoformat(), "wait": True},
                key=f"smpp-receipt:{ident}:{status}",
                run_after=clock.now() + dt.timedelta(seconds=5),
            )  # fmt: skip
        session.commit()
    except Exception:
        session.rollback()
        raise


def _answer(client: Any, pdu: Any, command: str, status: int = 0) -> None:
    import smpplib.smpp

    resp = smpplib.smpp.make_pdu(command, client=client, status=status)
    resp.sequence = pdu.sequence
    client.send_pdu(resp)


def listen(own: Mapping[str, Any], stop: threading.Event) -> None:
    """Stay bound and apply receipts until ``stop``; raises when the
    connection drops or the SMSC unbinds, for the worker to start it again."""
    import smpplib.exceptions
    import smpplib.smpp

    client = _client({**own, "timeout": min(1.0, float(own.get("timeout") or 1.0))})
    try:
        client.bind_transceiver(**_bind_args(own))
        log.info("smpp: bound to %s:%s for receipts", own["host"], own.get("port"))
        every = float(own.get("enquire_link") or 30.0)
        last = time.monotonic()
        while not stop.is_set():
            if time.monotonic() - last >= every:
                client.send_pdu(smpplib.smpp.make_pdu("enquire_link", client=client))
                last = time.monotonic()
            try:
                pdu = client.read_pdu()
            except TimeoutError:
                continue
            if pdu.command == "deliver_sm":
                status = 0
                found = read_receipt(pdu)
                if found is not None:
                    try:
                        apply_receipt(*found)
                    except Exception as exc:  # the database: the SMSC sends it again
                        log.error("smpp receipt for %s not recorded: %s", found[0], exc)
                        status = 0x08  # ESME_RSYSERR
                _answer(client, pdu, "deliver_sm_resp", status)
            elif pdu.command == "enquire_link":
                _answer(client, pdu, "enquire_link_resp")
            elif pdu.command == "unbind":
                _answer(client, pdu, "unbind_resp")
                client.state = 1  # open: nothing left to unbind
                raise smpplib.exceptions.ConnectionError("the SMSC unbound the receipt listener")
    finally:
        _close(client)


@hookimpl
def crm_worker_services(registry: Any) -> list[Any]:
    own = registry.plugins.get(NAME)
    if own is None:
        return []

    def smpp_receipts(stop: threading.Event) -> None:
        listen(own, stop)

    return [smpp_receipts]
