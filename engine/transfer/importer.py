"""Import: the rows of a file checked by the rules every save obeys and written
a batch at a time."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from engine import access, clock
from engine.access import Principal
from engine.documents import AUDIT, Documents, aware, empty, quoted
from engine.errors import did_you_mean
from engine.fieldtypes import Invalid
from engine.filters import user_name
from engine.i18n import gettext
from engine.models import Models
from engine.registry import USER, DocType, Field
from engine.transfer.formats import (
    BATCH,
    MAX_ERRORS,
    TransferError,
    check_format,
    doctype_of,
    key_field,
)
from engine.transfer.readers import CsvReader, Limits, XlsxReader, open_binary

_ID = re.compile(r"#(\d+)")


#: a NUL character: no text of a record may hold one (PostgreSQL refuses it)
def _nul() -> str:
    return gettext("holds a NUL character (\\0), which text may not contain")


#: ids of records that an all-or-nothing import stopped writing: never stored
_UNWRITTEN = 2**62
#: how many keys → ids an import remembers per target before starting afresh
_CACHE = 200_000

Progress = Callable[[int, "int | None"], None]
#: ``checkpoint(line, result)``: a batch up to ``line`` is written; the result so far
Checkpoint = Callable[[int, "ImportResult"], None]


@dataclass(frozen=True)
class RowError:
    """A bad value: the line of the file (the header is line 1), the column
    as its header names it (``lines[2].qty`` inside a table cell) and why."""

    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return (
            f"{self.line}: {self.field}: {self.message}"
            if self.field
            else f"{self.line}: {self.message}"
        )


@dataclass
class ImportResult:
    doctype: str
    #: data rows read (empty rows are skipped)
    rows: int = 0
    created: int = 0
    #: the first ``max_errors`` errors in file order; ``more_errors`` counts the rest
    errors: list[RowError] = field(default_factory=list)
    more_errors: int = 0
    bad_rows: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def error_count(self) -> int:
        return len(self.errors) + self.more_errors

    def as_json(self) -> dict[str, Any]:
        """The result as a background import keeps it (the job's result)."""
        return {
            "doctype": self.doctype,
            "ok": self.ok,
            "rows": self.rows,
            "created": self.created,
            "bad_rows": self.bad_rows,
            "errors": [
                {"line": e.line, "field": e.field, "message": e.message} for e in self.errors
            ],
            "more_errors": self.more_errors,
            "warnings": list(self.warnings),
        }


# -- import ----------------------------------------------------------------------------


def import_(
    models: Models,
    session: Session,
    doctype: str,
    source: IO[bytes] | IO[str] | str | Path,
    fmt: str | None = None,
    *,
    principal: Principal | None = None,
    all_or_nothing: bool = True,
    progress: Progress | None = None,
    batch: int = BATCH,
    now: dt.datetime | None = None,
    max_errors: int = MAX_ERRORS,
    limits: Limits | None = None,
    write: bool = True,
    checkpoint: Checkpoint | None = None,
    after_line: int = 0,
) -> ImportResult:
    """Create a record of ``doctype`` from each row of ``source`` (a path or a
    file; ``fmt`` ``csv`` or ``xlsx``, by default from the file's name).

    Runs in the session's transaction on behalf of ``principal`` (None: the
    system), who becomes the records' author and ``current_user``; the
    caller commits. ``progress(done, total)`` is called after every batch
    (``total`` is an estimate, None when unknown); an exception it raises
    cancels the import and rolls the session back. Raises TransferError when
    the file cannot be read at all or goes beyond ``limits`` (rows, columns,
    cell and unpacked size: :class:`~engine.transfer.readers.Limits`); bad
    rows are reported in the result.

    ``write=False`` only checks the file: nothing is written, ``created`` is 0.
    ``checkpoint(line, result)`` is called after each batch that was written
    (``all_or_nothing=False`` only), for a caller that commits there;
    ``after_line`` skips the lines up to it, which such a caller committed
    before it was interrupted."""
    if checkpoint is not None and all_or_nothing:
        raise ValueError("checkpoints are for imports that keep their good rows")
    registry = models.registry
    d = doctype_of(registry, doctype)
    if d.builtin:
        raise TransferError(
            gettext(
                "%(document)s records are managed on the security pages", document=quoted(d.label)
            )
        )
    if principal is not None and not access.allowed(registry, principal, d.name, "create"):
        raise TransferError(
            gettext(
                "%(user)s may not create %(document)s records",
                user=principal.username or gettext("this user"),
                document=quoted(d.label, None, registry.locale),
            )
        )
    if fmt is None:
        name = str(source) if isinstance(source, (str, Path)) else getattr(source, "name", "")
        fmt = "xlsx" if str(name).lower().endswith(".xlsx") else "csv"
    fmt = check_format(fmt)
    importer = _Importer(models, session, d, principal or Principal.system(),
                         now or clock.now(), max_errors)  # fmt: skip
    importer.writing = write
    importer.checkpoint = checkpoint
    importer.after_line = after_line
    if limits is None:
        limits = Limits.of(registry.imports)
    with open_binary(source) as fh:
        reader = CsvReader(fh, limits) if fmt == "csv" else XlsxReader(fh, limits)
        try:
            importer.run(reader, batch, all_or_nothing, progress)
        except BaseException:
            session.rollback()  # batches written before the file turned out unreadable
            raise
        finally:
            reader.close()
    result = importer.result
    if result.errors and all_or_nothing:
        session.rollback()
        result.created = 0
    return result


@dataclass
class _Column:
    index: int
    header: str
    field: Field
    #: refs: the target's field the cell names a record by (None: by id only)
    key: Field | None = None
    kind: str = "plain"  # plain, ref, table, number, status, ignored


@dataclass
class _Row:
    line: int
    values: dict[str, Any] = field(default_factory=dict)
    #: (plan path, ref field, key field or None, key value or id)
    refs: list[tuple[str, Field, Field | None, Any]] = field(default_factory=list)
    number: str | None = None
    status: str | None = None
    errors: dict[str, str] = field(default_factory=dict)
    plan: Any = None
    #: self-refs: key field name → this row's own key value
    own_keys: dict[str, Any] = field(default_factory=dict)

    def error(self, path: str, message: str) -> None:
        self.errors.setdefault(path, message)


class _Importer:
    def __init__(
        self,
        models: Models,
        session: Session,
        d: DocType,
        principal: Principal,
        now: dt.datetime,
        max_errors: int,
    ):
        self.models = models
        self.registry = models.registry
        self.locale = self.registry.locale
        self.session = session
        self.d = d
        self.principal = principal
        self.now = aware(now)
        # an administrator's import (the command line's) is trusted like a
        # migration: readonly fields, numbers and states come from the file;
        # anyone else's is held to what their forms allow
        self.docs = Documents.for_principal(
            models, session, principal, now=self.now, trusted=principal.admin
        )
        self.max_errors = max_errors
        self.result = ImportResult(d.name)
        self.columns: list[_Column] = []
        self.headers: list[Any] = []
        self.index_of: dict[str, int] = {}
        self.unnamed: list[int] = []
        self.selfref_keys: set[str] = set()
        self.header_of: dict[str, str] = {}
        self.writing = True
        self.checkpoint: Checkpoint | None = None
        self.after_line = 0
        #: unique field → value → the line that has it (records of this file)
        self.seen: dict[str, dict[Any, int]] = {}
        #: (target, key field or "#") → key → ids
        self.cache: dict[tuple[str, str], dict[Any, list[int]]] = {}
        #: self-refs: key field → key → id of a record this import created
        self.made: dict[str, dict[Any, int]] = {}
        self.unique = [
            f
            for f in d.fields.values()
            if f.unique and f.stored and not f.system and f.name not in AUDIT
        ]
        if d.numbering is not None:
            self.unique.append(d.fields[d.numbering.field])
        self.child_unique = [
            (f, c)
            for f in d.fields.values()
            if f.type == "table"
            for c in f.fields.values()
            if c.unique and not c.compute
        ]
        #: target → the rows this user may read, for a rule short of "all"
        self.readable: dict[str, Any] = {}
        self.fallback = self._fallback()
        self.number_re = (
            re.compile(re.escape(d.numbering.prefix) + r"(\d+)") if d.numbering else None
        )

    def _fallback(self) -> dict[str, Any]:
        """What the database puts in a column left empty, as the ORM leaves it
        to: the column's server default (see ``engine.models``), so an empty
        cell ends up as :meth:`Documents.create` would store it."""
        out: dict[str, Any] = {}
        table = self.models.table(self.d.name)
        for f in self.d.fields.values():
            if not f.stored or f.name in AUDIT or table.c[f.column].server_default is None:
                continue
            if f.type == "boolean":
                out[f.column] = f.default is True
                continue
            try:
                value = self.docs.normalize(f, f.default)
            except Invalid:
                continue
            if value is not None:
                out[f.column] = value
        return out

    # -- the header --------------------------------------------------------------

    def read_header(self, cells: list[Any]) -> None:
        d = self.d
        # names first: a label that happens to be another field's name does not hide it
        by_name: dict[str, list[Field]] = {f.name.casefold(): [f] for f in d.fields.values()}
        for f in d.fields.values():
            for text in f.label.texts.values():
                same_label = by_name.setdefault(text.strip().casefold(), [])
                if f not in same_label and not (
                    same_label and same_label[0].name.casefold() == text.strip().casefold()
                ):
                    same_label.append(f)
        problems: list[RowError] = []
        taken: dict[str, str] = {}
        self.headers = list(cells)
        self.unnamed = []
        for i, raw in enumerate(cells):
            header = "" if raw is None else str(raw).strip()
            if not header:
                self.unnamed.append(i)
                continue
            col = self._column(i, header, by_name, problems)
            if col is None:
                continue
            if col.field.name in taken:
                problems.append(
                    RowError(
                        1,
                        header,
                        gettext("repeats the column `%(column)s`", column=taken[col.field.name]),
                    )
                )
                continue
            taken[col.field.name] = header
            self.header_of[col.field.name] = header
            self.index_of[col.field.name] = i
            if col.kind == "ignored":
                why = (
                    gettext(
                        "column `%(column)s` is computed: its values are ignored and computed anew",
                        column=header,
                    )
                    if col.field.compute
                    else gettext(
                        "column `%(column)s` is filled in by the engine: its values are ignored",
                        column=header,
                    )
                )
                self.result.warnings.append(why)
            self.columns.append(col)
        if problems:
            self.result.errors.extend(problems)
            raise _Stop
        if not self.columns:
            self.result.errors.append(RowError(1, "", gettext("the first row names no field")))
            raise _Stop
        self.selfref_keys = {
            c.key.name
            for c in self.columns
            if c.kind == "ref" and c.key is not None and (c.field.to or USER) == d.name
        }
        for c in self.columns:
            if c.kind == "table":
                for child in c.field.fields.values():
                    if child.type == "ref" and (child.to or USER) == d.name:
                        key = key_field(self.registry, d.name)
                        if key is not None:
                            self.selfref_keys.add(key.name)

    def _column(
        self, i: int, header: str, by_name: dict[str, list[Field]], problems: list[RowError]
    ) -> _Column | None:
        d = self.d
        folded = header.casefold()
        found = by_name.get(folded, [])
        key_name = None
        if not found and "." in header:
            head, _, key_name = header.partition(".")
            found = [f for f in by_name.get(head.strip().casefold(), []) if f.type == "ref"]
        if len(found) > 1:
            names = ", ".join(f"`{f.name}`" for f in found)
            problems.append(
                RowError(
                    1,
                    header,
                    gettext("could be any of %(names)s: use the field's name", names=names),
                )
            )
            return None
        if not found:
            hint = did_you_mean(header, [n for n in d.fields if n not in AUDIT])
            problems.append(
                RowError(
                    1,
                    header,
                    gettext(
                        "is not a field of %(document)s",
                        document=quoted(d.label, d.name, self.locale),
                    )
                    + hint,
                )
            )
            return None
        f = found[0]
        rights = access.field_rights(
            self.registry, None if self.docs.trusted else self.principal, d.name
        )
        if not rights.writable(f.name):
            why = (
                gettext("is read-only to you: it cannot be imported")
                if rights.readable(f.name)
                else gettext("is hidden from you: it cannot be imported")
            )
            problems.append(RowError(1, header, why))
            return None
        if f.name in AUDIT or f.compute:
            return _Column(i, header, f, kind="ignored")
        if d.numbering is not None and f.name == d.numbering.field:
            return _Column(i, header, f, kind="number")
        if d.statuses is not None and f.name == d.statuses.field:
            return _Column(i, header, f, kind="status")
        if f.system:
            return _Column(i, header, f, kind="ignored")
        if f.type == "table":
            return _Column(i, header, f, kind="table")
        if f.type != "ref":
            return _Column(i, header, f)
        target = self.registry.documents[f.to or USER]
        if key_name is None:
            return _Column(i, header, f, key_field(self.registry, target.name), kind="ref")
        key_name = key_name.strip()
        key = target.fields.get(key_name) or next(
            (
                t
                for t in target.fields.values()
                if key_name.casefold() in (x.casefold() for x in t.label.texts.values())
            ),
            None,
        )
        if (
            key is None
            or not key.stored
            or key.type == "ref"
            or key.column not in self.models.table(target.name).c
        ):
            hint = did_you_mean(key_name, [n for n, t in target.fields.items() if t.stored])
            problems.append(
                RowError(
                    1,
                    header,
                    gettext(
                        "%(document)s has no field `%(field)s` to find records by",
                        document=quoted(target.label, target.name, self.locale),
                        field=key_name,
                    )
                    + hint,
                )
            )
            return None
        return _Column(i, header, f, key, kind="ref")

    # -- the rows ------------------------------------------------------------------

    def run(
        self,
        reader: CsvReader | XlsxReader,
        batch: int,
        all_or_nothing: bool,
        progress: Progress | None,
    ) -> None:
        self.all_or_nothing = all_or_nothing
        rows = iter(reader)
        first = next(rows, None)
        if first is None:
            raise TransferError("the file is empty: the first row must name the columns")
        try:
            self.read_header(first[1])
        except _Stop:
            return
        total = reader.total
        pending: list[_Row] = []
        pending_keys: dict[str, set[Any]] = {}
        done = 0
        for line, cells in rows:
            if line <= self.after_line:
                continue  # written before the import was interrupted
            if all(c is None or (isinstance(c, str) and not c.strip()) for c in cells):
                continue
            row = self.parse(line, cells)
            self.result.rows += 1
            # a row that names a record on an earlier line of this batch waits
            # until that one is written
            if any(
                value in pending_keys.get(key, ())
                for _, f, k, value in row.refs
                if k is not None and (f.to or USER) == self.d.name
                for key in (k.name,)
            ):
                done += self.flush(pending)
                pending, pending_keys = [], {}
                self._progress(progress, done, total)
            pending.append(row)
            for key, value in row.own_keys.items():
                pending_keys.setdefault(key, set()).add(value)
            if len(pending) >= batch:
                done += self.flush(pending)
                pending, pending_keys = [], {}
                self._progress(progress, done, total)
        if pending:
            done += self.flush(pending)
        if progress is not None:
            progress(done, done)

    @staticmethod
    def _progress(progress: Progress | None, done: int, total: int | None) -> None:
        if progress is not None:
            progress(done, None if total is None else max(total, done))

    def parse(self, line: int, cells: list[Any]) -> _Row:
        row = _Row(line)
        width = len(cells)
        for c in self.columns:
            raw = cells[c.index] if c.index < width else None
            if isinstance(raw, str) and "\x00" in raw:
                row.error(c.field.name, _nul())
                continue
            if (
                isinstance(raw, float)
                and raw.is_integer()
                and c.field.type not in ("decimal", "money")
            ):
                raw = int(raw)
            if c.kind == "ignored":
                continue
            if c.kind == "plain":
                row.values[c.field.name] = raw
            elif c.kind == "ref":
                self._ref_cell(row, c.field.name, c.field, c.key, raw)
            elif c.kind == "table":
                self._table_cell(row, c.field, raw)
            elif c.kind == "number":
                self._number_cell(row, c.field, raw)
            elif c.kind == "status":
                self._status_cell(row, c.field, raw)
        for i in range(len(self.headers), width):
            if not _blank(cells[i]):
                row.error(f"#{i + 1}", gettext("a value in a column without a header"))
                break
        for i in self.unnamed:
            if i < width and not _blank(cells[i]):
                row.error(f"#{i + 1}", gettext("a value in a column without a header"))
                break
        for key in self.selfref_keys:
            if key in row.values:
                try:
                    value = self.docs.normalize(self.d.fields[key], row.values[key])
                except Invalid:
                    continue
                if value is not None:
                    row.own_keys[key] = value
            elif self.d.numbering is not None and key == self.d.numbering.field and row.number:
                row.own_keys[key] = row.number
        return row

    def _ref_cell(self, row: _Row, path: str, f: Field, key: Field | None, raw: Any) -> None:
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            row.values[path] = None
            return
        text = str(raw).strip()
        match = _ID.fullmatch(text)
        if match:
            row.refs.append((path, f, None, int(match.group(1))))
            return
        if key is None:
            target = self.registry.documents[f.to or USER]
            row.error(path, gettext("%(document)s records have no key to find them by: write `#id`",
                                    document=quoted(target.label, target.name, self.locale)))  # fmt: skip
            return
        try:
            value = self.docs.normalize(key, raw)
        except Invalid as exc:
            row.error(path, f"`{text}` {exc}")
            return
        row.refs.append((path, f, key, value))

    def _table_cell(self, row: _Row, f: Field, raw: Any) -> None:
        name = f.name
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            row.values[name] = []
            return
        try:
            rows = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError as exc:
            row.error(
                name,
                gettext(
                    "is not a JSON list of rows: %(error)s at character %(n)s",
                    error=exc.msg,
                    n=exc.pos + 1,
                ),
            )
            return
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            row.error(name, gettext("must be a JSON list of rows, each an object of field → value"))
            return
        if _has_nul(rows):
            row.error(name, _nul())
            return
        out = []
        for i, r in enumerate(rows):
            item: dict[str, Any] = {}
            for k, v in r.items():
                c = f.fields.get(k)
                if c is None or k == "id":
                    item[k] = v  # plan reports an unknown field
                    continue
                if c.compute:
                    continue
                if c.type == "ref":
                    target = c.to or USER
                    self._ref_cell(row, f"{name}.{i}.{k}", c, key_field(self.registry, target), v)
                    item[k] = None
                    continue
                item[k] = v
            out.append(item)
        row.values[name] = out

    def _number_cell(self, row: _Row, f: Field, raw: Any) -> None:
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return
        if not self.docs.trusted:
            row.error(f.name, gettext("numbers are given by the CRM: leave the column empty"))
            return
        try:
            row.number = self.docs.normalize(f, raw)
        except Invalid as exc:
            row.error(f.name, str(exc))

    def _status_cell(self, row: _Row, f: Field, raw: Any) -> None:
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return
        try:
            row.status = self.docs.normalize(f, raw)
        except Invalid as exc:
            row.error(f.name, str(exc))
            return
        st = self.d.statuses
        if not self.docs.trusted and st is not None and row.status != st.initial:
            initial = st.states[st.initial].label.get(self.locale)
            row.error(
                f.name,
                gettext(
                    "new records start as “%(state)s”; only an administrator's import sets "
                    "another state (move them afterwards, through their transitions)",
                    state=initial,
                ),
            )

    # -- a batch -------------------------------------------------------------------

    def flush(self, rows: list[_Row]) -> int:
        self.resolve(rows)
        for row in rows:
            self.plan(row)
        self.check_unique(rows)
        self.check_file_unique(rows)
        good = [r for r in rows if not r.errors]
        for row in rows:
            # left to right; within a table cell, row by row
            for path in sorted(row.errors, key=self.position):
                self.report(row.line, self.column_name(path), row.errors[path])
        if len(good) < len(rows):
            self.result.bad_rows += len(rows) - len(good)
            if self.all_or_nothing:
                self.writing = False
        if self.writing and good:
            self.write(good)
        elif good:
            for row in good:  # later rows may still refer to these
                for key, value in row.own_keys.items():
                    self.made.setdefault(key, {})[value] = _UNWRITTEN
        if self.checkpoint is not None and rows:
            self.checkpoint(rows[-1].line, self.result)
        return len(rows)

    def report(self, line: int, column: str, message: str) -> None:
        if len(self.result.errors) < self.max_errors:
            self.result.errors.append(RowError(line, column, message))
        else:
            self.result.more_errors += 1

    def position(self, path: str) -> tuple[int, int]:
        """Where an error is in the file (column, row of a table cell), to
        report a row's errors left to right."""
        head, _, rest = path.partition(".")
        index = rest.partition(".")[0]
        row = int(index) if index.isdigit() else -1
        if head.startswith("#") and head[1:].isdigit():
            return int(head[1:]) - 1, row
        return self.index_of.get(head, len(self.headers)), row

    def column_name(self, path: str) -> str:
        """A plan's error path (``lines.2.qty``) as the file names it (``lines[3].qty``)."""
        head, _, rest = path.partition(".")
        name = self.header_of.get(head, head)
        if not rest:
            return name
        index, _, sub = rest.partition(".")
        return f"{name}[{int(index) + 1}].{sub}" if index.isdigit() else f"{name}.{rest}"

    def resolve(self, rows: list[_Row]) -> None:
        """Refs by key: one query per target and key field for the whole batch."""
        wanted: dict[tuple[str, str], set[Any]] = {}
        for row in rows:
            for _, f, key, value in row.refs:
                target = f.to or USER
                slot = (target, key.name if key is not None else "#")
                cache = self.cache.get(slot, {})
                made = self.made.get(slot[1], {}) if target == self.d.name else {}
                if value not in cache and value not in made:
                    wanted.setdefault(slot, set()).add(value)
        for (target, key_name), values in wanted.items():
            table = self.models.table(target)
            col = (
                table.c.id
                if key_name == "#"
                else table.c[self.registry.documents[target].fields[key_name].column]
            )
            cache = self.cache.setdefault((target, key_name), {})
            if len(cache) > _CACHE:
                cache.clear()
            found: dict[Any, list[int]] = {}
            readable = self.readable_where(target)
            for chunk in _chunks(sorted(values, key=str), 5000):
                if target == USER and key_name == "username":
                    # a user by login, else by name when only one user has it
                    name = user_name(table)
                    by_name: dict[Any, list[int]] = {}
                    for ident, login, full in self.session.execute(
                        sa.select(table.c.id, col, name).where(
                            sa.or_(col.in_(chunk), name.in_(chunk))
                        )
                    ):
                        if login in chunk:
                            found.setdefault(login, []).append(ident)
                        if full in chunk:
                            by_name.setdefault(full, []).append(ident)
                    for value, ids in by_name.items():
                        found.setdefault(value, ids)
                    continue
                for ident, value in self.session.execute(
                    sa.select(table.c.id, col).where(col.in_(chunk), readable)
                ):
                    found.setdefault(value, []).append(ident)
            cache.update(found)
        for row in rows:
            for path, f, key, value in row.refs:
                target = f.to or USER
                slot = (target, key.name if key is not None else "#")
                ids = list(self.cache.get(slot, {}).get(value, ()))
                made = self.made.get(slot[1], {}) if target == self.d.name else {}
                if value in made and made[value] not in ids:
                    ids.append(made[value])  # a record of an earlier line
                if len(ids) == 1:
                    self._set(row, path, ids[0])
                    continue
                label = quoted(self.registry.documents[target].label, None, self.locale)
                if key is None:
                    row.error(
                        path, gettext("there is no %(document)s #%(id)s", document=label, id=value)
                    )
                    continue
                by = quoted(key.label, key.name, self.locale)
                if not ids:
                    row.error(
                        path,
                        gettext(
                            "there is no %(document)s with %(field)s `%(value)s`",
                            document=label,
                            field=by,
                            value=value,
                        ),
                    )
                else:
                    row.error(
                        path,
                        gettext(
                            "%(n)s %(document)s records have %(field)s `%(value)s`: use a unique key",
                            n=len(ids),
                            document=label,
                            field=by,
                            value=value,
                        ),
                    )

    def readable_where(self, target: str) -> Any:
        """The records of ``target`` a ref of this import may name: those the
        importer may read, as a form's ref may (a record they may not read is
        "not there", the same message as a missing one); any user."""
        if target not in self.readable:
            target_doc = self.registry.documents[target]
            self.readable[target] = (
                sa.true()
                if target_doc.builtin
                else access.where(self.models, self.principal, target, "read")
            )
        return self.readable[target]

    @staticmethod
    def _set(row: _Row, path: str, value: Any) -> None:
        parts = path.split(".")
        if len(parts) == 1:
            row.values[path] = value
        else:
            row.values[parts[0]][int(parts[1])][parts[2]] = value

    def plan(self, row: _Row) -> None:
        d = self.d
        if any("." not in p for p in row.errors):
            # a top-level cell failed already: planning would only repeat it
            values = {k: v for k, v in row.values.items() if k not in row.errors}
        else:
            values = row.values
        p = self.docs.plan(d, None, values, lookups=False)
        row.plan = p
        for path, message in p.errors.items():
            row.error(path, message)
        if d.statuses is not None:
            state = row.status or d.statuses.initial
            p.values[d.statuses.field] = state
            for name in d.statuses.states[state].require:
                f = d.fields[name]
                value = p.rows.get(name) if f.type == "table" else p.values.get(name)
                if empty(value):
                    row.error(
                        d.statuses.field,
                        gettext(
                            "%(field)s must be filled in to enter %(state)s",
                            field=quoted(f.label, f.name, self.locale),
                            state=quoted(d.statuses.states[state].label, None, self.locale),
                        ),
                    )
        if d.numbering is not None:
            p.values[d.numbering.field] = row.number

    def check_unique(self, rows: list[_Row]) -> None:
        """Unique values against the database: one query per field per batch."""
        for f in self.unique:
            values: dict[Any, list[_Row]] = {}
            for row in rows:
                value = row.plan.values.get(f.name) if row.plan else None
                if value is not None and f.name not in row.errors:
                    values.setdefault(value, []).append(row)
            if not values:
                continue
            col = self.models.table(self.d.name).c[f.column]
            label = quoted(self.d.label, None, self.locale)
            for chunk in _chunks(list(values), 5000):
                for taken in self.session.execute(sa.select(col).where(col.in_(chunk))).scalars():
                    for row in values.get(taken, ()):
                        row.error(
                            f.name,
                            gettext("is already used by another %(document)s", document=label),
                        )
        for f, c in self.child_unique:
            paths: dict[Any, list[tuple[_Row, str]]] = {}
            for row in rows:
                if row.plan is None:
                    continue
                for i, rp in enumerate(row.plan.rows.get(f.name, [])):
                    value = rp.values.get(c.name)
                    if value is not None:
                        paths.setdefault(value, []).append((row, f"{f.name}.{i}.{c.name}"))
            if not paths:
                continue
            table = self.models.metadata.tables[self.d.child_table(f.name)]
            label = quoted(self.d.label, None, self.locale)
            for chunk in _chunks(list(paths), 5000):
                stmt = sa.select(table.c[c.column]).where(table.c[c.column].in_(chunk))
                for taken in self.session.execute(stmt).scalars():
                    for row, path in paths.get(taken, ()):
                        row.error(
                            path, gettext("is already used by another %(document)s", document=label)
                        )

    def check_file_unique(self, rows: list[_Row]) -> None:
        """Unique values against the earlier lines of the file; a bad row claims none."""
        for row in rows:
            if row.errors or row.plan is None:
                continue
            claims: list[tuple[str, Any, str]] = []
            for f in self.unique:
                value = row.plan.values.get(f.name)
                if value is not None:
                    claims.append((f.name, value, f.name))
            for f, c in self.child_unique:
                for i, rp in enumerate(row.plan.rows.get(f.name, [])):
                    value = rp.values.get(c.name)
                    if value is not None:
                        claims.append((f"{f.name}.{c.name}", value, f"{f.name}.{i}.{c.name}"))
            for slot, value, path in claims:
                line = self.seen.get(slot, {}).get(value)
                if line is not None:
                    row.error(path, gettext("is already used on line %(n)s", n=line))
            if not row.errors:
                for slot, value, _ in claims:
                    self.seen.setdefault(slot, {})[value] = row.line

    # -- writing ---------------------------------------------------------------------

    def write(self, rows: list[_Row]) -> None:
        d = self.d
        table = self.models.table(d.name)
        user_id = self.principal.user_id
        if d.numbering is not None:
            self._number(rows)
        fields = [f for f in d.fields.values() if f.stored and f.name not in AUDIT]
        fallback = self.fallback
        records = []
        for row in rows:
            values = row.plan.values
            record = {f.column: values.get(f.name) for f in fields}
            for column, value in fallback.items():
                if record[column] is None:
                    record[column] = value
            record.update(created_at=self.now, created_by_id=user_id, version=1)
            records.append(record)
        tables = [f for f in d.fields.values() if f.type == "table"]
        need_ids = bool(tables) or d.statuses is not None or bool(self.selfref_keys)
        if need_ids:
            stmt = table.insert().returning(table.c.id, sort_by_parameter_order=True)
            ids = list(self.session.execute(stmt, records).scalars())
        else:
            self.session.execute(table.insert(), records)
            ids = []
        for f in tables:
            child = self.models.metadata.tables[d.child_table(f.name)]
            lines = [
                {"parent_id": ident, "idx": i,
                 **{c.column: rp.values.get(c.name) for c in f.fields.values()}}
                for ident, row in zip(ids, rows, strict=True)
                for i, rp in enumerate(row.plan.rows.get(f.name, []))
            ]  # fmt: skip
            if lines:
                self.session.execute(child.insert(), lines)
        if d.statuses is not None:
            hist = self.models.metadata.tables[d.history_table]
            field_name = d.statuses.field
            self.session.execute(
                hist.insert(),
                [
                    {"doc_id": ident, "field": field_name, "from_state": None,
                     "to_state": row.plan.values[field_name], "at": self.now, "by_id": user_id}
                    for ident, row in zip(ids, rows, strict=True)
                ],
            )  # fmt: skip
        for ident, row in zip(ids, rows, strict=False):
            for key in self.selfref_keys:
                value = row.plan.values.get(key)
                if value is not None:
                    self.made.setdefault(key, {})[value] = ident
        self.result.created += len(rows)

    def _number(self, rows: list[_Row]) -> None:
        """Draw the missing numbers of a batch at once; the counter moves past
        the numbers the file brought."""
        d = self.d
        assert d.numbering is not None and self.number_re is not None
        name = d.numbering.field
        given = [
            int(m.group(1))
            for row in rows
            if row.number and (m := self.number_re.fullmatch(row.number))
        ]
        missing = [row for row in rows if not row.number]
        if not missing and not given:
            return
        last = self.docs.increment(d.name, by=len(missing), at_least=max(given, default=0))
        seen = self.seen.setdefault(name, {})
        for n, row in zip(range(last - len(missing) + 1, last + 1), missing, strict=True):
            number = f"{d.numbering.prefix}{n:0{d.numbering.width}d}"
            row.plan.values[name] = number
            seen[number] = row.line


class _Stop(Exception):
    """The header is wrong: no row is read."""


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _chunks(values: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]
