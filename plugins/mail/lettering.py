"""Email templates over a record: an EmailTemplate's subject, text and HTML
are sandboxed ``{{ }}`` templates (the consultant's template language) over
the record the letter is about (``doc``, and its fields by name) and the
user who writes (``user``).

A template's name is unique; its language says which readers it is for
(the compose page offers the writer's language first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.api import Documents, HandledError, gettext, render

TEMPLATE = "EmailTemplate"


@dataclass(frozen=True)
class Letter:
    subject: str
    text: str
    html: str | None


def render_text(docs: Documents, source: str | None, doctype: Any, doc: Any) -> str:
    """One template over a record (or over nothing: ``doc`` is None)."""
    if not source:
        return ""
    if doc is None or doctype is None:
        return str(render(source, {"doc": None, "now": docs.now(), "user": docs.user_view()}))
    view = docs.view(doctype, doc)
    context = docs.expression_context(view, doctype.fields, source, template=True)
    return str(render(source, context))


def render_template(docs: Documents, template: Any, doctype: Any = None, doc: Any = None) -> Letter:
    """An EmailTemplate record made into a letter about ``doc``. A template
    that fails (a field that is gone) raises HandledError with the reason."""
    try:
        return Letter(
            subject=" ".join(render_text(docs, template.subject, doctype, doc).split()),
            text=render_text(docs, template.body, doctype, doc),
            html=render_text(docs, template.html, doctype, doc) or None,
        )
    except HandledError:
        raise
    except Exception as exc:
        raise HandledError(
            gettext("the template %(name)s cannot be filled in: %(error)s",
                    name=template.name, error=str(exc))
        ) from exc  # fmt: skip


def find(docs: Documents, name: str, locale: str | None = None) -> Any | None:
    """The active template of that name (names are unique; ``locale`` breaks
    a tie should a later layer lift that)."""
    cls = docs.models.cls(TEMPLATE)
    rows = list(
        docs.session.execute(sa.select(cls).where(cls.name == name, cls.active.is_(True))).scalars()
    )
    rows.sort(key=lambda r: (r.locale != locale, r.locale is not None))
    return rows[0] if rows else None
