"""The generated web app: HTML views and REST APIs for every document type.

Nothing here knows YAML: everything is read from the registry. A new type,
attribute, state or role appears in the menus, forms, lists, kanban,
calendar and API after ``crm migrate`` and a restart, with no code.
"""

from __future__ import annotations

from typing import Any

from engine.web.base import install_request_handling
from engine.web.menu import install_menu


def register(appbuilder: Any, crm: Any) -> None:
    """Add every type's views and API to the app; called by the app factory."""
    from engine.reports.views import register as register_reports
    from engine.web.api import register_apis
    from engine.web.quality import register_quality
    from engine.web.views import register_views

    install_request_handling(appbuilder, crm)
    register_views(appbuilder, crm)
    register_apis(appbuilder, crm)
    register_reports(appbuilder, crm)
    register_quality(appbuilder, crm)
    install_menu(appbuilder, crm)
