"""The Asterisk provider against a fake AMI server (ami_server.py) that speaks
the manager protocol over a real TCP socket: click-to-call through the real
``crm_place_call`` hook, and the listener — run as ``crm worker`` runs it
(engine/services.py) — turning the exchange's events into Call records."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from engine import services
from engine.api import HandledError

from .ami_server import AmiServer, bind, incoming_call
from .conftest import create, rows, user_id

SECRET = "s3cret-from-env"


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {check()!r}")


@pytest.fixture
def server() -> Iterator[AmiServer]:
    with AmiServer(username="crm", secret=SECRET) as fake:
        yield fake


def settings(server: AmiServer, **more: Any) -> dict[str, Any]:
    return {
        "host": "127.0.0.1", "port": server.port, "username": "crm", "secret": "${AMI_SECRET}",
        "connect_timeout": 2, "reconnect_max_backoff": 0.2, "ping_interval": 0.3,
        "cdr_wait": 0.3, **more,
    }  # fmt: skip


@pytest.fixture
def pbx_app(
    phone_app: Any, server: AmiServer, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Any]:
    def build(secret: str = SECRET, **more: Any) -> Any:
        monkeypatch.setenv("AMI_SECRET", secret)
        return phone_app(simulator=None, asterisk=settings(server, **more))

    return build


@pytest.fixture
def worker() -> Iterator[Callable[[Any], threading.Event]]:
    """Start the app's worker services as ``crm worker`` does; stopped at the end."""
    running: list[tuple[threading.Event, list[threading.Thread]]] = []

    def start(app: Any) -> threading.Event:
        stop = threading.Event()
        running.append((stop, services.start(app, stop)))
        return stop

    yield start
    for stop, threads in running:
        stop.set()
        for thread in threads:
            thread.join(10)
            assert not thread.is_alive()


def customer(app: Any, phone: str = "+74951234567", owner: str = "manager") -> int:
    return create(
        app, "Customer", {"name": "Romashka", "phone": phone, "manager": user_id(app, owner)}
    )


def click_to_call(app: Any, username: str, number: str) -> str:
    """Click-to-call as ``username`` (placing.place → the crm_place_call hook),
    committed; the Call's call_id. A refusal rolls everything back."""
    from plugins.telephony import placing
    from plugins.telephony.api import system_documents

    with app.app_context():
        session = app.extensions["crm"].db.session()
        try:
            call = placing.place(system_documents(session), user_id(app, username), number)
            session.commit()
            return str(call.call_id)
        except Exception:
            session.rollback()
            raise


def one_call(app: Any, **where: Any) -> dict[str, Any]:
    (call,) = rows(app, "Call", **where)
    return call


# --- click-to-call ---------------------------------------------------------------------------


def test_a_refused_login_is_the_users_error_and_leaves_no_call(
    pbx_app: Any, server: AmiServer
) -> None:
    app = pbx_app(secret="wrong-secret")
    with pytest.raises(HandledError) as caught:
        click_to_call(app, "manager", "+7 495 123-45-67")
    assert str(caught.value) == (
        "The telephone exchange refused the CRM's login: Authentication failed"
    )
    assert rows(app, "Call") == []
    assert server.originates == []


def test_an_unreachable_exchange_is_the_users_error(phone_app: Any, monkeypatch: Any) -> None:
    taken = bind(listen=False)  # a port of ours that nobody else gets, where nobody listens
    port = taken.getsockname()[1]
    monkeypatch.setenv("AMI_SECRET", SECRET)
    app = phone_app(simulator=None, asterisk={"host": "127.0.0.1", "port": port,
                                              "username": "crm", "secret": "${AMI_SECRET}"})  # fmt: skip
    with pytest.raises(HandledError) as caught:
        click_to_call(app, "manager", "+74951234567")
    assert str(caught.value).startswith(
        f"The telephone exchange at 127.0.0.1:{port} cannot be reached: "
    )
    assert rows(app, "Call") == []
    taken.close()


def test_a_refused_originate_shows_the_exchanges_message(pbx_app: Any, server: AmiServer) -> None:
    app = pbx_app()
    server.refuse_originate = "Originate is not allowed"
    with pytest.raises(HandledError) as caught:
        click_to_call(app, "manager", "+74951234567")
    assert str(caught.value) == "The telephone exchange refused the call: Originate is not allowed"
    assert rows(app, "Call") == []


def test_click_to_call_originates_and_the_listener_follows_the_call(
    pbx_app: Any, server: AmiServer, worker: Any
) -> None:
    app = pbx_app(channel="PJSIP/{extension}", context="from-crm", caller_id="CRM <{digits}>")
    cid = customer(app)
    worker(app)
    assert server.wait_listening()
    call_id = click_to_call(app, "manager", "8 (495) 123-45-67")

    (originate,) = server.originates
    sent = dict(originate)
    assert sent["Channel"] == "PJSIP/101"
    assert (sent["Context"], sent["Exten"], sent["Priority"]) == ("from-crm", "+74951234567", "1")
    assert sent["CallerID"] == "CRM <74951234567>"
    assert sent["Async"] == "true" and sent["Timeout"] == "30000"
    assert ("Variable", f"CRM_CALL_ID={call_id}") in originate
    assert sent["ChannelId"] == call_id
    # one short connection: Login (events off), Originate, Logoff
    names = [dict(a).get("Action") for a in server.actions[-3:]]
    assert names == ["Login", "Originate", "Logoff"]
    assert dict(server.actions[-3])["Events"] == "off"

    call = wait_for(lambda: [c for c in rows(app, "Call") if c["ended_at"] is not None])[0]
    assert call["call_id"] == call_id
    assert (call["direction"], call["status"], call["duration"]) == ("out", "answered", 42)
    assert (call["customer_id"], call["user_id"]) == (cid, user_id(app, "manager"))
    (interaction,) = rows(app, "Interaction", customer_id=cid)
    assert interaction["kind"] == "call" and "0 min 42 s" in interaction["result"]
    assert len(rows(app, "Call")) == 1  # the listener's events landed on the CRM's own call


def test_click_to_call_the_client_does_not_answer(
    pbx_app: Any, server: AmiServer, worker: Any
) -> None:
    app = pbx_app()
    worker(app)
    assert server.wait_listening()
    server.plan = {"answer": False}
    call_id = click_to_call(app, "manager", "+74951234567")
    call = wait_for(lambda: [c for c in rows(app, "Call") if c["ended_at"] is not None])[0]
    assert (call["call_id"], call["status"], call["answered_at"]) == (call_id, "missed", None)
    assert rows(app, "Interaction") == []
    assert rows(app, "Task") == []  # not a missed incoming call: nobody is to call back


# --- the listener: incoming calls ------------------------------------------------------------


def test_an_incoming_call_rings_is_answered_and_ends_on_the_customers_timeline(
    pbx_app: Any, server: AmiServer, worker: Any
) -> None:
    app = pbx_app()
    cid = customer(app)
    worker(app)
    assert server.wait_listening()
    events = incoming_call("1741000000.101", "+74951234567", "101", talk=65)
    server.push(events[:3])  # Newchannel ×2, DialBegin: it rings on 101
    ringing = wait_for(lambda: [c for c in rows(app, "Call") if c["extension"]])[0]
    assert (ringing["status"], ringing["direction"], ringing["extension"]) == (
        "ringing",
        "in",
        "101",
    )
    assert (ringing["customer_id"], ringing["user_id"]) == (cid, user_id(app, "manager"))
    assert ringing["call_id"] == "ast-1741000000.101"
    server.push(events[3:6])  # DialEnd, BridgeEnter ×2: answered
    wait_for(lambda: one_call(app)["status"] == "answered" and one_call(app)["answered_at"])
    server.push(events[6:])  # Hangup ×2, Cdr
    call = wait_for(lambda: [c for c in rows(app, "Call") if c["ended_at"] is not None])[0]
    assert (call["status"], call["duration"]) == ("answered", 65)
    (interaction,) = rows(app, "Interaction", customer_id=cid)
    assert (interaction["kind"], interaction["status"]) == ("call", "done")
    assert "1 min 05 s" in interaction["result"]
    assert call["interaction_id"] == interaction["id"]


def test_a_missed_incoming_call_becomes_a_call_back_task(
    pbx_app: Any, server: AmiServer, worker: Any
) -> None:
    app = pbx_app()
    customer(app, owner="sales_head")
    worker(app)
    assert server.wait_listening()
    server.push(incoming_call("1741000000.202", "+74951234567", "101", answer=False, cause=19))
    call = wait_for(lambda: [c for c in rows(app, "Call") if c["ended_at"] is not None])[0]
    assert (call["status"], call["answered_at"], call["direction"]) == ("missed", None, "in")
    (task,) = wait_for(lambda: rows(app, "Task", doctype="Call", doc_id=call["id"]))
    assert task["assignee_id"] == user_id(app, "sales_head")
    assert "+7 495 123-45-67" in task["title"]


def test_busy_before_answer_and_every_event_twice_make_one_busy_call(
    pbx_app: Any, server: AmiServer, worker: Any
) -> None:
    app = pbx_app()
    customer(app)
    worker(app)
    assert server.wait_listening()
    events = incoming_call("1741000000.303", "+74951234567", "101", answer=False, cause=17)
    server.push([e for e in events for _ in (1, 2)])  # each event sent twice
    call = wait_for(lambda: [c for c in rows(app, "Call") if c["ended_at"] is not None])[0]
    assert (call["status"], call["answered_at"]) == ("busy", None)
    time.sleep(0.5)  # the repeats, handled by now
    assert len(rows(app, "Call")) == 1
    kinds = sorted(e["kind"] for e in rows(app, "CallEvent", call_id=call["call_id"]))
    assert kinds == ["hangup", "ringing", "ringing"]  # rang in, rang on 101, ended: once each
    assert rows(app, "Interaction") == []


def test_a_hangup_without_a_cdr_still_ends_the_call(
    pbx_app: Any, server: AmiServer, worker: Any
) -> None:
    app = pbx_app()
    customer(app)
    worker(app)
    assert server.wait_listening()
    server.push(incoming_call("1741000000.404", "+74951234567", "101", talk=30, cdr_event=False))
    call = wait_for(lambda: [c for c in rows(app, "Call") if c["ended_at"] is not None])[0]
    assert call["status"] == "answered" and call["duration"] is not None


def test_calls_between_extensions_are_not_logged(
    pbx_app: Any, server: AmiServer, worker: Any
) -> None:
    app = pbx_app()
    worker(app)
    assert server.wait_listening()
    server.push(incoming_call("1741000000.505", "102", "101", trunk="PJSIP/102", did="101"))
    server.push(incoming_call("1741000000.506", "+74951234567", "101"))
    call = wait_for(lambda: [c for c in rows(app, "Call") if c["ended_at"] is not None])[0]
    assert call["call_id"] == "ast-1741000000.506"
    assert len(rows(app, "Call")) == 1


# --- the listener's connection ---------------------------------------------------------------


def test_the_listener_reconnects_after_the_exchange_drops_it(
    pbx_app: Any, server: AmiServer, worker: Any
) -> None:
    app = pbx_app()
    customer(app)
    worker(app)
    assert server.wait_listening()
    logins = sum(1 for a in server.actions if dict(a).get("Action") == "Login")
    wait_for(lambda: server.pings >= 1)  # a quiet connection is pinged
    server.drop()
    wait_for(
        lambda: (
            sum(1 for a in server.actions if dict(a).get("Action") == "Login") > logins
            and server.listeners()
        )
    )
    server.push(incoming_call("1741000000.606", "+74951234567", "101", talk=12))
    call = wait_for(lambda: [c for c in rows(app, "Call") if c["ended_at"] is not None])[0]
    assert (call["status"], call["duration"]) == ("answered", 12)


def test_a_failing_event_is_logged_and_the_listener_goes_on(
    pbx_app: Any, server: AmiServer, worker: Any, monkeypatch: Any, caplog: Any
) -> None:
    from plugins.telephony.providers import asterisk

    real = asterisk.api.report

    def report(event: Any, **kwargs: Any) -> Any:
        if event.call_id == "ast-1741000000.707":
            raise RuntimeError("the database said no")
        return real(event, **kwargs)

    monkeypatch.setattr(asterisk.api, "report", report)
    app = pbx_app()
    worker(app)
    assert server.wait_listening()
    server.push([[("Event", "Newchannel")], [("Garbage", "yes")]])  # malformed: skipped
    server.push(incoming_call("1741000000.707", "+74951234567", "101", talk=5))
    server.push(incoming_call("1741000000.708", "+74951234567", "101", talk=9))
    call = wait_for(lambda: [c for c in rows(app, "Call") if c["ended_at"] is not None])[0]
    assert (call["call_id"], call["duration"]) == ("ast-1741000000.708", 9)
    assert [c["call_id"] for c in rows(app, "Call")] == ["ast-1741000000.708"]
    assert "was not applied" in caplog.text and "the database said no" in caplog.text


def test_no_asterisk_no_listener(phone_app: Any) -> None:
    app = phone_app()
    stop = threading.Event()
    assert services.start(app, stop) == []
