"""Threads: letters of one conversation share ``thread``, the id of its
first letter (as outbox.queue does for a reply).

A letter joins the thread of a letter it names in ``In-Reply-To`` or
``References``. When the chain is broken (a mail client that drops those
headers, a reply written as a new letter), it joins by subject as mail
clients do: the same subject once ``Re:``, ``Fwd:``, ``Ответ:`` and the like
are taken off (``topic``), between the same two addresses, within
:data:`WINDOW` of the letter before.
"""

from __future__ import annotations

import datetime as dt
import re
from email.utils import getaddresses
from typing import Any

#: a letter joins a thread by subject only if its last letter is this recent
WINDOW = dt.timedelta(days=45)
PREFIX = re.compile(
    r"^\s*(?:(?:re|fwd?|aw|wg|sv|vs|tr|ответ|отв|пересл|переслано|rif|res)"
    r"\s*(?:\[\d+\]|\(\d+\))?\s*[:：]\s*|\[[^\]]{0,40}\]\s*)+",
    re.IGNORECASE,
)
MESSAGE_ID = re.compile(r"<[^<>\s]{1,990}>")


def topic(subject: str | None) -> str:
    """A subject as threads compare it: without reply and forward prefixes
    (``Re:``, ``RE[2]:``, ``Fwd:``, ``Fw:``, ``Ответ:``) and list tags, spaces
    collapsed, lower case; at most 255 characters."""
    text = " ".join((subject or "").split())
    while True:
        stripped = PREFIX.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    return text.strip().lower()[:255]


def ids(*headers: str | None) -> list[str]:
    """The Message-IDs named by ``References`` / ``In-Reply-To`` values."""
    found: list[str] = []
    for value in headers:
        for m in MESSAGE_ID.findall(value or ""):
            if m not in found:
                found.append(m)
    return found


def correspondents(row: Any) -> frozenset[str]:
    """The addresses of a letter, lower case: sender and recipients."""
    lines = [getattr(row, "from_address", None) or "", getattr(row, "to", None) or "",
             getattr(row, "cc", None) or ""]  # fmt: skip
    return frozenset(a.strip().lower() for _, a in getaddresses(lines) if "@" in a)


def same_pair(a: frozenset[str], b: frozenset[str], own: str) -> bool:
    """Two letters are between the same correspondents: they share an
    address besides the mailbox's own."""
    return bool((a & b) - {own.lower()})
