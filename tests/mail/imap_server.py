"""A real IMAP server for the tests: Debian's Dovecot (``dovecot-imapd``),
started on a free port of 127.0.0.1 with a throwaway maildir and one test
user (plain login, no TLS), as the current user, and stopped afterwards.

``dovecot()`` is a context manager yielding an :class:`ImapServer`; the
``imap_server`` fixture of the intake tests wraps it. Without Dovecot the
tests skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DOVECOT = "/usr/sbin/dovecot"
USER = "crm"
PASSWORD = "secret-imap"

CONF = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {login}
first_valid_uid = 0
first_valid_gid = 0
mail_location = maildir:{root}/mail/%u
mail_max_userip_connections = 100
protocol imap {{
  imap_max_line_length = 1M
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""


def available() -> bool:
    return os.access(DOVECOT, os.X_OK)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ImapServer:
    host: str
    port: int
    username: str
    password: str
    root: Path

    def client(self) -> Any:
        from imapclient import IMAPClient

        c = IMAPClient(self.host, port=self.port, ssl=False, timeout=30)
        c.login(self.username, self.password)
        return c

    def append(self, message: bytes | str, folder: str = "INBOX") -> None:
        """Put a message into a folder as a mail client or delivery agent would."""
        raw = message.encode() if isinstance(message, str) else message
        with _session(self) as c:
            if folder != "INBOX" and not c.folder_exists(folder):
                c.create_folder(folder)
            c.append(folder, raw)

    def append_many(self, messages: list[bytes], folder: str = "INBOX") -> None:
        with _session(self) as c:
            for raw in messages:
                c.append(folder, raw)

    def reset_uidvalidity(self, folder: str = "INBOX") -> None:
        """Give the folder a new UIDVALIDITY, as a server does when a mailbox
        is rebuilt: its messages move out (RENAME; INBOX is left empty) and are
        appended again to a new folder of the same name. Not for INBOX, which
        Dovecot does not rename."""
        if folder.upper() == "INBOX":
            raise ValueError("INBOX keeps its UIDVALIDITY: use another folder")
        with _session(self) as c:
            c.select_folder(folder)
            uids = c.search()
            raws = (
                [d[b"RFC822"] for _, d in sorted(c.fetch(uids, ["RFC822"]).items())] if uids else []
            )
            c.close_folder()
            temp = f"{folder}-old"
            c.rename_folder(folder, temp)
            c.delete_folder(temp)
            time.sleep(1.1)  # Dovecot's UIDVALIDITY is a time in seconds
            if not c.folder_exists(folder):
                c.create_folder(folder)
            for raw in raws:
                c.append(folder, raw)


@contextlib.contextmanager
def _session(server: ImapServer) -> Iterator[Any]:
    c = server.client()
    try:
        yield c
    finally:
        with contextlib.suppress(Exception):
            c.logout()


@contextlib.contextmanager
def dovecot() -> Iterator[ImapServer]:
    root = Path(tempfile.mkdtemp(prefix="crm-dovecot-"))
    try:
        port = free_port()
        user = pwd.getpwuid(os.getuid()).pw_name
        group = grp.getgrgid(os.getgid()).gr_name
        login = user
        for sub in ("run", "state", "mail", "home"):
            (root / sub).mkdir()
        uid, gid = os.getuid(), os.getgid()
        if os.getuid() == 0:  # Dovecot's login and internal processes refuse to run as root
            user, group, login = "dovecot", "dovecot", "dovenull"
            root.chmod(0o755)
            uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
            for sub in ("mail", "home"):
                os.chown(root / sub, uid, gid)
        (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        conf = root / "dovecot.conf"
        conf.write_text(CONF.format(root=root, user=user, group=group, login=login, uid=uid,
                                    gid=gid, port=port))  # fmt: skip
        proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        try:
            _wait(port, proc, root)
            yield ImapServer("127.0.0.1", port, USER, PASSWORD, root)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            if proc.stderr is not None:
                proc.stderr.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _wait(port: int, proc: subprocess.Popen[bytes], root: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            log = (
                (root / "dovecot.log").read_text(errors="replace")
                if (root / "dovecot.log").exists()
                else ""
            )
            raise RuntimeError(f"dovecot exited with {proc.returncode}: {err} {log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5) as s:
            if s.recv(100).startswith(b"* OK"):
                return
        time.sleep(0.1)
    raise RuntimeError("dovecot did not start listening in 20 s")


@contextlib.contextmanager
def needed() -> Iterator[ImapServer]:
    """``dovecot()``, or a skip (a failure under ``CI=true``) when it is not installed."""
    import pytest

    if not available():
        if os.environ.get("CI") == "true":
            pytest.fail("Dovecot is not installed (apt-get install dovecot-imapd)")
        pytest.skip("Dovecot is not installed (apt-get install dovecot-imapd)")
    with dovecot() as server:
        yield server


def imap_settings(server: ImapServer, **more: Any) -> dict[str, Any]:
    """The mail plugin's ``imap`` settings for that server."""
    return {"host": server.host, "port": server.port, "username": server.username,
            "password": server.password, **more}  # fmt: skip
