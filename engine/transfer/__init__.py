"""Import and export of records as CSV, or XLSX through openpyxl.

``crm import`` and ``crm export`` call this module, and so do the web
pages: :func:`export` streams rows out a batch at a time, :func:`import_`
reads a file a batch at a time and reports its progress through a callback
(``progress(done, total)``); the job ``crm.import`` (:func:`import_job`)
runs it in the background for a page that shows a bar. XLSX goes through
openpyxl: the maintained, pure-Python reader and writer of the format (MIT,
releases since 2010, used by pandas), with no compiled parts and no network.

The file, the same both ways
----------------------------
* The first row names the columns. Export writes the fields' *names*
  (``header="labels"``: their labels in the config's locale, for people).
  Import matches each header against names and labels in every language,
  ignoring case, so either kind of file comes back in. ``customer.email``
  matches the referenced records by another of their fields.
* One row per record; one column per stored field in declaration order, the
  number and the status included, table fields too. The audit columns (id,
  created/updated at and by, version) are not exported: they belong to the
  database the records live in.
* Values: text as stored; numbers plain (``1234.50``, no grouping); yes/no
  as ``true``/``false``; dates ISO (``2026-03-02``), date-times ISO with the
  company's UTC offset; enums by key (import takes labels too).
* A reference is written as the target's *key* (:func:`key_field`): its
  number, else a unique field, else its INN, else its email, else its name
  field; users by login. A record without a key value is written ``#17``
  (its id), which import also accepts.
* A table field is one cell: a JSON list of row objects, field name → value
  in the same text forms (refs by key; computed values included on export,
  recomputed on import).
* CSV: UTF-8 with RFC 4180 quoting, comma separated. Import also reads a
  BOM, Windows-1251 and ``;`` or tab separators, as spreadsheets save them.
  Text a spreadsheet would run as a formula (starting with ``=``, ``+``,
  ``-``, ``@``; a plain number such as a phone ``+74951234567`` is safe) is
  written after an apostrophe, which import takes off again.
* XLSX: the first sheet; numbers as numbers (up to 15 digits, beyond that as
  text), dates as dates, yes/no as booleans, date-times as ISO text (Excel
  has no time zones), the rest as text.

What import does
----------------
Every row goes through :meth:`Documents.plan`, the rules every save obeys
(normalizing, defaults, computed fields, required, min/max, patterns), with
the database lookups done here a batch at a time instead of per row: refs
are found by key with one query per batch per target and key, unique values
are checked against the database and the rest of the file. Good rows are
written with Core ``executemany``: audit columns, version 1, numbers drawn
for the whole batch at once, table rows and status history alike.

* An administrator's import (the command line imports as one) is trusted,
  like a migration: readonly fields, numbers and states come from the file.
  Anyone else's (in the browser) is held to what their forms allow:
  readonly fields and numbers are refused, every record starts in the
  initial state.
* A number given in the file is kept (it must be unique) and the counter
  moves past it; an empty one is drawn as for a new record.
* A status given in the file is kept and recorded in the history as entered
  at the import; an empty one is the initial state. The state's ``require``d
  fields are checked; transitions are not: an import says where records
  are, it does not move them.
* Computed fields and audit columns are ignored, with a warning: computed
  values are recomputed, the audit columns are the importer's.
* An unknown column is an error and nothing is read.
* An empty cell is an empty value, as in a form (where a fixed default,
  which the database applies, still fills it); a field without a column
  gets its default.
* A row may refer to a record of its own type on an earlier line.
* All or nothing by default: if any row fails, nothing is written (the
  session's transaction is rolled back) and every error is reported, up to
  ``max_errors`` with a count of the rest. ``all_or_nothing=False`` writes
  the good rows and reports the bad ones; the caller commits.
* No ``crm_document_created`` hooks: an import is a bulk load, and
  plugins are not told of the records it brings.
* On behalf of a user (``principal``), their access rules apply as in a
  form: they must be allowed to create the type, and a ref finds only the
  records they may read (another is "not there", as a missing one).

The package: :mod:`~engine.transfer.formats` (formats, keys, the formula
guard), :mod:`~engine.transfer.export`, :mod:`~engine.transfer.readers`,
:mod:`~engine.transfer.importer` and :mod:`~engine.transfer.job` (the
background import).
"""

from engine.transfer.export import (
    csv_chunks,
    csv_file,
    export,
    export_rows,
    iter_csv,
    list_fields,
    list_rows,
)
from engine.transfer.formats import (
    BATCH,
    FORMATS,
    FORMULA_START,
    MAX_ERRORS,
    TransferError,
    exported_fields,
    key_field,
)
from engine.transfer.importer import ImportResult, Progress, RowError, import_
from engine.transfer.job import (
    IMPORT_JOB,
    JOB_ATTEMPTS,
    JOB_BATCH,
    import_job,
    new_upload,
    principal_of,
    upload_folder,
)

__all__ = [
    "BATCH",
    "FORMATS",
    "FORMULA_START",
    "IMPORT_JOB",
    "JOB_ATTEMPTS",
    "JOB_BATCH",
    "MAX_ERRORS",
    "ImportResult",
    "Progress",
    "RowError",
    "TransferError",
    "csv_chunks",
    "csv_file",
    "export",
    "export_rows",
    "exported_fields",
    "import_",
    "import_job",
    "iter_csv",
    "key_field",
    "list_fields",
    "list_rows",
    "new_upload",
    "principal_of",
    "upload_folder",
]
