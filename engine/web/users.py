"""Flask-AppBuilder's pages of users (the profile, the administrator's list)
in the words of the CRM: "Yes"/"No" for a flag, roles by their labels.

The classes keep Flask-AppBuilder's names, so its endpoints and permissions
(``UserDBModelView.userinfo`` …) stay what they are."""

from __future__ import annotations

from typing import Any, ClassVar

from flask_appbuilder.security.sqla.manager import SecurityManager
from flask_appbuilder.security.views import UserDBModelView as FabUserDBModelView

from engine.i18n import gettext


def _yes_no(value: Any) -> str:
    return gettext("Yes") if value else gettext("No")


def _roles(roles: Any) -> str:
    from flask import current_app

    from engine.web.base import locale

    state = current_app.extensions.get("crm")
    labels = state.registry.roles if state is not None else {}
    names = []
    for role in roles or ():
        known = labels.get(role.name)
        names.append(known.label.get(locale()) if known is not None else role.name)
    return ", ".join(names)


class UserDBModelView(FabUserDBModelView):
    formatters_columns: ClassVar[dict[str, Any]] = {"active": _yes_no, "roles": _roles}


class CrmSecurityManager(SecurityManager):
    userdbmodelview = UserDBModelView
