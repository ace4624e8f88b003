"""Reading a CSV file a marketer exported from anywhere: encoding, delimiter, header, rows."""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

DELIMITERS = (",", ";", "\t", "|")
SAMPLE_BYTES = 64 * 1024
# cp1252 leaves these bytes undefined; a file containing them is decoded as Latin-1.
CP1252_UNDEFINED = (b"\x81", b"\x8d", b"\x8f", b"\x90", b"\x9d")
SIGNATURES = {
    b"PK\x03\x04": "an Excel workbook or zip archive: save it as CSV first",
    b"\xd0\xcf\x11\xe0": "an old Excel (.xls) workbook: save it as CSV first",
    b"%PDF": "a PDF document",
    b"\x1f\x8b": "a gzip archive: unpack it first",
}
csv.field_size_limit(1024 * 1024)  # a stray quote swallowing the file fails at 1 MB, with its line


class ImportFileError(Exception):
    """The file cannot be imported at all; the message is shown to the marketer as is."""


@dataclass(frozen=True)
class CsvFormat:
    encoding: str
    delimiter: str


def detect_encoding(path: Path) -> str:
    """UTF-8 (with or without BOM) if the whole file decodes as UTF-8, else Windows-1252/Latin-1.

    The whole file is checked (about 0.1 s per 100 MB): a sample can pass and row 900,000
    still hold an "é" in Latin-1, which would fail the import after hours of work.
    """
    with open(path, "rb") as fh:
        head = fh.read(4)
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16"
        fh.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            for chunk in iter(lambda: fh.read(1024 * 1024), b""):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
            return "utf-8"
        except UnicodeDecodeError:
            pass
        fh.seek(0)
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            if any(byte in chunk for byte in CP1252_UNDEFINED):
                return "latin-1"
    return "cp1252"


def check_decodes(path: Path, encoding: str) -> None:
    """A chosen encoding must fit the whole file; otherwise say on which line it does not."""
    decoder = codecs.getincrementaldecoder(encoding)()
    newlines = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                # exc.start counts from the start of what the decoder held: this chunk plus
                # at most a few bytes of an unfinished character before it.
                line = newlines + chunk[: max(exc.start, 0)].count(b"\n") + 1
                raise ImportFileError(
                    f"Line {line}: bytes that are not {encoding} ({exc.reason}); choose the file's encoding."
                ) from None
            newlines += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise ImportFileError(f"The file ends in the middle of a {encoding} character ({exc.reason}).") from None


def check_not_binary(path: Path) -> None:
    with open(path, "rb") as fh:
        head = fh.read(SAMPLE_BYTES)
    if not head.strip():
        raise ImportFileError("The file is empty.")
    for signature, what in SIGNATURES.items():
        if head.startswith(signature):
            raise ImportFileError(f"This is not a CSV file: it looks like {what}.")
    if b"\x00" in head and not head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ImportFileError("This is not a CSV text file (it contains binary data).")


def sniff_delimiter(first_line: str) -> str:
    """The candidate that splits the header line most often (header cells rarely hold one)."""
    counts = {d: first_line.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def detect_format(path: Path, *, encoding: str = "", delimiter: str = "") -> CsvFormat:
    check_not_binary(path)
    if encoding:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ImportFileError(f"Unknown encoding {encoding!r}.") from None
        check_decodes(path, encoding)
    enc = encoding or detect_encoding(path)
    if delimiter and delimiter not in DELIMITERS:
        raise ImportFileError(f"Unsupported delimiter {delimiter!r}; use one of , ; tab |")
    if not delimiter:
        with open(path, encoding=enc, errors="replace", newline="") as fh:
            first = ""
            for line in fh:
                if line.strip():
                    first = line
                    break
        delimiter = sniff_delimiter(first)
    return CsvFormat(encoding=enc, delimiter=delimiter)


class CsvSource:
    """Iterates (line_number, cells) of the data rows, skipping blank lines; knows its header.

    `line_number` is the physical line where the record starts (records may span lines
    through quoted newlines), which is what a marketer finds in a text editor.
    """

    def __init__(self, path: Path, fmt: CsvFormat) -> None:
        self.path = path
        self.format = fmt
        self.size = path.stat().st_size
        self._raw: BinaryIO = open(path, "rb")  # noqa: SIM115  closed by close()
        self._text = io.TextIOWrapper(self._raw, encoding=fmt.encoding, errors="strict", newline="")
        self._reader = csv.reader(self._text, delimiter=fmt.delimiter)
        self.header = self._read_header()
        self.header_lines = self._reader.line_num  # physical lines up to the end of the header record

    def close(self) -> None:
        self._text.close()

    def __enter__(self) -> CsvSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def bytes_read(self) -> int:
        return self._raw.tell()

    def _next(self) -> tuple[int, list[str]] | None:
        start = self._reader.line_num + 1
        try:
            cells = next(self._reader)
        except StopIteration:
            return None
        except csv.Error as exc:
            raise ImportFileError(f"Line {start}: the file is not valid CSV ({exc}).") from None
        except UnicodeDecodeError as exc:
            raise ImportFileError(
                f"Line {start}: bytes that are not {self.format.encoding} ({exc.reason}); choose the file's encoding."
            ) from None
        return start, cells

    def _read_header(self) -> list[str]:
        while True:
            item = self._next()
            if item is None:
                raise ImportFileError("The file has no header row.")
            _, cells = item
            if any(c.strip() for c in cells):
                break
        header = [c.strip().lstrip("\ufeff").strip() for c in cells]
        while header and not header[-1]:
            header.pop()  # trailing delimiters after the last column
        named: list[str] = []
        seen: dict[str, int] = {}
        for index, name in enumerate(header, start=1):
            name = name or f"(column {index})"
            if name.casefold() in seen:
                raise ImportFileError(
                    f"The header names column {name!r} twice (columns {seen[name.casefold()]} and {index})."
                )
            seen[name.casefold()] = index
            named.append(name)
        return named

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        while True:
            item = self._next()
            if item is None:
                return
            line, cells = item
            if not cells or not any(c.strip() for c in cells):
                continue  # blank line, or a row of empty cells
            yield line, cells
