"""Ref constraints: ``where:`` on a ref says which records it may point to.

``interest: {type: ref, to: Interest, where: {customer: customer}}`` — the
deal's Interest must be one of the deal's customer's. The keys are fields of
the target; a value is

* a name: the field of this record the target's field must equal
  (``customer: customer``; both refs to the same type, or fields of one type);
* a map: a filter condition with constants, written as in segments
  (``stage: {nin: [won, lost]}``, ``active: {eq: true}``, ``manager:
  current_user``); its key may be a dotted path (``customer.segment: A``).

An empty field of this record narrows nothing: before the customer is chosen
the picker offers every Interest (the user may pick one first), and the
server checks the pair once both are filled in. The conditions always apply.

The same SQL condition serves the picker (``/<type>/lookup?for=Deal.interest
&f.customer=12``), the server's refusal of a record that does not fit (the
documents service, one query per constrained ref that changes) and
``crm check`` (unknown fields, fields of different types, wrong conditions
are errors at their ``file:line:col``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from engine import filters
from engine.access import Principal
from engine.errors import Loc, Problem, a_or_an, did_you_mean
from engine.registry import USER, DocType, Field, Registry

if TYPE_CHECKING:
    from engine.models import Models

#: the prefix of a field value the picker sends: ``f.customer=12``
PARAM = "f."


def target_of(registry: Registry, f: Field) -> DocType:
    return registry.documents[f.to or USER]


def parts(
    models: Models,
    f: Field,
    values: Mapping[str, Any],
    *,
    user_id: int | None = None,
    principal: Principal | None = None,
    now: dt.datetime | None = None,
) -> list[tuple[str, sa.ColumnElement[bool]]]:
    """The conditions on the target's table that a record with ``values``
    sets, each with the key of ``where`` it comes from (a pair whose field of
    this record is empty sets none)."""
    w = f.where
    if w is None:
        return []
    target = target_of(models.registry, f)
    table = models.metadata.tables[target.table]
    out: list[tuple[str, sa.ColumnElement[bool]]] = []
    for key, own in w.same.items():
        value = values.get(own)
        value = getattr(value, "id", value)  # a loaded record: its id
        if value is None or value == "":
            continue
        out.append((key, table.c[target.fields[key].column] == value))
    for key, cond in w.conditions.items():
        out.append(
            (key, filters.compile_filter(models, target.name, {key: cond}, user_id, now, principal))
        )
    return out


def condition(
    models: Models,
    f: Field,
    values: Mapping[str, Any],
    *,
    user_id: int | None = None,
    principal: Principal | None = None,
    now: dt.datetime | None = None,
) -> sa.ColumnElement[bool]:
    """One WHERE clause on the target's table: the records ``f`` may point to."""
    found = parts(models, f, values, user_id=user_id, principal=principal, now=now)
    return sa.and_(sa.true(), *(c for _, c in found))


def field_for(registry: Registry, spec: str, target: DocType) -> tuple[DocType, Field] | None:
    """``Deal.interest`` of a picker's ``for``: the constrained ref, when it
    refers to ``target``; None otherwise (the picker then offers what it always did)."""
    owner, _, name = (spec or "").partition(".")
    d = registry.documents.get(owner)
    f = d.fields.get(name) if d is not None else None
    if d is None or f is None or f.type != "ref" or f.where is None:
        return None
    if (f.to or USER) != target.name:
        return None
    return d, f


# --- crm check ---------------------------------------------------------------------------


def _compatible(mine: Field, theirs: Field) -> bool:
    if mine.type != theirs.type:
        return False
    return mine.type != "ref" or (mine.to or USER) == (theirs.to or USER)


def _kind(f: Field) -> str:
    return f"refers to `{f.to or USER}`" if f.type == "ref" else f"is {a_or_an(f.type)} field"


def check(registry: Registry, d: DocType, f: Field, written: Any, loc: Loc) -> Iterator[Problem]:
    """Problems of the pairs of ``where`` of the ref ``d.f`` (its conditions
    are filters: :func:`engine.checks.ref_where_valid` checks them as such)."""
    w = f.where
    if w is None or (f.to or USER) not in registry.documents:
        return
    target = target_of(registry, f)
    what = f"`where` of `{d.name}.{f.name}`"

    def key_loc(key: str) -> Loc:
        return written.key_loc(key) if hasattr(written, "key_loc") else loc

    def value_loc(key: str) -> Loc:
        return written.value_loc(key) if hasattr(written, "value_loc") else loc

    for key, own in w.same.items():
        theirs = target.fields.get(key)
        if "." in key:
            yield Problem(
                key_loc(key),
                f"{what}: `{key}` — a field of this record is compared with a field of "
                f"`{target.name}` itself; a dotted path takes a condition such as "
                f"`{key}: {{eq: ...}}`",
            )
            continue
        if theirs is None or not theirs.stored:
            hint = did_you_mean(key, [n for n, x in target.fields.items() if x.stored])
            yield Problem(key_loc(key), f"{what}: `{target.name}` has no field `{key}`{hint}")
            continue
        mine = d.fields.get(own)
        if mine is None or not mine.stored:
            hint = did_you_mean(own, [n for n, x in d.fields.items() if x.stored])
            yield Problem(
                value_loc(key),
                f"{what}: `{d.name}` has no field `{own}`{hint}; a value is a field of "
                f"`{d.name}`, or a condition such as `{{eq: {own}}}` for a constant",
            )
            continue
        if own == f.name:
            yield Problem(value_loc(key), f"{what}: the ref cannot depend on itself (`{own}`)")
            continue
        if not _compatible(mine, theirs):
            yield Problem(
                value_loc(key),
                f"{what}: `{target.name}.{key}` {_kind(theirs)} but `{d.name}.{own}` "
                f"{_kind(mine)}: they can never be equal",
            )


# --- the server's refusal ----------------------------------------------------------------


def refuse(docs: Any, p: Any) -> None:
    """Refuse, on the plan ``p`` of the documents service ``docs``, every
    constrained ref whose record does not fit, when it or a field it depends
    on changes: the record is read by its key (once per session) and its
    conditions checked by one query on that key, never a scan of the target."""
    from engine.access import may_see
    from engine.i18n import gettext

    d: DocType = p.doctype
    for f in d.fields.values():
        w = f.where
        if w is None or f.type != "ref":
            continue
        value = p.values.get(f.name)
        if value is None or p.has_error(f.name):
            continue
        if not p.creating and not any(n in p.changes for n in (f.name, *w.depends)):
            continue  # a record saved before the rule, or untouched: left as it is
        target = target_of(docs.registry, f)
        cls = docs.models.cls(target.name)
        # the record by its key (no query when the session holds it already):
        # its fields are compared here, the conditions by the database
        obj = docs.session.get(cls, value)
        if obj is None:
            continue  # no such record: said by the check of refs
        failed = []
        for key, own in w.same.items():
            mine = getattr(p.values.get(own), "id", p.values.get(own))
            if mine is not None and mine != "":
                theirs = getattr(obj, target.fields[key].column)
                if theirs != mine:
                    failed.append(key)
        if not failed and w.conditions:
            conds = [
                (key, filters.compile_filter(
                    docs.models, target.name, {key: cond}, docs.user_id, docs.now()
                ))
                for key, cond in w.conditions.items()
            ]  # fmt: skip
            checks = [sa.case((c, True), else_=False) for _, c in conds]
            row = docs.session.execute(sa.select(*checks).where(cls.id == value)).one()
            failed = [key for (key, _), fits in zip(conds, row, strict=True) if not fits]
        if not failed:
            continue
        if may_see(docs.models, docs.principal, target.name, obj):
            record = str(docs.view(target, obj))
        else:
            record = f"#{obj.id}"
        locale = docs.registry.locale
        key = failed[0]
        if key in w.same:
            field = d.fields[w.same[key]]
            message = gettext(
                "«%(record)s» does not fit: its %(target)s is not this record's %(field)s",
                record=record,
                target=target.fields[key].label.get(locale),
                field=field.label.get(locale),
            )
        else:
            message = gettext(
                "«%(record)s» does not fit: it does not meet the condition on %(target)s",
                record=record,
                target=_path_label(docs.registry, target, key, locale),
            )
        p.error(f.name, message)


def _path_label(registry: Registry, d: DocType, path: str, locale: str | None) -> str:
    """``customer.segment`` → "Customer → Segment", in the user's language."""
    labels = []
    current: DocType | None = d
    for part in path.split("."):
        f = current.fields.get(part) if current is not None else None
        if f is None:
            labels.append(part)
            break
        labels.append(f.label.get(locale))
        current = registry.documents.get(f.to or USER) if f.type == "ref" else None
    return " → ".join(labels)
