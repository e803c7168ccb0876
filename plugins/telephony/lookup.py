"""Who is calling: a number (E.164) → the records whose phone fields hold it.

The types searched are the telephony setting ``match`` (default: every
document type with a ``phone`` field, but the plugin's own and users), each
by every one of its phone fields. It is one SQL statement, a ``UNION ALL``
of one equality per phone column, so each part is an index lookup (phone
fields are stored in E.164, as the number is). A match of a type that
belongs to another matched type (a contact person's ``customer``) brings
that record along as its *parent*.

The lookup sees every record: the Call is filed against what it finds. What
a user is shown of it (the caller card) goes through that user's read rule.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.api import USER

#: the plugin's own types, never callers
OWN = frozenset(
    {"Call", "CallEvent", "Campaign", "CampaignCall", "SmsMessage", "SmsTemplate", "SmsOptOut"}
)


@dataclass(frozen=True)
class Party:
    """A record whose phone is the number: its type and id, its owner (the
    user the type's ``owner`` field names) and the record it belongs to."""

    doctype: str
    id: int
    owner_id: int | None = None
    parent_type: str | None = None
    parent_id: int | None = None


def phone_fields(registry: Any, settings: dict[str, Any]) -> dict[str, list[str]]:
    """Type name → its phone fields, for the types a caller is looked up in."""
    wanted = settings.get("match")
    out: dict[str, list[str]] = {}
    for name, d in registry.documents.items():
        if (wanted is not None and name not in wanted) or name in OWN or name == USER:
            continue
        if wanted is None and getattr(d, "builtin", False):
            continue
        fields = [f.name for f in d.fields.values() if f.type == "phone" and not f.compute]
        if fields:
            out[name] = fields
    return out


def _parent(registry: Any, d: Any, types: dict[str, list[str]]) -> Any:
    """The first ref field of ``d`` to another type callers are looked up in."""
    for f in d.fields.values():
        if f.type == "ref" and f.to in types and f.to != d.name:
            return f
    return None


def statement(models: Any, types: dict[str, list[str]], number: Any, limit: int = 20) -> Any:
    """The lookup as one SELECT (type, id, owner, parent type, parent id);
    ``number`` is the number, or a bound parameter to fill in at execution."""
    registry = models.registry
    parts = []
    for name, fields in types.items():
        d = registry.documents[name]
        table = models.table(name)
        owner_field = d.fields.get(d.owner) if d.owner else None
        owner = (
            table.c[f"{owner_field.name}_id"]
            if owner_field is not None and owner_field.type == "ref"
            else sa.null()
        )
        parent = _parent(registry, d, types)
        parent_type = sa.literal(parent.to) if parent is not None else sa.null()
        parent_id = table.c[f"{parent.name}_id"] if parent is not None else sa.null()
        for field_name in fields:
            parts.append(
                sa.select(
                    sa.literal(name).label("doctype"),
                    table.c.id.label("id"),
                    sa.cast(owner, sa.Integer).label("owner_id"),
                    sa.cast(parent_type, sa.String).label("parent_type"),
                    sa.cast(parent_id, sa.Integer).label("parent_id"),
                ).where(table.c[field_name] == number)
            )
    if not parts:
        return None
    return sa.union_all(*parts).limit(limit) if len(parts) > 1 else parts[0].limit(limit)


#: the tables (their MetaData) → (the ``match`` setting → the prepared lookup): built once per
#: configuration, so that a lookup is one cached statement run with its number
_PREPARED: weakref.WeakKeyDictionary[Any, dict[Any, Any]] = weakref.WeakKeyDictionary()


def prepared(models: Any, settings: dict[str, Any]) -> Any:
    """The lookup of a configuration as one statement with the bound
    parameter ``number`` (None when no type has a phone), made once."""
    wanted = settings.get("match")
    key = tuple(wanted) if wanted is not None else None
    mine = _PREPARED.setdefault(models.metadata, {})  # the tables the statement reads
    if key not in mine:
        types = phone_fields(models.registry, settings)
        mine[key] = statement(models, types, sa.bindparam("number", type_=sa.String()))
    return mine[key]


def find(session: Any, models: Any, settings: dict[str, Any], number: str | None) -> list[Party]:
    """The records whose phone is ``number`` (E.164): people first (a match
    with a parent, such as a contact person), then in the order of the types.
    One indexed statement, prepared once per configuration; run on the
    session's connection (in its transaction) without the ORM's layer."""
    if not number:
        return []
    query = prepared(models, settings)
    if query is None:
        return []
    seen: set[tuple[str, int]] = set()
    found: list[Party] = []
    if session.autoflush:  # as session.execute would: records saved just now count
        session.flush()
    for row in session.connection().execute(query, {"number": number}):
        key = (row.doctype, row.id)
        if key in seen:
            continue
        seen.add(key)
        found.append(Party(row.doctype, row.id, row.owner_id, row.parent_type, row.parent_id))
    found.sort(key=lambda p: p.parent_id is None)
    return found
