"""A record's timeline: everything that refers to it, newest first, a page at a time.

The engine's own entries are the records whose refs point here (created)
and their changes of state; plugins add theirs (calls, emails, tasks)
through ``crm_timeline_sources``. All sources are one UNION ALL query,
ordered and paged in SQL; titles are then rendered for the page's records
only, one query per type on the page.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine import access
from engine.access import Principal
from engine.hookspecs import hookimpl
from engine.registry import DocType

PAGE = 25


@dataclass(frozen=True)
class Entry:
    at: dt.datetime
    kind: str
    doctype: str
    doc_id: int
    detail: str | None


def entry_select(
    at: Any, kind: str, doctype: str, doc_id: Any, detail: Any = None
) -> sa.Select[Any]:
    """A timeline select with the columns every source must have, typed alike
    so that PostgreSQL accepts the union."""
    return sa.select(
        at.label("at"),
        sa.literal(kind, sa.String(32)).label("kind"),
        sa.literal(doctype, sa.String(64)).label("doctype"),
        doc_id.label("doc_id"),
        (
            sa.cast(detail, sa.String(200))
            if detail is not None
            else sa.null().cast(sa.String(200))
        ).label("detail"),
    )


class CoreTimeline:
    """The engine's own entries: records that refer to this one, and their states."""

    @hookimpl
    def crm_timeline_sources(
        self, models: Any, doctype: DocType, doc_id: int, principal: Principal
    ) -> list[Any]:
        registry = models.registry
        selects: list[Any] = []
        if doctype.statuses is not None:
            hist = models.metadata.tables[doctype.history_table]
            selects.append(
                entry_select(
                    hist.c.at, "status", doctype.name, hist.c.doc_id, hist.c.to_state
                ).where(hist.c.doc_id == doc_id)
            )
        merges = getattr(models, "merges", None)
        if merges is not None:  # the merges this record survived (engine/merge.py)
            selects.append(
                entry_select(
                    merges.c.at, "merged", doctype.name, merges.c.survivor_id, merges.c.merged_ids
                ).where(
                    merges.c.doctype == doctype.name,
                    merges.c.survivor_id == doc_id,
                    merges.c.undone_at.is_(None),
                )
            )
        for other in registry.documents.values():
            if other.builtin or not access.allowed(registry, principal, other.name, "read"):
                continue
            refs = [
                f
                for f in other.fields.values()
                if f.type == "ref" and f.to == doctype.name and not f.system
            ]
            if not refs:
                continue
            table = models.table(other.name)
            pointing = sa.or_(*(table.c[f.column] == doc_id for f in refs))
            visible = access.where(models, principal, other.name, "read")
            selects.append(
                entry_select(table.c.created_at, "created", other.name, table.c.id).where(
                    pointing, visible
                )
            )
            if other.statuses is not None:
                hist = models.metadata.tables[other.history_table]
                selects.append(
                    entry_select(hist.c.at, "status", other.name, hist.c.doc_id, hist.c.to_state)
                    .select_from(hist.join(table, table.c.id == hist.c.doc_id))
                    .where(pointing, visible, hist.c.from_state.is_not(None))
                )
        return selects


def page(
    models: Any, session: Any, pm: Any, doctype: DocType, doc_id: int, principal: Principal,
    offset: int = 0, limit: int = PAGE,
) -> tuple[list[Entry], bool]:  # fmt: skip
    """One page of entries and whether there are more."""
    selects = [s for result in pm.hook.crm_timeline_sources(
        models=models, doctype=doctype, doc_id=doc_id, principal=principal) for s in result or []]  # fmt: skip
    if not selects:
        return [], False
    union = sa.union_all(*selects).subquery("timeline")
    stmt = (
        sa.select(union)
        .order_by(union.c.at.desc(), union.c.doc_id.desc(), union.c.kind)
        .offset(max(0, offset))
        .limit(limit + 1)
    )
    rows = session.execute(stmt).all()
    entries = [Entry(_aware(r.at), r.kind, r.doctype, r.doc_id, r.detail) for r in rows[:limit]]
    return entries, len(rows) > limit


def _aware(value: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
