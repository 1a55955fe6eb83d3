"""Reading datasets from real files: each gives its rows or a clear error that
names the line and the reason, and a failed read saves nothing."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook

from dashboard.datasets.parsing import (
    DatasetError,
    Limits,
    read_file,
    read_pasted,
    read_records,
)
from dashboard.datasets.services import dataset_create
from dashboard.models import Dataset, DatasetRow

LIMITS = Limits(rows=100, bytes=100_000, columns=10, cell_chars=1000)


def rows_of(path: Path, limits: Limits = LIMITS) -> tuple[list[str], list[dict[str, Any]]]:
    with path.open("rb") as stream:
        rows = read_file(stream, name=path.name, size=path.stat().st_size, limits=limits)
        data = list(rows)
    return rows.columns, data


def error_of(path: Path, limits: Limits = LIMITS) -> DatasetError:
    with pytest.raises(DatasetError) as caught:
        rows_of(path, limits)
    return caught.value


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- CSV --------------------------------------------------------------------------------------


def test_csv_with_bom_quoted_commas_newlines_and_non_ascii(tmp_path: Path) -> None:
    text = (
        "name,city,note\r\n"
        'Zoë,"Paris, France","two\nlines"\r\n'
        '"Ünal ""the great""",İzmir,日本語のテキスト\r\n'
        "\r\n"
        "Ana,Lisboa,\r\n"
    )
    path = write(tmp_path, "people.csv", b"\xef\xbb\xbf" + text.encode())
    columns, data = rows_of(path)
    assert columns == ["name", "city", "note"]  # no BOM in the first name
    assert data == [
        {"name": "Zoë", "city": "Paris, France", "note": "two\nlines"},
        {"name": 'Ünal "the great"', "city": "İzmir", "note": "日本語のテキスト"},
        {"name": "Ana", "city": "Lisboa", "note": ""},
    ]


def test_csv_without_bom_reads_the_same(tmp_path: Path) -> None:
    path = write(tmp_path, "plain.csv", b"q,a\nwhy,because\n")
    assert rows_of(path) == (["q", "a"], [{"q": "why", "a": "because"}])


def test_csv_row_with_too_many_fields_names_its_line(tmp_path: Path) -> None:
    # The quoted newline in row 1 makes the bad record start on line 4, not 3.
    path = write(tmp_path, "bad.csv", b'a,b\n1,"x\ny"\n3,4,5\n')
    error = error_of(path)
    assert str(error) == "Line 4: 3 fields, but the header has 2"


def test_csv_unclosed_quote_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "quote.csv", b'a,b\n1,2\n3,"open\n')
    error = error_of(path)
    assert error.where == "line 3" and "not valid CSV" in str(error)


def test_csv_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "latin.csv", "a,b\nok,fine\ncafé,x\n".encode("latin-1"))
    error = error_of(path)
    assert error.where == "line 3" and "not UTF-8" in str(error) and "0xe9" in str(error)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"a,,c", "column 2 of the header has no name"),
        (b"a,b,a", "appears twice in the header (columns 1 and 3)"),
        (b"a,{b}", "contains a brace"),
    ],
)
def test_csv_header_problems(tmp_path: Path, header: bytes, reason: str) -> None:
    path = write(tmp_path, "h.csv", header + b"\n1,2,3\n")
    error = error_of(path)
    assert error.where == "line 1" and reason in str(error)


def test_csv_nul_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "nul.csv", b"a\nfine\nbad\x00value\n")
    error = error_of(path)
    assert error.where == "line 3" and "NUL" in str(error)


def test_tsv_by_name(tmp_path: Path) -> None:
    path = write(tmp_path, "t.tsv", b"a\tb\n1,5\t2\n")
    assert rows_of(path)[1] == [{"a": "1,5", "b": "2"}]


# --- JSONL -------------------------------------------------------------------------------------


def test_jsonl_rows_and_columns_in_order_of_appearance(tmp_path: Path) -> None:
    lines = [{"q": "one", "n": 1}, {"q": "two", "extra": {"deep": [1, 2]}}, {"n": 2.5}]
    path = write(
        tmp_path, "d.jsonl", "\n".join(json.dumps(line) for line in lines).encode() + b"\n\n"
    )
    columns, data = rows_of(path)
    assert columns == ["q", "n", "extra"]
    assert data == lines


def test_jsonl_broken_line_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.jsonl", b'{"q": "a"}\n\n{"q": "b"\n{"q": "c"}\n')
    error = error_of(path)
    assert error.where == "line 3"
    assert str(error).startswith("Line 3: not valid JSON")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"[1, 2]", "each line must be one JSON object ({...}), not a list"),
        (b'{"a": 1, "a": 2}', "appears twice"),
        (b'{"a": NaN}', "NaN is not a JSON number"),
        (b'{"a": "x\\u0000y"}', "NUL"),
        (b'{"": 1}', "no name"),
    ],
)
def test_jsonl_line_problems(tmp_path: Path, line: bytes, reason: str) -> None:
    path = write(tmp_path, "p.jsonl", b'{"a": 0}\n' + line + b"\n")
    error = error_of(path)
    assert error.where == "line 2" and reason in str(error), str(error)


# --- XLSX --------------------------------------------------------------------------------------


def test_xlsx_made_with_openpyxl(tmp_path: Path) -> None:
    book = Workbook()
    sheet = book.active
    sheet.title = "Prompts"
    sheet.append(["question", "count", "when", "ok"])
    sheet.append(["Wie geht's? 😀", 3, datetime(2024, 5, 1, 12, 30), True])
    sheet.append([])  # a blank row is skipped
    sheet.append(["=1+1 stays text?", 2.5, None, False])
    other = book.create_sheet("Ignored")
    other.append(["not", "read"])
    path = tmp_path / "book.xlsx"
    book.save(path)

    columns, data = rows_of(path)
    assert columns == ["question", "count", "when", "ok"]
    assert data == [
        {"question": "Wie geht's? 😀", "count": 3, "when": "2024-05-01T12:30:00", "ok": True},
        # openpyxl stores a string starting with "=" as a formula; unevaluated it reads as None.
        {"question": None, "count": 2.5, "when": None, "ok": False},
    ]


def test_xlsx_value_past_the_header_names_the_row(tmp_path: Path) -> None:
    book = Workbook()
    book.active.append(["a", "b"])
    book.active.append([1, 2])
    book.active.append([1, 2, 3])
    path = tmp_path / "wide.xlsx"
    book.save(path)
    error = error_of(path)
    assert error.where == "row 3 of sheet “Sheet”" and "past the header's 2 columns" in str(error)


def test_a_file_named_xlsx_that_is_not_one(tmp_path: Path) -> None:
    path = write(tmp_path, "fake.xlsx", b"name,age\nx,1\n")
    assert "not a readable XLSX workbook" in str(error_of(path))


def test_xlsx_zip_bomb_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "bomb.xlsx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/sharedStrings.xml", b"\0" * (LIMITS.bytes * 6))
    error = error_of(path)
    assert error.too_large and "expands to" in str(error)


# --- empty, too large ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["empty.csv", "empty.jsonl"])
def test_an_empty_file(tmp_path: Path, name: str) -> None:
    assert "the file is empty" in str(error_of(write(tmp_path, name, b"")))


def test_a_header_without_rows(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, "h.csv", b"a,b\n\n"))
    assert "header row but no rows" in str(error)


def test_a_file_over_the_byte_limit(tmp_path: Path) -> None:
    path = write(tmp_path, "big.csv", b"a\n" + b"x\n" * 60_000)
    error = error_of(path)
    assert error.too_large and "at most 100,000 bytes" in str(error)
    # A size the client understated is caught while reading, with the line.
    roomy = Limits(rows=100_000, bytes=100_000, columns=10, cell_chars=1000)
    with path.open("rb") as stream, pytest.raises(DatasetError) as caught:
        list(read_file(stream, name="big.csv", size=10, limits=roomy))
    assert caught.value.too_large and caught.value.where == "line 50001"


def test_too_many_rows_and_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "rows.csv", b"a\n" + b"x\n" * 101)
    error = error_of(path)
    assert error.where == "line 102" and "at most 100 rows" in str(error)
    wide = write(tmp_path, "cols.csv", ",".join(f"c{i}" for i in range(11)).encode() + b"\n")
    assert "at most 10" in str(error_of(wide)) and error_of(wide).where == "line 1"


# --- pasted and JSON rows -----------------------------------------------------------------------


def test_pasted_tab_separated_as_a_spreadsheet_copies_them() -> None:
    rows = read_pasted("city\tcountry\nParis\tFrance\nRome\tItaly\n", LIMITS)
    assert list(rows) == [
        {"city": "Paris", "country": "France"},
        {"city": "Rome", "country": "Italy"},
    ]
    assert rows.source == "paste"


def test_records_must_be_objects() -> None:
    with pytest.raises(DatasetError) as caught:
        list(read_records([{"a": 1}, "nope"], LIMITS))
    assert caught.value.where == "rows[1]"


# --- saved whole or not at all -------------------------------------------------------------------


@pytest.mark.django_db
def test_nothing_half_saved(team: Any, alice: Any) -> None:
    lines = b"".join(b'{"q": "%d"}\n' % i for i in range(2500)) + b"{broken\n"
    rows = read_file(
        io.BytesIO(lines), name="d.jsonl", size=len(lines), limits=Limits.from_settings()
    )
    with pytest.raises(DatasetError) as caught:
        dataset_create(team=team, name="half", rows=rows, user=alice)
    assert caught.value.where == "line 2501"
    assert not Dataset.objects.exists() and not DatasetRow.objects.exists()


@pytest.mark.django_db
def test_saved_rows_in_order(team: Any, alice: Any) -> None:
    data = b"q,n\n" + b"".join(b"q%d,%d\n" % (i, i) for i in range(2345))
    rows = read_file(io.BytesIO(data), name="d.csv", size=len(data), limits=Limits.from_settings())
    dataset = dataset_create(team=team, name="  Big  ", rows=rows, user=alice)
    dataset.refresh_from_db()
    assert (dataset.name, dataset.columns, dataset.row_count) == ("Big", ["q", "n"], 2345)
    stored = list(dataset.rows.order_by("index").values_list("index", "data"))
    assert stored[0] == (0, {"q": "q0", "n": "0"}) and stored[-1] == (
        2344,
        {"q": "q2344", "n": "2344"},
    )
