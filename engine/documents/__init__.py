"""The documents service: every write of a record goes through here.

Web forms, REST, imports, plugins and the status engine all call
:class:`Documents`, so a rule (a required field, a unique value, a computed
total, the number sequence, optimistic locking) holds everywhere or nowhere.

A save is *planned* before anything is written: values are normalized,
defaults applied, computed fields recomputed and every rule checked on plain
dicts. Only a plan without errors touches the ORM objects, so a refused save
leaves the session exactly as it was. That needs no savepoint, which matters
because pysqlite's savepoints do not nest inside the caller's transaction.

The package, in the order a save passes through it: :mod:`~.values` (audit
columns, how messages name things), :mod:`~.errors` (what a save is refused
with), :mod:`~.plans` (a save worked out before it is written), :mod:`~.views`
(the service's user, clock and what expressions see), :mod:`~.validation`
(planning and every rule), :mod:`~.numbering` (record numbers),
:mod:`~.writing` (onto the ORM, history, hooks, optimistic locking) and
:mod:`~.service` (:class:`Documents`, the public face).
"""

from engine.documents.errors import (
    DeleteRefused,
    DuplicatesFound,
    NotFound,
    StaleVersion,
    ValidationFailed,
)
from engine.documents.plans import Duplicate, Plan, RowPlan
from engine.documents.service import Documents
from engine.documents.values import (
    AUDIT,
    INVALID,
    MAX_TITLE_DEPTH,
    NUMBERS,
    aware,
    empty,
    jsonable,
    names_used,
    quoted,
    same,
)

__all__ = [
    "AUDIT",
    "INVALID",
    "MAX_TITLE_DEPTH",
    "NUMBERS",
    "DeleteRefused",
    "Documents",
    "Duplicate",
    "DuplicatesFound",
    "NotFound",
    "Plan",
    "RowPlan",
    "StaleVersion",
    "ValidationFailed",
    "aware",
    "empty",
    "jsonable",
    "names_used",
    "quoted",
    "same",
]
