"""An incoming letter's bytes as the fields of an EmailMessage: headers
decoded from any charset (RFC 2047 encoded-words, and raw 8-bit bytes that
some mailers still send: tried as UTF-8, then as the letter's own charset,
then as windows-1251), the plain text, the HTML (sanitized), attachments
and the delivery report of a bounce. A malformed letter still gives what
can be read from it; nothing here raises on bad input.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from email import message_from_bytes
from email.header import Header, decode_header
from email.message import Message
from email.policy import compat32
from email.utils import getaddresses, parseaddr, parsedate_to_datetime

from . import bounces, sanitize, threads

MAX_TEXT = 1_000_000
FALLBACK = "windows-1251"
_SPACES = re.compile(r"\s+")


@dataclass
class Part:
    filename: str
    content_type: str
    data: bytes


@dataclass
class Parsed:
    message_id: str
    from_name: str = ""
    from_address: str = ""
    to: str = ""
    cc: str = ""
    subject: str = ""
    date: dt.datetime | None = None
    in_reply_to: str | None = None
    references: str | None = None
    text: str = ""
    html: str | None = None
    attachments: list[Part] = field(default_factory=list)
    size: int = 0
    report: bounces.Report | None = None
    truncated: bool = False

    @property
    def sender(self) -> str:
        return display(self.from_name, self.from_address)

    @property
    def recipients(self) -> list[str]:
        return [a.lower() for _, a in getaddresses([self.to, self.cc]) if "@" in a]


def display(name: str, address: str) -> str:
    """``Name <address>`` as a person reads it (not RFC 2047-encoded, unlike
    ``formataddr``), the name quoted when it holds a special character."""
    name = " ".join(name.split())
    if not address:
        return name
    if not name:
        return address
    if re.search(r'[,;<>"@()\[\]:\\]', name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"


def _bytes_text(data: bytes, charset: str | None) -> str:
    for name in (charset, "utf-8"):
        if not name:
            continue
        try:
            return data.decode(name)
        except (LookupError, UnicodeDecodeError):
            continue
    try:
        return data.decode(FALLBACK)
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace")


def _unescape(text: str, charset: str | None) -> str:
    """Raw 8-bit bytes in a header arrive as surrogate escapes: decode them."""
    if not any("\udc80" <= ch <= "\udcff" for ch in text):
        return text
    raw = text.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return _bytes_text(raw, charset if charset and charset.lower() != "utf-8" else FALLBACK)


def header(message: Message, name: str, charset: str | None = None) -> str:
    """A header's text, decoded, on one line."""
    try:
        value = message.get(name)
    except Exception:  # a header the parser cannot give back
        return ""
    if value is None:
        return ""
    if isinstance(value, Header):  # raw 8-bit bytes: compat32 keeps them as unknown-8bit
        try:
            parts = decode_header(value)
        except Exception:
            return ""
        raw = b"".join(c if isinstance(c, bytes) else c.encode("utf-8", "surrogateescape")
                       for c, _ in parts)  # fmt: skip
        return _SPACES.sub(" ", header_text(_bytes_8bit(raw, charset))).strip()
    return _SPACES.sub(" ", header_text(_unescape(str(value), charset))).strip()


def _bytes_8bit(raw: bytes, charset: str | None) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return _bytes_text(raw, charset if charset and charset.lower() != "utf-8" else FALLBACK)


def header_text(text: str, charset: str | None = None) -> str:
    """Text with RFC 2047 encoded-words decoded."""
    try:
        parts = decode_header(text)
    except Exception:  # a broken encoded-word: the text as it is
        return text
    out: list[str] = []
    for chunk, cs in parts:
        if isinstance(chunk, bytes):
            out.append(_bytes_text(chunk, cs or charset))
        else:
            out.append(chunk)
    return "".join(out)


def _addresses(message: Message, name: str, charset: str | None) -> str:
    text = header(message, name, charset)
    pairs = [(n, a) for n, a in getaddresses([text]) if a or n]
    return ", ".join(display(n, a) for n, a in pairs)[:20000]


def _payload_text(part: Message) -> str:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if not isinstance(data, bytes):
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    return _bytes_text(data, part.get_content_charset())


def _filename(part: Message, charset: str | None) -> str | None:
    try:
        name = part.get_filename()
    except Exception:
        name = None
    if name is None:
        return None
    text = _unescape(str(name), charset)
    if "=?" in text:
        with contextlib.suppress(Exception):
            text = "".join(
                _bytes_text(c, cs) if isinstance(c, bytes) else c for c, cs in decode_header(text)
            )
    text = re.sub(r"[\x00-\x1f\x7f/\\]", "_", text).strip() or "attachment"
    return text[:255]


def _walk(part: Message, found: Parsed, charset: str | None, depth: int = 0) -> None:
    if depth > 20:
        return
    kind = part.get_content_type()
    disposition = (part.get_content_disposition() or "").lower()
    name = _filename(part, charset)
    if kind == "message/rfc822" and depth > 0:
        inner = part.get_payload()
        first = inner[0] if isinstance(inner, list) and inner else None
        data = first.as_bytes() if isinstance(first, Message) else b""
        found.attachments.append(Part(name or "message.eml", "message/rfc822", data))
        return
    if part.is_multipart():
        payload = part.get_payload()
        if isinstance(payload, list):
            for sub in payload:
                if isinstance(sub, Message):
                    _walk(sub, found, charset, depth + 1)
        return
    if disposition == "attachment" or (name and kind not in ("text/plain", "text/html")):
        content: object = None
        with contextlib.suppress(Exception):
            content = part.get_payload(decode=True)
        found.attachments.append(
            Part(name or "attachment", kind[:255], content if isinstance(content, bytes) else b"")
        )
        return
    if kind == "text/plain" and not found.text:
        found.text = _payload_text(part)[:MAX_TEXT]
    elif kind == "text/html" and found.html is None:
        found.html = _payload_text(part)


def parse(raw: bytes, *, size: int | None = None, truncated: bool = False) -> Parsed:
    """The letter in ``raw`` (its header only when ``truncated``: too large to download)."""
    try:
        message = message_from_bytes(raw, policy=compat32)
    except Exception:  # the parser is lenient; this is the very last resort
        message = Message()
        message.set_payload(raw.decode("utf-8", "replace"))
    charset = message.get_content_charset() if not message.is_multipart() else None
    message_id = " ".join(header(message, "Message-ID").split())[:998]
    if not threads.MESSAGE_ID.fullmatch(message_id):
        found_ids = threads.ids(message_id)
        message_id = found_ids[0] if found_ids else ""
    if not message_id:
        # a letter without one gets a stable id of its own, so that it is still imported once
        digest = hashlib.sha256(raw[:65536]).hexdigest()[:40]
        message_id = f"<{digest}@no-message-id.crm>"
    name, address = parseaddr(header(message, "From", charset))
    found = Parsed(
        message_id=message_id,
        from_name=name[:200],
        from_address=address.strip()[:320],
        to=_addresses(message, "To", charset),
        cc=_addresses(message, "Cc", charset),
        subject=header(message, "Subject", charset)[:998],
        size=size if size is not None else len(raw),
        truncated=truncated,
    )
    try:
        date = parsedate_to_datetime(header(message, "Date"))
        found.date = date if date.tzinfo else date.replace(tzinfo=dt.UTC)
    except (TypeError, ValueError, IndexError):
        found.date = None
    reply = threads.ids(header(message, "In-Reply-To"))
    found.in_reply_to = reply[-1] if reply else None
    refs = threads.ids(header(message, "References"))
    found.references = " ".join(refs)[-9000:] or None
    if truncated:
        return found
    try:
        found.report = bounces.read(message)
        _walk(message, found, charset)
    except Exception:  # a body that breaks the parser: keep it as text
        found.text = raw.decode("utf-8", "replace")[:MAX_TEXT]
    if found.html is not None:
        found.html = sanitize.clean(found.html) or None
    return found
