"""Bounces: a delivery status notification (RFC 3464, ``multipart/report;
report-type=delivery-status``) that reaches a mailbox is no customer's
letter. The letter it reports on is found by the Message-ID of its
returned copy (``message/rfc822`` or ``text/rfc822-headers``): an
EmailMessage becomes ``failed`` with the server's diagnostic, a mailing's
MailingRecipient ``bounced`` (its Mailing counts one more). Each
``Final-Recipient`` is counted in BouncedAddress: a 5.x.x status is a hard
bounce, a 4.x.x one soft; after ``bounce_limit`` hard bounces (settings) the
address is ``invalid``, which mailings skip and the client-base quality
check reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from engine.api import Documents

from . import accounts
from .outbox import MESSAGE
from .settings import DEFAULT_BOUNCE_LIMIT

RECIPIENT = "MailingRecipient"
MAILING = "Mailing"
BOUNCED = "BouncedAddress"


@dataclass
class Failure:
    address: str
    status: str  # 5.1.1
    action: str  # failed, delayed
    diagnostic: str

    @property
    def hard(self) -> bool:
        return self.status.startswith("5")


@dataclass
class Report:
    original_id: str | None
    failures: list[Failure] = field(default_factory=list)

    @property
    def diagnostic(self) -> str:
        return "; ".join(f"{f.address}: {f.status} {f.diagnostic}".strip() for f in self.failures)[
            :500
        ]


def is_report(message: Message) -> bool:
    return (
        message.get_content_type() == "multipart/report"
        and str(message.get_param("report-type") or "").lower() == "delivery-status"
    )


def _value(text: Any) -> str:
    """``rfc822; a@b.example`` → ``a@b.example``; ``smtp; 550 ...`` → ``550 ...``."""
    value = " ".join(str(text or "").split())
    kind, sep, rest = value.partition(";")
    return rest.strip() if sep and " " not in kind.strip() else value


def read(message: Message) -> Report | None:
    """The report's failed recipients and the Message-ID it reports on;
    None when the message is no delivery status report."""
    if not is_report(message):
        return None
    report = Report(None)
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/delivery-status":
            blocks = part.get_payload()
            if not isinstance(blocks, list):
                text = cast(bytes, part.get_payload(decode=True) or b"")
                blocks = [HeaderParser().parsestr(b.strip())
                          for b in text.decode("utf-8", "replace").split("\n\n") if b.strip()]  # fmt: skip
            for block in blocks:
                if not isinstance(block, Message):
                    continue
                recipient = _value(block.get("Final-Recipient") or block.get("Original-Recipient"))
                action = str(block.get("Action") or "").strip().lower()
                status = str(block.get("Status") or "").strip().split(" ")[0]
                if not recipient or "@" not in recipient:
                    continue
                if action in ("delivered", "relayed", "expanded"):
                    continue
                if not status:
                    status = "5.0.0" if action == "failed" else "4.0.0"
                diagnostic = _value(block.get("Diagnostic-Code"))[:400]
                report.failures.append(
                    Failure(recipient.strip().lower(), status, action, diagnostic)
                )
        elif kind == "message/rfc822" and report.original_id is None:
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                report.original_id = _message_id(inner[0].get("Message-ID"))
        elif kind == "text/rfc822-headers" and report.original_id is None:
            raw = cast(bytes, part.get_payload(decode=True) or b"")
            headers = BytesHeaderParser().parsebytes(raw)
            report.original_id = _message_id(headers.get("Message-ID"))
    return report


def _message_id(value: Any) -> str | None:
    text = " ".join(str(value or "").split())
    return text[:998] or None


def apply(docs: Documents, report: Report) -> dict[str, Any]:
    """Mark what the report says: the letter, the mailing's recipient, the
    addresses. Idempotent for one letter: a recipient already ``bounced``
    is not counted again."""
    registry, session, models = docs.registry, docs.session, docs.models
    done: dict[str, Any] = {"letters": 0, "recipients": 0, "addresses": 0}
    diagnostic = report.diagnostic
    bounced_now: set[str] = set()
    if report.original_id:
        if MESSAGE in registry.documents:
            table = models.table(MESSAGE)
            ids = session.execute(
                sa.select(table.c.id).where(
                    table.c.message_id == report.original_id, table.c.direction == "out",
                    table.c.status != "failed",
                )
            ).scalars().all()  # fmt: skip
            for message_id in ids:
                row = docs.get(MESSAGE, message_id)
                if row is not None:
                    row.status, row.error = "failed", diagnostic or row.error
                    done["letters"] += 1
        if RECIPIENT in registry.documents:
            table = models.table(RECIPIENT)
            rows = session.execute(
                sa.select(table.c.id, table.c.mailing_id, table.c.address).where(
                    table.c.message_id == report.original_id, table.c.status != "bounced"
                )
            ).all()
            for r in rows:
                changed = _rows(session.execute(
                    sa.update(table).where(table.c.id == r.id, table.c.status != "bounced")
                    .values(status="bounced", error=diagnostic or None)
                ))  # fmt: skip
                if changed and MAILING in registry.documents and r.mailing_id is not None:
                    mailings = models.table(MAILING)
                    session.execute(
                        sa.update(mailings).where(mailings.c.id == r.mailing_id)
                        .values(bounced=sa.func.coalesce(mailings.c.bounced, 0) + 1)
                    )  # fmt: skip
                    done["recipients"] += 1
                bounced_now.add((r.address or "").lower())
    if BOUNCED in registry.documents:
        limit = int(accounts.settings_of(registry).get("bounce_limit") or DEFAULT_BOUNCE_LIMIT)
        for f in report.failures:
            _count(docs, f, limit)
            done["addresses"] += 1
    return done


def _rows(result: Any) -> int:
    return int(cast(sa.CursorResult[Any], result).rowcount)


def _count(docs: Documents, failure: Failure, limit: int) -> None:
    session, models = docs.session, docs.models
    table = models.table(BOUNCED)
    address = failure.address[:320]
    now = docs.now()
    hard = 1 if failure.hard else 0
    soft = 0 if failure.hard else 1
    error = f"{failure.status} {failure.diagnostic}".strip()[:500]
    update = (
        sa.update(table).where(table.c.address == address)
        .values(
            hard_bounces=sa.func.coalesce(table.c.hard_bounces, 0) + hard,
            soft_bounces=sa.func.coalesce(table.c.soft_bounces, 0) + soft,
            last_error=error, last_at=now, updated_at=now,
        )
    )  # fmt: skip
    if not _rows(session.execute(update)):
        try:
            with session.begin_nested():
                docs.create(BOUNCED, {"address": address, "hard_bounces": hard,
                                      "soft_bounces": soft, "last_error": error, "last_at": now})  # fmt: skip
        except IntegrityError:  # another mailbox's sync counted it meanwhile
            session.execute(update)
    session.execute(
        sa.update(table)
        .where(
            table.c.address == address, table.c.hard_bounces >= limit, table.c.invalid.isnot(True)
        )
        .values(invalid=True)
    )
