"""Reading a dataset: CSV (header row, UTF-8 with or without a BOM), TSV,
JSONL (one object a line), XLSX (first sheet, header row) or rows given as
JSON, into rows of ``{column: value}``.

Uploaded files are untrusted. Every reader streams: rows come one at a time,
bytes, rows and columns are counted as they are read, and the first problem
stops the read with a :class:`DatasetError` that says where (the line, or the
sheet's row) and why. The caller saves inside a transaction, so a file that
fails on its last line leaves nothing behind.
"""

from __future__ import annotations

import csv
import itertools
import json
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import IO, Any

from django.conf import settings
from openpyxl import load_workbook

#: A column name longer than this is surely not a header.
MAX_COLUMN_NAME = 200
#: An XLSX is a zip: what its parts may expand to, as a multiple of the byte limit.
XLSX_EXPANSION = 5
#: A part may inflate to at most this many times its compressed size once it
#: passes XLSX_RATIO_GRACE bytes (Apache POI's default: sheets a spreadsheet
#: writes compress 5 to 25 times; a thousandfold is a bomb, not data).
XLSX_MAX_RATIO = 100
XLSX_RATIO_GRACE = 1024 * 1024
#: A line (one row of CSV or JSONL) may be this many bytes per character of
#: the longest value: room for one value at the limit written as JSON escapes,
#: and for the row's other, shorter values.
LINE_BYTES_PER_CHAR = 8
#: Deeper JSON values in a JSONL row are refused (they would only be rendered as text).
MAX_DEPTH = 32
FORMATS = ("csv", "tsv", "jsonl", "xlsx")


class DatasetError(ValueError):
    """Why the rows cannot be read, and where: ``where`` is "line 7", "row 7"…
    ``too_large`` marks the limits of size (the API answers 413 for those)."""

    def __init__(self, reason: str, *, where: str = "", too_large: bool = False) -> None:
        self.reason = reason
        self.where = where
        self.too_large = too_large
        super().__init__(f"{where[:1].upper()}{where[1:]}: {reason}" if where else reason)

    @property
    def message(self) -> str:
        return str(self)


@dataclass(frozen=True)
class Limits:
    rows: int
    bytes: int
    columns: int
    cell_chars: int

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(
            rows=settings.MAX_DATASET_ROWS,
            bytes=settings.MAX_DATASET_BYTES,
            columns=settings.MAX_DATASET_COLUMNS,
            cell_chars=settings.MAX_PROMPT_CHARS,
        )

    @property
    def line_bytes(self) -> int:
        """The longest line read: a longer one is refused before it is all read."""
        return self.cell_chars * LINE_BYTES_PER_CHAR


class Rows:
    """The rows of a table as they are read, with the columns seen so far (a
    JSONL file's columns are the keys of its objects in order of first
    appearance, known once every line is read)."""

    def __init__(self, source: str, records: Iterator[tuple[str, dict[str, Any]]], limits: Limits):
        self.source = source
        self.columns: list[str] = []
        self._seen: set[str] = set()
        self._records = records
        self._limits = limits
        self.count = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for where, row in self._records:
            self.count += 1
            if self.count > self._limits.rows:
                raise DatasetError(
                    f"more than {self._limits.rows:,} rows; a dataset has at most "
                    f"{self._limits.rows:,} rows",
                    where=where,
                    too_large=True,
                )
            for name, value in row.items():
                if name not in self._seen:
                    self._add_column(name, where)
                _check_value(value, name, where, self._limits)
            yield row
        if not self.count:
            raise DatasetError(
                "the file has a header row but no rows under it"
                if self.columns
                else "there are no rows: the file is empty"
            )

    def _add_column(self, name: str, where: str) -> None:
        check_column_name(name, where)
        if len(self.columns) >= self._limits.columns:
            raise DatasetError(
                f"more than {self._limits.columns:,} columns; a dataset has at most "
                f"{self._limits.columns:,}",
                where=where,
                too_large=True,
            )
        self._seen.add(name)
        self.columns.append(name)

    def header(self, names: list[str], where: str) -> None:
        """A header row's names, in order: each named, none twice."""
        for number, name in enumerate(names, start=1):
            if not name:
                raise DatasetError(f"column {number} of the header has no name", where=where)
            if name in self._seen:
                first = self.columns.index(name) + 1
                raise DatasetError(
                    f"the column “{name}” appears twice in the header (columns {first} and "
                    f"{number}); name each column once",
                    where=where,
                )
            self._add_column(name, where)


def check_column_name(name: str, where: str) -> None:
    if not name.strip():
        raise DatasetError("a column has no name (an empty key)", where=where)
    if "\x00" in name:
        raise DatasetError("a column name contains a NUL character", where=where)
    if len(name) > MAX_COLUMN_NAME:
        raise DatasetError(
            f"a column name is {len(name):,} characters long; at most {MAX_COLUMN_NAME}",
            where=where,
        )
    if "{" in name or "}" in name:
        raise DatasetError(
            f"the column name “{name}” contains a brace; a prompt template could not name it",
            where=where,
        )


def _check_value(value: Any, column: str, where: str, limits: Limits) -> None:
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise DatasetError(f"the value of “{column}” is nested too deeply", where=where)
        if isinstance(item, str):
            if "\x00" in item:
                raise DatasetError(
                    f"the value of “{column}” contains a NUL character, which cannot be stored",
                    where=where,
                )
            if len(item) > limits.cell_chars:
                raise DatasetError(
                    f"the value of “{column}” is {len(item):,} characters long; at most "
                    f"{limits.cell_chars:,} per value",
                    where=where,
                    too_large=True,
                )
        elif isinstance(item, dict):
            stack.extend((part, depth + 1) for pair in item.items() for part in pair)
        elif isinstance(item, list):
            stack.extend((part, depth + 1) for part in item)


# --- which reader ------------------------------------------------------------------------


def detect_format(name: str, head: bytes) -> str:
    """The format of an upload, from its name, else from its first bytes."""
    suffix = name.lower().rsplit(".", 1)[-1] if "." in name else ""
    if suffix in ("jsonl", "ndjson"):
        return "jsonl"
    if suffix in FORMATS:
        return suffix
    if head.startswith(b"PK\x03\x04"):
        return "xlsx"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return "jsonl"
    return "csv"


def read_file(
    stream: IO[bytes], *, name: str, size: int | None, limits: Limits, fmt: str = ""
) -> Rows:
    """The rows of an uploaded file (format from ``fmt``, else its name or content)."""
    if size is not None and size > limits.bytes:
        raise DatasetError(
            f"the file is {size:,} bytes; at most {limits.bytes:,} bytes per dataset",
            too_large=True,
        )
    head = stream.read(8)
    stream.seek(0)
    fmt = fmt or detect_format(name, head)
    if fmt == "xlsx":
        return read_xlsx(stream, limits)
    if fmt == "jsonl":
        return read_jsonl(_lines(stream, limits), limits)
    return read_csv(_lines(stream, limits), limits, delimiter="\t" if fmt == "tsv" else ",")


def read_pasted(text: str, limits: Limits) -> Rows:
    """Rows pasted into a form: CSV, or tab-separated as a spreadsheet copies them."""
    encoded = len(text.encode())
    if encoded > limits.bytes:
        raise DatasetError(
            f"the text is {encoded:,} bytes; at most {limits.bytes:,} bytes per dataset",
            too_large=True,
        )
    lines = text.splitlines(keepends=True)
    for number, line in enumerate(lines, start=1):
        if len(line) > limits.line_bytes:
            raise _line_too_long(number, limits)
    first = next((line for line in lines if line.strip()), "")
    delimiter = "\t" if "\t" in first else ","
    return read_csv(enumerate(lines, start=1), limits, delimiter=delimiter, source="paste")


def read_records(records: Iterable[Any], limits: Limits) -> Rows:
    """Rows given as JSON objects (the API's ``rows``)."""

    def parsed() -> Iterator[tuple[str, dict[str, Any]]]:
        for number, record in enumerate(records):
            where = f"rows[{number}]"
            if not isinstance(record, dict):
                raise DatasetError("each row must be a JSON object of column: value", where=where)
            yield where, record

    return Rows("api", parsed(), limits)


# --- CSV -------------------------------------------------------------------------------------


def _lines(stream: IO[bytes], limits: Limits) -> Iterator[tuple[int, str]]:
    """The file's lines as text, numbered, decoded one by one so an encoding
    error names its line (a UTF-8 sequence never holds a newline byte); the
    bytes counted as they come, whatever the upload said its size was. Each
    read is bounded: a line longer than the limit (a file with no newline at
    all) is refused once that much of it is read, never gathered whole."""
    total = 0
    longest = limits.line_bytes
    for number in itertools.count(1):
        raw = stream.readline(longest + 1)
        if not raw:
            return
        if len(raw) > longest and not raw.endswith(b"\n"):
            raise _line_too_long(number, limits)
        total += len(raw)
        if total > limits.bytes:
            raise DatasetError(
                f"the file passes {limits.bytes:,} bytes; at most {limits.bytes:,} bytes per "
                "dataset",
                where=f"line {number}",
                too_large=True,
            )
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(
                f"not UTF-8 text (byte {raw[exc.start]:#04x} at character {exc.start + 1}); "
                "save the file as UTF-8",
                where=f"line {number}",
            ) from None


def _line_too_long(number: int, limits: Limits) -> DatasetError:
    return DatasetError(
        f"the line is longer than {limits.line_bytes:,} bytes; a line holds one row, whose "
        f"values are at most {limits.cell_chars:,} characters each",
        where=f"line {number}",
        too_large=True,
    )


def read_csv(
    lines: Iterator[tuple[int, str]] | Iterable[tuple[int, str]],
    limits: Limits,
    *,
    delimiter: str = ",",
    source: str = "csv",
) -> Rows:
    """Comma (or tab) separated values with a header row; quoted fields may
    hold the delimiter, quotes ("") and newlines. Blank lines are skipped."""
    current = {"line": 0}

    def numbered() -> Iterator[str]:
        for number, text in lines:
            current["line"] = number
            yield text

    rows: Rows

    def parsed() -> Iterator[tuple[str, dict[str, Any]]]:
        reader = csv.reader(numbered(), delimiter=delimiter, strict=True)
        header: list[str] | None = None
        while True:
            start = current["line"] + 1
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise DatasetError(
                    f"not valid CSV ({exc}); a field with a quote, comma or newline must be "
                    'in double quotes, with its quotes doubled ("")',
                    where=f"line {start}",
                ) from None
            where = f"line {start}"
            if not any(field.strip() for field in record):
                continue
            if header is None:
                header = [name.strip() for name in record]
                rows.header(header, where)
                continue
            if len(record) != len(header):
                raise DatasetError(
                    f"{len(record)} fields, but the header has {len(header)}", where=where
                )
            yield where, dict(zip(header, record, strict=True))

    rows = Rows(source, parsed(), limits)
    return rows


# --- JSONL ------------------------------------------------------------------------------------


def read_jsonl(lines: Iterable[tuple[int, str]], limits: Limits) -> Rows:
    """One JSON object a line; blank lines are skipped, a repeated key is refused."""

    def parsed() -> Iterator[tuple[str, dict[str, Any]]]:
        for number, text in lines:
            if not text.strip():
                continue
            where = f"line {number}"
            try:
                value = json.loads(
                    text, object_pairs_hook=_unique_keys, parse_constant=_no_constant
                )
            except RecursionError:
                raise DatasetError("the JSON is nested too deeply", where=where) from None
            except ValueError as exc:
                raise DatasetError(f"not valid JSON: {_short(exc)}", where=where) from None
            if not isinstance(value, dict):
                raise DatasetError(
                    f"each line must be one JSON object ({{...}}), not {_json_kind(value)}",
                    where=where,
                )
            yield where, value

    return Rows("jsonl", parsed(), limits)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key “{key}” appears twice in one object")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 160 else text[:159] + "…"


# --- XLSX --------------------------------------------------------------------------------------


def read_xlsx(stream: IO[bytes], limits: Limits) -> Rows:
    """The first sheet: its first non-empty row is the header, every later
    non-empty row a row. Cached values are read, not formulas."""
    _check_zip(stream, limits)
    try:
        book = load_workbook(stream, read_only=True, data_only=True)
    except Exception as exc:  # a damaged file raises anything: it is the file's fault
        raise DatasetError(f"not a readable XLSX workbook ({_short(exc)})") from None
    rows: Rows

    def parsed() -> Iterator[tuple[str, dict[str, Any]]]:
        try:
            if not book.worksheets:
                raise DatasetError("the workbook has no sheet")
            sheet = book.worksheets[0]
            sheet.reset_dimensions()  # the stored size may be wrong: read what is there
            header: list[str] | None = None
            cells = sheet.iter_rows(values_only=True, max_col=limits.columns + 1)
            size = 0
            for number, values in enumerate(_safely(cells), start=1):
                where = f"row {number} of sheet “{sheet.title}”"
                values = list(values)
                while values and values[-1] in (None, ""):
                    values.pop()
                if not values:
                    continue
                # Shared strings let a small sheet repeat a long value in
                # every cell: what is read counts, not what was stored.
                size += sum(len(v) if isinstance(v, str) else 8 for v in values)
                if size > limits.bytes:
                    raise DatasetError(
                        f"the sheet's values pass {limits.bytes:,} bytes; at most "
                        f"{limits.bytes:,} bytes per dataset",
                        where=where,
                        too_large=True,
                    )
                if header is None:
                    header = ["" if v is None else str(_cell(v)).strip() for v in values]
                    rows.header(header, where)
                    continue
                if len(values) > len(header):
                    raise DatasetError(
                        f"a value in column {len(values)}, past the header's {len(header)} columns",
                        where=where,
                    )
                values += [None] * (len(header) - len(values))  # trailing empty cells
                yield (
                    where,
                    {name: _cell(value) for name, value in zip(header, values, strict=True)},
                )
        finally:
            book.close()

    rows = Rows("xlsx", parsed(), limits)
    return rows


def _safely(cells: Iterator[Any]) -> Iterator[Any]:
    while True:
        try:
            yield next(cells)
        except StopIteration:
            return
        except Exception as exc:  # damaged XML inside the zip
            raise DatasetError(f"not a readable XLSX workbook ({_short(exc)})") from None


def _check_zip(stream: IO[bytes], limits: Limits) -> None:
    """A zip that would expand past the limit, in all or in a part that
    inflates far more than data does (a "zip bomb"), is refused before any of
    it is read; the sizes its directory declares bound what is read (zipfile
    stops a part at its declared size)."""
    try:
        with zipfile.ZipFile(stream) as archive:
            parts = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise DatasetError("not a readable XLSX workbook (not a zip file)") from None
    finally:
        stream.seek(0)
    for part in parts:
        ratio = part.file_size / max(part.compress_size, 1)
        if part.file_size > XLSX_RATIO_GRACE and ratio > XLSX_MAX_RATIO:
            raise DatasetError(
                f"the workbook's part {part.filename} expands to {part.file_size:,} bytes, "
                f"{ratio:,.0f} times its compressed size; at most {XLSX_MAX_RATIO} times",
                too_large=True,
            )
    expanded = sum(part.file_size for part in parts)
    if expanded > limits.bytes * XLSX_EXPANSION:
        raise DatasetError(
            f"the workbook expands to {expanded:,} bytes; at most "
            f"{limits.bytes * XLSX_EXPANSION:,}",
            too_large=True,
        )


def _cell(value: Any) -> Any:
    """A cell's value as JSON can hold it: dates as ISO text, whole floats as integers."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
