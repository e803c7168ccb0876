"""Whose letter is it: an address is matched to the records that have it.

Generically: every ref field of EmailMessage (``outbox.links``' kind) that
points at a type with a field of type ``email`` is a *target*; on the base
layer ``contact`` → ContactPerson.email and ``customer`` → Customer.email. A
match on a type also fills the EmailMessage's fields that the matched record
itself refers to (a contact person gives its customer). One query per target
type for a whole batch of addresses, case-insensitive (``lower(email)``,
which PostgreSQL finds through the trigram index ``crm migrate`` keeps on
every searched column).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import sqlalchemy as sa

from engine.api import USER

from .outbox import MESSAGE, NOT_LINKS


@dataclass(frozen=True)
class Target:
    field: str  # the EmailMessage ref field
    doctype: str  # the type it points at
    email: str  # that type's email column
    carries: dict[str, str] = dc_field(default_factory=dict)  # EmailMessage field → target's column


def targets(registry: Any) -> list[Target]:
    """The targets of this configuration, those that give others first."""
    cached = registry.extensions.get("mail.targets")
    if cached is not None:
        return list(cached)
    message = registry.documents.get(MESSAGE)
    found: list[Target] = []
    if message is not None:
        links = [f for f in message.fields.values()
                 if f.type == "ref" and f.name not in NOT_LINKS and f.to != USER]  # fmt: skip
        for f in links:
            d = registry.documents.get(f.to or "")
            if d is None:
                continue
            email = next((x for x in d.fields.values() if x.type == "email" and x.stored), None)
            if email is None:
                continue
            carries = {}
            for other in links:
                if other is f:
                    continue
                own = next((x for x in d.fields.values()
                            if x.type == "ref" and x.to == other.to and x.stored), None)  # fmt: skip
                if own is not None:
                    carries[other.name] = own.column
            found.append(Target(f.name, d.name, email.column, carries))
    found.sort(key=lambda t: -len(t.carries))
    registry.extensions["mail.targets"] = tuple(found)
    return found


def primary(registry: Any) -> str | None:
    """The EmailMessage field a letter is filed under (``customer`` on the
    base layer): the target the others lead to, else the first."""
    all_targets = targets(registry)
    if not all_targets:
        return None
    carried = {name for t in all_targets for name in t.carries}
    for t in all_targets:
        if t.field in carried:
            return t.field
    return all_targets[0].field


def match(
    session: Any, models: Any, registry: Any, addresses: Iterable[str]
) -> dict[str, dict[str, int]]:
    """address (lower case) → the EmailMessage link fields it fills."""
    wanted = {a.strip().lower() for a in addresses if a and "@" in a}
    out: dict[str, dict[str, int]] = {}
    if not wanted:
        return out
    lowered = sorted(wanted)
    for t in targets(registry):
        table = models.table(t.doctype)
        cols = [table.c.id, table.c[t.email], *(table.c[c] for c in t.carries.values())]
        rows = session.execute(
            sa.select(*cols)
            .where(sa.func.lower(table.c[t.email]).in_(lowered))
            .order_by(table.c.id)
        ).all()
        for r in rows:
            key = (r[1] or "").strip().lower()
            if key not in wanted:
                continue
            found = out.setdefault(key, {})
            if t.field in found:
                continue  # the oldest record of that type with the address
            found[t.field] = r[0]
            for name, column in t.carries.items():
                value = r._mapping[table.c[column]]
                if value is not None:
                    found.setdefault(name, value)
    return out


def owners(
    session: Any, models: Any, registry: Any, doctype: str, ids: Iterable[int]
) -> dict[int, int]:
    """The owners (a ``User`` id) of those records of ``doctype``."""
    d = registry.documents.get(doctype)
    wanted = sorted(set(ids))
    if d is None or not d.owner or not wanted:
        return {}
    owner = d.fields.get(d.owner)
    if owner is None or owner.type != "ref":
        return {}
    table = models.table(doctype)
    rows = session.execute(
        sa.select(table.c.id, table.c[owner.column]).where(table.c.id.in_(wanted))
    ).all()
    return {r[0]: r[1] for r in rows if r[1] is not None}
