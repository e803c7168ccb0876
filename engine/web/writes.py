"""Writes from a form or the API: create, update, delete and transitions in the
request's transaction, after the access rules' checks of owners and refs
(:func:`rule_errors`), so that a rule holds in both or neither; and the
transition buttons of a record page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from flask import g

from engine import access
from engine.documents import (
    DeleteRefused,
    DuplicatesFound,
    NotFound,
    StaleVersion,
    ValidationFailed,
    quoted,
)
from engine.errors import HandledError
from engine.fieldtypes import MAX_ID
from engine.i18n import gettext
from engine.registry import FREE, PROCESS, USER, DocType, Field, State
from engine.statuses import (
    StatusEngine,
    TransitionRefused,
    record_kind,
    stage_control,
    stage_order,
)
from engine.web.base import crm, db_session, principal
from engine.web.fetch import documents
from engine.web.forms import locked_fields

#: the errors key of a save stopped at ``unique: warn`` duplicates (the
#: duplicates themselves are in ``flask.g.crm_duplicates``)
WARNINGS = "_warnings"


def _saved(write: Any) -> tuple[Any, dict[str, str]]:
    """Run one write in the request's transaction: commit, or roll back and say why.

    The records holding the values of ``unique`` fields (refused or warned
    of) are left in ``g.crm_duplicates`` (field → Duplicate) for the page or
    the JSON to link to."""
    session = db_session()
    g.crm_duplicates = {}
    try:
        obj = write()
        session.commit()
    except ValidationFailed as exc:
        session.rollback()
        g.crm_duplicates = exc.duplicates
        return None, exc.errors
    except DuplicatesFound as exc:
        session.rollback()
        g.crm_duplicates = exc.warnings
        return None, {WARNINGS: str(exc)}
    except sa.exc.IntegrityError as exc:
        # a twin saved between our check and our insert: the unique index says so
        session.rollback()
        errors = unique_violation(exc)
        if errors is None:
            raise
        return None, errors
    except StaleVersion as exc:
        session.rollback()
        return None, {"_version": str(exc)}
    except (DeleteRefused, NotFound, HandledError) as exc:
        session.rollback()
        return None, {"_form": str(exc)}
    return obj, {}


def unique_violation(exc: sa.exc.IntegrityError) -> dict[str, str] | None:
    """The field whose unique index refused a row, as a field error: SQLite
    names ``table.column``, PostgreSQL the index ``ix_table_column``."""
    text = str(exc.orig)
    for d in crm().registry.documents.values():
        for f in d.fields.values():
            if (
                f.unique
                and f.stored
                and (f"{d.table}.{f.column}" in text or f'"ix_{d.table}_{f.column}"' in text)
            ):
                return {
                    f.name: gettext(
                        "this %(field)s already belongs to another record (saved a moment ago)",
                        field=f.label.get(crm().registry.locale),
                    )
                }
    return None


def _id_of(value: Any) -> Any:
    if hasattr(value, "__table__"):
        return value.id
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    return value


def rule_errors(d: DocType, values: Mapping[str, Any], obj: Any | None) -> dict[str, str]:
    """What the access rules refuse in ``values``, by field: the owner of a
    type the user may only create or change ``own`` records of must be the
    user, and only a user who may read everyone's records of the type may
    give one to someone else; a ref may only point at a record the user may read (a changed one:
    a ref someone else set stays). Same message for "hidden" as for "missing",
    so that ids of other users' records are not confirmed."""
    state = crm()
    me = principal()
    errors: dict[str, str] = {}
    if d.owner and d.owner in values and d.owner in locked_fields(d, obj):
        given = _id_of(values[d.owner])
        current = me.user_id if obj is None else getattr(obj, d.fields[d.owner].column)
        if given != current or given != me.user_id:
            errors[d.owner] = gettext("you may only keep your own records: it must be you")
    elif d.owner and d.owner in values:
        # handing a record to someone else takes the right to read theirs:
        # without it the record would be lost to the one who made it
        given = _id_of(values[d.owner])
        current = me.user_id if obj is None else getattr(obj, d.fields[d.owner].column)
        if (
            given != current
            and given != me.user_id
            and access.rule(state.registry, me, d.name, "read") is not True
        ):
            errors[d.owner] = gettext(
                "you may only give a record to yourself: you may not open other users' records"
            )
    wanted: dict[str, list[tuple[str, int]]] = {}

    def want(path: str, f: Field, raw: Any, current: Any) -> None:
        ident = _id_of(raw)
        if not isinstance(ident, int) or ident == current or f.to in (None, USER):
            return
        target = state.registry.documents.get(f.to)
        if target is None or target.builtin:
            return
        if access.rule(state.registry, me, target.name, "read") is not True:
            wanted.setdefault(target.name, []).append((path, ident))

    for name, raw in values.items():
        f = d.fields.get(name)
        if f is None:
            continue
        if f.type == "ref":
            want(name, f, raw, None if obj is None else getattr(obj, f.column))
        elif f.type == "table" and isinstance(raw, list):
            kept = {r.id: r for r in getattr(obj, f.name)} if obj is not None else {}
            for i, row in enumerate(raw):
                if not isinstance(row, Mapping):
                    continue
                old = kept.get(_id_of(row.get("id")))
                for cname, craw in row.items():
                    c = f.fields.get(cname)
                    if c is not None and c.type == "ref":
                        current = getattr(old, c.column) if old is not None else None
                        want(f"{name}.{i}.{cname}", c, craw, current)
    for target, items in wanted.items():
        models = state.models
        table = models.table(target)
        ids = {ident for _, ident in items if 0 < ident <= MAX_ID}
        seen = set(
            db_session().execute(
                sa.select(table.c.id).where(
                    table.c.id.in_(ids), access.where(models, me, target, "read")
                )
            ).scalars()
        ) if ids else set()  # fmt: skip
        label = quoted(state.registry.documents[target].label, None, state.registry.locale)
        for path, ident in items:
            if ident not in seen:
                errors.setdefault(
                    path, gettext("there is no %(document)s #%(id)s", document=label, id=ident)
                )
    return errors


def create(d: DocType, values: Mapping[str, Any]) -> tuple[Any, dict[str, str]]:
    refused = rule_errors(d, values, None)
    if refused:
        return None, refused
    return _saved(lambda: documents().create(d.name, values))


def update(
    d: DocType, obj: Any, values: Mapping[str, Any], version: int | None
) -> tuple[Any, dict[str, str]]:
    refused = rule_errors(d, values, obj)
    if refused:
        return None, refused
    return _saved(lambda: documents().update(d.name, obj, values, expected_version=version))


def delete(d: DocType, obj: Any, version: int | None = None) -> str | None:
    _, errors = _saved(lambda: documents().delete(d.name, obj, expected_version=version))
    return next(iter(errors.values()), None)


def transition(
    d: DocType,
    obj: Any,
    target: str,
    fields: Mapping[str, Any],
    nexts: list[dict[str, Any]],
    version: int | None,
) -> tuple[list[str], dict[str, str]]:
    """Apply a transition; ([], {}) when done, else the reasons and field errors.

    A stale ``version`` comes back as the error ``_version`` (no reasons): the
    record was changed by someone else, as for an edit."""
    session = db_session()
    refused = rule_errors(d, fields, obj) if fields else {}
    if refused:
        return list(refused.values()), refused
    try:
        StatusEngine(documents()).apply(
            d.name, obj, target, fields=fields or None, next=nexts, expected_version=version
        )
        session.commit()
    except TransitionRefused as exc:
        session.rollback()
        return [r.message for r in exc.reasons], {
            r.field: r.message for r in exc.reasons if r.field
        }
    except ValidationFailed as exc:
        session.rollback()
        return [], exc.errors
    except StaleVersion as exc:
        session.rollback()
        return [], {"_version": str(exc)}
    except HandledError as exc:
        session.rollback()
        return [str(exc)], {}
    return [], {}


def needed_fields(
    d: DocType, state: State, reasons: list[str], errors: dict[str, str]
) -> dict[str, list[str]]:
    """``{"needs": [...]}`` when the only objections to entering ``state`` are
    its required fields left empty and the user may fill them in (the kanban
    then asks for them); ``{}`` otherwise."""
    from engine.web import forms

    needs = [
        n for n in state.require if n in errors and n in d.fields and forms.settable(d.fields[n], d)
    ]
    if not needs or set(errors) - set(needs) or set(reasons) - {errors[n] for n in needs}:
        return {}
    return {"needs": needs}


@dataclass
class Move:
    """A transition button of the record page: allowed, or refused with the reasons."""

    state: State
    reasons: list[str] = field(default_factory=list)
    #: a status-only record (``control: free``): nothing is required to move
    free: bool = False

    @property
    def allowed(self) -> bool:
        return not self.reasons

    @property
    def direct(self) -> bool:
        """Nothing to ask for: the button posts the transition itself."""
        return self.free or (not self.state.require and self.state.require_next is None)


def transition_moves(d: DocType, obj: Any) -> list[Move]:
    """A button per state the record may go to now; listed transitions that
    a role or a guard refuses are shown too, disabled, saying why."""
    if d.statuses is None or not access.may_touch(crm().models, principal(), d.name, "update", obj):
        return []
    d = crm().registry.documents[d.name]  # guards see every field, hidden ones too
    assert d.statuses is not None
    engine = StatusEngine(documents())
    view = documents().view(d, obj)
    source = getattr(obj, d.statuses.field)
    kind = record_kind(d, obj)
    control = stage_control(d, kind)
    if control == PROCESS:
        return []  # its route map moves it: stage_note() says so
    moves = []
    for name in stage_order(d, kind):
        if name == source:
            continue
        reasons = engine.rules(d, obj, name, view, require=False)
        if any(r.rule in ("state", "transition", "final") for r in reasons):
            continue
        moves.append(Move(d.statuses.states[name], [r.message for r in reasons], control == FREE))
    # what plugins would veto, asked once for every move still allowed
    allowed = [m.state.name for m in moves if m.allowed]
    if allowed:
        for answer in documents().call_hook(
            "crm_transition_vetoes", doctype=d, doc=obj, targets=allowed
        ):
            for m in moves:
                if answer and m.state.name in answer:
                    m.reasons.append(str(answer[m.state.name]))
    return moves


def stage_note(d: DocType, obj: Any) -> str:
    """Why the record page offers no move, for a record its process moves."""
    if d.statuses is None or stage_control(d, record_kind(d, obj)) != PROCESS:
        return ""
    engine = StatusEngine(documents())
    target = next((n for n in d.statuses.states if n != getattr(obj, d.statuses.field)), "")
    reasons = engine.rules(d, obj, target, documents().view(d, obj), require=False)
    return "; ".join(r.message for r in reasons if r.rule == "process")


def refusals(d: DocType, obj: Any, target: str) -> list[str]:
    """Why the record cannot go to ``target`` whatever the form holds (role,
    guard, no such transition); required fields are the form's business."""
    d = crm().registry.documents[d.name]  # guards see every field, hidden ones too
    engine = StatusEngine(documents())
    return [
        r.message for r in engine.rules(d, obj, target, documents().view(d, obj), require=False)
    ]


def allowed_transitions(d: DocType, obj: Any) -> list[State]:
    return [m.state for m in transition_moves(d, obj) if m.allowed]
