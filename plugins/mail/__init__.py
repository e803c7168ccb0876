"""Mail: mailboxes, letters sent from records, incoming mail in threads, mailings.

Turned on with ``plugins: {mail: {...settings}}`` in a config (settings.py).
Its document types — EmailAccount, EmailMessage, EmailTemplate, Mailing,
MailingRecipient, Unsubscribe, BouncedAddress — come as the metadata layer
``mail`` (metadata/). Letters go out through the outbox (outbox.py, smtp.py)
from mailboxes (accounts.py) and are kept on the customer's timeline as
interactions (interactions.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.api import hookimpl

from .settings import MailSettings

METADATA = Path(__file__).parent / "metadata"


def _on(registry: Any) -> bool:
    return "mail" in registry.plugins


@hookimpl
def crm_metadata_layers() -> list[tuple[str, Path]]:
    return [("mail", METADATA)] if METADATA.is_dir() else []


@hookimpl
def crm_settings_schema() -> Any:
    return MailSettings


@hookimpl(optionalhook=True)
def crm_notification_channels() -> list[str]:
    return ["email"]


# --- jobs ------------------------------------------------------------------------------------


@hookimpl
def crm_jobs() -> dict[str, Any]:
    from . import channel, inbox, mailings, outbox

    own = {outbox.SEND_JOB: outbox.send_job, channel.NOTIFY_JOB: channel.notify_job}
    return {**own, **inbox.JOBS, **mailings.JOBS}


@hookimpl
def crm_schedules() -> list[tuple[str, int]]:
    from . import inbox, mailings

    return [*inbox.SCHEDULES, *mailings.SCHEDULES]


# --- views -----------------------------------------------------------------------------------


@hookimpl
def crm_register_views(appbuilder: Any, registry: Any) -> None:
    if not _on(registry):
        return
    from . import compose, inbox, mailings

    for part in (compose, inbox, mailings):
        part.register(appbuilder, registry)


@hookimpl
def crm_record_actions(doctype: Any, doc: Any, principal: Any) -> list[Any]:
    from . import compose, inbox, mailings

    return [
        a
        for part in (compose, inbox, mailings)
        for a in part.record_actions(doctype, doc, principal)
    ]


@hookimpl
def crm_record_sections(models: Any, doctype: Any, doc: Any, principal: Any) -> list[Any]:
    """A letter's status and attachments; a mailing's progress and buttons."""
    if not _on(models.registry):
        return []
    from . import compose, mailings

    return [
        s
        for part in (compose, mailings)
        for s in part.record_sections(models, doctype, doc, principal)
    ]


@hookimpl
def crm_send_email(message: Any, settings: dict[str, Any]) -> str | None:
    """The engine's own email (``crm.email``) goes out through the
    configuration's mailbox, when config.yaml sets one up."""
    from . import accounts, outbox

    own = settings.get("mail")
    if own is None:
        return None
    account = accounts.from_settings(own)
    if account is None or account.smtp is None:
        return None
    if not message.get("From") or message["From"] == "crm@localhost":
        del message["From"]
        message["From"] = account.sender
    from .smtp import Connections

    pool = Connections()
    try:
        pool.send(account.smtp, message, account.address, outbox.all_recipients(message))
    finally:
        pool.close()
    return str(message["Message-ID"])
