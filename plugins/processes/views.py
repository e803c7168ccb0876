"""The processes plugin's pages: tasks, notifications, route maps, reports.

``register`` adds every view; ``record_sections`` gathers what the plugin
shows on a record's page (a task's outcome buttons, where a process stands).
"""

from __future__ import annotations

from typing import Any

from engine.api import Registry


def register(appbuilder: Any, registry: Registry) -> None:
    from . import maps, reports, work

    work.register(appbuilder, registry)
    maps.register(appbuilder, registry)
    reports.register(appbuilder, registry)


def record_sections(models: Any, defs: Any, doctype: Any, doc: Any, principal: Any) -> list[Any]:
    from . import maps, work

    return [
        *work.record_sections(models, defs, doctype, doc, principal),
        *maps.record_sections(models, defs, doctype, doc, principal),
    ]
