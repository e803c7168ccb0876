"""SMS: the outbox, delivery receipts, the customer's timeline, the ``sms``
channel of notifications and automations.

An SMS is written as an SmsMessage (status ``queued``) together with an
``sms.send`` job, in the transaction of the page or job that writes it
(:func:`queue`); nothing is written when what was given is wrong. The job
hands the text to the enabled SMS provider (the engine's ``crm_send_sms``
hook: the first plugin that answers sends it) with the job's key
(``sms.send.<message id>``) as the client's reference, so that a provider
that sees the same reference twice (a worker killed after the provider
accepted the message but before the CRM recorded it) delivers it once.

- the provider answers with its id: the message is ``sent`` (provider,
  provider id, time), and, about a customer, a done Interaction of kind
  ``sms`` on the customer's timeline;
- the provider refuses for good (``engine.api.JobError(retry=False)``):
  ``failed``, the provider's answer shown on the message;
- anything else (the gateway is down, a timeout) is tried again by the job
  runner with growing waits; after the last attempt the message is
  ``failed`` with the last error.

A number that opted out (SmsOptOut) is never sent to: the compose form
refuses it; a notification to it is kept as a ``failed`` message saying so.
Delivery receipts (:func:`receipt`) move a sent message to ``delivered`` or
``failed``; a delivered message never moves back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.api import (
    USER,
    Documents,
    JobContext,
    JobError,
    Problem,
    ValidationFailed,
    enqueue,
    gettext,
    ref_links,
    render,
    speaking,
    system_documents,
)

from . import numbers, settings

MESSAGE = "SmsMessage"
TEMPLATE = "SmsTemplate"
OPT_OUT = "SmsOptOut"
INTERACTION = "Interaction"
SEND_JOB = "sms.send"
RECEIPT_JOB = "sms.receipt"
NOTIFY_JOB = "notify.sms"
#: attempts of a provider that fails for now before the message counts as failed
MAX_ATTEMPTS = 8
#: the longest text: ten parts of a concatenated SMS
MAX_SEGMENTS = 10
#: SmsMessage ref fields that are not about the message's subject
NOT_LINKS = {"user", "interaction"}
STATUSES = ("delivered", "failed")

# --- how many SMS a text takes -------------------------------------------------------------

GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: GSM 03.38's extension table: each takes two characters (an escape and itself)
GSM7_EXTENDED = set("^{}\\[~]|€\f")


@dataclass(frozen=True)
class Size:
    """A text as SMS: its encoding (``GSM-7`` or ``UCS-2``), its length in
    that encoding's characters, the parts it is sent in and how many
    characters one part holds."""

    encoding: str
    length: int
    segments: int
    per_segment: int


def size(text: str) -> Size:
    """GSM-7: 160 characters in one SMS, 153 in each part of a longer one;
    any other character makes it UCS-2: 70, and 67 per part."""
    if all(c in GSM7 or c in GSM7_EXTENDED for c in text):
        length = sum(2 if c in GSM7_EXTENDED else 1 for c in text)
        single, multi, encoding = 160, 153, "GSM-7"
    else:
        length = len(text.encode("utf-16-le")) // 2
        single, multi, encoding = 70, 67, "UCS-2"
    if length <= single:
        return Size(encoding, length, 1 if length else 0, single)
    return Size(encoding, length, -(-length // multi), multi)


# --- who may get one ---------------------------------------------------------------------


def opted_out(docs: Documents, number: str | None) -> bool:
    if not number or OPT_OUT not in docs.registry.documents:
        return False
    table = docs.models.table(OPT_OUT)
    found = docs.session.execute(sa.select(table.c.id).where(table.c.number == number).limit(1))
    return found.first() is not None


def user_phone_field(registry: Any) -> str | None:
    """The User attribute SMS to users go to: ``mobile`` when it is a phone
    field, else the User type's first phone field; None without one."""
    fields = registry.documents[USER].fields
    own = fields.get("mobile")
    if own is not None and own.type == "phone":
        return "mobile"
    return next((f.name for f in fields.values() if f.type == "phone"), None)


def links(registry: Any, doctype: Any, doc: Any) -> dict[str, Any]:
    """The ref fields a message about ``doc`` fills in (``engine.api.ref_links``)."""
    return ref_links(registry, MESSAGE, doctype, doc, NOT_LINKS)


# --- writing one ---------------------------------------------------------------------------


def check_text(text: str, errors: dict[str, str]) -> None:
    if not text.strip():
        errors["text"] = gettext("is required")
        return
    found = size(text)
    if found.segments > MAX_SEGMENTS:
        errors["text"] = gettext(
            "is %(length)d characters long: an SMS takes at most %(limit)d (%(parts)d parts)",
            length=found.length, limit=found.per_segment * MAX_SEGMENTS, parts=MAX_SEGMENTS,
        )  # fmt: skip


def queue(
    docs: Documents,
    number: str,
    text: str,
    about: tuple[Any, Any] | None = None,
    user: int | None = None,
    *,
    to_client: bool = True,
    keep_refusal: bool = False,
) -> Any:
    """Write an SMS to ``number`` and queue it, in ``docs``' transaction;
    the new SmsMessage. ``about`` is the ``(doctype, record)`` it is written
    from (the message is filed against it and its customer unless
    ``to_client`` is False: a note to the CRM's own users), ``user`` the
    responsible user (default: ``docs``' principal). Bad input raises
    ValidationFailed, by field (``number``, ``text``), before anything is
    written. A number that opted out is refused the same way, or, with
    ``keep_refusal`` (automations), kept as a ``failed`` message that says
    so and never sent."""
    registry = docs.registry
    errors: dict[str, str] = {}
    region = settings.of(registry)["region"]
    e164 = numbers.normalize(number, region)
    if e164 is None:
        errors["number"] = (
            gettext("%(number)s is not a phone number", number=number[:40])
            if (number or "").strip()
            else gettext("is required")
        )
    text = (text or "").replace("\r\n", "\n")
    check_text(text, errors)
    refused = e164 is not None and opted_out(docs, e164)
    if refused and not keep_refusal:
        errors["number"] = gettext("%(number)s has opted out of SMS", number=numbers.shown(e164))
    if errors:
        raise ValidationFailed(errors)
    values: dict[str, Any] = {
        "direction": "out",
        "status": "queued",
        "number": e164,
        "text": text,
    }
    who = user if user is not None else docs.principal.user_id
    if who is not None:
        values["user"] = who
    if about is not None:
        doctype, doc = about
        values |= {"doctype": doctype.name, "doc_id": doc.id}
        if to_client:
            values |= links(registry, doctype, doc)
    if refused:
        values |= {"status": "failed", "error": gettext("the number has opted out of SMS")}
    writer = Documents.for_principal(
        docs.models, docs.session, docs.principal, docs.pm, trusted=True
    )
    message = writer.create(MESSAGE, values)
    if not refused:
        enqueue(docs.session, SEND_JOB, {"message": message.id}, key=f"{SEND_JOB}.{message.id}")
    return message


# --- sending -------------------------------------------------------------------------------


def deliver(pm: Any, to: str, text: str, plugins: Mapping[str, Any], key: str) -> tuple[str, str]:
    """Ask the providers in the order the hook calls them (``crm_send_sms``,
    first result); the name of the plugin that sent it and its message id.
    JobError when no enabled plugin sends SMS."""
    for impl in reversed(pm.hook.crm_send_sms.get_hookimpls()):
        if getattr(impl, "hookwrapper", False) or getattr(impl, "wrapper", False):
            continue
        sent = impl.function(to=to, text=text, settings=dict(plugins), key=key)
        if sent is not None:
            return str(impl.plugin_name), str(sent)
    raise JobError("no enabled plugin sends SMS: turn on a provider such as `simulator`, "
                   "`sms_gateway` or `smpp` beside `telephony`", retry=False)  # fmt: skip


def send_job(ctx: JobContext, payload: Mapping[str, Any]) -> Any:
    """``sms.send``: ``{message: id}``. Sends a queued SMS once."""
    docs = system_documents(ctx)
    model = ctx.models.cls(MESSAGE)
    row = ctx.session.execute(
        sa.select(model).where(model.id == int(payload.get("message") or 0)).with_for_update()
    ).scalar_one_or_none()
    if row is None or row.status != "queued":
        return None  # deleted, or sent by an earlier attempt: nothing to do
    attempts = ctx.attempt  # what an earlier attempt wrote was rolled back with it
    if opted_out(docs, row.number):
        return _failed(docs, row, gettext_in(ctx, "the number has opted out of SMS"), attempts)
    try:
        provider, provider_id = deliver(ctx.pm, row.number, row.text, ctx.registry.plugins, ctx.key)
    except JobError as exc:
        if exc.retry and ctx.attempt < MAX_ATTEMPTS:
            raise
        return _failed(docs, row, str(exc), attempts)
    except Exception as exc:
        if ctx.attempt < MAX_ATTEMPTS:
            raise  # the runner tries again later, with backoff
        return _failed(docs, row, str(exc) or type(exc).__name__, attempts)
    docs.update(MESSAGE, row, {
        "status": "sent", "provider": provider[:64], "provider_id": provider_id[:128],
        "sent_at": ctx.now(), "attempts": attempts, "error": None,
    })  # fmt: skip
    record_interaction(docs, row)
    return {"sent": provider_id, "provider": provider}


send_job.max_attempts = MAX_ATTEMPTS  # type: ignore[attr-defined]


def gettext_in(ctx: JobContext, message: str) -> str:
    with speaking(ctx.registry.locale):
        return gettext(message)


def _failed(docs: Documents, row: Any, error: str, attempts: int) -> dict[str, str]:
    docs.update(MESSAGE, row, {"status": "failed", "error": error[:500], "attempts": attempts})
    return {"failed": error}


# --- receipts --------------------------------------------------------------------------------


def receipt(
    docs: Documents, provider: str, provider_id: str, status: str, error: Any, at: Any
) -> Any:
    """A delivery receipt for the SMS the provider knows as ``provider_id``:
    ``delivered`` or ``failed`` (``error`` says why). The SmsMessage, or
    None when nothing changed: an unknown id, a repeated receipt, one that
    would move a delivered message back. ValueError for another status."""
    if status not in STATUSES:
        raise ValueError(f"a receipt's status is one of {', '.join(STATUSES)}, not {status!r}")
    if not provider_id:
        return None
    model = docs.models.cls(MESSAGE)
    row = docs.session.execute(
        sa.select(model)
        .where(model.provider_id == str(provider_id)[:128], model.provider == provider[:64])
        .with_for_update()
    ).scalar_one_or_none()
    if row is None or row.status == status or row.status == "delivered":
        return None
    values: dict[str, Any] = {"status": status}
    moment = at if isinstance(at, dt.datetime) else docs.now()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    if status == "delivered":
        values |= {"delivered_at": moment, "error": None}
    else:
        values["error"] = (str(error) if error else "undelivered")[:500]
    docs.update(MESSAGE, row, values)
    return row


def receipt_job(ctx: JobContext, payload: Mapping[str, Any]) -> Any:
    """``sms.receipt``: ``{provider, provider_id, status, error?, at?}`` —
    a receipt a provider reports later (the simulator's "delivered")."""
    at = dt.datetime.fromisoformat(payload["at"]) if payload.get("at") else ctx.now()
    row = receipt(
        system_documents(ctx), str(payload.get("provider") or ""),
        str(payload.get("provider_id") or ""), str(payload.get("status") or ""),
        payload.get("error"), at,
    )  # fmt: skip
    if row is None and payload.get("wait") and not _known(ctx, payload):
        # a receipt that came before its message was recorded as sent: try again later
        raise JobError(f"no SMS with the id {payload.get('provider_id')!r} (yet)")
    return {"message": row.id if row is not None else None}


def _known(ctx: JobContext, payload: Mapping[str, Any]) -> bool:
    model = ctx.models.cls(MESSAGE)
    found = ctx.session.execute(
        sa.select(model.id).where(
            model.provider == str(payload.get("provider") or ""),
            model.provider_id == str(payload.get("provider_id") or "")[:128],
        )
    )
    return found.first() is not None


# --- on the customer's timeline --------------------------------------------------------------


def interaction_applies(registry: Any) -> bool:
    d = registry.documents.get(INTERACTION)
    message = registry.documents.get(MESSAGE)
    if d is None or message is None or "interaction" not in message.fields:
        return False
    kind = d.fields.get("kind")
    return kind is not None and "sms" in (kind.values or {}) and d.statuses is not None


def record_interaction(docs: Documents, row: Any) -> Any:
    """The done Interaction of kind sms for a sent SMS about a customer
    (made once); None when the configuration keeps none."""
    from .calls import record_done

    registry = docs.registry
    if not interaction_applies(registry) or getattr(row, "interaction_id", None) is not None:
        return None
    if getattr(row, "customer_id", None) is None:
        return None
    d = registry.documents[INTERACTION]
    excerpt = " ".join((row.text or "").split())
    with speaking(registry.locale):
        subject = gettext("SMS to %(number)s", number=numbers.shown(row.number))
    values: dict[str, Any] = {
        "kind": "sms",
        "subject": subject[:255],
        "planned_at": row.sent_at or docs.now(),
    }
    for name in ("customer", "contact", "interest"):
        value = getattr(row, f"{name}_id", None)
        if name in d.fields and value is not None:
            values[name] = value
    if "duration" in d.fields:
        values["duration"] = 0
    if "manager" in d.fields and row.user_id is not None:
        values["manager"] = row.user_id
    if "result" in d.fields:
        values["result"] = f"→ {numbers.shown(row.number)}: {excerpt}"[:2000]
    made = record_done(docs, INTERACTION, values)
    docs.update(MESSAGE, row, {"interaction": made.id})
    return made


# --- the `sms` channel -----------------------------------------------------------------------


def find_template(docs: Documents, name: str) -> Any | None:
    cls = docs.models.cls(TEMPLATE)
    return docs.session.execute(
        sa.select(cls).where(cls.name == name, cls.active.is_(True)).limit(1)
    ).scalar_one_or_none()


def render_text(docs: Documents, source: str, doctype: Any, doc: Any) -> str:
    """A template over a record (``doc``, its fields by name, ``user``)."""
    if doc is None or doctype is None:
        return str(render(source, {"doc": None, "now": docs.now(), "user": docs.user_view()}))
    view = docs.view(doctype, doc)
    return str(render(source, docs.expression_context(view, doctype.fields, source, template=True)))


def notify_job(ctx: JobContext, payload: Mapping[str, Any]) -> Any:
    """``notify.sms``: ``{to | users, text | template, doctype, doc_id}``
    from the processes plugin's notifications: one SMS per number, written
    through the outbox like any other."""
    docs = system_documents(ctx)
    registry = ctx.registry
    doctype = registry.documents.get(str(payload.get("doctype") or ""))
    doc = (
        docs.get(doctype.name, int(payload["doc_id"]))
        if doctype and payload.get("doc_id")
        else None
    )
    users = [int(u) for u in payload.get("users") or ()]
    targets: list[tuple[str, int | None]] = []
    if users:
        field = user_phone_field(registry)
        if field is None:
            raise JobError("users have no phone number for SMS: add `mobile: {type: phone}` "
                           "under `attributes: User:`", retry=False)  # fmt: skip
        table = ctx.models.table(USER)
        rows = ctx.session.execute(
            sa.select(table.c.id, table.c[field]).where(table.c.id.in_(users))
        )
        targets = [(str(r[1]), int(r[0])) for r in rows if r[1]]
    elif payload.get("to"):
        targets = [(str(payload["to"]), None)]
    if not targets:
        return {"skipped": "no number"}
    name = payload.get("template")
    with speaking(registry.locale):
        if name:
            template = find_template(docs, str(name))
            if template is None:
                raise JobError(f"there is no active SMS template named {name!r}", retry=False)
            try:
                text = render_text(docs, template.text, doctype, doc)
            except Exception as exc:
                raise JobError(f"the SMS template {name!r} cannot be filled in: {exc}",
                               retry=False) from exc  # fmt: skip
        else:
            text = str(payload.get("text") or "")
        made = []
        for number, user_id in targets:
            try:
                message = queue(
                    docs, number, text, about=(doctype, doc) if doc is not None else None,
                    user=user_id, to_client=not users, keep_refusal=True,
                )  # fmt: skip
            except ValidationFailed as exc:
                problems = "; ".join(f"{k}: {v}" for k, v in exc.errors.items())
                raise JobError(f"the SMS cannot be sent: {problems}", retry=False) from exc
            made.append(message.id)
    return {"messages": made}


JOBS: dict[str, Any] = {SEND_JOB: send_job, RECEIPT_JOB: receipt_job, NOTIFY_JOB: notify_job}
SCHEDULES: list[tuple[str, int]] = []


# --- checking a configuration ----------------------------------------------------------------


def _notifications(node: Any, found: list[tuple[Any, Any]]) -> None:
    """Every ``notify:`` map under ``node`` (a section's body), with its loc."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "notify" and isinstance(value, Mapping):
                loc = node.value_loc(key) if hasattr(node, "value_loc") else None
                found.append((value, loc))
            else:
                _notifications(value, found)
    elif isinstance(node, list):
        for item in node:
            _notifications(item, found)


def check(registry: Any) -> list[Any]:
    """An SMS notification to users (``to: owner``, a user field, a role)
    needs a phone field on the User type to send it to."""
    if user_phone_field(registry) is not None:
        return []
    user_fields = {
        f.name for d in registry.documents.values() for f in d.fields.values()
        if f.type == "ref" and f.to == USER
    }  # fmt: skip
    problems: list[Any] = []
    for section in ("automations", "processes"):
        for entry in registry.section(section).values():
            found: list[tuple[Any, Any]] = []
            _notifications(entry.body, found)
            for raw, loc in found:
                if raw.get("channel") != "sms":
                    continue
                to = raw.get("to")
                if to == "owner" or isinstance(to, Mapping) or to in user_fields:
                    where = raw.value_loc("to") if hasattr(raw, "value_loc") else loc
                    problems.append(Problem(
                        where or entry.loc,
                        "users have no phone number for `sms`: add `mobile: {type: phone}` "
                        "under `attributes: User:`, or send to a field or a template of the number",
                    ))  # fmt: skip
    return problems


# --- the pages ---------------------------------------------------------------------------------


def register(appbuilder: Any, registry: Any) -> None:
    from . import sms_compose

    sms_compose.register(appbuilder, registry)


def record_actions(doctype: Any, doc: Any, principal: Any) -> list[Any]:
    from . import sms_compose

    return sms_compose.record_actions(doctype, doc, principal)


def record_sections(models: Any, doctype: Any, doc: Any, principal: Any) -> list[Any]:
    from . import sms_compose

    return sms_compose.record_sections(models, doctype, doc, principal)
