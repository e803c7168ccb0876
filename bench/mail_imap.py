"""The IMAP sync benchmark: ``python -m bench --imap [--quick] [--rows N] [--db URL]``.

A throwaway Dovecot (tests/mail/imap_server.py) gets N letters (10 000, 1 000
with ``--quick``): replies of known customers, letters of contact persons
and of strangers, some threads, a few attachments. Then, each over the same
mailbox:

- *imapclient*: IMAPClient alone: log in, select, search the UIDs, fetch the
  sizes and the letters in the same chunks as the sync: the floor of any sync;
- *sync*: the ``mail.imap.sync`` job through the job runner: the same fetch,
  plus parsing, matching, threading, the EmailMessage rows, interactions,
  notifications and the folder state, committed chunk by chunk.

Both are reported in letters per second, and *ratio* = sync time / imapclient
time, in one run. The database is a temporary SQLite file unless ``--db``
names an empty one.
"""

from __future__ import annotations

import contextlib
import random
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from engine import clock
from engine.api import Documents, enqueue
from engine.testing import dispose, make_app

ROOT = Path(__file__).resolve().parent.parent
ROWS = 10_000
QUICK_ROWS = 1_000
CUSTOMERS = 200
OWN = "crm@romashka.example"


@dataclass
class ImapFigures:
    rows: int
    database: str
    bare_s: float
    sync_s: float
    imported: int

    @property
    def ratio(self) -> float:
        return self.sync_s / self.bare_s if self.bare_s else float("inf")


def _letters(n: int, rng: random.Random) -> list[bytes]:
    now = clock.now()
    out: list[bytes] = []
    ids: list[str] = []
    for i in range(n):
        m = EmailMessage()
        kind = rng.random()
        if kind < 0.5:
            sender = (
                f"Customer {i % CUSTOMERS} <buyer{i % CUSTOMERS}@client{i % CUSTOMERS}.example>"
            )
        elif kind < 0.7:
            sender = f"contact{i % CUSTOMERS}@client{i % CUSTOMERS}.example"
        else:
            sender = f"stranger{i}@elsewhere.example"
        m["From"] = sender
        m["To"] = OWN
        m["Subject"] = f"Re: Order {i // 5}" if i % 5 else f"Order {i // 5}"
        m["Date"] = format_datetime(now)
        mid = f"<{uuid.uuid4().hex}@client.example>"
        m["Message-ID"] = mid
        if i % 5 and ids:
            m["In-Reply-To"] = ids[-1]
            m["References"] = ids[-1]
        ids.append(mid)
        body = f"Letter {i}.\n" + "We would like to discuss the order and its delivery. " * 40
        m.set_content(body)
        if i % 7 == 0:
            m.add_alternative(f"<p>Letter {i}</p><p>{'<b>offer</b> ' * 50}</p>", subtype="html")
        if i % 50 == 0:
            m.add_attachment(rng.randbytes(20_000), maintype="application", subtype="pdf",
                             filename=f"invoice-{i}.pdf")  # fmt: skip
        out.append(m.as_bytes())
    return out


def _fill(server: Any, letters: list[bytes]) -> None:
    client = server.client()
    try:
        for start in range(0, len(letters), 200):
            client.multiappend("INBOX", letters[start : start + 200])
    finally:
        client.logout()


def _bare(server: Any) -> tuple[float, int]:
    from plugins.mail import imap

    started = time.perf_counter()
    client = server.client()
    fetched = 0
    try:
        client.select_folder("INBOX", readonly=True)
        uids = sorted(client.search(["UID", "1:*"]))
        sizes: dict[int, int] = {}
        for start in range(0, len(uids), 1000):
            for uid, data in client.fetch(uids[start : start + 1000], ["RFC822.SIZE"]).items():
                sizes[uid] = int(data[b"RFC822.SIZE"])
        for chunk in imap.chunks(uids, sizes):
            fetched += len(client.fetch(chunk, ["BODY.PEEK[]"]))
    finally:
        client.logout()
    return time.perf_counter() - started, fetched


def run(rows: int, url: str | None = None) -> ImapFigures:
    sys.path.insert(0, str(ROOT / "tests" / "mail"))
    from imap_server import available, dovecot, imap_settings

    from plugins.mail import accounts, imap

    if not available():
        raise SystemExit("Dovecot is not installed: apt-get install dovecot-imapd")
    rng = random.Random(12)
    with tempfile.TemporaryDirectory(prefix="crm-bench-imap-") as folder, dovecot() as server:
        print(f"Appending {rows:,} letters to Dovecot ...", flush=True)
        _fill(server, _letters(rows, rng))
        settings = {"imap": imap_settings(server), "from": f"Romashka <{OWN}>"}
        app = make_app(Path(folder) / "config", "{}\n", plugins={"processes": {}, "mail": settings},
                       layers=("base",), database=url)  # fmt: skip
        try:
            state = app.extensions["crm"]
            with app.app_context():
                session = state.db.session
                users = state.models.table("User")
                manager = session.execute(
                    sa.select(users.c.id).where(users.c.username == "manager")
                ).scalar_one()
                docs = Documents(state.models, session, manager, ("manager",), state.pm,
                                 username="manager")  # fmt: skip
                for i in range(CUSTOMERS):
                    c = docs.create("Customer", {"name": f"Client {i}",
                                                 "email": f"buyer{i}@client{i}.example"})  # fmt: skip
                    docs.create("ContactPerson", {"customer": c.id, "name": f"Contact {i}",
                                                  "email": f"contact{i}@client{i}.example"})  # fmt: skip
                session.commit()
                database = session.get_bind().dialect.name
            bare_s, fetched = _bare(server)
            bare_again, _ = _bare(server)  # the better of two: the server's caches are warm
            bare_s = min(bare_s, bare_again)
            assert fetched == rows, f"imapclient fetched {fetched} of {rows}"
            table = state.models.table("EmailMessage")
            with app.app_context():
                session = state.db.session
                # letters already there (a --db that is not empty) are not counted
                first = session.execute(sa.select(sa.func.max(table.c.id))).scalar() or 0
                account = accounts.ensure_config_account(session, state.models, state.registry)
                enqueue(session, imap.SYNC_JOB, {"account": account}, key=uuid.uuid4().hex)
                session.commit()
            print("Syncing ...", flush=True)
            started = time.perf_counter()
            with app.app_context():
                from engine.jobs import runner_for

                runner_for(app).drain()
            sync_s = time.perf_counter() - started
            with app.app_context():
                imported = state.db.session.execute(
                    sa.select(sa.func.count()).select_from(table).where(table.c.id > first)
                ).scalar_one()
        finally:
            with contextlib.suppress(Exception):
                dispose(app)
    return ImapFigures(rows, database, bare_s, sync_s, imported)


def report(f: ImapFigures) -> list[str]:
    print(f"\nIMAP sync of {f.rows:,} letters from Dovecot into {f.database}")
    print(f"  imapclient alone   {f.bare_s:8.2f} s  {f.rows / f.bare_s:9.0f} letters/s")
    print(f"  mail.imap.sync     {f.sync_s:8.2f} s  {f.rows / f.sync_s:9.0f} letters/s")
    print(f"  ratio (sync / imapclient) {f.ratio:.1f}x; imported {f.imported:,}")
    return [] if f.imported == f.rows else [f"imported {f.imported} of {f.rows} letters"]
