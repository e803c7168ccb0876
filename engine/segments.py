"""Segments by name: the consultant's (``segments:`` in metadata) and, once
saved by users, their own personal or shared ones (docs/reports.md).

Every path that takes ``segment=NAME`` (the list page, REST, exports,
reports, dashboards, mailings, call lists) resolves it here, so a segment
means the same records everywhere, under the asking user's rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.access import Principal


@dataclass(frozen=True)
class Found:
    """A segment as a caller applies it: its type and its structured filter."""

    name: str
    document: str
    filter: Mapping[str, Any]
    label: str


def find(
    models: Any, session: Any, name: str, principal: Principal | None, document: str | None = None
) -> Found | None:
    """The segment ``name`` as ``principal`` may use it (of ``document``, when
    given), or None when there is none such for them."""
    registry = models.registry
    s = registry.segments.get(name)
    if s is None or (document is not None and s.document != document):
        return None
    return Found(s.name, s.document, s.filter, s.label.get(registry.locale) if s.label else s.name)
