"""Reading records for a page or the API, within the access rules: one record
by id, the refs its title shows loaded with it, and the request's documents
service (which every read and write of a request goes through).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from flask import g
from sqlalchemy.orm import selectinload

from engine import access
from engine.documents import Documents, names_used
from engine.fieldtypes import valid_id
from engine.registry import DocType, Field
from engine.web.base import crm, db_session, principal

#: the deepest offset a page may ask for (deeper pages use the API's cursor)
MAX_OFFSET = 1_000_000


def clean(text: str | None, limit: int = 1000) -> str:
    """Text from a URL or a form as the database may see it: no NUL
    characters (PostgreSQL refuses them), not longer than ``limit``."""
    return (text or "").replace("\x00", "")[:limit]


def documents() -> Documents:
    """The request's documents service, acting for the request's principal."""
    if "crm_documents" not in g:
        state = crm()
        g.crm_documents = Documents.for_principal(state.models, db_session(), principal(), state.pm)
    return g.crm_documents


def title_refs(d: DocType) -> list[str]:
    """The refs a type's title shows."""
    used = names_used(d.title, True) if d.title else frozenset()
    return [n for n, f in d.fields.items() if f.type == "ref" and ("doc" in used or n in used)]


def ref_loads(d: DocType, names: Iterable[str | None] | None = None) -> list[Any]:
    """Loader options that fetch the refs ``names`` (default: those the
    type's title shows) for many records at once: one query per ref, not one
    per record."""
    if names is None:
        names = title_refs(d)
    cls = crm().models.cls(d.name)
    return [
        selectinload(getattr(cls, n))
        for n in dict.fromkeys(names)
        if n is not None and n in d.fields and d.fields[n].type == "ref"
    ]


def fetch(doctype: str, obj_id: int, action: str = "read") -> Any:
    """One record the principal may act on, or None (which the caller turns into 404)."""
    if valid_id(obj_id) is None:
        return None
    state = crm()
    cls = state.models.cls(doctype)
    stmt = (
        sa.select(cls)
        .where(cls.id == obj_id)
        # an archived (merged) record opens to be read, saying where it went
        .where(access.where(state.models, principal(), doctype, action, archived=action == "read"))
    )
    return db_session().execute(stmt).scalar_one_or_none()


def row_doc(d: DocType, f: Field) -> DocType:
    """A table field's rows seen as a type of their own (for labels of their refs)."""
    return DocType(f"{d.name}.{f.name}", d.loc, d.layer, f.label, f.fields)
