"""The `smpp` provider against tests/telephony/smsc.py: an SMSC speaking
SMPP 3.4 over a real TCP socket. Sending binds as a transmitter and submits
with registered_delivery; the receipt listener (a `crm worker` service)
stays bound as a transceiver, reads deliver_sm receipts, answers and sends
enquire_link, and is started again when the connection drops."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from engine.api import clock
from engine.testing import drain

from .conftest import rows
from .smsc import SMSC
from .test_sms import jobs, queue


@pytest.fixture
def smsc() -> Iterator[SMSC]:
    server = SMSC(system_id="crm", password="s3cret")
    yield server
    server.close()


@pytest.fixture
def app(phone_app: Any, smsc: SMSC, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SMPP_PASSWORD", "s3cret")
    return phone_app(simulator=None, smpp={
        "host": "127.0.0.1", "port": smsc.port, "system_id": "crm",
        "password": "${SMPP_PASSWORD}", "source_addr": "Romashka", "timeout": 2,
        "enquire_link": 0.5,
    })  # fmt: skip


def later(seconds: float) -> Any:
    moment = clock.now() + dt.timedelta(seconds=seconds)
    return clock.use(lambda: moment)


def test_an_sms_is_submitted_with_a_receipt_asked_for(app: Any, smsc: SMSC) -> None:
    queue(app, "8 916 123-45-67", "Hello from the CRM")
    drain(app)
    (sm,) = smsc.submitted
    assert (sm.destination, sm.source, sm.data, sm.registered_delivery) == (
        "79161234567", "Romashka", b"Hello from the CRM", 1,
    )  # fmt: skip
    assert smsc.binds == [("transmitter", "crm")] and smsc.unbinds == 1
    (message,) = rows(app, "SmsMessage")
    assert (message["status"], message["provider"], message["provider_id"]) == (
        "sent", "smpp", sm.message_id,
    )  # fmt: skip


def test_a_long_cyrillic_text_goes_as_ucs2_parts_under_the_first_parts_id(
    app: Any, smsc: SMSC
) -> None:
    queue(app, "+79161234567", "Привет! " * 12)  # 96 UCS-2 characters: two parts
    drain(app)
    assert len(smsc.submitted) == 2
    assert {s.data_coding for s in smsc.submitted} == {8}  # UCS-2
    assert all(s.esm_class & 0x40 for s in smsc.submitted)  # a UDH joins the parts
    assert rows(app, "SmsMessage")[0]["provider_id"] == smsc.submitted[0].message_id


def test_refusals_fail_the_message_and_an_absent_smsc_is_tried_again(app: Any, smsc: SMSC) -> None:
    smsc.reject.add("79161234567")
    queue(app, "+79161234567", "one")
    drain(app)
    (message,) = rows(app, "SmsMessage")
    assert message["status"] == "failed"
    assert message["error"] == f"the SMSC refused the SMS: status {0x0B}"
    smsc.close()
    queue(app, "+79161234568", "two")
    drain(app)
    assert rows(app, "SmsMessage")[1]["status"] == "queued"
    error = jobs(app, "sms.send")[1]["last_error"]
    assert error.startswith(("the SMSC cannot be reached", "the connection to the SMSC failed"))


def test_a_wrong_password_is_a_refusal_for_good(phone_app: Any, smsc: SMSC,
                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("SMPP_PASSWORD", "wrong")
    app = phone_app(simulator=None, smpp={"host": "127.0.0.1", "port": smsc.port,
                                          "system_id": "crm", "password": "${SMPP_PASSWORD}"})  # fmt: skip
    queue(app, "+79161234567", "one")
    drain(app)
    (message,) = rows(app, "SmsMessage")
    assert message["status"] == "failed" and "SMSC refused" in message["error"]
    assert smsc.refused_binds == 1


def test_the_listener_applies_receipts_keeps_the_link_and_reconnects(app: Any, smsc: SMSC) -> None:
    from engine import services

    stop = threading.Event()
    threads = services.start(app, stop)
    assert len(threads) == 1
    try:
        assert smsc.wait(lambda: ("transceiver", "crm") in smsc.binds)
        queue(app, "+79161234567", "one")
        queue(app, "+79160000000", "two")
        drain(app)
        # a receipt that came before its message was committed waits in a job: run the jobs
        assert smsc.wait(lambda: drain(app) >= 0 and [m["status"] for m in rows(app, "SmsMessage")] == [
            "delivered", "failed",
        ], timeout=30)  # fmt: skip
        failed = rows(app, "SmsMessage")[1]
        assert failed["error"] == "UNDELIV (err 001)"
        assert smsc.wait(lambda: len(smsc.acked) == 2) and {s for _, s in smsc.acked} == {0}
        assert smsc.wait(lambda: smsc.enquire_links >= 1)  # the listener's keep-alive
        smsc.drop()
        assert smsc.wait(lambda: smsc.binds.count(("transceiver", "crm")) == 2, timeout=15)
        queue(app, "+79161234569", "three")
        drain(app)
        assert smsc.wait(lambda: rows(app, "SmsMessage")[2]["status"] == "delivered")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    assert smsc.unbinds >= 4  # three senders and the listener, on the way out


def test_a_receipt_before_its_message_is_recorded_waits_for_it(app: Any) -> None:
    from plugins.telephony import sms
    from plugins.telephony.providers import smpp

    with app.app_context():
        smpp.apply_receipt("0000ABCD", "delivered", None)
    with later(10):
        drain(app)
    (job,) = jobs(app, "sms.receipt")
    assert job["state"] == "pending" and "(yet)" in job["last_error"]
    mid = queue(app, "+79161234567", "one")
    with app.app_context():
        state = app.extensions["crm"]
        session = state.db.session()
        row = session.get(state.models.cls(sms.MESSAGE), mid)
        row.status, row.provider, row.provider_id = "sent", "smpp", "0000ABCD"
        session.commit()
    with later(120):
        drain(app)
    assert rows(app, "SmsMessage")[0]["status"] == "delivered"


def test_reading_receipts() -> None:
    import smpplib.smpp

    from plugins.telephony.providers.smpp import read_receipt

    def pdu(text: bytes, esm: int = 0x04, **tlv: Any) -> Any:
        return smpplib.smpp.make_pdu("deliver_sm", client=None, sequence=1, esm_class=esm, short_message=text,
                                     **tlv)  # fmt: skip

    assert read_receipt(pdu(b"id:77 sub:001 dlvrd:001 stat:DELIVRD err:000")) == (
        "77", "delivered", None,
    )  # fmt: skip
    assert read_receipt(pdu(b"id:78 stat:REJECTD err:00B")) == ("78", "failed", "REJECTD (err 00B)")
    assert read_receipt(pdu(b"id:79 stat:ENROUTE")) is None  # nothing final yet
    assert read_receipt(pdu(b"hello", esm=0)) is None  # a message from a phone
    assert read_receipt(pdu(b"", receipted_message_id="80", message_state=2)) == (
        "80", "delivered", None,
    )  # fmt: skip
