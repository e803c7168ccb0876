"""The provider of docs/telephony.md ("Writing a provider") is real code: its
module is taken from the page as written, installed as an outside plugin
under the entry point its setup.cfg names, turned on beside telephony, and
made to place a call (against a stand-in of the exchange's HTTP API on a real
socket), send an SMS and report a call's events through its signed webhook."""

from __future__ import annotations

import configparser
import hashlib
import hmac
import importlib.metadata
import json
import re
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

import engine.plugins
from engine.plugins import ENTRY_POINT_GROUP, available_plugins

from .conftest import create, rows, user_id

DOC = Path(__file__).resolve().parents[2] / "docs" / "telephony.md"
TOKEN, SECRET = "tok-3f9a", "whsec-5be1"


def section(text: str) -> str:
    start = text.index("\n## Writing a provider\n")
    return text[start : text.index("\n## ", start + 1)]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


class Exchange(BaseHTTPRequestHandler):
    """AcmePBX's API as the docs' provider uses it: POST /calls and /sms."""

    seen: ClassVar[list[tuple[str, dict[str, str], dict[str, Any]]]] = []
    refuse: ClassVar[bool] = False

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.path, dict(self.headers), body))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._answer(401, {"error": "bad token"})
        elif type(self).refuse:
            self._answer(409, {"error": "extension 101 is offline"})
        elif self.path.endswith("/calls"):
            self._answer(201, {"id": f"acme-call-{len(type(self).seen)}"})
        elif self.path.endswith("/sms"):
            self._answer(201, {"id": f"acme-sms-{len(type(self).seen)}"})
        else:
            self._answer(404, {"error": "no such endpoint"})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def exchange() -> Iterator[str]:
    Exchange.seen, Exchange.refuse = [], False
    server = None
    for port in range(18640, 18660):  # this helper's ports
        try:
            server = ThreadingHTTPServer(("127.0.0.1", port), Exchange)
            break
        except OSError:
            continue
    assert server is not None, "no free port in 18640-18659"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture
def provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The docs' module, installed under the entry point of the docs' setup.cfg."""
    text = section(DOC.read_text(encoding="utf-8"))
    (module_source,) = blocks(text, "python")
    (setup_cfg,) = blocks(text, "ini")
    cfg = configparser.ConfigParser()
    cfg.read_string(setup_cfg)
    entry = cfg["options.entry_points"][ENTRY_POINT_GROUP].strip()
    name, module = (part.strip() for part in entry.split("="))
    assert cfg["options"]["py_modules"].strip() == module
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / f"{module}.py").write_text(module_source, encoding="utf-8")
    installed = dict(available_plugins())
    installed[name] = importlib.metadata.EntryPoint(
        name=name, value=module, group=ENTRY_POINT_GROUP
    )
    monkeypatch.setattr(engine.plugins, "available_plugins", lambda: installed)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("ACMEPBX_TOKEN", TOKEN)
    monkeypatch.setenv("ACMEPBX_SECRET", SECRET)
    yield name
    sys.modules.pop(module, None)


def signed(body: dict[str, Any], at: float | None = None, secret: str = SECRET) -> dict[str, Any]:
    data = json.dumps(body).encode()
    stamp = str(int(at if at is not None else time.time()))
    signature = hmac.new(secret.encode(), stamp.encode() + b"." + data, hashlib.sha256).hexdigest()
    headers = {"X-Acme-Timestamp": stamp, "X-Acme-Signature": f"sha256={signature}"}
    return {"data": data, "headers": headers, "content_type": "application/json"}


def test_the_docs_provider_places_a_call_and_reports_its_events(
    phone_app: Any, provider: str, exchange: str
) -> None:
    settings = {"url": exchange, "token": "${ACMEPBX_TOKEN}", "secret": "${ACMEPBX_SECRET}"}
    app = phone_app(simulator=None, **{provider: settings})
    manager = user_id(app, "manager")
    customer = create(app, "Customer", {"name": "ООО «Ромашка»", "phone": "+7 495 123-45-67",
                                        "manager": manager})  # fmt: skip
    state = app.extensions["crm"]
    assert state.registry.plugins[provider]["token"] == TOKEN

    # click-to-call: the exchange is asked once, the Call takes its id
    from engine.api import Documents, HandledError
    from plugins.telephony import placing

    with app.app_context():
        session = state.db.session()
        docs = Documents(state.models, session, manager, ["manager"], state.pm,
                         username="manager", trusted=True)  # fmt: skip
        call = placing.place(docs, manager, "8 (495) 123-45-67")
        session.commit()
        call_id = call.call_id
    (path, headers, body), *_ = Exchange.seen
    assert path == "/v1/calls" and headers["Authorization"] == f"Bearer {TOKEN}"
    assert body["from"] == "101" and body["to"] == "+74951234567"
    assert body["reference"].startswith("crm-") and call_id == "acme-call-1"
    (placed,) = rows(app, "Call")
    assert (placed["status"], placed["direction"], placed["customer_id"]) == (
        "ringing",
        "out",
        customer,
    )

    # the exchange's events, signed, out of order and one twice
    web = app.test_client()
    url = f"/{provider}/events"
    start = time.time()
    ended = {"id": "ev-3", "type": "call.ended", "call": call_id, "result": "answered",
             "talk": 95, "record": "https://rec.acmepbx.example/acme-call-1.mp3", "at": start + 100}  # fmt: skip
    answered = {"id": "ev-2", "type": "call.answered", "call": call_id, "at": start + 5}
    for event in (ended, answered, ended):
        answer = web.post(url, **signed(event))
        assert answer.status_code == 200, answer.get_data(as_text=True)
    (done,) = rows(app, "Call")
    assert (done["status"], done["duration"]) == ("answered", 95)
    assert done["recording"].endswith("acme-call-1.mp3") and done["interaction_id"] is not None
    assert len(rows(app, "CallEvent", call_id=call_id)) == 2  # the repeated event counted once
    (talk,) = rows(app, "Interaction", customer_id=customer)
    assert talk["kind"] == "call" and talk["status"] == "done"

    # an incoming call nobody answered becomes a call-back task for the customer's owner
    for event in (
        {"id": "in-1", "type": "call.ringing", "call": "acme-in-7", "direction": "in",
         "client": "84951234567", "extension": "101"},
        {"id": "in-2", "type": "call.ended", "call": "acme-in-7", "result": "no-answer"},
    ):  # fmt: skip
        assert web.post(url, **signed(event)).status_code == 200
    missed = rows(app, "Call", call_id="acme-in-7")[0]
    assert (missed["status"], missed["direction"], missed["customer_id"]) == (
        "missed",
        "in",
        customer,
    )
    (task,) = rows(app, "Task", doctype="Call", doc_id=missed["id"])
    assert task["assignee_id"] == manager

    # forged, stale and malformed requests change nothing
    forged = {"id": "ev-9", "type": "call.ended", "call": "acme-in-8", "result": "busy"}
    assert web.post(url, **signed(forged, secret="guess")).status_code == 403
    assert web.post(url, **signed(forged, at=time.time() - 3600)).status_code == 403
    assert web.post(url, **signed({"type": "call.ended"})).status_code == 400
    assert web.post(url, **signed({**forged, "at": "yesterday"})).status_code == 400
    bad = web.post(url, **signed({"id": "ev-10", "type": "call.ended"}))  # no call id
    assert bad.status_code == 400 and "call id" in bad.get_json()["message"]
    assert rows(app, "Call", call_id="acme-in-8") == []
    assert len(rows(app, "Call")) == 2

    # SMS: one request, the outbox's key passed on
    sent = state.pm.hook.crm_send_sms(to="+74951234567", text="Добрый день!",
                                      settings=dict(state.registry.plugins), key="sms-key-1")  # fmt: skip
    path, headers, body = Exchange.seen[-1]
    assert sent == "acme-sms-2" and path == "/v1/sms" and headers["Idempotency-Key"] == "sms-key-1"
    assert body == {"to": "+74951234567", "text": "Добрый день!"}

    # the exchange refuses: the user reads why, and no ringing Call is left behind
    Exchange.refuse = True
    with app.app_context():
        session = state.db.session()
        docs = Documents(state.models, session, manager, ["manager"], state.pm,
                         username="manager", trusted=True)  # fmt: skip
        with pytest.raises(HandledError, match="extension 101 is offline"):
            placing.place(docs, manager, "+74951234567")
        session.rollback()
    assert len(rows(app, "Call")) == 2


def test_the_docs_provider_refuses_a_token_written_out(
    phone_app: Any, provider: str, exchange: str
) -> None:
    from engine.api import MetadataError

    with pytest.raises(MetadataError, match=r"token.*is a secret"):
        phone_app(simulator=None, **{provider: {"url": exchange, "token": TOKEN,
                                                "secret": "${ACMEPBX_SECRET}"}})  # fmt: skip
