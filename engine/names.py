"""Identifiers: what a type, field, state, role or step may be called.

SQL key words are fine names: every table and column the engine makes is
quoted by SQLAlchemy wherever the database needs it, so a trading firm's
`Order` with a field `order`, `from` or `group` works on SQLite and
PostgreSQL alike. Python key words are fine too: the engine reads fields by
name (``getattr``), never as written code. What is refused is what the
expression language (``when``, ``compute``, titles) would read as something
else, and a type whose tables would be the engine's or the user accounts' own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from engine.errors import Problem
from engine.registry import USER, Field, Registry, snake_case

IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
MAX_LENGTH = 48
#: field names an expression reads as something else: `not` is an operator,
#: `true`/`false`/`none` are constants, the others are the template
#: machinery's own (in any letter case)
EXPRESSION_WORDS = frozenset(
    {"not", "true", "false", "none", "self", "super", "caller", "varargs", "kwargs"}
)
#: field names a web form already sends for itself
FORM_WORDS = frozenset({"csrf_token"})
#: the user accounts' own roles: the administrators (who see everything) and
#: the visitors who have not logged in
BUILT_IN_ROLES = {
    "Admin": "the administrators' built-in role",
    "Public": "the role of visitors who have not logged in",
}
#: table name prefixes that belong to the user accounts (``ab_``), the engine
#: (``crm_``), schema versions (``alembic_``) and SQLite itself (``sqlite_``)
RESERVED_TABLE_PREFIXES = ("ab_", "crm_", "alembic_", "sqlite_")
#: the application's own views and APIs (the user accounts' screens, the
#: login, the API's documentation, the engine's user lookup): a type `X` is
#: served by the views `XView` and `XApi`, which must not be one of these
VIEW_NAMES = frozenset(
    {
        "AuthDBView", "IndexView", "LocaleView", "MenuApi", "OpenApi", "PermissionModelView",
        "PermissionViewModelView", "ResetMyPasswordView", "ResetPasswordView", "RoleModelView",
        "SecurityApi", "SwaggerView", "UserDBModelView", "UserGroupModelView",
        "UserInfoEditView", "UserLookupView", "UserStatsChartView", "UtilView",
        "ViewMenuModelView", "MySalesView", "HomeView", "ReportsView", "ReportsApi",
        "QualityView", "MergeView",
    }
)  # fmt: skip
#: the first segment of the application's own page addresses: a type's pages
#: are at ``/<its table name>/``
ROUTES = frozenset(
    {
        "api", "appbuilder", "back", "crm_users", "groups", "lang", "login", "logout", "merge",
        "my_sales", "quality", "reports",
        "permissions", "permissionviews", "resetmypassword", "resetpassword", "roles",
        "static", "swagger", "userinfoeditview", "users", "userstatschartview", "viewmenus",
    }
)  # fmt: skip


def identifier_problem(name: object, what: str) -> str | None:
    """Why ``name`` cannot be used as a ``what`` name, or None if it can.

    ``what`` ending in "field" (``field``, ``status field``) adds the words an
    expression cannot read as a field; ``document type`` adds the names whose
    tables or pages are taken."""
    if isinstance(name, bool):
        return f"the {what} name `{str(name).lower()}` is true/false in YAML; choose a word"
    if not isinstance(name, str):
        return f"the {what} name `{name}` must be a word, not a number"
    if not IDENTIFIER.match(name):
        return (
            f"the {what} name `{name}` must start with a letter and hold only letters, digits and _"
        )
    if "__" in name:
        return f"the {what} name `{name}` must not contain a double underscore"
    if len(name) > MAX_LENGTH:
        return f"the {what} name `{name}` is longer than {MAX_LENGTH} characters"
    if what.endswith("field") and name.lower() in EXPRESSION_WORDS:
        return (
            f"the {what} name `{name}` is a word of the expression language, where "
            f"`{name}` would not mean this field; choose another name, such as "
            f"`{name.lower()}_value`"
        )
    if what.endswith("field") and name in FORM_WORDS:
        return f"the {what} name `{name}` is the web forms' own security token; choose another name"
    if what == "role" and name in BUILT_IN_ROLES:
        return (
            f"the role name `{name}` is {BUILT_IN_ROLES[name]}, kept by the user accounts; "
            "choose another name"
        )
    if what == "document type":
        return type_name_problem(name)
    return None


def type_name_problem(name: str) -> str | None:
    """Why a document type cannot be called ``name``: its table or its pages are taken."""
    table = snake_case(name)
    if table.startswith(RESERVED_TABLE_PREFIXES):
        owner = {
            "ab_": "the user accounts",
            "crm_": "the engine",
            "alembic_": "schema versions",
            "sqlite_": "SQLite",
        }[next(p for p in RESERVED_TABLE_PREFIXES if table.startswith(p))]
        return (
            f"the document type name `{name}` would make the table `{table}`, and names "
            f"starting with `{table.split('_')[0]}_` belong to {owner}; choose another name"
        )
    if table in ROUTES or f"{name}View" in VIEW_NAMES or f"{name}Api" in VIEW_NAMES:
        return (
            f"the document type name `{name}` would serve its pages at `/{table}/`, "
            "where the application has pages of its own; choose another name"
        )
    return None


#: the columns of the user accounts' table (Flask-AppBuilder's ``ab_user``):
#: a user attribute may not take one of them
USER_TABLE_COLUMNS = frozenset(
    {
        "id", "first_name", "last_name", "username", "password", "active", "email",
        "last_login", "login_count", "fail_login_count", "created_on", "changed_on",
        "created_by_fk", "changed_by_fk",
    }
)  # fmt: skip
#: the columns every table row has besides its fields
ROW_COLUMNS = ("id", "parent_id", "idx")
#: the user fields the engine declares itself (columns of ``ab_user``)
_USER_BUILT_IN = frozenset({"username", "first_name", "last_name", "email", "active"})


def table_problems(registry: Registry) -> Iterator[Problem]:
    """Two types (or a type and another's rows or history) that would share a
    table, and two fields that would share a column: ``CustomerOrder`` and
    ``Customer_order``; ``Order``'s history and a table field ``history`` of
    ``Order``; a ref ``group`` (column ``group_id``) and a field ``group_id``;
    a user attribute ``password``."""
    owners: dict[str, str] = {}
    for d in registry.documents.values():
        if d.name == USER:
            for f in d.fields.values():
                if f.name not in _USER_BUILT_IN and f.column in USER_TABLE_COLUMNS:
                    yield Problem(
                        f.loc,
                        f"the user attribute `{f.name}` would use the column `{f.column}` of "
                        "the user accounts; choose another name",
                    )
            continue
        # the archive flag (engine/merge.py) is a column of every document table
        archive = {"merged_into": "the engine's archive flag (merged records)"}
        yield from _shared_columns(d.name, d.fields.values(), archive)
        for f in d.fields.values():
            if f.type == "table":
                rows = {c: "the rows themselves" for c in ROW_COLUMNS}
                yield from _shared_columns(f"{d.name}.{f.name}", f.fields.values(), rows)
        tables = [(d.table, f"the type `{d.name}`")]
        tables += [
            (d.child_table(f.name), f"the rows of `{d.name}.{f.name}`")
            for f in d.fields.values()
            if f.type == "table"
        ]
        if d.statuses is not None:
            tables.append((d.history_table, f"the status history of `{d.name}`"))
        for table, what in tables:
            first = owners.get(table)
            if first is not None:
                yield Problem(
                    d.loc,
                    f"{what} would use the table `{table}` of {first}; rename one of them",
                )
            else:
                owners[table] = what


def _shared_columns(
    owner: str, fields: Iterable[Field], taken: dict[str, str]
) -> Iterator[Problem]:
    """A ref ``group`` is stored in the column ``group_id``: no other field may be called so."""
    # the engine's own fields (created_by, the status, the number) come first
    for f in sorted(fields, key=lambda f: not f.system):
        if not f.stored:
            continue
        first = taken.get(f.column)
        if first is not None:
            yield Problem(
                f.loc,
                f"`{owner}.{f.name}` would use the column `{f.column}` of {first}; "
                "choose another name",
            )
        else:
            taken[f.column] = (
                f"the ref `{owner}.{f.name}`" if f.type == "ref" else f"`{owner}.{f.name}`"
            )
