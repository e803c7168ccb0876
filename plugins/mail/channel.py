"""``email`` as a channel of the processes plugin's notifications and
automations: ``notify: {channel: email, to: customer.email, template: order_shipped}``.

The processes plugin queues ``notify.email`` (it runs a plugin's own
``notify.<channel>`` job when there is one); this job writes the letter —
from the named EmailTemplate, rendered over the record in the
configuration's language, or from the notification's ``subject`` and
``text`` — and queues it through the outbox like any letter, so that it is
kept, retried, and (to a client) shown on the customer's timeline. Letters
to the CRM's own users (``to: owner``, ``{role: R}``) go to their addresses
and stay off the customers' timelines.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from engine.api import USER, JobContext, JobError, ValidationFailed, speaking, system_documents

from . import lettering, outbox

NOTIFY_JOB = "notify.email"


def notify_job(ctx: JobContext, payload: Mapping[str, Any]) -> Any:
    docs = system_documents(ctx)
    registry = ctx.registry
    doctype = registry.documents.get(str(payload.get("doctype") or ""))
    doc = (
        docs.get(doctype.name, int(payload["doc_id"]))
        if doctype and payload.get("doc_id")
        else None
    )
    users = [int(u) for u in payload.get("users") or ()]
    if users:
        table = ctx.models.table(USER)
        rows = ctx.session.execute(
            sa.select(table.c.email).where(table.c.id.in_(users), table.c.email.is_not(None))
        )
        to = ", ".join(r[0] for r in rows if r[0])
    else:
        to = str(payload.get("to") or "")
    if not to:
        return {"skipped": "no address"}
    name = payload.get("template")
    html = None
    with speaking(registry.locale):
        if name:
            template = lettering.find(docs, str(name), registry.locale)
            if template is None:
                raise JobError(f"there is no active email template named {name!r}", retry=False)
            letter = lettering.render_template(docs, template, doctype, doc)
            subject, text, html = letter.subject, letter.text, letter.html
        else:
            text = str(payload.get("text") or "")
            subject = str(payload.get("subject") or " ".join(text.split())[:80])
        try:
            message = outbox.queue(
                docs, account_id=None, to=to, subject=subject, text=text, html=html,
                about=(doctype, doc) if doc is not None else None, to_client=not users,
            )  # fmt: skip
        except ValidationFailed as exc:
            problems = "; ".join(f"{k}: {v}" for k, v in exc.errors.items())
            raise JobError(f"the letter cannot be sent: {problems}", retry=False) from exc
    return {"message": message.id}
