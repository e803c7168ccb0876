"""Flask-AppBuilder's texts that our catalog translates itself.

Flask-AppBuilder's Russian catalog misses some texts its pages show (the list
and edit widgets' buttons, the group pages, filters) and has a typo
(«Отобажения/меню»). The engine's catalog is loaded after it, so an id listed
here wins: ``python -m engine.i18n update`` extracts these markers into our
catalog like any other message. Nothing imports this module; the ids only
need to appear in our sources.
"""

from __future__ import annotations

from engine.i18n import lazy_gettext as _l

FAB_STRINGS = (
    # the navbar's user menu, the sign-in and account pages
    _l("Profile"),
    _l("Logout"),
    _l("Login"),
    _l("Sign In"),
    _l("Username"),
    _l("Password"),
    _l("User info"),
    _l("Reset my password"),
    _l("Reset Password"),
    _l("Edit User Information"),
    _l("User information changed"),
    _l("Email"),
    # the list, show and edit widgets
    _l("Add"),
    _l("Edit"),
    _l("Show"),
    _l("Delete"),
    _l("Detail"),
    _l("Order by"),
    _l("Are you sure you want to delete this item?"),
    _l("Select Value"),
    _l("Database Error"),
    # search filters
    _l("Contains (insensitive)"),
    _l("In"),
    _l("Not In"),
    # the security pages an administrator opens
    _l("Views/Menus"),
    _l("Groups"),
    _l("List Groups"),
    _l("Show Group"),
    _l("Add Group"),
    _l("Edit Group"),
    _l("Either select a role or a group"),
    _l("The user's password for authentication"),
    _l(
        "The user group on the application, this will associate with a list of roles associated with the group"
    ),
    _l("User(s) exists in the role, cannot delete"),
    _l("User(s) exists in the group, cannot delete"),
)
