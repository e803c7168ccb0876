"""A fake Asterisk Manager Interface: the AMI text protocol over a real TCP
socket, as Asterisk 16–21 speak it — no Asterisk behind it.

- on connecting: the banner ``Asterisk Call Manager/9.0.0``;
- ``Action: Login`` checked against ``username``/``secret`` (``Response:
  Error`` / ``Message: Authentication failed`` otherwise); ``Events: off``
  gets no events;
- ``Action: Ping`` → ``Ping: Pong``; ``Action: Logoff`` → ``Response:
  Goodbye`` and the connection closed;
- ``Action: Originate`` is kept in ``originates`` and answered ``Originate
  successfully queued`` (or an error while ``refuse_originate`` is set);
  then, from another thread, the events of the originated call as Asterisk
  raises them (:func:`originated_call`) go to every logged-in listener;
- ``push(events)``: the test sends events (:func:`incoming_call`);
  ``drop()``: every connection is cut, as when Asterisk restarts.

Ports come from this helper's range (18400-18499).
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

PORTS = range(18400, 18500)
BANNER = b"Asterisk Call Manager/9.0.0\r\n"


def block(fields: Iterable[tuple[str, Any]]) -> bytes:
    return ("".join(f"{k}: {v}\r\n" for k, v in fields) + "\r\n").encode()


class Session:
    def __init__(self, server: AmiServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.events = False
        self.lock = threading.Lock()

    def send(self, data: bytes) -> None:
        with self.lock, contextlib.suppress(OSError):
            self.sock.sendall(data)

    def messages(self) -> Iterator[list[tuple[str, str]]]:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                try:
                    chunk = self.sock.recv(4096)
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
            raw, _, buffer = buffer.partition(b"\r\n\r\n")
            pairs = []
            for line in raw.decode().split("\r\n"):
                key, _, value = line.partition(":")
                pairs.append((key.strip(), value.strip()))
            yield pairs

    def run(self) -> None:
        self.send(BANNER)
        logged_in = False
        for pairs in self.messages():
            m = dict(pairs)
            action = m.get("Action", "").lower()
            aid = [("ActionID", m["ActionID"])] if "ActionID" in m else []
            self.server.actions.append(pairs)
            if action == "login":
                if (m.get("Username"), m.get("Secret")) != (
                    self.server.username,
                    self.server.secret,
                ):
                    self.send(block([("Response", "Error"), *aid,
                                     ("Message", "Authentication failed")]))  # fmt: skip
                    break
                logged_in = True
                self.send(block([("Response", "Success"), *aid,
                                 ("Message", "Authentication accepted")]))  # fmt: skip
                if m.get("Events", "on").lower() != "off":
                    self.events = True
                    self.send(block([("Event", "FullyBooted"), ("Privilege", "system,all"),
                                     ("Status", "Fully Booted")]))  # fmt: skip
                    self.server.subscribed.set()
            elif not logged_in:
                self.send(block([("Response", "Error"), *aid, ("Message", "Permission denied")]))
            elif action == "ping":
                self.server.pings += 1
                self.send(block([("Response", "Success"), *aid, ("Ping", "Pong"),
                                 ("Timestamp", f"{time.time():.6f}")]))  # fmt: skip
            elif action == "logoff":
                self.send(block([("Response", "Goodbye"), *aid,
                                 ("Message", "Thanks for all the fish.")]))  # fmt: skip
                break
            elif action == "originate":
                if self.server.refuse_originate:
                    self.send(block([("Response", "Error"), *aid,
                                     ("Message", self.server.refuse_originate)]))  # fmt: skip
                    continue
                self.server.originates.append(pairs)
                self.send(block([("Response", "Success"), *aid,
                                 ("Message", "Originate successfully queued")]))  # fmt: skip
                plan = self.server.plan
                events = originated_call(pairs, self.server.ids, **plan)
                threading.Timer(0.05, self.server.push, args=(events,)).start()
            else:
                self.send(
                    block([("Response", "Error"), *aid, ("Message", "Invalid/unknown command")])
                )
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        with self.server.lock:
            if self in self.server.sessions:
                self.server.sessions.remove(self)


class AmiServer:
    """``with AmiServer(secret="s3cret") as server: ...``; ``server.port``."""

    def __init__(self, username: str = "crm", secret: str = "s3cret") -> None:
        self.username, self.secret = username, secret
        self.listener = bind()
        self.port = self.listener.getsockname()[1]
        self.sessions: list[Session] = []
        self.lock = threading.Lock()
        self.actions: list[list[tuple[str, str]]] = []
        self.originates: list[list[tuple[str, str]]] = []
        self.refuse_originate: str | None = None
        self.plan: dict[str, Any] = {"answer": True, "talk": 42}
        self.pings = 0
        self.subscribed = threading.Event()
        self.ids = itertools.count(1)
        self.stopping = False
        self.thread = threading.Thread(target=self.accept, daemon=True)

    def __enter__(self) -> AmiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopping = True
        # wakes the accept(): a close alone leaves the port listening until it returns
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(5)
        self.drop()

    def accept(self) -> None:
        while not self.stopping:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            session = Session(self, sock)
            with self.lock:
                self.sessions.append(session)
            threading.Thread(target=session.run, daemon=True).start()

    def listeners(self) -> list[Session]:
        with self.lock:
            return [s for s in self.sessions if s.events]

    def push(self, events: Iterable[Iterable[tuple[str, Any]]]) -> None:
        """Send each event to every logged-in listener, in order."""
        data = b"".join(block(e) for e in events)
        for session in self.listeners():
            session.send(data)

    def drop(self) -> None:
        """Cut every connection (Asterisk restarted)."""
        self.subscribed.clear()
        with self.lock:
            sessions = list(self.sessions)
        for session in sessions:
            with contextlib.suppress(OSError):
                session.sock.shutdown(socket.SHUT_RDWR)

    def wait_listening(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.listeners():
                return True
            time.sleep(0.02)
        return False


def bind(listen: bool = True) -> socket.socket:
    """A socket on a free port of this helper's range: listening, or only
    holding the port (a connection to it is refused)."""
    for port in PORTS:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        if listen:
            sock.listen(16)
        return sock
    raise RuntimeError("no free port in 18400-18499")


# --- the events of a call, as Asterisk 16-21 raise them ---------------------------------------


def channel(
    event: str, name: str, uid: str, linkedid: str, *, cid: str, context: str, exten: str,
    state: str = "Down", connected: str = "<unknown>", **extra: Any,
) -> list[tuple[str, Any]]:  # fmt: skip
    codes = {"Down": 0, "Ring": 4, "Ringing": 5, "Up": 6}
    return [
        ("Event", event), ("Privilege", "call,all"), ("Channel", name),
        ("ChannelState", codes[state]), ("ChannelStateDesc", state),
        ("CallerIDNum", cid), ("CallerIDName", "<unknown>"),
        ("ConnectedLineNum", connected), ("ConnectedLineName", "<unknown>"),
        ("Language", "en"), ("AccountCode", ""), ("Context", context), ("Exten", exten),
        ("Priority", 1), ("Uniqueid", uid), ("Linkedid", linkedid), *extra.items(),
    ]  # fmt: skip


def dest(prefix: str, fields: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """A channel's fields renamed for DialBegin's other party (``DestChannel``, ...)."""
    return [(prefix + k, v) for k, v in fields if k not in ("Event", "Privilege")]


def cdr(source: str, destination: str, chan: str, dchan: str, uid: str, disposition: str,
        billsec: int, duration: int) -> list[tuple[str, Any]]:  # fmt: skip
    return [
        ("Event", "Cdr"), ("Privilege", "cdr,all"), ("AccountCode", ""), ("Source", source),
        ("Destination", destination), ("DestinationContext", "from-internal"),
        ("CallerID", f'"" <{source}>'), ("Channel", chan), ("DestinationChannel", dchan),
        ("LastApplication", "Dial"), ("LastData", dchan.split("-")[0]),
        ("StartTime", "2026-03-02 10:00:00"), ("AnswerTime", ""), ("EndTime", ""),
        ("Duration", duration), ("BillableSeconds", billsec), ("Disposition", disposition),
        ("AMAFlags", "DOCUMENTATION"), ("UniqueID", uid), ("UserField", ""),
    ]  # fmt: skip


def bridge(uid_fields: list[tuple[str, Any]], bridge_id: str, count: int) -> list[tuple[str, Any]]:
    head = [("Event", "BridgeEnter"), ("Privilege", "call,all"), ("BridgeUniqueid", bridge_id),
            ("BridgeType", "basic"), ("BridgeTechnology", "simple_bridge"),
            ("BridgeCreator", "<unknown>"), ("BridgeName", "<unknown>"),
            ("BridgeNumChannels", count), ("BridgeVideoSourceMode", "none")]  # fmt: skip
    return head + [kv for kv in uid_fields if kv[0] not in ("Event", "Privilege")]


def hangup(fields: list[tuple[str, Any]], cause: int) -> list[tuple[str, Any]]:
    text = {
        16: "Normal Clearing",
        17: "User busy",
        19: "No answer",
        34: "Circuit/channel congestion",
    }
    body = [kv for kv in fields if kv[0] not in ("Event", "Privilege")]
    return [("Event", "Hangup"), ("Privilege", "call,all"), *body, ("Cause", cause),
            ("Cause-txt", text.get(cause, "Unknown"))]  # fmt: skip


def incoming_call(
    linkedid: str, number: str, extension: str, *, answer: bool = True, talk: int = 65,
    cause: int = 16, trunk: str = "PJSIP/trunk", cdr_event: bool = True, did: str = "74950000000",
) -> list[list[tuple[str, Any]]]:  # fmt: skip
    """A call from ``number`` on a trunk, dialed to the phone ``PJSIP/<extension>``:
    answered and talked ``talk`` seconds, or not answered (hung up with ``cause``)."""
    a_uid, b_uid = linkedid, f"{linkedid}1"
    a_name, b_name = f"{trunk}-0000a{linkedid[-3:]}", f"PJSIP/{extension}-0000b{linkedid[-3:]}"
    a = dict(cid=number, context="from-trunk", exten=did)
    b = dict(cid=extension, context="from-internal", exten=extension, connected=number)
    events = [
        channel("Newchannel", a_name, a_uid, linkedid, state="Ring", **a),
        channel("Newchannel", b_name, b_uid, linkedid, **b),
        channel("DialBegin", a_name, a_uid, linkedid, state="Ring", **a)
        + dest("Dest", channel("", b_name, b_uid, linkedid, **b))
        + [("DialString", extension)],
    ]
    if answer:
        events += [
            channel("DialEnd", a_name, a_uid, linkedid, state="Up", **a)
            + dest("Dest", channel("", b_name, b_uid, linkedid, state="Up", **b))
            + [("DialStatus", "ANSWER")],
            bridge(channel("", a_name, a_uid, linkedid, state="Up", **a), "br-" + linkedid, 1),
            bridge(channel("", b_name, b_uid, linkedid, state="Up", **b), "br-" + linkedid, 2),
            hangup(channel("", b_name, b_uid, linkedid, state="Up", **b), 16),
            hangup(channel("", a_name, a_uid, linkedid, state="Up", **a), 16),
        ]
        if cdr_event:
            events.append(cdr(number, did, a_name, b_name, a_uid, "ANSWERED",
                              talk, talk + 7))  # fmt: skip
    else:
        events += [
            hangup(channel("", b_name, b_uid, linkedid, **b), cause),
            hangup(channel("", a_name, a_uid, linkedid, state="Ring", **a), cause),
        ]
        if cdr_event:
            disposition = {17: "BUSY", 19: "NO ANSWER", 16: "NO ANSWER"}.get(cause, "FAILED")
            events.append(cdr(number, did, a_name, b_name, a_uid, disposition, 0, 20))
    return events


def originated_call(
    originate: list[tuple[str, str]], ids: Iterator[int], *, answer: bool = True, talk: int = 42
) -> list[list[tuple[str, Any]]]:
    """What Asterisk raises after ``Originate`` (Async): the user's phone (the
    Channel, its Uniqueid the ChannelId) is dialed by the system, answers,
    runs the dialplan at Context/Exten, which dials the client on the trunk;
    the client answers, they talk, hang up; the Cdr; OriginateResponse."""
    m = dict(originate)
    n = next(ids)
    uid = m.get("ChannelId") or f"1700000000.{n}"
    lid = uid
    phone = m["Channel"] + f"-0000c{n:03d}"
    trunk, t_uid = f"PJSIP/trunk-0000d{n:03d}", f"{uid}.2"
    number = m["Exten"]
    a = dict(cid=m.get("CallerID", ""), context=m["Context"], exten=number)
    b = dict(cid=number, context="from-trunk", exten=number)
    variables = [v.partition("=") for k, v in originate if k == "Variable"]
    events = [channel("Newchannel", phone, uid, lid, **a)]
    events += [[*channel("VarSet", phone, uid, lid, **a), ("Variable", k), ("Value", v)]
               for k, _, v in variables]  # fmt: skip
    events += [
        [("Event", "DialBegin"), ("Privilege", "call,all"), *dest("Dest", channel("", phone, uid, lid, **a)), ("DialString", m["Channel"])],
        [("Event", "DialEnd"), ("Privilege", "call,all"), *dest("Dest", channel("", phone, uid, lid, state="Up", **a)), ("DialStatus", "ANSWER")],
        channel("Newchannel", trunk, t_uid, lid, **b),
        channel("DialBegin", phone, uid, lid, state="Up", **a)
        + dest("Dest", channel("", trunk, t_uid, lid, **b)) + [("DialString", f"trunk/{number}")],
    ]  # fmt: skip
    if answer:
        events += [
            bridge(channel("", phone, uid, lid, state="Up", **a), "br-" + uid, 1),
            bridge(channel("", trunk, t_uid, lid, state="Up", **b), "br-" + uid, 2),
            hangup(channel("", trunk, t_uid, lid, state="Up", **b), 16),
            hangup(channel("", phone, uid, lid, state="Up", **a), 16),
            cdr(a["cid"], number, phone, trunk, uid, "ANSWERED", talk, talk + 9),
        ]
    else:
        events += [
            hangup(channel("", trunk, t_uid, lid, **b), 19),
            hangup(channel("", phone, uid, lid, state="Up", **a), 16),
            cdr(a["cid"], number, phone, trunk, uid, "NO ANSWER", 0, 30),
        ]
    events.append([("Event", "OriginateResponse"), ("Privilege", "call,all"),
                   ("ActionID", m.get("ActionID", "")), ("Response", "Success"),
                   ("Channel", m["Channel"]), ("Context", m["Context"]), ("Exten", number),
                   ("Reason", 4), ("Uniqueid", uid), ("CallerIDNum", a["cid"]),
                   ("CallerIDName", "<unknown>")])  # fmt: skip
    return events
