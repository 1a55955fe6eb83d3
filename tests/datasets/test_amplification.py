"""Uploads that cost far more than their size: an XLSX whose parts inflate a
thousandfold, a shared string repeated in every cell, a JSONL or CSV line of
megabytes (or a file with no newline at all). Each is refused with a message
that says where and why, after reading a bounded part of it."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import InMemoryUploadedFile
from openpyxl import Workbook

from dashboard.datasets.parsing import DatasetError, Limits, read_file

LIMITS = Limits(rows=100, bytes=100_000, columns=10, cell_chars=1000)


class Recording(io.BytesIO):
    """A file that keeps the size of every piece handed out, however it is read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.pieces: list[int] = []

    def _keep(self, data: bytes) -> bytes:
        self.pieces.append(len(data))
        return data

    def read(self, size: int | None = -1) -> bytes:
        return self._keep(super().read(size))

    def readline(self, size: int | None = -1) -> bytes:
        return self._keep(super().readline(size))

    def __iter__(self) -> Recording:
        return self

    def __next__(self) -> bytes:
        return self._keep(super().__next__())


def refusal(stream: Any, name: str, limits: Limits) -> DatasetError:
    with pytest.raises(DatasetError) as caught:
        list(read_file(stream, name=name, size=None, limits=limits))
    return caught.value


def workbook_bytes(book: Workbook) -> bytes:
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def with_sheet(xlsx: bytes, sheet_xml: bytes) -> bytes:
    """The workbook with its first sheet's XML replaced."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(xlsx)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                data = sheet_xml
            target.writestr(info.filename, data)
    return out.getvalue()


# --- XLSX -------------------------------------------------------------------------------------


def test_an_xlsx_whose_sheet_inflates_a_thousandfold_is_refused_before_it_is_parsed() -> None:
    book = Workbook()
    book.active.append(["prompt"])
    cell = b'<c t="inlineStr"><is><t>x</t></is></c>'
    sheet = (
        b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        b'<sheetData><row><c t="inlineStr"><is><t>prompt</t></is></c></row><row>'
        + cell * 800_000
        + b"</row></sheetData></worksheet>"
    )
    bomb = with_sheet(workbook_bytes(book), sheet)
    assert len(bomb) < 200_000 < 30_000_000 < len(sheet)  # KB that inflate to tens of MB

    started = time.monotonic()
    error = refusal(io.BytesIO(bomb), "bomb.xlsx", Limits.from_settings())
    took = time.monotonic() - started

    assert error.too_large
    assert "xl/worksheets/sheet1.xml" in str(error) and "times its compressed size" in str(error)
    assert took < 1.0, took


def test_a_shared_string_repeated_in_every_cell_is_bounded_as_the_rows_stream() -> None:
    """Small XML (each cell points at one shared string), large data: the
    values read are counted against the byte limit."""
    book = Workbook()
    sheet = book.active
    sheet.append([f"c{i}" for i in range(10)])
    for _ in range(20):
        sheet.append(["y" * 1000] * 10)  # each value at the limit, 10 kB a row
    data = workbook_bytes(book)
    assert len(data) < 10_000

    error = refusal(io.BytesIO(data), "shared.xlsx", LIMITS)
    assert error.too_large and "100,000 bytes" in str(error)
    assert error.where.startswith("row 11 of sheet")


def test_a_legitimate_workbook_still_reads(tmp_path: Path) -> None:
    book = Workbook()
    sheet = book.active
    sheet.append(["prompt", "n"])
    for n in range(2000):
        sheet.append(["the same prompt, again and again", n])
    rows = list(
        read_file(
            io.BytesIO(workbook_bytes(book)),
            name="ok.xlsx",
            size=None,
            limits=Limits.from_settings(),
        )
    )
    assert len(rows) == 2000 and rows[-1] == {
        "prompt": "the same prompt, again and again",
        "n": 1999,
    }


# --- lines --------------------------------------------------------------------------------------


def test_a_jsonl_line_of_6_mb_is_refused_naming_line_1_after_a_bounded_read() -> None:
    limits = Limits.from_settings()
    line = b'{"prompt": "' + b"a" * 6_000_000 + b'"}\n'
    stream = Recording(line + b'{"prompt": "next"}\n')

    error = refusal(stream, "big.jsonl", limits)

    assert error.where == "line 1" and error.too_large
    assert "longer than" in str(error)
    assert max(stream.pieces) <= limits.line_bytes + 1  # never the whole line at once
    assert sum(stream.pieces) <= 2 * limits.line_bytes + 8


def test_a_csv_with_no_newline_and_a_huge_field_is_refused_naming_its_line() -> None:
    limits = Limits.from_settings()
    stream = Recording(b"prompt\n" + b"x" * 3_000_000)  # the last line never ends

    error = refusal(stream, "one.csv", limits)

    assert error.where == "line 2" and "longer than" in str(error)
    assert max(stream.pieces) <= limits.line_bytes + 1


def test_refusing_a_long_line_reads_the_same_whatever_its_length() -> None:
    """Through Django's upload object, as the pages and the API read it: the
    bytes read to refuse a line do not grow with the line (the whole line was
    gathered, by concatenation: quadratic in its length)."""
    limits = Limits.from_settings()

    def refuse(size: int) -> tuple[int, float]:
        stream = Recording(b"prompt\n" + b"x" * size)
        upload = InMemoryUploadedFile(stream, "file", "long.csv", "text/csv", None, None)
        started = time.monotonic()
        error = refusal(upload, "long.csv", limits)
        assert error.where == "line 2" and error.too_large
        return sum(stream.pieces), time.monotonic() - started

    (small_read, _), (large_read, large_took) = refuse(2_000_000), refuse(32_000_000)
    assert small_read == large_read <= 2 * limits.line_bytes
    assert large_took < 0.5, large_took
