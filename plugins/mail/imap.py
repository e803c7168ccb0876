"""Mail in: a job per mailbox reads its IMAP folders by UID, incrementally.

For each folder the mailbox keeps (its ``folders`` table) the folder's
UIDVALIDITY and the last UID read. A run asks for the UIDs after it, fetches
them in chunks bounded in bytes and in number, imports each chunk
(parsing.py, threads.py, matching.py, bounces.py) and writes the folder's new
last UID **in the same transaction** as the chunk's letters. A run that dies
before that commit leaves both as they were: the next run fetches the same
letters again, so a letter is never skipped and never imported twice. A
changed UIDVALIDITY (the server rebuilt the folder) reads the folder again
from the start; a letter already imported (the same Message-ID in this
mailbox, also when it sits in two folders) is not imported again.

``mail.imap.due`` (every :data:`TICK` seconds) queues one ``mail.imap.sync``
per active mailbox with an IMAP server whose last run is ``sync_every``
seconds old, keyed by that last run: a second job for the same mailbox is
never queued while one waits or runs. A refused login or an unreachable
server is written to the mailbox's ``sync_error`` and tried again on the
next round; the job itself does not fail.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import socket
import ssl
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from imapclient import IMAPClient  # type: ignore[import-untyped]
from imapclient.exceptions import IMAPClientError, LoginError  # type: ignore[import-untyped]

from engine.api import (
    Documents,
    JobContext,
    enqueue,
    gettext,
    speaking,
    system_documents,
    valid_id,
)

from . import accounts, bounces, files, interactions, matching, threads
from .outbox import MESSAGE, _link_names
from .parsing import Parsed, parse
from .settings import DEFAULT_SYNC_EVERY

log = logging.getLogger("crm.mail")

SYNC_JOB = "mail.imap.sync"
DUE_JOB = "mail.imap.due"
#: how often the schedule looks for mailboxes due a sync (each honours ``sync_every``)
TICK = 30
#: a chunk: at most this many letters ...
CHUNK = 100
#: ... and about this many bytes (one letter larger than that is a chunk of its own)
CHUNK_BYTES = 16 * 1024 * 1024
#: a letter larger than this is kept by its headers only (and says so)
MAX_MESSAGE = 40 * 1024 * 1024
NOTIFICATION = "Notification"
NOTIFICATION_FIELDS = ("recipient", "text", "doctype", "doc_id")
SERVER_ERRORS = (IMAPClientError, OSError, socket.timeout, ssl.SSLError)


def connect(server: accounts.Server) -> IMAPClient:
    """A logged-in IMAP connection to the server."""
    client = IMAPClient(
        server.host, port=server.port, ssl=server.security == "ssl", timeout=server.timeout
    )
    try:
        if server.security == "starttls":
            client.starttls()
        if server.username:
            client.login(server.username, server.password or "")
    except BaseException:
        _logout(client)
        raise
    return client


def _logout(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:  # the connection is being dropped anyway
        with contextlib.suppress(Exception):
            client.shutdown()


def commit(session: Any) -> None:
    """Commit one chunk: its letters and the folder's last UID together."""
    session.commit()


# --- the schedule ------------------------------------------------------------------------------


def _stamp(value: dt.datetime | None) -> str:
    return value.strftime("%Y%m%dT%H%M%S.%f") if value is not None else "never"


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def due_job(ctx: JobContext, payload: Mapping[str, Any]) -> Any:
    """``mail.imap.due``: queue a sync of every mailbox whose turn has come."""
    registry, session, models = ctx.registry, ctx.session, ctx.models
    if accounts.ACCOUNT not in registry.documents:
        return None
    accounts.ensure_config_account(session, models, registry)
    every = dt.timedelta(
        seconds=int(accounts.settings_of(registry).get("sync_every") or DEFAULT_SYNC_EVERY)
    )
    table = models.table(accounts.ACCOUNT)
    rows = session.execute(
        sa.select(table.c.id, table.c.sync_tried_at).where(
            table.c.active.is_(True), table.c.imap_host.isnot(None), table.c.imap_host != ""
        )
    ).all()
    now = ctx.now()
    queued = 0
    for r in rows:
        tried = _aware(r.sync_tried_at)
        if tried is not None and tried + every > now:
            continue
        queued += queue_sync(session, r.id, tried, now) is not None
    return {"queued": queued}


def queue_sync(
    session: Any, account_id: int, tried: dt.datetime | None, now: dt.datetime
) -> int | None:
    """Queue a sync of the mailbox unless one is queued since its last run.
    The day is in the key too, so that a sync job that died for good does
    not stop the mailbox's syncs for longer than that."""
    key = f"{SYNC_JOB}:{account_id}:{_stamp(tried)}:{now:%Y%m%d}"
    return enqueue(session, SYNC_JOB, {"account": account_id, "after": _stamp(tried)}, key=key)


# --- the sync ----------------------------------------------------------------------------------


@dataclass
class Stats:
    fetched: int = 0
    imported: int = 0
    duplicates: int = 0
    bounces: int = 0
    folders: dict[str, int] = field(default_factory=dict)


def sync_job(ctx: JobContext, payload: Mapping[str, Any]) -> Any:
    """``mail.imap.sync``: ``{account: id}``. Reads the mailbox's new letters."""
    account_id = valid_id(payload.get("account"))
    if account_id is None:
        return None
    registry, session, models = ctx.registry, ctx.session, ctx.models
    table = models.table(accounts.ACCOUNT)
    row = session.execute(sa.select(table).where(table.c.id == account_id)).first()
    if row is None or not row.active:
        return None
    after = payload.get("after")
    if after is not None and after != _stamp(_aware(row.sync_tried_at)):
        return {"skipped": "the mailbox was synced meanwhile"}
    try:
        account = accounts.from_row(row, accounts.settings_of(registry))
    except accounts.AccountError as exc:
        return _finish(ctx, account_id, str(exc))
    if account.imap is None:
        return None
    stats = Stats()
    try:
        sync(ctx, account, stats)
    except SERVER_ERRORS as exc:
        session.rollback()
        return _finish(ctx, account_id, _server_error(exc), stats)
    return _finish(ctx, account_id, None, stats)


def _server_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if text.startswith(("b'", 'b"')) and text.endswith(("'", '"')):
        text = text[2:-1]
    if isinstance(exc, LoginError):
        return gettext("the IMAP server refused the login: %(answer)s", answer=text)[:500]
    if isinstance(exc, OSError) and not isinstance(exc, IMAPClientError):
        return gettext("cannot reach the IMAP server: %(error)s", error=text)[:500]
    return gettext("the IMAP server answered: %(answer)s", answer=text)[:500]


def _finish(ctx: JobContext, account_id: int, error: str | None, stats: Stats | None = None) -> Any:
    table = ctx.models.table(accounts.ACCOUNT)
    now = ctx.now()
    values: dict[str, Any] = {"sync_tried_at": now, "sync_error": error}
    if error is None:
        values["synced_at"] = now
    ctx.session.execute(sa.update(table).where(table.c.id == account_id).values(**values))
    out: dict[str, Any] = {"error": error} if error else {}
    if stats is not None:
        out |= {"fetched": stats.fetched, "imported": stats.imported,
                "duplicates": stats.duplicates, "bounces": stats.bounces}  # fmt: skip
    return out


def sync(ctx: JobContext, account: accounts.Account, stats: Stats) -> None:
    """Read every folder of the mailbox, chunk by chunk, each chunk committed."""
    assert account.imap is not None and account.id is not None
    client = connect(account.imap)
    try:
        for folder in account.folders:
            sync_folder(ctx, account, client, folder, stats)
    finally:
        _logout(client)


def folder_states(session: Any, models: Any, registry: Any, account_id: int) -> dict[str, Any]:
    table = _folders_table(models, registry)
    rows = session.execute(
        sa.select(table.c.id, table.c.folder, table.c.uidvalidity, table.c.last_uid)
        .where(table.c.parent_id == account_id)
    ).all()  # fmt: skip
    return {r.folder: r for r in rows}


def _folders_table(models: Any, registry: Any) -> sa.Table:
    d = registry.documents[accounts.ACCOUNT]
    return models.metadata.tables[d.child_table("folders")]


def _save_state(
    session: Any, models: Any, registry: Any, account_id: int, folder: str, validity: int, last: int
) -> None:
    table = _folders_table(models, registry)
    changed = session.execute(
        sa.update(table).where(table.c.parent_id == account_id, table.c.folder == folder)
        .values(uidvalidity=validity, last_uid=last)
    ).rowcount  # fmt: skip
    if not changed:
        count = session.execute(
            sa.select(sa.func.count()).select_from(table).where(table.c.parent_id == account_id)
        ).scalar_one()
        session.execute(sa.insert(table).values(parent_id=account_id, idx=count, folder=folder,
                                                uidvalidity=validity, last_uid=last))  # fmt: skip


def sync_folder(
    ctx: JobContext, account: accounts.Account, client: IMAPClient, folder: str, stats: Stats
) -> None:
    session, models, registry = ctx.session, ctx.models, ctx.registry
    assert account.id is not None
    info = client.select_folder(folder, readonly=True)
    validity = int(info.get(b"UIDVALIDITY") or 0)
    state = folder_states(session, models, registry, account.id).get(folder)
    last = int(state.last_uid or 0) if state is not None and state.uidvalidity == validity else 0
    exists = int(info.get(b"EXISTS") or 0)
    uids = sorted(u for u in client.search(["UID", f"{last + 1}:*"]) if u > last) if exists else []
    if not uids:
        if state is None or state.uidvalidity != validity:
            _save_state(session, models, registry, account.id, folder, validity, last)
            commit(session)
        return
    sizes: dict[int, int] = {}
    for start in range(0, len(uids), 1000):
        for uid, data in client.fetch(uids[start : start + 1000], ["RFC822.SIZE"]).items():
            sizes[uid] = int(data.get(b"RFC822.SIZE") or 0)
    done = 0
    for chunk in chunks([u for u in uids if u in sizes], sizes):
        raws = _fetch(client, chunk, sizes)
        stats.fetched += len(raws)
        import_chunk(ctx, account, folder, raws, stats)
        _save_state(session, models, registry, account.id, folder, validity, chunk[-1])
        commit(session)
        done += len(chunk)
        ctx.report(done, len(uids), folder)
    stats.folders[folder] = done


def chunks(uids: Sequence[int], sizes: Mapping[int, int]) -> Iterator[list[int]]:
    """UIDs in order, in groups of at most CHUNK letters and about CHUNK_BYTES."""
    group: list[int] = []
    total = 0
    for uid in uids:
        size = min(sizes.get(uid, 0), MAX_MESSAGE)
        if group and (len(group) >= CHUNK or total + size > CHUNK_BYTES):
            yield group
            group, total = [], 0
        group.append(uid)
        total += size
    if group:
        yield group


def _fetch(
    client: IMAPClient, chunk: list[int], sizes: Mapping[int, int]
) -> list[tuple[int, bytes, int, bool]]:
    """(uid, bytes, size, only the header) of each letter of the chunk still there."""
    whole = [u for u in chunk if sizes.get(u, 0) <= MAX_MESSAGE]
    huge = [u for u in chunk if sizes.get(u, 0) > MAX_MESSAGE]
    out: list[tuple[int, bytes, int, bool]] = []
    if whole:
        for uid, data in client.fetch(whole, ["BODY.PEEK[]"]).items():
            raw = data.get(b"BODY[]")
            if raw is not None:
                out.append((uid, bytes(raw), sizes.get(uid, len(raw)), False))
    if huge:
        for uid, data in client.fetch(huge, ["BODY.PEEK[HEADER]"]).items():
            raw = data.get(b"BODY[HEADER]")
            if raw is not None:
                out.append((uid, bytes(raw), sizes.get(uid, len(raw)), True))
    out.sort(key=lambda item: item[0])
    return out


# --- importing ---------------------------------------------------------------------------------


@dataclass
class Known:
    """A letter already in the database (or imported earlier in this chunk)."""

    id: int
    thread: int
    sent_at: dt.datetime | None
    people: frozenset[str]
    links: dict[str, Any]


def import_chunk(
    ctx: JobContext, account: accounts.Account, folder: str,
    raws: Sequence[tuple[int, bytes, int, bool]], stats: Stats,
) -> list[Any]:  # fmt: skip
    """Import the chunk's letters that the mailbox does not have yet."""
    docs = system_documents(ctx)
    registry, session, models = ctx.registry, ctx.session, ctx.models
    table = models.table(MESSAGE)
    parsed: list[tuple[int, Parsed]] = []
    for uid, raw, size, truncated in raws:
        parsed.append((uid, parse(raw, size=size, truncated=truncated)))
    ids = sorted({p.message_id for _, p in parsed})
    seen = set(
        session.execute(
            sa.select(table.c.message_id).where(
                table.c.account_id == account.id, table.c.message_id.in_(ids)
            )
        ).scalars()
    )
    fresh: list[tuple[int, Parsed]] = []
    for uid, p in parsed:
        if p.message_id in seen:
            stats.duplicates += 1
            continue
        seen.add(p.message_id)
        fresh.append((uid, p))
    if not fresh:
        return []
    own = account.address.lower()
    outgoing = {id(p) for _, p in fresh if p.from_address.lower() == own}
    wanted: set[str] = set()
    for _, p in fresh:
        if p.report is not None:
            continue
        wanted |= set(p.recipients) if id(p) in outgoing else {p.from_address.lower()}
    matches = matching.match(session, models, registry, wanted)
    main = matching.primary(registry)
    main_target = next((t for t in matching.targets(registry) if t.field == main), None)
    owner_of: dict[int, int] = {}
    if main_target is not None:
        found = [m[main] for m in matches.values() if main in m]
        owner_of = matching.owners(session, models, registry, main_target.doctype, found)
    link_names = [n for n in _link_names(registry) if n in registry.documents[MESSAGE].fields]

    def one(uid: int, p: Parsed, by_id: dict[str, Known], by_topic: dict[str, list[Known]]) -> Any:
        return _create(docs, account, folder, uid, p, id(p) in outgoing, matches, main, owner_of,
                       link_names, by_id, by_topic, stats)  # fmt: skip

    before = (stats.imported, stats.bounces)
    try:  # the whole chunk at once ...
        with session.begin_nested():
            by_id, by_topic = _context(docs, fresh, link_names)
            return [one(uid, p, by_id, by_topic) for uid, p in fresh]
    except Exception:
        log.warning("mail: a letter of %s/%s is refused; importing them one by one",
                    account.name, folder, exc_info=True)  # fmt: skip
    # ... else letter by letter: the one the database refuses is kept bare
    stats.imported, stats.bounces = before
    by_id, by_topic = _context(docs, fresh, link_names)
    created = []
    for uid, p in fresh:
        try:
            with session.begin_nested():
                created.append(one(uid, p, by_id, by_topic))
        except Exception:
            log.warning("mail: letter %s of %s/%s kept without its content", uid,
                        account.name, folder, exc_info=True)  # fmt: skip
            bare = Parsed(message_id=p.message_id, from_name=p.from_name[:100],
                          from_address=p.from_address[:320], subject=p.subject[:500],
                          date=p.date, size=p.size, text=_unreadable(docs))  # fmt: skip
            with session.begin_nested():  # unmatched and unthreaded: it waits in Unsorted mail
                created.append(
                    _create(
                        docs,
                        account,
                        folder,
                        uid,
                        bare,
                        False,
                        {},
                        main,
                        {},
                        link_names,
                        {},
                        {},
                        stats,
                    )
                )
    return created


def _unreadable(docs: Documents) -> str:
    with speaking(docs.registry.locale):
        return gettext("This letter could not be read; open it in your mail client.")


def _context(
    docs: Documents, fresh: Sequence[tuple[int, Parsed]], link_names: list[str]
) -> tuple[dict[str, Known], dict[str, list[Known]]]:
    """The letters the chunk's letters may answer: by Message-ID, and by
    topic within the window; two queries."""
    session, models = docs.session, docs.models
    table = models.table(MESSAGE)
    d = docs.registry.documents[MESSAGE]
    link_cols = [table.c[d.fields[n].column] for n in link_names]
    extra = [table.c.doctype, table.c.doc_id]
    cols = [table.c.id, table.c.thread, table.c.message_id, table.c.sent_at, table.c.from_address,
            table.c.to, table.c.cc, table.c.topic, table.c.subject, *link_cols, *extra]  # fmt: skip
    refs = sorted({r for _, p in fresh for r in threads.ids(p.in_reply_to, p.references)})
    by_id: dict[str, Known] = {}
    if refs:
        for r in session.execute(
            sa.select(*cols).where(table.c.message_id.in_(refs)).order_by(table.c.id)
        ):
            by_id.setdefault(r.message_id, _known(r, link_names, d))
    topics = sorted({threads.topic(p.subject) for _, p in fresh} - {""})
    by_topic: dict[str, list[Known]] = {}
    if topics:
        dates = [p.date for _, p in fresh if p.date is not None]
        since = (min(dates) if dates else docs.now()) - threads.WINDOW
        bare = sa.and_(
            table.c.topic.is_(None), table.c.direction == "out",
            sa.func.lower(table.c.subject).in_([*topics, *(f"re: {t}" for t in topics)]),
        )  # fmt: skip
        rows = session.execute(
            sa.select(*cols)
            .where(table.c.sent_at >= since, sa.or_(table.c.topic.in_(topics), bare))
            .order_by(table.c.sent_at.desc(), table.c.id.desc())
            .limit(1000)
        )  # fmt: skip
        for r in rows:
            key = r.topic or threads.topic(r.subject)
            by_topic.setdefault(key, []).append(_known(r, link_names, d))
    return by_id, by_topic


def _known(r: Any, link_names: list[str], d: Any) -> Known:
    links = {n: r._mapping[d.fields[n].column] for n in link_names}
    links |= {"doctype": r.doctype, "doc_id": r.doc_id}
    return Known(r.id, r.thread or r.id, _aware(r.sent_at), threads.correspondents(r), links)


def _create(
    docs: Documents, account: accounts.Account, folder: str, uid: int, p: Parsed, outgoing: bool,
    matches: Mapping[str, dict[str, int]], main: str | None, owner_of: Mapping[int, int],
    link_names: list[str], by_id: dict[str, Known], by_topic: dict[str, list[Known]], stats: Stats,
) -> Any:  # fmt: skip
    registry = docs.registry
    d = registry.documents[MESSAGE]
    now = docs.now()
    sent_at = p.date or now
    values: dict[str, Any] = {
        "direction": "out" if outgoing else "in",
        "status": "sent" if outgoing else "received",
        "account": account.id,
        "from_address": p.sender[:998],
        "to": p.to,
        "cc": p.cc or None,
        "subject": p.subject,
        "text": p.text or (_too_large(docs, p) if p.truncated else ""),
        "html": p.html,
        "message_id": p.message_id,
        "in_reply_to": p.in_reply_to,
        "references": p.references,
        "sent_at": sent_at,
        "size": p.size,
        "folder": folder[:255],
        "uid": uid,
        "topic": threads.topic(p.subject) or None,
        "bounce": p.report is not None,
        "attachments": [
            {"filename": a.filename, "content_type": a.content_type, "size": len(a.data),
             "sha256": files.store(registry, a.data)}
            for a in p.attachments
        ],
    }  # fmt: skip
    if "user" in d.fields:
        values["user"] = None
    if p.report is not None:
        bounces.apply(docs, p.report)
        stats.bounces += 1
    links: dict[str, Any] = {}
    if p.report is None:
        for address in p.recipients if outgoing else [p.from_address.lower()]:
            for name, value in matches.get(address, {}).items():
                links.setdefault(name, value)
    people = threads.correspondents(_Row(values))
    parent = None
    for ref in reversed(threads.ids(p.references, p.in_reply_to)):
        parent = by_id.get(ref)
        if parent is not None:
            break
    if parent is None and p.report is None and values["topic"]:
        for candidate in by_topic.get(values["topic"], []):
            close = candidate.sent_at is None or abs(candidate.sent_at - sent_at) <= threads.WINDOW
            if close and threads.same_pair(candidate.people, people, account.address):
                parent = candidate
                break
    if parent is not None and not links:
        links = {k: v for k, v in parent.links.items() if v is not None}
    for name, value in links.items():
        if name in d.fields:
            values[name] = value
    if main and values.get(main) is not None and values[main] in owner_of:
        values["user"] = owner_of[values[main]]
    if parent is not None:
        values["thread"] = parent.thread
    row = docs.create(MESSAGE, values)
    if row.thread is None:  # the first letter of its thread
        row.thread = row.id
    stats.imported += 1
    known = Known(row.id, row.thread, _aware(sent_at), people,
                  {n: values.get(n) for n in [*link_names, "doctype", "doc_id"]})  # fmt: skip
    by_id[p.message_id] = known
    if values["topic"]:
        by_topic.setdefault(values["topic"], []).insert(0, known)
    if p.report is None and main and values.get(main) is not None:
        interactions.record(docs, row)
        if not outgoing:
            notify(docs, row)
    return row


class _Row:
    def __init__(self, values: Mapping[str, Any]) -> None:
        self.from_address = values.get("from_address")
        self.to = values.get("to")
        self.cc = values.get("cc")


def _too_large(docs: Documents, p: Parsed) -> str:
    megabytes = "%.1f" % (p.size / 1024 / 1024)
    with speaking(docs.registry.locale):
        return gettext(
            "This letter (%(size)s MB) is too large to download; read it in your mail client.",
            size=megabytes,
        )


def notify(docs: Documents, row: Any) -> Any:
    """Tell the letter's responsible user that it came, where the
    configuration has in-app notifications (the processes plugin's)."""
    registry = docs.registry
    d = registry.documents.get(NOTIFICATION)
    user = getattr(row, "user_id", None)
    if d is None or user is None or not all(f in d.fields for f in NOTIFICATION_FIELDS):
        return None
    with speaking(registry.locale):
        text = gettext("New email from %(sender)s: %(subject)s", sender=row.from_address or "?",
                       subject=row.subject or gettext("(no subject)"))  # fmt: skip
    return docs.create(NOTIFICATION, {"recipient": user, "text": text[:2000],
                                      "doctype": MESSAGE, "doc_id": row.id})  # fmt: skip
