"""Identifiers: what a type, field, state, role or step may be called."""

from __future__ import annotations

import keyword
import re

IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
MAX_LENGTH = 48
#: PostgreSQL's reserved key words (they cannot name a column unquoted
#: anywhere); words like ``date`` or ``name`` are not reserved and stay usable.
SQL_RESERVED = frozenset(
    [
        "all",
        "analyse",
        "analyze",
        "and",
        "any",
        "array",
        "as",
        "asc",
        "asymmetric",
        "both",
        "case",
        "cast",
        "check",
        "collate",
        "column",
        "constraint",
        "create",
        "current_catalog",
        "current_date",
        "current_role",
        "current_time",
        "current_timestamp",
        "current_user",
        "default",
        "deferrable",
        "desc",
        "distinct",
        "do",
        "else",
        "end",
        "except",
        "false",
        "fetch",
        "for",
        "foreign",
        "from",
        "grant",
        "group",
        "having",
        "in",
        "initially",
        "intersect",
        "into",
        "lateral",
        "leading",
        "limit",
        "localtime",
        "localtimestamp",
        "not",
        "null",
        "offset",
        "on",
        "only",
        "or",
        "order",
        "placing",
        "primary",
        "references",
        "returning",
        "select",
        "session_user",
        "some",
        "symmetric",
        "system_user",
        "table",
        "then",
        "to",
        "trailing",
        "true",
        "union",
        "unique",
        "user",
        "using",
        "variadic",
        "when",
        "where",
        "window",
        "with",
    ]
)


def identifier_problem(name: object, what: str) -> str | None:
    """Why ``name`` cannot be used as a ``what`` name, or None if it can."""
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
    if keyword.iskeyword(name):
        return f"the {what} name `{name}` is a Python keyword"
    if name.lower() in SQL_RESERVED:
        return f"the {what} name `{name}` is an SQL keyword"
    return None
