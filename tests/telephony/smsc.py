"""A small SMSC for the tests: SMPP 3.4 over a real TCP socket.

It accepts binds (transmitter, receiver, transceiver: a wrong password is
refused with ESME_RINVPASWD), answers ``submit_sm`` with a message id
(a destination in ``reject`` gets ESME_RINVDSTADR), and for every message
that asked for a receipt (``registered_delivery``) sends a ``deliver_sm``
delivery receipt — ``esm_class`` 0x04, the ``id:... stat:...`` text and
the ``receipted_message_id``/``message_state`` TLVs — to a bound receiver
or transceiver, once one is there (numbers ending in 000 are UNDELIV, the
rest DELIVRD). It answers ``enquire_link`` and ``unbind``, counts what it
saw, and can drop every connection (:meth:`drop`) to test reconnecting.
PDUs are encoded and decoded with smpplib's own PDU classes.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import smpplib.client
import smpplib.consts
import smpplib.smpp

OK = 0
RINVPASWD = 0x0E
RINVDSTADR = 0x0B
RINVBNDSTS = 0x04


@dataclass
class Submitted:
    message_id: str
    destination: str
    source: str
    data: bytes
    data_coding: int
    registered_delivery: int
    esm_class: int


@dataclass
class Session:
    conn: socket.socket
    mode: str | None = None  # transmitter, receiver, transceiver
    lock: threading.Lock = field(default_factory=threading.Lock)
    sequence: int = 0

    def send(self, pdu: Any) -> None:
        with self.lock:
            self.conn.sendall(pdu.generate())

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence


class SMSC:
    def __init__(self, system_id: str = "crm", password: str = "secret") -> None:
        self.system_id, self.password = system_id, password
        self.submitted: list[Submitted] = []
        self.binds: list[tuple[str, str]] = []  # (mode, system_id)
        self.refused_binds = 0
        self.enquire_links = 0
        self.unbinds = 0
        self.acked: list[tuple[str, int]] = []  # (receipted id, deliver_sm_resp status)
        self.reject: set[str] = set()
        self.pending: list[Submitted] = []
        self.sessions: list[Session] = []
        self._counter = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self._threads = [threading.Thread(target=self._accept, daemon=True),
                         threading.Thread(target=self._dispatch, daemon=True)]  # fmt: skip
        for t in self._threads:
            t.start()

    # -- the server -----------------------------------------------------------------------

    def _accept(self) -> None:
        self.server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            session = Session(conn)
            with self._lock:
                self.sessions.append(session)
            threading.Thread(target=self._serve, args=(session,), daemon=True).start()

    def _read(self, conn: socket.socket) -> bytes | None:
        head = self._exact(conn, 4)
        if head is None:
            return None
        (length,) = struct.unpack(">L", head)
        rest = self._exact(conn, length - 4)
        return None if rest is None else head + rest

    @staticmethod
    def _exact(conn: socket.socket, n: int) -> bytes | None:
        parts, got = [], 0
        while got < n:
            try:
                part = conn.recv(n - got)
            except OSError:
                return None
            if not part:
                return None
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    def _resp(self, session: Session, pdu: Any, command: str, status: int = OK, **kw: Any) -> None:
        resp = smpplib.smpp.make_pdu(
            command, client=smpplib.client.SimpleSequenceGenerator(), status=status,
            sequence=pdu.sequence, **kw,
        )  # fmt: skip
        session.send(resp)

    def _serve(self, session: Session) -> None:
        try:
            while not self._stop.is_set():
                raw = self._read(session.conn)
                if raw is None:
                    return
                pdu = smpplib.smpp.parse_pdu(
                    raw,
                    client=smpplib.client.SimpleSequenceGenerator(),
                    allow_unknown_opt_params=True,
                )
                self._handle(session, pdu)
                if pdu.command == "unbind":
                    return
        finally:
            with self._lock:
                if session in self.sessions:
                    self.sessions.remove(session)
            session.conn.close()

    def _handle(self, session: Session, pdu: Any) -> None:
        command = pdu.command
        if command.startswith("bind_"):
            mode = command[len("bind_") :]
            system_id = _text(pdu.system_id)
            if system_id != self.system_id or _text(pdu.password) != self.password:
                self.refused_binds += 1
                self._resp(session, pdu, f"{command}_resp", RINVPASWD, system_id="FakeSMSC")
                return
            session.mode = mode
            self.binds.append((mode, system_id))
            self._resp(session, pdu, f"{command}_resp", system_id="FakeSMSC")
        elif command == "submit_sm":
            if session.mode not in ("transmitter", "transceiver"):
                self._resp(session, pdu, "submit_sm_resp", RINVBNDSTS, message_id="")
                return
            destination = _text(pdu.destination_addr)
            if destination in self.reject:
                self._resp(session, pdu, "submit_sm_resp", RINVDSTADR, message_id="")
                return
            with self._lock:
                self._counter += 1
                message_id = f"{self._counter:08X}"
            sm = Submitted(
                message_id, destination, _text(pdu.source_addr), bytes(pdu.short_message or b""),
                int(pdu.data_coding or 0), int(pdu.registered_delivery or 0),
                int(pdu.esm_class or 0),
            )  # fmt: skip
            self.submitted.append(sm)
            self._resp(session, pdu, "submit_sm_resp", message_id=message_id)
            if sm.registered_delivery & 0x01:
                with self._lock:
                    self.pending.append(sm)
        elif command == "enquire_link":
            self.enquire_links += 1
            self._resp(session, pdu, "enquire_link_resp")
        elif command == "unbind":
            self.unbinds += 1
            self._resp(session, pdu, "unbind_resp")
        elif command == "deliver_sm_resp":
            self.acked.append((getattr(session, "last_receipt", ""), int(pdu.status)))

    # -- receipts -------------------------------------------------------------------------

    def _receiver(self) -> Session | None:
        with self._lock:
            for s in self.sessions:
                if s.mode in ("receiver", "transceiver"):
                    return s
        return None

    def _dispatch(self) -> None:
        while not self._stop.is_set():
            time.sleep(0.05)
            receiver = self._receiver()
            if receiver is None:
                continue
            with self._lock:
                pending, self.pending = self.pending, []
            for sm in pending:
                try:
                    self.send_receipt(receiver, sm)
                except OSError:
                    with self._lock:
                        self.pending.append(sm)

    def send_receipt(self, session: Session, sm: Submitted, stat: str | None = None) -> None:
        stat = stat or ("UNDELIV" if sm.destination.endswith("000") else "DELIVRD")
        err = "000" if stat == "DELIVRD" else "001"
        stamp = time.strftime("%y%m%d%H%M")
        text = (f"id:{sm.message_id} sub:001 dlvrd:{'001' if stat == 'DELIVRD' else '000'} "
                f"submit date:{stamp} done date:{stamp} stat:{stat} err:{err} text:")  # fmt: skip
        state = {"DELIVRD": 2, "UNDELIV": 5, "ENROUTE": 1}.get(stat, 7)
        pdu = smpplib.smpp.make_pdu(
            "deliver_sm", client=smpplib.client.SimpleSequenceGenerator(),
            sequence=session.next_sequence(), source_addr=sm.destination,
            destination_addr=sm.source, esm_class=smpplib.consts.SMPP_MSGTYPE_DELIVERY_RECEIPT
            if hasattr(smpplib.consts, "SMPP_MSGTYPE_DELIVERY_RECEIPT") else 0x04,
            short_message=text.encode(), receipted_message_id=sm.message_id, message_state=state,
        )  # fmt: skip
        session.last_receipt = sm.message_id  # type: ignore[attr-defined]
        session.send(pdu)

    # -- the test's controls --------------------------------------------------------------

    def drop(self) -> None:
        """Close every connection at once (the network failed)."""
        with self._lock:
            sessions = list(self.sessions)
        for s in sessions:
            with contextlib.suppress(OSError):
                s.conn.shutdown(socket.SHUT_RDWR)
            s.conn.close()

    def wait(self, predicate: Any, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self._stop.set()
        self.drop()
        self.server.close()


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value or "")
