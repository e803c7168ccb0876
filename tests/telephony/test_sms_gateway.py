"""The `sms_gateway` provider against a real HTTP server on a local socket
(http.server in a thread standing in for the gateway), and its signed
delivery-receipt webhook through the app."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from engine.api import clock
from engine.testing import drain

from .conftest import create, rows, user_id
from .test_sms import jobs, queue

SECRET = "receipt-secret"


class Gateway:
    """What the gateway was sent, and what it answers next (status, body)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.answers: list[tuple[int, Any]] = []
        self.delay = 0.0
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/messages"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length))
                gateway.received.append({"body": body, "auth": self.headers.get("Authorization"),
                                         "path": self.path})  # fmt: skip
                time.sleep(gateway.delay)
                status, answer = (
                    gateway.answers.pop(0) if gateway.answers
                    else (201, {"id": f"gw-{len(gateway.received)}"})
                )  # fmt: skip
                data = json.dumps(answer).encode() if not isinstance(answer, bytes) else answer
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    found = Gateway()
    yield found
    found.close()


@pytest.fixture
def app(phone_app: Any, gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SMS_TOKEN", "t0ken")
    monkeypatch.setenv("SMS_SECRET", SECRET)
    return phone_app(simulator=None, sms_gateway={
        "url": gateway.url, "token": "${SMS_TOKEN}", "sender": "Romashka",
        "receipt_secret": "${SMS_SECRET}", "timeout": 0.5,
    })  # fmt: skip


def later(seconds: float) -> Any:
    moment = clock.now() + dt.timedelta(seconds=seconds)
    return clock.use(lambda: moment)


def test_an_sms_is_posted_with_the_token_and_its_reference(app: Any, gateway: Gateway) -> None:
    cid = create(app, "Customer", {"name": "R", "phone": "+79161234567",
                                   "manager": user_id(app, "manager")})  # fmt: skip
    mid = queue(app, "+79161234567", "Привет", "Customer", cid)
    drain(app)
    (sent,) = gateway.received
    assert sent["auth"] == "Bearer t0ken" and sent["path"] == "/api/messages"
    assert sent["body"] == {"to": "+79161234567", "text": "Привет", "from": "Romashka",
                            "reference": f"sms.send.{mid}"}  # fmt: skip
    (message,) = rows(app, "SmsMessage")
    assert (message["status"], message["provider"], message["provider_id"]) == (
        "sent", "sms_gateway", "gw-1",
    )  # fmt: skip


def test_a_4xx_fails_the_message_and_a_5xx_or_timeout_is_tried_again(
    app: Any, gateway: Gateway
) -> None:
    gateway.answers = [(400, {"error": "invalid number"})]
    queue(app, "+79161234567", "one")
    drain(app)
    (message,) = rows(app, "SmsMessage")
    assert message["status"] == "failed"
    assert message["error"] == 'the SMS gateway answered 400 {"error": "invalid number"}'
    gateway.answers = [(503, b"busy")]
    gateway.received.clear()
    queue(app, "+79161234568", "two")
    drain(app)
    assert rows(app, "SmsMessage")[1]["status"] == "queued"
    assert jobs(app, "sms.send")[1]["last_error"] == "the SMS gateway answered 503 busy"
    gateway.delay = 1.0  # longer than the 0.5 s timeout
    with later(60):
        drain(app)
    assert rows(app, "SmsMessage")[1]["status"] == "queued"
    assert "cannot be reached" in jobs(app, "sms.send")[1]["last_error"]
    gateway.delay = 0
    with later(600):
        drain(app)
    second = rows(app, "SmsMessage")[1]
    assert second["status"] == "sent" and second["attempts"] == 3
    # every attempt carried the same reference
    assert {r["body"]["reference"] for r in gateway.received} == {f"sms.send.{second['id']}"}


def test_the_gateway_down_is_tried_again(app: Any, gateway: Gateway) -> None:
    gateway.close()
    queue(app, "+79161234567", "one")
    drain(app)
    assert rows(app, "SmsMessage")[0]["status"] == "queued"
    assert "cannot be reached" in jobs(app, "sms.send")[0]["last_error"]


def signed(body: bytes, stamp: str | None = None, secret: str = SECRET) -> dict[str, str]:
    stamp = stamp or str(int(clock.now().timestamp()))
    sig = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Timestamp": stamp, "X-Signature": sig, "Content-Type": "application/json"}


def test_signed_receipts_deliver_and_bad_ones_are_refused(
    app: Any, gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    queue(app, "+79161234567", "one")
    drain(app)
    client = app.test_client()
    body = json.dumps({"id": "gw-1", "status": "delivered"}).encode()
    url = "/telephony/sms_gateway/receipts"
    bad = client.post(url, data=body, headers=signed(body, secret="wrong"))
    assert bad.status_code == 401 and bad.json == {"message": "bad signature"}
    assert "bad signature" in caplog.text
    old = str(int(clock.now().timestamp()) - 3600)
    stale = client.post(url, data=body, headers=signed(body, stamp=old))
    assert stale.status_code == 400 and "off the CRM's clock" in stale.json["message"]
    tampered = client.post(url, data=body.replace(b"delivered", b"failed"), headers=signed(body))
    assert tampered.status_code == 401
    assert rows(app, "SmsMessage")[0]["status"] == "sent"
    ok = client.post(url, data=body, headers=signed(body))
    assert ok.status_code == 200 and ok.json == {"ok": True, "changed": True}
    again = client.post(url, data=body, headers=signed(body))
    assert again.status_code == 200 and again.json == {"ok": True, "changed": False}
    assert rows(app, "SmsMessage")[0]["status"] == "delivered"
    unknown = json.dumps({"id": "gw-99", "status": "delivered"}).encode()
    assert client.post(url, data=unknown, headers=signed(unknown)).status_code == 404
    nonsense = b'{"id": "gw-1", "status": "read"}'
    assert client.post(url, data=nonsense, headers=signed(nonsense)).status_code == 400


def test_settings_take_secrets_only_as_environment_references(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from engine.cli import main

    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "config.yaml").write_text(
        "name: Shop\nlocale: en\nlayers: [base]\nplugins:\n  telephony: {}\n"
        "  sms_gateway: {url: 'https://sms.example.com/send', token: plain-text}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["check", str(folder)])
    assert result.exit_code == 1
    assert "config.yaml:6:61" in result.output and "is a secret: write it as `${NAME}`" in (
        result.output
    )
