"""Talking to an SMTP server: connecting as a mailbox says (plain, STARTTLS
or SSL, with or without a login), telling a temporary refusal (4xx, a lost
connection: try again later) from a permanent one (5xx: the server's answer
is shown), and keeping connections open between messages, since a mailing
that reconnects for every letter is ten times slower.
"""

from __future__ import annotations

import smtplib
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from email.message import EmailMessage
from typing import Any

from .accounts import Server

#: seconds a pooled connection may idle before it is checked with NOOP
IDLE_CHECK = 30.0


class SendFailed(Exception):
    """A message the server did not take: ``temporary`` (4xx, no connection)
    or not (5xx); ``reply`` is the server's answer, for the user to read."""

    def __init__(self, reply: str, temporary: bool) -> None:
        super().__init__(reply)
        self.reply = reply
        self.temporary = temporary


def _reply(code: int, message: Any) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return f"{code} {' '.join(text.split())}"[:500]


def classify(exc: BaseException) -> SendFailed:
    """What an smtplib or socket error means for the message."""
    if isinstance(exc, SendFailed):
        return exc
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        answers = list(exc.recipients.values())
        temporary = any(400 <= code < 500 for code, _ in answers)
        return SendFailed("; ".join(_reply(c, m) for c, m in answers), temporary)
    if isinstance(exc, smtplib.SMTPResponseException):
        return SendFailed(_reply(exc.smtp_code, exc.smtp_error), 400 <= exc.smtp_code < 500)
    if isinstance(exc, (smtplib.SMTPServerDisconnected, OSError, TimeoutError)):
        return SendFailed(f"no connection to the mail server: {exc}"[:500], True)
    return SendFailed(f"{type(exc).__name__}: {exc}"[:500], True)


def connect(server: Server) -> smtplib.SMTP:
    """A connection to ``server``, encrypted and signed in as it says."""
    context = ssl.create_default_context()
    try:
        conn: smtplib.SMTP
        if server.security == "ssl":
            conn = smtplib.SMTP_SSL(
                server.host, server.port, timeout=server.timeout, context=context
            )
        else:
            conn = smtplib.SMTP(server.host, server.port, timeout=server.timeout)
            if server.security == "starttls":
                conn.starttls(context=context)
        if server.username:
            conn.login(server.username, server.password or "")
        return conn
    except (smtplib.SMTPException, OSError) as exc:
        raise classify(exc) from exc


def deliver(conn: smtplib.SMTP, message: EmailMessage, sender: str, to: Sequence[str]) -> None:
    """Hand one message over on an open connection; SendFailed if refused."""
    try:  # some recipients refused, others taken: the message went out
        conn.send_message(message, from_addr=sender, to_addrs=list(to))
    except (smtplib.SMTPException, OSError) as exc:
        raise classify(exc) from exc


class Connections:
    """Open SMTP connections by server, reused from message to message and
    from batch to batch of one worker; a broken one is replaced. Thread-safe:
    a connection is lent to one caller at a time."""

    def __init__(self) -> None:
        self._idle: dict[tuple[Any, ...], list[tuple[smtplib.SMTP, float]]] = {}
        self._lock = threading.Lock()
        self.opened = 0

    @contextmanager
    def connection(self, server: Server) -> Iterator[smtplib.SMTP]:
        conn = self._take(server)
        ok = False
        try:
            yield conn
            ok = True
        finally:
            if ok:
                with self._lock:
                    self._idle.setdefault(server.key, []).append((conn, time.monotonic()))
            else:
                _quit(conn)

    def send(self, server: Server, message: EmailMessage, sender: str, to: Sequence[str]) -> None:
        """Send on a pooled connection; a connection that broke since it was
        last used is replaced once before the message counts as failed."""
        for again in (True, False):
            try:
                with self.connection(server) as conn:
                    deliver(conn, message, sender, to)
                return
            except SendFailed as failed:
                lost = failed.reply.startswith("no connection") or failed.reply.startswith("421")
                if not (again and lost):
                    raise

    def _take(self, server: Server) -> smtplib.SMTP:
        while True:
            with self._lock:
                idle = self._idle.get(server.key) or []
                item = idle.pop() if idle else None
            if item is None:
                self.opened += 1
                return connect(server)
            conn, since = item
            if time.monotonic() - since < IDLE_CHECK:
                return conn
            try:
                if conn.noop()[0] == 250:
                    return conn
            except (smtplib.SMTPException, OSError):
                pass
            _quit(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn, _ in conns:
                _quit(conn)


def _quit(conn: smtplib.SMTP) -> None:
    try:
        conn.quit()
    except (smtplib.SMTPException, OSError):
        conn.close()
