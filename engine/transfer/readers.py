"""Readers: (line, cells) from a CSV file or the first sheet of an XLSX workbook,
within :class:`Limits`: a file beyond them is refused before it costs much.

A workbook is a zip archive: the sizes its entries declare are checked
before anything is unpacked (the unpacking never yields more than an entry
declares), and its sheet is read as a stream of the rows the file holds,
never by the size the sheet claims for itself."""

from __future__ import annotations

import codecs
import csv
import io
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from engine.i18n import gettext
from engine.transfer.formats import (
    TransferError,
    unguard_text,
)

# the cell limit is checked by the readers (a table cell holds a JSON list of rows)
csv.field_size_limit(max(csv.field_size_limit(), 64 * 1024 * 1024))


@dataclass(frozen=True)
class Limits:
    """How big a file an import reads; a file beyond any of them is refused
    with a message that names the limit."""

    #: rows of data (the header not counted)
    rows: int = 1_000_000
    #: columns of a row
    columns: int = 200
    #: characters of one cell
    cell: int = 32 * 1024
    #: bytes of the file once unpacked (a CSV file as it is, a workbook's entries together)
    size: int = 200 * 1024 * 1024
    #: how many times an entry of a workbook may be larger than it is packed
    ratio: int = 500

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> Limits:
        """The limits of a configuration's ``imports:`` map (the defaults for what it omits)."""
        size = settings.get("max_megabytes")
        return cls(
            rows=settings.get("max_rows") or cls.rows,
            columns=settings.get("max_columns") or cls.columns,
            cell=settings.get("max_cell") or cls.cell,
            size=size * 1024 * 1024 if size else cls.size,
        )

    def too_many_rows(self, line: int) -> TransferError:
        return TransferError(
            gettext(
                "line %(line)s: the file has more than %(n)s rows, the limit of an import; "
                "split it into smaller files",
                line=line,
                n=format(self.rows, ","),
            )
        )

    def check_row(self, line: int, cells: list[Any]) -> None:
        if line - 1 > self.rows:
            raise self.too_many_rows(line)
        if len(cells) > self.columns:
            last = len(cells)
            while last > self.columns and _blank(cells[last - 1]):
                last -= 1
            if last > self.columns:
                raise TransferError(
                    gettext(
                        "line %(line)s: the row has %(n)s columns, more than %(limit)s, "
                        "the limit of an import",
                        line=line,
                        n=last,
                        limit=self.columns,
                    )
                )
            del cells[last:]
        for i, cell in enumerate(cells):
            if isinstance(cell, str) and len(cell) > self.cell:
                raise TransferError(
                    gettext(
                        "line %(line)s, column %(column)s: the cell holds %(n)s characters, "
                        "more than %(limit)s, the limit of an import",
                        line=line,
                        column=i + 1,
                        n=format(len(cell), ","),
                        limit=format(self.cell, ","),
                    )
                )

    def too_big(self, size: int) -> TransferError:
        return TransferError(
            gettext(
                "the file holds %(size)s of data, more than %(limit)s, "
                "the limit of an import; split it into smaller files",
                size=_mb(size),
                limit=_mb(self.size),
            )
        )


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


class open_binary:
    """A binary file from a path or an open file (text files are encoded back)."""

    def __init__(self, source: Any):
        self.source = source
        self.owned: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes]:
        if isinstance(self.source, (str, Path)):
            try:
                self.owned = open(self.source, "rb")  # closed in __exit__
            except OSError as exc:
                raise TransferError(f"cannot read {self.source}: {exc.strerror}") from exc
            return self.owned
        probe = self.source.read(0)
        if isinstance(probe, str):
            return io.BytesIO(self.source.read().encode("utf-8"))
        if not self.source.seekable():
            return io.BytesIO(self.source.read())
        return self.source

    def __exit__(self, *exc: Any) -> None:
        if self.owned is not None:
            self.owned.close()


class CsvReader:
    """(line, cells) for each record of a CSV file; the header first."""

    def __init__(self, fh: IO[bytes], limits: Limits | None = None):
        self.limits = limits or Limits()
        start = fh.tell()
        fh.seek(0, io.SEEK_END)
        size = fh.tell() - start
        fh.seek(start)
        if size > self.limits.size:
            raise self.limits.too_big(size)
        head = fh.read(64 * 1024)
        self.total = self._count_lines(fh, head)
        fh.seek(start)
        self.encoding = "utf-8-sig"
        try:
            codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        except UnicodeDecodeError:
            self.encoding = "cp1251"
        self.text = io.TextIOWrapper(fh, encoding=self.encoding, newline="")
        first = head.decode(self.encoding, errors="replace").lstrip("\ufeff").split("\n", 1)[0]
        delimiter = max((",", ";", "\t"), key=first.count) if first else ","
        self.reader = csv.reader(self.text, delimiter=delimiter)

    @staticmethod
    def _count_lines(fh: IO[bytes], head: bytes) -> int | None:
        """Records in the file, about (a cell may span lines), not counting the header."""
        n = head.count(b"\n")
        last = head[-1:]
        while chunk := fh.read(1 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
        if last and last != b"\n":
            n += 1
        return max(n - 1, 0)

    def __iter__(self) -> Iterator[tuple[int, list[Any]]]:
        line = 1
        try:
            for cells in self.reader:
                row: list[Any] = [unguard_text(c) if c[:1] == "'" else c for c in cells]
                self.limits.check_row(line, row)
                yield line, row
                line = self.reader.line_num + 1
        except UnicodeDecodeError as exc:
            raise TransferError(
                f"line {line}: the file is not {self.encoding} text ({exc.reason})"
            ) from exc
        except csv.Error as exc:
            raise TransferError(f"line {line}: {exc}") from exc

    def close(self) -> None:
        self.text.detach()


class XlsxReader:
    """(row number, cells) of the first sheet of a workbook; the header first.

    Rows come as the sheet holds them, in read-only (streaming) mode: a row
    missing from the file is skipped, not made up, and the size the sheet
    declares is only an estimate for the progress bar."""

    def __init__(self, fh: IO[bytes], limits: Limits | None = None):
        from openpyxl import load_workbook
        from openpyxl.utils.exceptions import InvalidFileException

        self.limits = limits or Limits()
        self._check_archive(fh)
        try:
            with warnings.catch_warnings():
                # styles and extensions that openpyxl does not know: the values are read all the same
                warnings.simplefilter("ignore", UserWarning)
                self.book = load_workbook(fh, read_only=True, data_only=True)
        except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError) as exc:
            raise TransferError(gettext("the file is not an XLSX workbook")) from exc
        if not self.book.worksheets:
            raise TransferError(gettext("the workbook has no sheet"))
        self.sheet = self.book.worksheets[0]
        rows = self.sheet.max_row
        self.total = rows - 1 if rows and rows - 1 <= self.limits.rows else None
        # the rows the file holds, however large a sheet it declares
        self.sheet.reset_dimensions()

    def _check_archive(self, fh: IO[bytes]) -> None:
        """Refuse a workbook that would unpack beyond the limits (a zip bomb)
        from the sizes its entries declare, before anything is unpacked."""
        start = fh.tell()
        try:
            with zipfile.ZipFile(fh) as archive:
                entries = archive.infolist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise TransferError(gettext("the file is not an XLSX workbook")) from exc
        finally:
            fh.seek(start)
        total = 0
        for entry in entries:
            total += entry.file_size
            if total > self.limits.size:
                raise self.limits.too_big(total)
            packed = max(entry.compress_size, 1)
            if entry.file_size > 1024 * 1024 and entry.file_size / packed > self.limits.ratio:
                raise TransferError(
                    f"the workbook's part `{entry.filename}` unpacks {entry.file_size // packed} "
                    f"times larger than it is packed, more than {self.limits.ratio}, "
                    "the limit of an import: save the workbook again or export it as CSV"
                )

    def __iter__(self) -> Iterator[tuple[int, list[Any]]]:
        line = 0
        for cells in self.sheet.iter_rows(values_only=True):
            line += 1
            if line - 1 > self.limits.rows:
                raise self.limits.too_many_rows(line)
            row = list(cells)
            if not row:
                continue  # a row the sheet does not hold
            self.limits.check_row(line, row)
            yield line, row

    def close(self) -> None:
        self.book.close()
