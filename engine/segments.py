"""Segments by name: the consultant's (``segments:`` in metadata) and the
ones users save from a list, personal or shared (docs/reports.md).

Every path that takes ``segment=NAME`` (the list page, REST, exports,
reports, dashboards, mailings, call lists) resolves it here, so a segment
means the same records everywhere, under the asking user's rules: a saved
segment is a structured filter, compiled with the asking user's read rule
like any other, so a shared one never shows more than its user may read.

A saved segment is named ``u<id>``; a personal one is usable by its owner
only, a shared one by everyone; its owner renames or deletes it, and an
administrator a shared one too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from engine import clock
from engine.access import Principal
from engine.i18n import gettext

USER_SEGMENT_TABLE = "crm_user_segment"
#: the name of a saved segment: ``u`` and its id
SAVED = re.compile(r"^u([1-9][0-9]{0,17})$")
MAX_LABEL = 200
#: how many segments one user may save (a guard, not a quota anyone meets)
MAX_PER_USER = 500


@dataclass(frozen=True)
class Found:
    """A segment as a caller applies it: its type and its structured filter."""

    name: str
    document: str
    filter: Mapping[str, Any]
    label: str
    #: a saved one: its owner and whether others may use it (None: the consultant's)
    owner_id: int | None = None
    shared: bool = False
    saved: bool = field(default=False)


class SegmentError(ValueError):
    """A segment a user cannot save, rename or delete; the message says why."""


def segment_table(metadata: sa.MetaData) -> sa.Table:
    """The segments users saved: one row each, its filter as JSON text."""
    return sa.Table(
        USER_SEGMENT_TABLE, metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner_id", sa.Integer, nullable=False, index=True),
        sa.Column("document", sa.String(64), nullable=False),
        sa.Column("label", sa.String(MAX_LABEL), nullable=False),
        sa.Column("filter", sa.Text, nullable=False),
        sa.Column("shared", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, default=clock.now),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        sa.Index(f"ix_{USER_SEGMENT_TABLE}_document_shared", "document", "shared"),
    )  # fmt: skip


def find(
    models: Any, session: Any, name: str, principal: Principal | None, document: str | None = None
) -> Found | None:
    """The segment ``name`` as ``principal`` may use it (of ``document``, when
    given), or None when there is none such for them: a consultant's segment,
    or a saved one (``u<id>``) that is shared or the principal's own."""
    registry = models.registry
    s = registry.segments.get(name)
    if s is not None:
        if document is not None and s.document != document:
            return None
        label = s.label.get(registry.locale) if s.label else s.name
        return Found(s.name, s.document, s.filter, label)
    m = SAVED.match(name or "")
    table = getattr(models, "user_segments", None)
    if m is None or table is None or session is None:
        return None
    row = session.execute(sa.select(table).where(table.c.id == int(m.group(1)))).first()
    if row is None or (document is not None and row.document != document):
        return None
    if row.document not in registry.documents or not _usable(row, principal):
        return None
    return _found(row)


def saved(models: Any, session: Any, principal: Principal | None, document: str) -> list[Found]:
    """The saved segments of ``document`` the principal may use: their own
    and the shared ones, by label (one indexed query)."""
    table = models.user_segments
    mine = table.c.owner_id == principal.user_id if principal and principal.user_id else sa.false()
    rows = session.execute(
        sa.select(table)
        .where(table.c.document == document, sa.or_(table.c.shared, mine))
        .order_by(table.c.label, table.c.id)
    )
    return [_found(row) for row in rows]


def save(
    models: Any,
    session: Any,
    principal: Principal,
    document: str,
    label: str,
    spec: Mapping[str, Any],
    shared: bool = False,
) -> Found:
    """Save ``spec`` as a segment of ``principal``'s (checked as a filter of
    ``document`` first); SegmentError when it cannot be."""
    from engine.filters import FilterError, compile_filter

    label = _label(label)
    if principal.user_id is None:
        raise SegmentError(gettext("only a signed-in user saves segments"))
    if document not in models.registry.documents:
        raise SegmentError(gettext("there is no document type `%(name)s`", name=document[:64]))
    try:
        compile_filter(models, document, spec, principal.user_id, principal=principal)
    except FilterError as exc:
        raise SegmentError(str(exc)) from exc
    table = models.user_segments
    count = session.execute(
        sa.select(sa.func.count()).select_from(table).where(table.c.owner_id == principal.user_id)
    ).scalar_one()
    if count >= MAX_PER_USER:
        raise SegmentError(gettext("you have %(count)s segments: delete some first", count=count))
    new_id = session.execute(
        table.insert()
        .values(owner_id=principal.user_id, document=document, label=label,
                filter=json.dumps(dict(spec), ensure_ascii=False, sort_keys=True),
                shared=bool(shared), created_at=clock.now())
        .returning(table.c.id)
    ).scalar_one()  # fmt: skip
    return Found(f"u{new_id}", document, dict(spec), label, principal.user_id, bool(shared), True)


def change(
    models: Any,
    session: Any,
    principal: Principal,
    name: str,
    label: str | None = None,
    shared: bool | None = None,
    delete: bool = False,
) -> None:
    """Rename, share or unshare, or delete a saved segment: its owner may,
    and an administrator a shared one; SegmentError otherwise."""
    table = models.user_segments
    m = SAVED.match(name or "")
    row = (
        session.execute(sa.select(table).where(table.c.id == int(m.group(1)))).first()
        if m
        else None
    )
    if row is None or not _usable(row, principal):
        raise SegmentError(gettext("there is no segment `%(name)s`", name=(name or "")[:50]))
    if not may_change(row.owner_id, row.shared, principal):
        raise SegmentError(
            gettext("only its owner (or an administrator, when it is shared) changes a segment")
        )
    if delete:
        session.execute(table.delete().where(table.c.id == row.id))
        return
    values: dict[str, Any] = {"updated_at": clock.now()}
    if label is not None:
        values["label"] = _label(label)
    if shared is not None:
        values["shared"] = bool(shared)
    session.execute(table.update().where(table.c.id == row.id).values(**values))


def may_change(owner_id: int | None, shared: bool, principal: Principal | None) -> bool:
    if principal is None or principal.user_id is None or owner_id is None:
        return False
    return owner_id == principal.user_id or (shared and principal.admin)


def _usable(row: Any, principal: Principal | None) -> bool:
    """A personal segment is its owner's alone; a shared one, everyone's."""
    return bool(row.shared) or (
        principal is not None and principal.user_id is not None
        and row.owner_id == principal.user_id
    )  # fmt: skip


def _found(row: Any) -> Found:
    try:
        spec = json.loads(row.filter)
    except ValueError:
        spec = {}
    if not isinstance(spec, dict):
        spec = {}
    return Found(f"u{row.id}", row.document, spec, row.label, row.owner_id, bool(row.shared), True)


def _label(label: str | None) -> str:
    text = " ".join(str(label or "").split())
    if not text:
        raise SegmentError(gettext("a segment needs a name"))
    if len(text) > MAX_LABEL:
        raise SegmentError(
            gettext("a segment's name is at most %(most)s characters", most=MAX_LABEL)
        )
    return text
