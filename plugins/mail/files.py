"""Attachment files, kept by their SHA-256 in one folder: a file attached to
many letters is stored once, and a letter's row names its files by hash.

The folder is ``plugins: {mail: {attachments: PATH}}`` (relative to the
configuration's folder), by default ``instance/mail`` beside config.yaml.
Several machines that serve one CRM share that folder (a network mount).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

HASH = re.compile(r"^[0-9a-f]{64}$")


def folder(registry: Any) -> Path:
    settings = registry.plugins.get("mail") or {}
    base = Path(str(registry.settings.get("config_dir") or "."))
    configured = settings.get("attachments")
    path = base / configured if configured else base / "instance" / "mail"
    return path


def store(registry: Any, data: bytes) -> str:
    """Keep ``data``; its SHA-256, by which it is found again. Written to a
    temporary file and renamed, so a crash never leaves half a file."""
    digest = hashlib.sha256(data).hexdigest()
    target = path_of(registry, digest)
    if target.exists():
        return digest
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return digest


def path_of(registry: Any, digest: str) -> Path:
    if not HASH.match(digest):
        raise ValueError("not a SHA-256")
    return folder(registry) / digest[:2] / digest


def read(registry: Any, digest: str) -> bytes | None:
    try:
        return path_of(registry, digest).read_bytes()
    except (OSError, ValueError):
        return None
