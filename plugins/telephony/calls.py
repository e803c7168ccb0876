"""A call's life: provider events → the Call record, in any order, once each.

Every event a provider reports (api.report) lands here. The Call is found by
the provider's call id (made on the first event seen, whichever it is) and
locked for the change, so that two events of one call arriving at once on
two web workers are applied one after the other. Each event is logged once
in CallEvent under its id (``provider:event_id``, unique): a duplicate is a
no-op. Events may arrive out of order — a hangup before its answer, a
ringing after the hangup — and the record comes out the same: times are
only filled in, never moved back; a call that has ended stays ended.

When a call ends:

- an answered call about a customer becomes a done Interaction of kind
  ``call`` on the customer's timeline (where the configuration has one);
- a missed incoming call becomes a call-back task for the owner of the
  caller's record (else the user it rang), due ``callback_minutes`` later:
  a Task where the processes plugin keeps tasks, else a planned Interaction
  of kind call (setting ``missed_call_task``).

Then the ``crm_call_event`` hook lets other plugins react.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import sqlalchemy as sa
import sqlalchemy.dialects.postgresql
import sqlalchemy.dialects.sqlite

from engine.api import USER, Documents, ValidationFailed, gettext, speaking

from . import lookup, numbers, once, settings
from .api import ENDINGS, KINDS, Event

INTERACTION = "Interaction"
TASK = "Task"


def aware(moment: dt.datetime | None) -> dt.datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def apply(docs: Documents, event: Event) -> Any:
    """Apply one event (see the module's text); the Call, or None for a duplicate."""
    if event.kind not in KINDS:
        raise ValueError(f"unknown call event kind {event.kind!r}; kinds: {', '.join(KINDS)}")
    if not event.call_id or not event.provider:
        raise ValueError("a call event needs the provider's name and its call id")
    if event.status is not None and event.status not in ENDINGS:
        raise ValueError(f"unknown call ending {event.status!r}; endings: {', '.join(ENDINGS)}")
    if not _first_time(docs, event):
        return None
    own = settings.of(docs.registry)
    at = aware(event.at) or docs.now()
    number = numbers.normalize(event.number, own["region"])
    call = locked_call(docs, event.call_id)
    if call is None:
        call = _create(docs, event, own, number, at)
    else:
        _fill(docs, call, event, own, number)
    changes = _changes(call, event, at)
    if changes:
        docs.update("Call", call, changes)
    if call.ended_at is not None:
        # each is made once; a late event may have brought the customer or the answer
        _ended(docs, call, own)
    docs.call_hook("crm_call_event", event=event, call=call)
    return call


def _first_time(docs: Documents, event: Event) -> bool:
    """Log the event; False when it was logged before (a duplicate)."""
    event_id = f"{event.provider}:{event.event_id or f'{event.call_id}:{event.kind}'}"[:200]
    values = {
        "provider": event.provider[:64],
        "event_id": event_id,
        "call_id": event.call_id[:128],
        "kind": event.kind,
        "received_at": docs.now(),
        "payload": json.dumps(dict(event.raw), ensure_ascii=False, default=str)[:10_000],
    }
    if once.supported(docs.session):
        # the log of a provider's events: one INSERT that skips a known event id, instead
        # of a savepoint, a uniqueness SELECT and the insert (a third of a webhook's
        # statements); the values are the provider's, already cut to the columns' sizes
        table = docs.models.table("CallEvent")
        row = {**values, "version": 1, "created_at": values["received_at"]}
        return once.insert_new(docs.session, table, row, "event_id")
    try:
        with docs.session.begin_nested():
            docs.create("CallEvent", values)
    except ValidationFailed as exc:
        if "event_id" in exc.errors:
            return False
        raise
    except sa.exc.IntegrityError:  # the same event, logged by another worker just now
        return False
    return True


def locked_call(docs: Documents, call_id: str) -> Any:
    """The Call with the provider's ``call_id``, locked until the transaction ends."""
    model = docs.models.cls("Call")
    query = sa.select(model).where(model.call_id == call_id).with_for_update()
    return docs.session.execute(query).scalars().first()


def user_of(docs: Documents, own: dict[str, Any], extension: str | None) -> int | None:
    """The active user whose extension this is."""
    field = own["extension_field"]
    if not extension or field not in docs.registry.documents[USER].fields:
        return None
    users = docs.models.table(USER)
    return docs.session.execute(
        sa.select(users.c.id).where(users.c[field] == extension, users.c.active.is_(True)).limit(1)
    ).scalar()


def matched(docs: Documents, own: dict[str, Any], number: str | None) -> dict[str, Any]:
    """The Call's values that file it against the caller's records."""
    found = lookup.find(docs.session, docs.models, own, number)
    if not found:
        return {}
    first = found[0]
    values: dict[str, Any] = {"doctype": first.doctype, "doc_id": first.id}
    d = docs.registry.documents["Call"]
    for f in d.fields.values():
        if f.type != "ref" or f.name in values:
            continue
        for party in found:
            if party.doctype == f.to:
                values[f.name] = party.id
                break
            if party.parent_type == f.to and party.parent_id is not None:
                values[f.name] = party.parent_id
                break
    return values


def _create(
    docs: Documents, event: Event, own: dict[str, Any], number: str | None, at: dt.datetime
) -> Any:
    values: dict[str, Any] = {
        "direction": event.direction if event.direction in ("in", "out") else "in",
        "number": number,
        "extension": (event.extension or None) and event.extension[:32],
        "user": user_of(docs, own, event.extension),
        "status": "ringing",
        "started_at": at,
        "provider": event.provider[:64],
        "call_id": event.call_id[:128],
        **matched(docs, own, number),
    }
    try:
        with docs.session.begin_nested():
            return docs.create("Call", values)
    except (ValidationFailed, sa.exc.IntegrityError):
        # another worker made it from another event of the same call just now
        call = locked_call(docs, event.call_id)
        if call is None:
            raise
        return call


def _fill(
    docs: Documents, call: Any, event: Event, own: dict[str, Any], number: str | None
) -> None:
    """What the first events did not know: the number, the extension, the user."""
    values: dict[str, Any] = {}
    if number and not call.number:
        values["number"] = number
        for name, value in matched(docs, own, number).items():
            column = name if name in ("doctype", "doc_id") else f"{name}_id"
            if getattr(call, column, None) is None:
                values[name] = value
    if event.kind == "ringing" and event.direction in ("in", "out"):
        if event.direction != call.direction:  # the first event seen did not say
            values["direction"] = event.direction
    if event.extension and not call.extension:
        values["extension"] = event.extension[:32]
        if call.user_id is None:
            values["user"] = user_of(docs, own, event.extension)
    if not call.provider:
        values["provider"] = event.provider[:64]
    if values:
        docs.update("Call", call, values)


def _changes(call: Any, event: Event, at: dt.datetime) -> dict[str, Any]:
    started = aware(call.started_at)
    answered = aware(call.answered_at)
    ended = aware(call.ended_at)
    values: dict[str, Any] = {}
    if started is None or at < started:
        values["started_at"] = at
    if event.kind == "answered":
        if answered is None:
            # an answer reported after the hangup, without its own moment, is not later than the end
            moment = at
            if ended is not None and event.at is None:
                talk = dt.timedelta(seconds=call.duration or 0)
                moment = min(at, ended - talk)
            answered = values["answered_at"] = moment
        if call.status in ("ringing", "missed"):
            values["status"] = "answered"
    elif event.kind == "hangup":
        if ended is None:
            ended = values["ended_at"] = at
            talked = bool(event.duration) and event.status in (None, "answered")
            values["status"] = event.status or ("answered" if answered or talked else "missed")
            if talked and answered is None:  # the exchange counted talk time: it was answered
                answered = values["answered_at"] = at - dt.timedelta(seconds=event.duration or 0)
        elif event.status and event.status != call.status and call.status != "answered":
            values["status"] = event.status
    if event.recording:
        values["recording"] = event.recording[:2000]
    status = values.get("status", call.status)
    if event.kind == "hangup" and event.duration is not None and status == "answered":
        values["duration"] = event.duration  # the exchange's own count of the talk time
    elif status == "answered" and answered is not None and ended is not None:
        if call.duration is None:  # a late event never overwrites the exchange's figure
            values["duration"] = max(0, int((ended - answered).total_seconds()))
    return {k: v for k, v in values.items() if getattr(call, k, None) != v}


def _ended(docs: Documents, call: Any, own: dict[str, Any]) -> None:
    if call.status == "answered":
        interaction(docs, call)
    elif call.status == "missed" and call.direction == "in" and own["missed_call_task"]:
        callback(docs, call, own)


# --- on the customer's timeline ---------------------------------------------------------------


def interaction_applies(registry: Any) -> bool:
    d = registry.documents.get(INTERACTION)
    call = registry.documents.get("Call")
    if d is None or call is None or "interaction" not in call.fields:
        return False
    kind = d.fields.get("kind")
    return kind is not None and "call" in (kind.values or {}) and d.statuses is not None


def _carried(docs: Documents, source: Any, d: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in ("customer", "contact", "interest"):
        value = getattr(source, f"{name}_id", None)
        if name in d.fields and value is not None:
            values[name] = value
    return values


def interaction(docs: Documents, call: Any) -> Any:
    """The done Interaction of kind call for an answered call (made once);
    None when the configuration keeps none or the call is about no customer."""
    registry = docs.registry
    if not interaction_applies(registry) or call.interaction_id is not None:
        return None
    if getattr(call, "customer_id", None) is None:
        return None
    d = registry.documents[INTERACTION]
    with speaking(registry.locale):
        subject = gettext("Incoming call") if call.direction == "in" else gettext("Outgoing call")
        minutes, seconds = divmod(int(call.duration or 0), 60)
        result = gettext(
            "%(number)s, talked %(minutes)d min %(seconds)02d s",
            number=numbers.shown(call.number), minutes=minutes, seconds=seconds,
        )  # fmt: skip
    values: dict[str, Any] = {
        "kind": "call",
        "subject": subject,
        "planned_at": call.answered_at or call.started_at or docs.now(),
        **_carried(docs, call, d),
    }
    if "duration" in d.fields:
        values["duration"] = max(1, round((call.duration or 0) / 60))
    if "manager" in d.fields and call.user_id is not None:
        values["manager"] = call.user_id
    if "result" in d.fields:
        values["result"] = result
    made = record_done(docs, INTERACTION, values)
    docs.update("Call", call, {"interaction": made.id})
    return made


def record_done(docs: Documents, doctype: str, values: dict[str, Any]) -> Any:
    """A record created straight in its ``done`` state: a fact, not a plan
    (no next step is asked for)."""
    d = docs.registry.documents[doctype]
    made = docs.create(doctype, values)
    done = done_state(d)
    if done is not None and d.statuses is not None:
        source = getattr(made, d.statuses.field)
        if source != done:
            setattr(made, d.statuses.field, done)
            docs.touch(made)
            docs.flush(d, made)
            docs.add_history(d, made, source, done)
    return made


def done_state(d: Any) -> str | None:
    if d.statuses is None:
        return None
    states = d.statuses.states
    if "done" in states:
        return "done"
    for name, state in states.items():
        if state.final and getattr(state, "outcome", None) == "done":
            return str(name)
    return None


# --- a missed call: call back ----------------------------------------------------------------


def owner_of(docs: Documents, call: Any) -> int | None:
    """Who calls back: the owner of the caller's record, else the user it rang."""
    if call.doctype and call.doc_id:
        d = docs.registry.documents.get(call.doctype)
        owner_field = d.fields.get(d.owner) if d is not None and d.owner else None
        if owner_field is not None and owner_field.type == "ref":
            table = docs.models.table(call.doctype)
            column = table.c[f"{owner_field.name}_id"]
            found = docs.session.execute(
                sa.select(column).where(table.c.id == call.doc_id)
            ).scalar()
            if found is not None:
                return int(found)
    return call.user_id


def callback(docs: Documents, call: Any, own: dict[str, Any]) -> Any:
    """The call-back task for a missed call (made once); None when there is
    nobody to give it to or nowhere to keep it."""
    registry = docs.registry
    assignee = owner_of(docs, call)
    if assignee is None:
        return None
    due = (aware(call.ended_at) or docs.now()) + dt.timedelta(minutes=own["callback_minutes"])
    with speaking(registry.locale):
        title = gettext("Call back %(number)s", number=numbers.shown(call.number) or "—")
        about = gettext("Missed call at %(time)s", time=_local(docs, call.started_at))
    if TASK in registry.documents:
        tasks = docs.models.table(TASK)
        exists = docs.session.execute(
            sa.select(tasks.c.id).where(tasks.c.doctype == "Call", tasks.c.doc_id == call.id)
        ).first()
        if exists is not None:
            return None
        task = registry.documents[TASK]
        values = {"title": title[:300], "assignee": assignee, "due": due, "doctype": "Call",
                  "doc_id": call.id, "description": about}  # fmt: skip
        return docs.create(TASK, {k: v for k, v in values.items() if k in task.fields})
    d = registry.documents.get(INTERACTION)
    if d is None or getattr(call, "customer_id", None) is None or not interaction_applies(registry):
        return None
    if call.interaction_id is not None:
        return None
    values = {"kind": "call", "subject": title[:255], "planned_at": due, **_carried(docs, call, d)}
    if "manager" in d.fields:
        values["manager"] = assignee
    if "result" in d.fields:
        values["result"] = about
    made = docs.create(INTERACTION, values)
    docs.update("Call", call, {"interaction": made.id})
    return made


def _local(docs: Documents, moment: dt.datetime | None) -> str:
    moment = aware(moment)
    if moment is None:
        return "—"
    return moment.astimezone(docs.timezone).strftime("%d.%m.%Y %H:%M")
