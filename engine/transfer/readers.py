"""Readers: (line, cells) from a CSV file or the first sheet of an XLSX workbook."""

from __future__ import annotations

import codecs
import csv
import io
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from engine.transfer.formats import (
    TransferError,
    unguard_text,
)

# table cells hold JSON lists of rows, which may be long
csv.field_size_limit(max(csv.field_size_limit(), 64 * 1024 * 1024))


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

    def __init__(self, fh: IO[bytes]):
        start = fh.tell()
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
                yield line, [unguard_text(c) if c[:1] == "'" else c for c in cells]
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
    """(row number, cells) of the first sheet of a workbook; the header first."""

    def __init__(self, fh: IO[bytes]):
        from openpyxl import load_workbook
        from openpyxl.utils.exceptions import InvalidFileException

        try:
            with warnings.catch_warnings():
                # styles and extensions that openpyxl does not know: the values are read all the same
                warnings.simplefilter("ignore", UserWarning)
                self.book = load_workbook(fh, read_only=True, data_only=True)
        except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError) as exc:
            raise TransferError("the file is not an XLSX workbook") from exc
        if not self.book.worksheets:
            raise TransferError("the workbook has no sheet")
        self.sheet = self.book.worksheets[0]
        rows = self.sheet.max_row
        self.total = rows - 1 if rows else None

    def __iter__(self) -> Iterator[tuple[int, list[Any]]]:
        for line, cells in enumerate(self.sheet.iter_rows(values_only=True), start=1):
            yield line, list(cells)

    def close(self) -> None:
        self.book.close()
