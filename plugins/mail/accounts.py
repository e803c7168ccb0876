"""Mailboxes: the configuration's own (``plugins: {mail: {smtp, imap, from}}``)
and the EmailAccount records, as one :class:`Account` the rest of the plugin
sends from and reads.

A password is never stored: an EmailAccount holds ``${NAME}`` and the
password is read from that environment variable when it is needed; the
configuration's mailbox takes its password from config.yaml, where it is a
``${NAME}`` too. The configuration's mailbox is also a record (``from_config``),
kept in step with the settings, so that letters, mailings and the IMAP state
refer to it like to any other mailbox.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formataddr, parseaddr
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from engine.api import clock, gettext

ACCOUNT = "EmailAccount"
ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
SECURITY = ("none", "starttls", "ssl")


class AccountError(Exception):
    """A mailbox that cannot be used as it is set up; the message is for its user."""


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    security: str  # none, starttls or ssl
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0

    @property
    def key(self) -> tuple[Any, ...]:
        """What tells two servers apart for a pool of connections."""
        return (self.host, self.port, self.security, self.username)


@dataclass(frozen=True)
class Account:
    id: int | None
    name: str
    address: str
    sender_name: str | None = None
    smtp: Server | None = None
    imap: Server | None = None
    folders: tuple[str, ...] = ("INBOX",)
    rate_limit: int | None = None

    @property
    def sender(self) -> str:
        """The ``From`` header: ``"Name <address>"`` or the bare address."""
        return formataddr((self.sender_name or "", self.address))


def secret(reference: str | None) -> str | None:
    """The password a ``${NAME}`` reference names, from the environment."""
    if not reference:
        return None
    found = ENV_REF.match(reference.strip())
    if not found:
        raise AccountError(gettext("a password is written as ${NAME}, an environment variable"))
    value = os.environ.get(found[1])
    if value is None:
        raise AccountError(gettext("the environment variable %(name)s is not set", name=found[1]))
    return value


def _default_port(kind: str, security: str) -> int:
    if kind == "smtp":
        return 465 if security == "ssl" else 587 if security == "starttls" else 25
    return 993 if security == "ssl" else 143


def _settings_server(kind: str, raw: Mapping[str, Any] | None) -> Server | None:
    if not raw:
        return None
    security = "ssl" if raw.get("ssl") else "starttls" if raw.get("starttls") else "none"
    return Server(
        host=str(raw["host"]),
        port=int(raw.get("port") or _default_port(kind, security)),
        security=security,
        username=raw.get("username") or None,
        password=raw.get("password") or None,
        timeout=float(raw.get("timeout") or 30.0),
    )


def _row_server(kind: str, row: Any) -> Server | None:
    host = getattr(row, f"{kind}_host", None)
    if not host:
        return None
    security = getattr(row, f"{kind}_security", None) or "none"
    return Server(
        host=host,
        port=int(getattr(row, f"{kind}_port", None) or _default_port(kind, security)),
        security=security,
        username=getattr(row, f"{kind}_username", None) or None,
        password=secret(getattr(row, f"{kind}_password", None)),
    )


def settings_of(registry: Any) -> Mapping[str, Any]:
    return registry.plugins.get("mail") or {}


def from_settings(settings: Mapping[str, Any], account_id: int | None = None) -> Account | None:
    """The configuration's own mailbox, or None when config.yaml sets up none."""
    if not settings.get("smtp") and not settings.get("imap"):
        return None
    name, address = parseaddr(settings.get("sender") or "")
    imap = settings.get("imap") or {}
    return Account(
        id=account_id,
        name=name or address or "crm",
        address=address or "crm@localhost",
        sender_name=name or None,
        smtp=_settings_server("smtp", settings.get("smtp")),
        imap=_settings_server("imap", imap),
        folders=tuple(imap.get("folders") or ("INBOX",)),
        rate_limit=settings.get("rate_limit"),
    )


def from_row(row: Any, settings: Mapping[str, Any]) -> Account:
    """An EmailAccount record as an :class:`Account`; the configuration's own
    takes its servers from the settings. Raises AccountError for a password
    that cannot be read."""
    if getattr(row, "from_config", False):
        found = from_settings(settings, row.id)
        if found is not None:
            return Account(
                id=row.id, name=row.name, address=found.address, sender_name=found.sender_name,
                smtp=found.smtp, imap=found.imap, folders=found.folders,
                rate_limit=row.rate_limit or found.rate_limit,
            )  # fmt: skip
    folders = tuple(f.strip() for f in (row.imap_folders or "INBOX").split(",") if f.strip())
    return Account(
        id=row.id,
        name=row.name,
        address=row.address,
        sender_name=row.sender_name or None,
        smtp=_row_server("smtp", row),
        imap=_row_server("imap", row),
        folders=folders or ("INBOX",),
        rate_limit=row.rate_limit,
    )


def ensure_config_account(session: Any, models: Any, registry: Any) -> int | None:
    """The id of the record that stands for the configuration's mailbox,
    made or brought in step with the settings; None when there is none."""
    found = from_settings(settings_of(registry))
    if found is None or ACCOUNT not in registry.documents:
        return None
    table = models.table(ACCOUNT)
    smtp, imap = found.smtp, found.imap
    values = {
        "address": found.address,
        "sender_name": found.sender_name,
        "smtp_host": smtp.host if smtp else None,
        "smtp_port": smtp.port if smtp else None,
        "smtp_security": smtp.security if smtp else None,
        "smtp_username": smtp.username if smtp else None,
        "imap_host": imap.host if imap else None,
        "imap_port": imap.port if imap else None,
        "imap_security": imap.security if imap else None,
        "imap_username": imap.username if imap else None,
        "imap_folders": ",".join(found.folders) if imap else None,
    }
    row = session.execute(
        sa.select(table.c.id, *(table.c[k] for k in values)).where(table.c.from_config.is_(True))
    ).first()
    if row is not None:
        if any(getattr(row, k) != v for k, v in values.items()):
            session.execute(sa.update(table).where(table.c.id == row.id).values(**values))
        return int(row.id)
    now = clock.now()
    insert = sa.insert(table).values(
        name=found.name[:100], from_config=True, active=True, version=1,
        created_at=now, updated_at=now, **values,
    )  # fmt: skip
    try:
        with session.begin_nested():
            return int(session.execute(insert.returning(table.c.id)).scalar_one())
    except IntegrityError:  # another worker made it meanwhile, or the name is taken
        row = session.execute(sa.select(table.c.id).where(table.c.from_config.is_(True))).first()
        return int(row.id) if row is not None else None


def load(session: Any, models: Any, registry: Any, account_id: int | None) -> Account:
    """The mailbox of that record, or the configuration's when ``account_id`` is None."""
    settings = settings_of(registry)
    if account_id is None:
        account_id = ensure_config_account(session, models, registry)
        if account_id is None:
            raise AccountError(gettext("no mailbox is set up: add one under Mailboxes"))
    row = session.get(models.cls(ACCOUNT), account_id)
    if row is None:
        raise AccountError(gettext("the mailbox no longer exists"))
    return from_row(row, settings)


def may_use(row: Any, principal: Any) -> bool:
    """Whether ``principal`` may send from the mailbox ``row``: an active
    mailbox that is theirs or shared (no owner), and, when it names a role,
    one of theirs. Administrators (the engine's jobs among them) may use any."""
    if principal is None or principal.admin:  # the engine's own work acts as an administrator
        return True
    if not row.active:
        return False
    if row.owner_id is not None and row.owner_id != principal.user_id:
        return False
    return not row.role or row.role in principal.roles


def usable(session: Any, models: Any, registry: Any, principal: Any) -> list[Any]:
    """The mailboxes ``principal`` may send from, the configuration's first."""
    ensure_config_account(session, models, registry)
    cls = models.cls(ACCOUNT)
    rows = session.execute(
        sa.select(cls).where(cls.active.is_(True)).order_by(cls.from_config.desc(), cls.name)
    ).scalars()
    return [r for r in rows if may_use(r, principal)]
