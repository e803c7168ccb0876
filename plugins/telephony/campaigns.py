"""Telemarketing campaigns: starting one, and the targets operators claim.

Starting (:func:`start`) writes every target of the segment or filter in ONE
``INSERT INTO campaign_call ... SELECT`` under the starter's read rule: one
row per phone number (the first record of a number stands for it), the
record's name, and the customer where the target is a Customer or has a ref
to one. Records without a phone are only counted (``skipped``). The
campaign's counts are kept by SQL (``done = done + 1``), never by loops.

Claiming (:func:`claim`) is an atomic UPDATE per tier that takes the next
target and marks it ``claimed`` by the operator, so that two operators never get the same
one: on PostgreSQL the candidate is chosen by a sub-select ``FOR UPDATE SKIP
LOCKED`` (a row another operator is taking is skipped, not waited for); on
SQLite the statement is a conditional ``UPDATE ... WHERE id = (SELECT ...)
AND <still free>`` — SQLite runs one writer at a time, so the condition is
checked and the row marked at once. The order: my own due call-backs, then
others' call-backs overdue by more than :data:`GRACE`, then queued targets
whose retry time has come (and claims abandoned for :data:`ABANDONED`).

Recording a result (:func:`finish`) is a conditional UPDATE too: only the
operator holding the target may record it; a ``retry`` result returns it to
the queue ``retry_minutes`` later until ``max_attempts``, then it is failed.
A completed target becomes a done Interaction of kind call on the
customer's timeline where the configuration keeps interactions.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import object_session

from engine.api import (
    Documents,
    HandledError,
    Principal,
    compile_filter,
    find_segment,
    gettext,
    speaking,
    where,
)

from . import calls, numbers

CAMPAIGN = "Campaign"
TARGET = "CampaignCall"
CUSTOMER = "Customer"
#: how long another operator's call-back may be overdue before anyone may take it
GRACE = dt.timedelta(minutes=15)
#: a claim nobody recorded a result for returns to the queue after this long
ABANDONED = dt.timedelta(minutes=30)
OPEN = ("queued", "claimed", "callback")


class DeskError(HandledError):
    """A request the desk refuses; ``status`` is the HTTP status, ``field`` the input to blame."""

    def __init__(self, message: str, status: int = 400, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


def naive(moment: dt.datetime) -> dt.datetime:
    """A UTC moment as the database columns keep it."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    return aware.astimezone(dt.UTC).replace(tzinfo=None)


def zone(registry: Any) -> dt.tzinfo:
    """The company's clock (the config's ``timezone``)."""
    return ZoneInfo(str(registry.settings.get("timezone") or "UTC"))


# --- starting ----------------------------------------------------------------------------------


def parse_filter(text: str | None) -> dict[str, Any]:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    if not text or not text.strip():
        return {}
    try:
        spec = YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        raise DeskError(gettext("the filter is not valid YAML"), field="filter") from exc
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise DeskError(gettext("a filter is a map of field → condition"), field="filter")
    return dict(spec)


def audience(
    registry: Any, campaign: Any, models: Any = None, principal: Principal | None = None
) -> tuple[Any, dict[str, Any], Any]:
    """(document type, filter spec, phone field) of a campaign; DeskError when wrong."""
    spec: dict[str, Any] = {}
    doctype = campaign.doctype or None
    if campaign.segment:
        # a consultant's segment, or a user's saved one the starting user may
        # use: the same records as the list ?segment= shows them
        segment = find_segment(models, object_session(campaign), campaign.segment, principal)
        if segment is None:
            raise DeskError(
                gettext("there is no segment %(name)s", name=campaign.segment), field="segment"
            )
        doctype = segment.document
        spec.update(segment.filter)
    spec.update(parse_filter(campaign.filter))
    if not doctype:
        raise DeskError(
            gettext("name a segment or the type of the records to call"), field="doctype"
        )
    d = registry.documents.get(doctype)
    if d is None:
        raise DeskError(
            gettext("there is no document type %(name)s", name=doctype), field="doctype"
        )
    field = d.fields.get(campaign.phone_field or "phone")
    if field is None or field.type not in ("phone", "string"):
        raise DeskError(
            gettext("%(type)s has no phone field %(field)s",
                    type=doctype, field=campaign.phone_field or "phone"),
            field="phone_field",
        )  # fmt: skip
    return d, spec, field


def _customer_column(registry: Any, d: Any, table: sa.Table) -> Any:
    """The target's customer, as a column of its table: its own id for a
    Customer, else its ref to one; None when neither."""
    if TARGET not in registry.documents or "customer" not in registry.documents[TARGET].fields:
        return None
    if d.name == CUSTOMER:
        return table.c.id
    for f in d.fields.values():
        if f.type == "ref" and f.to == CUSTOMER:
            return table.c[f.column]
    return None


def start(
    session: Any, models: Any, campaign: Any, *, now: dt.datetime, principal: Principal | None
) -> dict[str, int]:
    """Take the campaign's targets in one statement and set it running;
    ``{"total": n, "skipped": m}``. DeskError when it cannot start."""
    if campaign.status != "draft":
        raise DeskError(gettext("Only a draft campaign can be started"), status=409)
    registry = models.registry
    d, spec, field = audience(registry, campaign, models, principal)
    table = models.table(d.name)
    try:
        condition = compile_filter(models, d.name, spec, now=now, principal=principal,
                                   user_id=principal.user_id if principal else None)  # fmt: skip
    except ValueError as exc:
        raise DeskError(
            gettext("the filter is wrong: %(error)s", error=str(exc)), field="filter"
        ) from exc
    if principal is not None:
        condition = sa.and_(condition, where(models, principal, d.name, "read"))
    phone = sa.func.trim(table.c[field.column])
    has_phone = sa.and_(table.c[field.column].is_not(None), phone != "")
    first = (
        sa.select(phone.label("number"), sa.func.min(table.c.id).label("doc_id"))
        .where(condition, has_phone)
        .group_by(phone)
        .subquery("first")
    )
    source = table.alias("source")
    name_column = (
        sa.func.substr(sa.cast(source.c[d.fields["name"].column], sa.String), 1, 300)
        if "name" in d.fields
        else sa.literal(None, sa.String)
    )
    columns = ["campaign_id", "doctype", "doc_id", "name", "number", "status", "attempts",
               "version", "created_at", "updated_at"]  # fmt: skip
    at = naive(now)
    values: list[Any] = [sa.literal(campaign.id), sa.literal(d.name), first.c.doc_id, name_column,
                         first.c.number, sa.literal("queued"), sa.literal(0), sa.literal(1),
                         sa.literal(at), sa.literal(at)]  # fmt: skip
    customer = _customer_column(registry, d, source)
    if customer is not None:
        columns.append("customer_id")
        values.append(customer)
    targets = models.table(TARGET)
    select = sa.select(*values).select_from(first.join(source, source.c.id == first.c.doc_id))
    session.execute(sa.insert(targets).from_select(columns, select.order_by(first.c.doc_id)))
    # counted, not the driver's rowcount (psycopg reports -1 for INSERT ... SELECT)
    total = int(
        session.execute(
            sa.select(sa.func.count()).where(targets.c.campaign_id == campaign.id)
        ).scalar()
        or 0
    )
    skipped = int(
        session.execute(
            sa.select(sa.func.count()).select_from(table).where(condition, sa.not_(has_phone))
        ).scalar()
        or 0
    )
    campaigns = models.table(CAMPAIGN)
    session.execute(
        campaigns.update()
        .where(campaigns.c.id == campaign.id)
        .values(
            status="running",
            started_at=at,
            total=total,
            skipped=skipped,
            done=0,
            failed=0,
            version=campaigns.c.version + 1,
            updated_at=at,
        )
    )
    _history(session, models, campaign.id, "draft", "running", at, principal)
    return {"total": total, "skipped": skipped}


def _history(
    session: Any, models: Any, campaign_id: int, source: str, target: str, at: dt.datetime,
    principal: Principal | None,
) -> None:  # fmt: skip
    d = models.registry.documents[CAMPAIGN]
    if d.statuses is None:
        return
    history = models.histories[CAMPAIGN].__table__
    session.execute(
        history.insert().values(
            doc_id=campaign_id, field=d.statuses.field, from_state=source, to_state=target,
            at=at.replace(tzinfo=dt.UTC), by_id=principal.user_id if principal else None,
        )
    )  # fmt: skip


# --- may one work it ---------------------------------------------------------------------------


def is_operator(session: Any, models: Any, campaign_id: int, user_id: int | None) -> bool:
    if user_id is None:
        return False
    d = models.registry.documents[CAMPAIGN]
    operators = models.metadata.tables[d.child_table("operators")]
    found = session.execute(
        sa.select(operators.c.id)
        .where(operators.c.parent_id == campaign_id, operators.c.user_id == user_id)
        .limit(1)
    ).first()
    return found is not None


def closed_because(registry: Any, campaign: Any, now: dt.datetime) -> str | None:
    """Why no target may be called now (status, dates, work hours), or None."""
    if campaign.status != "running":
        return gettext("The campaign is not running")
    moment = naive(now)
    if campaign.starts_at is not None and moment < naive(campaign.starts_at):
        return gettext("The campaign has not begun yet")
    if campaign.ends_at is not None and moment >= naive(campaign.ends_at):
        return gettext("The campaign is over")
    hour = now.astimezone(zone(registry)).hour
    start_hour = campaign.work_from if campaign.work_from is not None else 0
    end_hour = campaign.work_to if campaign.work_to is not None else 24
    if not start_hour <= hour < end_hour:
        return gettext(
            "Calls are made from %(start)s:00 to %(end)s:00", start=start_hour, end=end_hour
        )
    return None


# --- claiming ----------------------------------------------------------------------------------


#: the claim's statements, built once per table and dialect (their values are bound)
_STATEMENTS: dict[tuple[int, str], list[Any]] = {}


def _tiers(t: sa.Table) -> list[tuple[Any, list[Any]]]:
    """The targets an operator may take, tier by tier (condition, order): call-backs
    (mine when due, then others' overdue by more than the grace period), the queue
    (a retry once its time has come), then claims abandoned for too long. Each tier
    is an index range (status, id): no sort of the whole campaign per claim."""
    at: Any = sa.bindparam("at")
    me: Any = sa.bindparam("me")
    mine = sa.and_(t.c.operator_id == me, t.c.callback_at <= at)
    callbacks = sa.and_(
        t.c.status == "callback", sa.or_(mine, t.c.callback_at <= sa.bindparam("grace_at"))
    )
    queued = sa.and_(
        t.c.status == "queued", sa.or_(t.c.callback_at.is_(None), t.c.callback_at <= at)
    )
    abandoned = sa.and_(t.c.status == "claimed", t.c.claimed_at < sa.bindparam("stale_at"))
    return [
        (callbacks, [sa.case((mine, 0), else_=1), t.c.callback_at, t.c.id]),
        (queued, [t.c.id]),
        (abandoned, [t.c.id]),
    ]


def _claim_statements(t: sa.Table, dialect: str) -> list[Any]:
    key = (id(t), dialect)
    found = _STATEMENTS.get(key)
    if found is not None:
        return found
    made = []
    for condition, order in _tiers(t):
        condition = sa.and_(t.c.campaign_id == sa.bindparam("cid"), condition)
        pick = sa.select(t.c.id).where(condition).order_by(*order).limit(1)
        if dialect == "postgresql":
            # the row is locked as it is picked; rows others are taking are skipped
            pick = pick.with_for_update(skip_locked=True)
        made.append(
            t.update()
            # the condition again: on SQLite the one statement checks and marks at once
            .where(t.c.id == pick.scalar_subquery(), condition)
            .values(
                status="claimed",
                operator_id=sa.bindparam("me"),
                claimed_at=sa.bindparam("at"),
                version=t.c.version + 1,
                updated_at=sa.bindparam("at"),
            )
            .returning(t.c.id)
        )
    _STATEMENTS[key] = made
    return made


def claim(
    session: Any, models: Any, campaign_id: int, user_id: int, now: dt.datetime
) -> int | None:
    """Take the next target for the operator — each tier (see :func:`_tiers`)
    one atomic UPDATE, the first that takes one wins; its id, or None when
    there is none to take now. The caller commits."""
    t = models.table(TARGET)
    at = naive(now)
    values = {"cid": campaign_id, "me": user_id, "at": at, "grace_at": at - GRACE,
              "stale_at": at - ABANDONED}  # fmt: skip
    connection = session.connection()  # Core: none of the ORM's work per statement
    for statement in _claim_statements(t, connection.dialect.name):
        found = connection.execute(statement, values).scalar()
        if found is not None:
            return int(found)
    return None


def current(
    session: Any, models: Any, campaign_id: int, user_id: int, now: dt.datetime
) -> int | None:
    """The target the operator holds in this campaign (a reload of the desk), or None."""
    t = models.table(TARGET)
    found = session.execute(
        sa.select(t.c.id)
        .where(
            t.c.campaign_id == campaign_id,
            t.c.status == "claimed",
            t.c.operator_id == user_id,
            t.c.claimed_at >= naive(now) - ABANDONED,
        )
        .order_by(t.c.claimed_at.desc())
        .limit(1)
    ).scalar()
    return int(found) if found is not None else None


# --- results -----------------------------------------------------------------------------------


def rows_of(session: Any, models: Any, campaign_id: int, field: str) -> list[dict[str, Any]]:
    d = models.registry.documents[CAMPAIGN]
    table = models.metadata.tables[d.child_table(field)]
    found = session.execute(
        sa.select(table).where(table.c.parent_id == campaign_id).order_by(table.c.idx, table.c.id)
    )
    return [dict(r._mapping) for r in found]


def choices(question: Mapping[str, Any]) -> list[str]:
    return [c.strip() for c in str(question.get("choices") or "").split(",") if c.strip()]


def check_answers(questions: list[dict[str, Any]], answers: Any) -> dict[str, str]:
    """The answers as {key: text}; DeskError on an unknown question or a wrong choice."""
    if answers is None:
        return {}
    if not isinstance(answers, Mapping):
        raise DeskError(gettext("answers are a map of question → answer"), field="answers")
    by_key = {str(q["key"]): q for q in questions}
    clean: dict[str, str] = {}
    for key, value in answers.items():
        question = by_key.get(str(key))
        if question is None:
            raise DeskError(
                gettext("there is no question %(key)s in this campaign", key=str(key)[:64]),
                field="answers",
            )
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise DeskError(gettext("an answer is a text"), field="answers")
        text = str(value).strip()[:2000]
        allowed = choices(question)
        if allowed and text not in allowed:
            raise DeskError(
                gettext("%(answer)s is not one of the choices of %(key)s",
                        answer=text[:100], key=str(key)),
                field="answers",
            )  # fmt: skip
        clean[str(key)] = text
    return clean


def _held(session: Any, models: Any, campaign_id: int, target_id: int, user_id: int) -> Any:
    t = models.table(TARGET)
    row = session.execute(sa.select(t).where(t.c.id == target_id)).first()
    if row is None or row.campaign_id != campaign_id:
        raise DeskError(gettext("There is no such target in this campaign"), status=404)
    if row.status != "claimed" or row.operator_id != user_id:
        raise DeskError(gettext("This target is not in your hands"), status=409)
    return row


def _mark(session: Any, models: Any, target_id: int, user_id: int, values: dict[str, Any]) -> None:
    """Change a target still held by the operator; 409 when it is not (a race)."""
    t = models.table(TARGET)
    changed = session.execute(
        t.update()
        .where(t.c.id == target_id, t.c.status == "claimed", t.c.operator_id == user_id)
        .values(version=t.c.version + 1, **values)
    )
    if changed.rowcount != 1:
        raise DeskError(gettext("This target is not in your hands"), status=409)


def finish(
    docs: Documents, campaign: Any, target_id: int, *, code: Any, answers: Any = None,
    comment: Any = None, now: dt.datetime,
) -> str:  # fmt: skip
    """Record the operator's result for the target they hold; its new status."""
    session, models = docs.session, docs.models
    user_id = int(docs.user_id) if docs.user_id is not None else 0
    row = _held(session, models, campaign.id, target_id, user_id)
    results = {str(r["code"]): r for r in rows_of(session, models, campaign.id, "results")}
    if not isinstance(code, str) or code not in results:
        raise DeskError(gettext("Choose one of the campaign's results"), field="code")
    clean = check_answers(rows_of(session, models, campaign.id, "questions"), answers)
    if comment is not None and not isinstance(comment, str):
        raise DeskError(gettext("a comment is a text"), field="comment")
    result = results[code]
    at = naive(now)
    attempts = int(row.attempts or 0) + 1
    values: dict[str, Any] = {
        "result": code, "attempts": attempts, "updated_at": at,
        "answers": json.dumps(clean, ensure_ascii=False) if clean else row.answers,
        "comment": (comment or "").strip()[:5000] or row.comment,
    }  # fmt: skip
    maximum = int(campaign.max_attempts or 1)
    if result.get("retry") and attempts < maximum:
        status = "queued"
        values["callback_at"] = at + dt.timedelta(minutes=int(campaign.retry_minutes or 60))
    else:
        status = "failed" if result.get("retry") else "done"
        values["done_at"] = at
        values["callback_at"] = None
    values["status"] = status
    _mark(session, models, target_id, user_id, values)
    if status in ("done", "failed"):
        campaigns = models.table(CAMPAIGN)
        counter = campaigns.c[status]
        session.execute(
            campaigns.update().where(campaigns.c.id == campaign.id).values({counter: counter + 1})
        )
        _interaction(docs, campaign, target_id, result, clean, values["comment"], at)
        _maybe_done(session, models, campaign.id, at)
    return status


def call_back(
    docs: Documents,
    campaign: Any,
    target_id: int,
    *,
    at: dt.datetime,
    comment: Any,
    now: dt.datetime,
) -> None:
    """Put the target aside until ``at``, for the same operator first."""
    user_id = int(docs.user_id) if docs.user_id is not None else 0
    row = _held(docs.session, docs.models, campaign.id, target_id, user_id)
    if naive(at) <= naive(now):
        raise DeskError(gettext("The time to call back is in the past"), field="callback_at")
    if comment is not None and not isinstance(comment, str):
        raise DeskError(gettext("a comment is a text"), field="comment")
    _mark(docs.session, docs.models, target_id, user_id, {
        "status": "callback", "callback_at": naive(at), "updated_at": naive(now),
        "attempts": int(row.attempts or 0) + 1,
        "comment": (comment or "").strip()[:5000] or row.comment,
    })  # fmt: skip


def attach_call(docs: Documents, campaign: Any, target_id: int, call_id: int) -> None:
    user_id = int(docs.user_id) if docs.user_id is not None else 0
    _held(docs.session, docs.models, campaign.id, target_id, user_id)
    _mark(docs.session, docs.models, target_id, user_id, {"call_id": call_id})


def _maybe_done(session: Any, models: Any, campaign_id: int, at: dt.datetime) -> None:
    """The campaign is done when no target is left to call (one conditional UPDATE)."""
    campaigns = models.table(CAMPAIGN)
    t = models.table(TARGET)
    left = sa.select(t.c.id).where(t.c.campaign_id == campaign_id, t.c.status.in_(OPEN)).exists()
    changed = session.execute(
        campaigns.update()
        .where(campaigns.c.id == campaign_id, campaigns.c.status == "running", ~left)
        .values(status="done", finished_at=at, version=campaigns.c.version + 1)
    )
    if changed.rowcount:
        _history(session, models, campaign_id, "running", "done", at, None)


def _interaction(
    docs: Documents, campaign: Any, target_id: int, result: Mapping[str, Any],
    answers: dict[str, str], comment: str | None, at: dt.datetime,
) -> None:  # fmt: skip
    registry = docs.registry
    target = docs.session.get(docs.models.cls(TARGET), target_id)
    if (
        target is None
        or not calls.interaction_applies(registry)
        or "interaction" not in registry.documents[TARGET].fields
        or getattr(target, "customer_id", None) is None
    ):
        return
    d = registry.documents[calls.INTERACTION]
    with speaking(registry.locale):
        subject = gettext("Campaign call: %(campaign)s", campaign=campaign.name)
    lines = [f"{result.get('label') or result.get('code')} ({numbers.shown(target.number)})"]
    lines += [f"{key}: {value}" for key, value in answers.items()]
    if comment:
        lines.append(comment)
    values: dict[str, Any] = {
        "kind": "call", "subject": subject[:255], "planned_at": at, "customer": target.customer_id,
    }  # fmt: skip
    if "manager" in d.fields and target.operator_id is not None:
        values["manager"] = target.operator_id
    if "result" in d.fields:
        values["result"] = "\n".join(lines)
    if "duration" in d.fields:
        values["duration"] = 1
    made = calls.record_done(trusted(docs), calls.INTERACTION, values)
    t = docs.models.table(TARGET)
    docs.session.execute(t.update().where(t.c.id == target_id).values(interaction_id=made.id))


def trusted(docs: Documents) -> Documents:
    """The same user's documents service that may fill read-only fields (a
    call's and an interaction's, which only the plugin writes)."""
    who = docs.principal
    return Documents(
        docs.models, docs.session, who.user_id, who.roles, docs.pm,
        username=who.username, trusted=True,
    )  # fmt: skip


# --- progress ----------------------------------------------------------------------------------


def by_operator(session: Any, models: Any, campaign_id: int) -> list[tuple[Any, str, int]]:
    """(operator id, status, count) for the targets operators touched, one GROUP BY."""
    t = models.table(TARGET)
    found = session.execute(
        sa.select(t.c.operator_id, t.c.status, sa.func.count())
        .where(t.c.campaign_id == campaign_id, t.c.operator_id.is_not(None))
        .group_by(t.c.operator_id, t.c.status)
    )
    return [(r[0], str(r[1]), int(r[2])) for r in found]


def by_result(session: Any, models: Any, campaign_id: int) -> dict[str, int]:
    t = models.table(TARGET)
    found = session.execute(
        sa.select(t.c.result, sa.func.count())
        .where(
            t.c.campaign_id == campaign_id,
            t.c.result.is_not(None),
            t.c.status.in_(("done", "failed")),
        )
        .group_by(t.c.result)
    )
    return {str(r[0]): int(r[1]) for r in found}


def by_status(
    session: Any, models: Any, campaign_id: int, operator_id: int | None = None
) -> dict[str, int]:
    t = models.table(TARGET)
    query = sa.select(t.c.status, sa.func.count()).where(t.c.campaign_id == campaign_id)
    if operator_id is not None:
        query = query.where(t.c.operator_id == operator_id)
    return {str(s): int(n) for s, n in session.execute(query.group_by(t.c.status))}
