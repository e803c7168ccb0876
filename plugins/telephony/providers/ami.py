"""A small client of the Asterisk Manager Interface (AMI), the text protocol
Asterisk speaks on TCP port 5038 (stdlib sockets only).

The protocol, as the Asterisk 16–21 AMI documentation describes it: on
connecting, the server sends one banner line (``Asterisk Call Manager/9.0.0``);
after that each message either way is a block of ``Key: Value`` lines ended
by an empty line (``\\r\\n``). The client sends actions (``Action: Login``,
``Action: Originate``, ``Action: Ping``, ``Action: Logoff``), each with an
``ActionID`` the server copies into its ``Response:``; the server sends
``Event:`` blocks whenever something happens, between and around responses.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import ssl as ssl_module
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

Message = dict[str, str]


class AmiError(Exception):
    """The server answered ``Response: Error`` (its ``Message`` is the text)."""


def encode(fields: Iterable[tuple[str, Any]]) -> bytes:
    """One message: ``Key: Value`` lines and the empty line that ends it. A
    value's line breaks are dropped (they would end the message early)."""
    lines = []
    for key, value in fields:
        text = str(value).replace("\r", " ").replace("\n", " ")
        lines.append(f"{key}: {text}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def decode(block: bytes) -> Message:
    """A message's ``Key: Value`` lines as a dict (a repeated key: the last)."""
    message: Message = {}
    for line in block.decode("utf-8", errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            message[key.strip()] = value.strip()
    return message


class Connection:
    """One AMI connection: ``login``, ``action`` (waits for its response,
    keeping the events that arrive meanwhile), ``event`` (the next event or
    None after ``timeout``), ``logoff``. Raises ``OSError`` (a
    ``ConnectionError`` when the server closes) and :class:`AmiError`."""

    _ids = itertools.count(1)

    def __init__(self, host: str, port: int, timeout: float = 5.0, use_ssl: bool = False) -> None:
        raw = socket.create_connection((host, port), timeout=timeout)
        if use_ssl:
            raw = ssl_module.create_default_context().wrap_socket(raw, server_hostname=host)
        self.sock = raw
        self.timeout = timeout
        self.buffer = b""
        self.events: deque[Message] = deque()
        self.banner = self._line(timeout)

    # -- reading --------------------------------------------------------------------------

    def _fill(self, deadline: float) -> bool:
        """Read more bytes; False when the deadline passed first."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return False
        except ssl_module.SSLWantReadError:  # pragma: no cover - a TLS record not complete yet
            return False
        if not chunk:
            raise ConnectionError("the Asterisk manager closed the connection")
        self.buffer += chunk
        return True

    def _line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            if not self._fill(deadline):
                raise TimeoutError("no banner from the Asterisk manager")
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode("utf-8", errors="replace").strip()

    def _message(self, deadline: float) -> Message | None:
        while True:
            self.buffer = self.buffer.lstrip(b"\r\n")
            for end in (b"\r\n\r\n", b"\n\n"):
                at = self.buffer.find(end)
                if at >= 0:
                    block, self.buffer = self.buffer[:at], self.buffer[at + len(end) :]
                    return decode(block)
            if not self._fill(deadline):
                return None

    def event(self, timeout: float) -> Message | None:
        """The next event (kept ones first), or None when none came in ``timeout``."""
        if self.events:
            return self.events.popleft()
        deadline = time.monotonic() + timeout
        while True:
            message = self._message(deadline)
            if message is None:
                return None
            if "Event" in message:
                return message
            # a response to nothing we wait for (a late one): dropped

    # -- writing --------------------------------------------------------------------------

    def send(self, action: str, fields: Iterable[tuple[str, Any]] = ()) -> str:
        action_id = f"crm-{next(self._ids)}"
        self.sock.sendall(encode([("Action", action), ("ActionID", action_id), *fields]))
        return action_id

    def action(
        self, action: str, fields: Iterable[tuple[str, Any]] = (), timeout: float | None = None
    ) -> Message:
        """Send an action and wait for its response; raise AmiError on ``Response: Error``."""
        action_id = self.send(action, fields)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            message = self._message(deadline)
            if message is None:
                raise TimeoutError(f"no answer to {action} from the Asterisk manager")
            if "Event" in message and "Response" not in message:
                self.events.append(message)
                continue
            if message.get("ActionID") not in (None, action_id):
                continue
            if message.get("Response", "").lower() == "error":
                raise AmiError(message.get("Message") or f"{action} failed")
            return message

    def login(self, username: str, secret: str, events: bool) -> Message:
        return self.action(
            "Login",
            [("Username", username), ("Secret", secret), ("Events", "on" if events else "off")],
        )

    def logoff(self) -> None:
        """Say goodbye and close; never raises."""
        with contextlib.suppress(OSError, AmiError):
            self.action("Logoff", timeout=1.0)
        self.close()

    def close(self) -> None:
        self.sock.close()  # never raises for a socket (errors on close are swallowed)
