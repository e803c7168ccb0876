"""Mail: mail accounts, sending, IMAP intake and mailings.

Turned on with ``plugins: {mail: {...settings}}`` in a config. It will bring
mail accounts (SMTP for sending, IMAP for receiving), delivery of outgoing
email through the outbox, intake of incoming mail that is matched to
customers by address, and mailings to a segment with unsubscribe handling.
Its document types (account, message, mailing) will come as a metadata layer
from the ``metadata/`` folder beside this file.
"""

from __future__ import annotations

from pathlib import Path

from engine.api import hookimpl

METADATA = Path(__file__).parent / "metadata"


@hookimpl
def crm_metadata_layers() -> list[tuple[str, Path]]:
    return [("mail", METADATA)] if METADATA.is_dir() else []
