"""The twilio provider: click-to-call against a fake Twilio REST server
(Calls.json over a real socket), the TwiML that dials the client, and status
callbacks through the Flask client signed by Twilio's own RequestValidator."""

from __future__ import annotations

import base64
import json
import logging
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from twilio.request_validator import RequestValidator

from engine.api import HandledError
from tests.telephony.conftest import create, rows, user_id

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "twilio-auth-token-for-tests"
PUBLIC = "https://crm.example.com"


class FakeTwilio:
    """Calls.json over a real socket: basic auth checked, the form kept."""

    def __init__(self) -> None:
        self.received: list[dict[str, list[str]]] = []
        self.status = 201
        self.answer: dict[str, Any] = {"sid": "CA" + "f" * 32, "status": "queued"}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                expected = "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    status, answer = 401, {"code": 20003, "message": "Authenticate"}
                elif self.path != f"/2010-04-01/Accounts/{SID}/Calls.json":
                    status, answer = 404, {"code": 20404, "message": "not found"}
                else:
                    fake.received.append(urllib.parse.parse_qs(body))
                    status, answer = fake.status, fake.answer
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    fake = FakeTwilio()
    yield fake
    fake.close()


@pytest.fixture
def twilio_app(phone_app: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    def build(api_base: str = "http://127.0.0.1:9") -> Any:
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
        settings = {"account_sid": SID, "auth_token": "${TWILIO_AUTH_TOKEN}",
                    "caller_id": "+74951234567", "agent": "sip:{extension}@acme.sip.twilio.com",
                    "public_url": PUBLIC, "api_base": api_base, "timeout": 2}  # fmt: skip
        return phone_app(simulator=None, twilio=settings)

    return build


def callback(app: Any, path: str, params: dict[str, str], token: str = TOKEN) -> Any:
    """POST ``params`` to ``path`` (with its query) signed as Twilio signs."""
    signature = RequestValidator(token).compute_signature(PUBLIC + path, params)
    return app.test_client().post(path, data=params, headers={"X-Twilio-Signature": signature})


def place(app: Any, number: str, username: str = "manager") -> str:
    from engine.api import Documents
    from plugins.telephony import placing

    state = app.extensions["crm"]
    with app.app_context():
        session = state.db.session()
        docs = Documents(state.models, session, user_id(app, username), [username], state.pm,
                         username=username, trusted=True)  # fmt: skip
        try:
            call = placing.place(docs, user_id(app, username), number)
            session.commit()
            return str(call.call_id)
        except Exception:
            session.rollback()
            raise


def status(sid: str, call_status: str, seq: int, **more: str) -> dict[str, str]:
    return {"CallSid": sid, "AccountSid": SID, "CallStatus": call_status,
            "SequenceNumber": str(seq), "ApiVersion": "2010-04-01", **more}  # fmt: skip


def test_click_to_call_rings_the_agent_then_dials_the_client(
    twilio_app: Any, fake_twilio: FakeTwilio
) -> None:
    app = twilio_app(api_base=fake_twilio.url)
    customer = create(app, "Customer", {"name": "Ivanov LLC", "phone": "+7 912 345-67-89"})
    call_id = place(app, "8 912 345 67 89")
    (form,) = fake_twilio.received
    assert form["To"] == ["sip:101@acme.sip.twilio.com"] and form["From"] == ["+74951234567"]
    assert form["Url"] == [f"{PUBLIC}/telephony/twilio/twiml?call={call_id}"]
    assert form["StatusCallback"] == [f"{PUBLIC}/telephony/twilio/status?call={call_id}&leg=agent"]
    assert form["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    # the user picks up: Twilio asks what to do, the TwiML dials the client
    twiml = callback(app, f"/telephony/twilio/twiml?call={call_id}",
                     status("CA1", "in-progress", 0, Direction="outbound-api"))  # fmt: skip
    assert twiml.status_code == 200 and twiml.mimetype == "text/xml"
    text = twiml.get_data(as_text=True)
    assert '<Dial callerId="+74951234567">' in text and ">+79123456789</Number>" in text
    assert f"status?call={call_id}&amp;leg=client" in text
    agent = f"/telephony/twilio/status?call={call_id}&leg=agent"
    client = f"/telephony/twilio/status?call={call_id}&leg=client"
    steps = [
        (agent, status("CA1", "initiated", 0, Direction="outbound-api")),
        (agent, status("CA1", "ringing", 1, Direction="outbound-api")),
        (agent, status("CA1", "in-progress", 2, Direction="outbound-api")),
        (client, status("CA2", "ringing", 0, Direction="outbound-dial", To="+79123456789")),
        (client, status("CA2", "in-progress", 1, Direction="outbound-dial", To="+79123456789")),
        # the client's hangup comes last, with the talk time
        (agent, status("CA1", "completed", 3, Direction="outbound-api", CallDuration="70")),
        (client, status("CA2", "completed", 2, Direction="outbound-dial", CallDuration="61")),
    ]
    answered_after_agent: Any = None
    for path, params in steps:
        answer = callback(app, path, params)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        if params["CallSid"] == "CA1" and params["CallStatus"] == "in-progress":
            answered_after_agent = rows(app, "Call")[0]["answered_at"]
    assert answered_after_agent is None  # the user picking up is not the client answering
    (call,) = rows(app, "Call")
    assert call["call_id"] == call_id and call["direction"] == "out"
    assert call["status"] == "answered" and call["duration"] == 61
    assert call["customer_id"] == customer and call["user_id"] == user_id(app, "manager")
    assert len(rows(app, "CallEvent")) == len(steps)


def test_a_client_who_does_not_answer(twilio_app: Any, fake_twilio: FakeTwilio) -> None:
    app = twilio_app(api_base=fake_twilio.url)
    call_id = place(app, "+79123456789")
    client = f"/telephony/twilio/status?call={call_id}&leg=client"
    assert callback(app, client, status("CA2", "no-answer", 1)).status_code == 200
    assert rows(app, "Call")[0]["status"] == "missed"


def test_an_incoming_call_to_a_twilio_number(twilio_app: Any) -> None:
    app = twilio_app()
    path = "/telephony/twilio/status"
    base = {"Direction": "inbound", "From": "+79001112233", "To": "+74951234567"}
    for seq, (state, more) in enumerate(
        [("ringing", {}), ("in-progress", {}), ("completed", {"CallDuration": "15"})]
    ):
        assert callback(app, path, status("CA9", state, seq, **base, **more)).status_code == 200
    (call,) = rows(app, "Call")
    assert call["call_id"] == "CA9" and call["direction"] == "in"
    assert call["number"] == "+79001112233" and call["status"] == "answered"
    assert call["duration"] == 15
    recording = {"CallSid": "CA9", "RecordingSid": "RE1",
                 "RecordingUrl": "https://api.twilio.com/rec/RE1"}  # fmt: skip
    assert callback(app, path, recording).status_code == 200
    assert rows(app, "Call")[0]["recording"] == "https://api.twilio.com/rec/RE1"


@pytest.mark.parametrize(
    ("twilio_status", "ending"), [("busy", "busy"), ("failed", "failed"), ("canceled", "failed")]
)
def test_endings(twilio_app: Any, twilio_status: str, ending: str) -> None:
    app = twilio_app()
    params = status("CA5", twilio_status, 0, Direction="inbound", From="+79001112233")
    assert callback(app, "/telephony/twilio/status", params).status_code == 200
    assert rows(app, "Call")[0]["status"] == ending


def test_a_callback_seen_twice_is_applied_once(twilio_app: Any) -> None:
    app = twilio_app()
    params = status("CA7", "ringing", 0, Direction="inbound", From="+79001112233")
    first = callback(app, "/telephony/twilio/status", params)
    again = callback(app, "/telephony/twilio/status", params)
    assert first.get_json()["call"] and again.get_json()["duplicate"] is True
    assert len(rows(app, "CallEvent")) == 1


def test_a_wrong_signature_is_refused(twilio_app: Any, caplog: pytest.LogCaptureFixture) -> None:
    app = twilio_app()
    caplog.set_level(logging.WARNING, "crm.telephony.webhooks")
    params = status("CA8", "ringing", 0, Direction="inbound", From="+79001112233")
    path = "/telephony/twilio/status"
    assert callback(app, path, params, token="another-token").status_code == 403
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + path, params)
    tampered = {**params, "From": "+79990000000"}
    client = app.test_client()
    assert (
        client.post(path, data=tampered, headers={"X-Twilio-Signature": signature}).status_code
        == 403
    )
    assert client.post(path, data=params).status_code == 403  # no signature at all
    # signed for another URL (another call's callback)
    other = RequestValidator(TOKEN).compute_signature(PUBLIC + path + "?call=x", params)
    assert client.post(path, data=params, headers={"X-Twilio-Signature": other}).status_code == 403
    twiml = client.post("/telephony/twilio/twiml?call=crm-1", data=params,
                        headers={"X-Twilio-Signature": signature})  # fmt: skip
    assert twiml.status_code == 403
    assert rows(app, "Call") == [] and "wrong X-Twilio-Signature" in caplog.text


def test_a_callback_that_says_nothing_known_is_a_400(twilio_app: Any) -> None:
    app = twilio_app()
    path = "/telephony/twilio/status"
    assert callback(app, path, {"CallStatus": "ringing"}).status_code == 400
    answer = callback(app, path, status("CA3", "exploded", 0))
    assert answer.status_code == 400 and "CallStatus" in answer.get_json()["message"]
    assert rows(app, "Call") == []


def test_twiml_of_an_unknown_call(twilio_app: Any) -> None:
    app = twilio_app()
    answer = callback(app, "/telephony/twilio/twiml?call=crm-nope", status("CA1", "in-progress", 0))
    assert answer.status_code == 404 and "<Hangup/>" in answer.get_data(as_text=True)


def test_twilio_refusing_is_a_message_and_no_call(twilio_app: Any, fake_twilio: FakeTwilio) -> None:
    fake_twilio.status = 400
    fake_twilio.answer = {"code": 21211, "message": "The 'To' number is not a valid phone number."}
    app = twilio_app(api_base=fake_twilio.url)
    with pytest.raises(HandledError) as caught:
        place(app, "+79123456789")
    assert "(400): The 'To' number is not a valid phone number." in str(caught.value)
    assert rows(app, "Call") == []


def test_settings_are_checked(phone_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.api import MetadataError

    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    with pytest.raises(MetadataError) as caught:
        phone_app(simulator=None, twilio={"account_sid": "nope", "auth_token": "plain-token-here",
                                          "caller_id": "84951234567", "agent": "sip:101@x",
                                          "public_url": PUBLIC})  # fmt: skip
    text = str(caught.value)
    assert "Account SID" in text and "E.164" in text and "{extension}" in text
    assert "${NAME}" in text
