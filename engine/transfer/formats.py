"""The file, the same both ways: its formats, batch sizes, columns and keys,
and the apostrophe that keeps a spreadsheet from running text as a formula."""

from __future__ import annotations

import re

from engine.documents import AUDIT
from engine.errors import HandledError, did_you_mean
from engine.filters import label_field
from engine.registry import USER, DocType, Field, Registry

FORMATS = ("csv", "xlsx")
BATCH = 1000
MAX_ERRORS = 1000
#: characters that make a spreadsheet read a cell as a formula
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?")


class TransferError(HandledError):
    """The file cannot be read at all: unknown type, format or column."""


def doctype_of(registry: Registry, doctype: str) -> DocType:
    """The type a file holds, or TransferError naming the closest one."""
    d = registry.documents.get(doctype)
    if d is None:
        raise TransferError(
            f"there is no document type `{doctype}`{did_you_mean(doctype, registry.documents)}"
        )
    return d


def check_format(fmt: str) -> str:
    fmt = (fmt or "csv").lower().lstrip(".")
    if fmt not in FORMATS:
        raise TransferError(f"unknown format `{fmt}`: use csv or xlsx")
    return fmt


# -- keys ------------------------------------------------------------------------------


def key_field(registry: Registry, doctype: str) -> Field | None:
    """The field that names a record of ``doctype`` in a file: its number,
    else a unique field, else its INN, else its email, else its name field
    (:func:`engine.filters.label_field`); a user's login."""
    d = registry.documents[doctype]
    if d.name == USER:
        return d.fields.get("username")
    if d.numbering is not None:
        return d.fields[d.numbering.field]
    plain = [
        f
        for f in d.fields.values()
        if f.stored and f.type != "ref" and not f.compute and f.name not in AUDIT
    ]
    for test in (
        lambda f: f.unique,
        lambda f: f.type == "inn" or f.name == "inn",
        lambda f: f.type == "email",
    ):
        for f in plain:
            if test(f):
                return f
    return label_field(d)


def exported_fields(d: DocType) -> list[Field]:
    """The columns of a file of ``d``: every stored field and table, no audit columns."""
    return [f for f in d.fields.values() if f.name not in AUDIT]


def guard_text(text: str) -> str:
    """Keep a spreadsheet from running a text cell as a formula."""
    if text.startswith("'") or (
        text.startswith(FORMULA_START) and not _PLAIN_NUMBER.fullmatch(text)
    ):
        return "'" + text
    return text


def unguard_text(text: str) -> str:
    if len(text) > 1 and text[0] == "'" and text[1] in ("'", *FORMULA_START):
        return text[1:]
    return text
