"""The cloudpbx provider: signed webhooks (bad signature, stale timestamp,
replay, duplicate, out-of-order events, malformed bodies) through the Flask
client, and click-to-call against a real local HTTP server that checks the
signature."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from engine.api import HandledError, clock
from tests.telephony.conftest import create, rows, user_id

SECRET = "s3cret-shared-key-for-tests"
URL = "/telephony/cloudpbx/events"


@pytest.fixture
def pbx_app(phone_app: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    def build(url: str = "http://127.0.0.1:9/api", **telephony: Any) -> Any:
        monkeypatch.setenv("CLOUDPBX_SECRET", SECRET)
        return phone_app(
            telephony={"region": "RU", **telephony},
            simulator=None,
            cloudpbx={"url": url, "secret": "${CLOUDPBX_SECRET}", "account": "acme",
                      "timeout": 2},
        )  # fmt: skip

    return build


def signed(body: bytes, at: float | None = None, secret: str = SECRET) -> dict[str, str]:
    timestamp = str(int(at if at is not None else clock.now().timestamp()))
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return {
        "Content-Type": "application/json",
        "X-Timestamp": timestamp,
        "X-Signature": "sha256=" + mac.hexdigest(),
    }


def post(app: Any, event: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> Any:
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    return app.test_client().post(URL, data=body, headers=headers or signed(body))


def event(n: int, call: str, kind: str, **more: Any) -> dict[str, Any]:
    return {"event_id": f"e{n}", "call_id": call, "type": kind, **more}


def test_a_call_in_order_is_logged_and_filed(pbx_app: Any) -> None:
    app = pbx_app()
    customer = create(app, "Customer", {"name": "Ivanov LLC", "phone": "+7 912 345-67-89"})
    start = clock.now().replace(microsecond=0)
    steps = [
        event(1, "c-1", "ringing", direction="in", **{"from": "89123456789"}, extension="101",
              timestamp=start.isoformat()),
        event(2, "c-1", "answered", timestamp=(start + dt.timedelta(seconds=5)).isoformat()),
        event(3, "c-1", "hangup", duration=40,
              timestamp=int((start + dt.timedelta(seconds=45)).timestamp())),
        event(4, "c-1", "recording", recording_url="https://pbx.example.com/rec/c-1.mp3"),
    ]  # fmt: skip
    for step in steps:
        answer = post(app, step)
        assert answer.status_code == 200, answer.get_json()
    (call,) = rows(app, "Call")
    assert call["direction"] == "in" and call["number"] == "+79123456789"
    assert call["status"] == "answered" and call["duration"] == 40
    assert call["customer_id"] == customer and call["user_id"] == user_id(app, "manager")
    assert call["recording"] == "https://pbx.example.com/rec/c-1.mp3"
    assert [e["kind"] for e in rows(app, "CallEvent")] == ["ringing", "answered", "hangup",
                                                             "recording"]  # fmt: skip


def test_hangup_before_answer_comes_out_right(pbx_app: Any) -> None:
    app = pbx_app()
    start = clock.now().replace(microsecond=0)
    at = [(start + dt.timedelta(seconds=s)).isoformat() for s in (0, 3, 33)]
    for step in [
        event(3, "c-2", "hangup", timestamp=at[2]),
        event(2, "c-2", "answered", timestamp=at[1]),
        event(1, "c-2", "ringing", direction="out", to="+79001112233", extension="102",
              timestamp=at[0]),
    ]:  # fmt: skip
        assert post(app, step).status_code == 200
    (call,) = rows(app, "Call")
    assert call["status"] == "answered" and call["direction"] == "out"
    assert call["duration"] == 30 and call["number"] == "+79001112233"
    assert call["user_id"] == user_id(app, "sales_head")


def test_a_wrong_signature_is_refused_and_logged(
    pbx_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = pbx_app()
    body = json.dumps(event(1, "c-3", "ringing")).encode()
    caplog.set_level(logging.WARNING, "crm.telephony.webhooks")
    cases = [
        signed(body, secret="another-secret-entirely"),
        {**signed(body), "X-Signature": "sha256=" + "0" * 64},
        {**signed(body), "X-Signature": "sha256=zzzz"},
        {**signed(body), "X-Signature": "sha256=ÿ" + "0" * 63},
        {"Content-Type": "application/json"},
    ]
    for headers in cases:
        answer = post(app, body, headers)
        assert answer.status_code == 401
        assert answer.is_json and answer.get_json()["message"]
    # a body changed after signing
    headers = signed(body)
    assert post(app, body.replace(b"c-3", b"c-4"), headers).status_code == 401
    assert rows(app, "Call") == [] and rows(app, "CallEvent") == []
    assert "wrong signature" in caplog.text and "cloudpbx" in caplog.text


def test_a_stale_or_future_timestamp_is_refused(
    pbx_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = pbx_app(webhook_window=60)
    now = clock.now().timestamp()
    caplog.set_level(logging.WARNING, "crm.telephony.webhooks")
    body = json.dumps(event(1, "c-5", "ringing")).encode()
    assert post(app, body, signed(body, at=now - 120)).status_code == 401
    assert post(app, body, signed(body, at=now + 120)).status_code == 401
    assert "time window" in caplog.text
    assert rows(app, "Call") == []
    assert post(app, body, signed(body, at=now - 30)).status_code == 200


def test_a_replay_is_refused_and_a_retry_is_a_noop(
    pbx_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = pbx_app()
    body = json.dumps(event(1, "c-6", "ringing", direction="in", number="+79001234567")).encode()
    headers = signed(body)
    first = post(app, body, headers)
    assert first.status_code == 200 and first.get_json()["call"]
    caplog.set_level(logging.WARNING, "crm.telephony.webhooks")
    replay = post(app, body, headers)
    assert replay.status_code == 409 and "replay" in replay.get_json()["message"]
    assert "replay" in caplog.text
    # the provider retrying the same event: a new timestamp, so a new signature
    retry = post(app, body, signed(body, at=clock.now().timestamp() + 1))
    assert retry.status_code == 200 and retry.get_json()["duplicate"] is True
    # the same event id with another body is still the same event
    other = json.dumps(event(1, "c-6", "hangup")).encode()
    assert post(app, other, signed(other, at=clock.now().timestamp() + 2)).get_json()["duplicate"]
    (call,) = rows(app, "Call")
    assert call["status"] == "ringing" and len(rows(app, "CallEvent")) == 1
    assert len(rows(app, "WebhookSignature")) == 3


def test_malformed_bodies_get_a_json_400(pbx_app: Any, caplog: pytest.LogCaptureFixture) -> None:
    app = pbx_app()
    caplog.set_level(logging.WARNING, "crm.telephony.webhooks")
    bad: list[tuple[bytes, str]] = [
        (b"{not json", "no JSON"),
        (b"\xff\xfe", "no JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({"call_id": "c", "type": "ringing"}).encode(), "`event_id`"),
        (json.dumps(event(1, "c", "exploded")).encode(), "`type`"),
        (json.dumps(event(1, "c", "hangup", status="weird")).encode(), "`status`"),
        (json.dumps(event(1, "c", "hangup", duration="long")).encode(), "`duration`"),
        (json.dumps(event(1, "c", "hangup", duration=-1)).encode(), "`duration`"),
        (json.dumps(event(1, "c", "ringing", direction="up")).encode(), "`direction`"),
        (json.dumps(event(1, "c", "ringing", timestamp="yesterday")).encode(), "`timestamp`"),
        (json.dumps(event(1, "c", "ringing", extension={"a": 1})).encode(), "`extension`"),
        (json.dumps(event(1, "c", "recording")).encode(), "`recording_url`"),
        (json.dumps(event(1, "c" * 200, "ringing")).encode(), "`call_id`"),
    ]
    for body, says in bad:
        answer = post(app, body)
        assert answer.status_code == 400, (body, answer.status_code)
        assert says in answer.get_json()["message"], (body, answer.get_json())
    assert rows(app, "Call") == [] and rows(app, "CallEvent") == []
    assert rows(app, "WebhookSignature") == []
    assert "refused (400)" in caplog.text


def test_old_signatures_are_pruned(pbx_app: Any, run_jobs: Any) -> None:
    from plugins.telephony.providers import cloudpbx, webhooks

    app = pbx_app(webhook_window=60)
    body = json.dumps(event(1, "c-7", "ringing")).encode()
    assert post(app, body).status_code == 200
    state = app.extensions["crm"]
    with app.app_context():
        session = state.db.session()
        assert webhooks.prune(session, state.models, 60) == 0
        later = clock.now() + dt.timedelta(seconds=121)
        with clock.use(lambda: later):
            assert webhooks.prune(session, state.models, 60) == 1
        session.commit()
    assert rows(app, "WebhookSignature") == []
    assert (cloudpbx.PRUNE_JOB, cloudpbx.PRUNE_EVERY) in cloudpbx.crm_schedules()


# --- click-to-call against a real HTTP server ------------------------------------------------


class FakePbx:
    """A PBX's REST API on a real socket: checks each request's signature."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200
        self.answer: dict[str, Any] = {"ok": True}
        self.delay = 0.0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                timestamp = self.headers.get("X-Timestamp", "")
                expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + body,
                                    hashlib.sha256).hexdigest()  # fmt: skip
                good = self.headers.get("X-Signature") == "sha256=" + expected
                fresh = abs(float(timestamp or 0) - clock.now().timestamp()) < 300
                time.sleep(fake.delay)
                if not good or not fresh:
                    status, answer = 401, {"error": "bad signature"}
                else:
                    fake.received.append({"path": self.path, **json.loads(body)})
                    status, answer = fake.status, fake.answer
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_pbx() -> Iterator[FakePbx]:
    fake = FakePbx()
    yield fake
    fake.close()


def place(app: Any, number: str, username: str = "manager") -> Any:
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
            return call.call_id
        except Exception:
            session.rollback()
            raise


def test_click_to_call_is_one_signed_request(pbx_app: Any, fake_pbx: FakePbx) -> None:
    app = pbx_app(url=fake_pbx.url)
    call_id = place(app, "8 912 345 67 89")
    (sent,) = fake_pbx.received
    assert sent == {"path": "/api/calls", "extension": "101", "number": "+79123456789",
                    "call_id": call_id, "account": "acme"}  # fmt: skip
    (call,) = rows(app, "Call")
    assert call["call_id"] == call_id and call["status"] == "ringing"
    # the PBX's events for it land on the same call
    assert post(app, event(9, call_id, "answered")).status_code == 200
    assert rows(app, "Call")[0]["answered_at"] is not None


def test_the_pbx_may_name_the_call_itself(pbx_app: Any, fake_pbx: FakePbx) -> None:
    fake_pbx.answer = {"call_id": "pbx-777"}
    app = pbx_app(url=fake_pbx.url)
    assert place(app, "+79123456789") == "pbx-777"


@pytest.mark.parametrize(
    ("status", "says"),
    [(403, "refused the call (403)"), (500, "refused the call (500)"), (None, "does not answer")],
)
def test_a_refusal_or_timeout_is_a_message_and_no_call(
    pbx_app: Any, fake_pbx: FakePbx, status: int | None, says: str
) -> None:
    if status is None:
        fake_pbx.delay = 3.0  # over the 2 s timeout
    else:
        fake_pbx.status, fake_pbx.answer = status, {"error": "extension 101 is offline"}
    app = pbx_app(url=fake_pbx.url)
    with pytest.raises(HandledError) as caught:
        place(app, "+79123456789")
    assert says in str(caught.value)
    if status is not None:
        assert "extension 101 is offline" in str(caught.value)
    assert rows(app, "Call") == []


def test_an_unreachable_pbx_is_a_message(pbx_app: Any) -> None:
    app = pbx_app(url="http://127.0.0.1:9/api")  # nothing listens on the discard port
    with pytest.raises(HandledError) as caught:
        place(app, "+79123456789")
    assert "does not answer" in str(caught.value)


def test_secrets_only_from_the_environment(phone_app: Any) -> None:
    from engine.api import MetadataError

    with pytest.raises(MetadataError) as caught:
        phone_app(simulator=None, cloudpbx={"url": "https://pbx.example.com", "secret": "x" * 20})
    assert "secret" in str(caught.value) and "${NAME}" in str(caught.value)
