"""Exports, written in chunks so memory stays flat whatever the size:

* the history: one row per job, with its outcome and item counts;
* one job's items (CSV, JSONL, XLSX): one row per item, the input (and the
  dataset row's fields) first, then the output (structured fields as their own
  columns), status, error, validity, latency and tokens.

A nested value (an object or a list, in a structured output or a dataset
row's fields) is a cell of compact JSON text; cells that a spreadsheet would
run as a formula are defused.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import IO, Any, TypeVar

from openpyxl import Workbook

from dashboard.core.keyset import CHUNK as EXPORT_CHUNK
from dashboard.models import Item, ItemScore, Job

from .cost import usd
from .results import field_names, structured_columns

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

CSV_HEADER = [
    "id",
    "created_at",
    "created_by",
    "credential",
    "provider",
    "model",
    "status",
    "outcome",
    "provider_status",
    "items",
    "completed",
    "failed",
    "cancelled",
    "invalid",
    "error",
    "started_at",
    "finished_at",
    "duration_seconds",
    "tokens_in",
    "tokens_out",
    "tokens_estimated",
    "cost_estimated_usd",
    "cost_actual_usd",
    "demo",
]
#: What a spreadsheet would take for the start of a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment else None


def duration_seconds(started: datetime | None, finished: datetime | None) -> float | None:
    if started and finished:
        return round((finished - started).total_seconds(), 3)
    return None


def outcome(row: dict[str, Any]) -> str:
    """The status as lists show it ("completed · 3 failed · 12 invalid")."""
    job = Job(
        status=row["status"],
        items_failed=row["items_failed"],
        items_invalid=row["items_invalid"],
        items_completed=row["items_completed"],
    )
    return job.outcome


def job_record(row: dict[str, Any]) -> dict[str, Any]:
    """One job (a row of ``jobs_for_export``) as the JSONL export writes it."""
    return {
        "id": row["id"],
        "provider": row["provider"],
        "model": row["model"],
        "credential": row["credential_name"],
        "status": row["status"],
        "outcome": outcome(row),
        "provider_status": row["provider_status"],
        "spec": row["spec"],
        "counts": {
            "items": row["progress_total"],
            "completed": row["items_completed"],
            "failed": row["items_failed"],
            "cancelled": row["items_cancelled"],
            "valid": row["items_valid"],
            "invalid": row["items_invalid"],
        },
        "error": row["error"],
        "created_by": row["created_by__username"],
        "created_at": _iso(row["created_at"]),
        "started_at": _iso(row["started_at"]),
        "finished_at": _iso(row["finished_at"]),
        "duration_seconds": duration_seconds(row["started_at"], row["finished_at"]),
        "tokens": {
            "in": row["tokens_in"],
            "out": row["tokens_out"],
            "estimated": row["tokens_estimated"],
        },
        # USD; null when the model had no price (never 0 for "unknown").
        "cost": {"estimated": usd(row["cost_estimated"]), "actual": usd(row["cost_actual"])},
        "demo": row["demo"],
    }


def json_text(value: Any) -> str:
    """Compact JSON, keys sorted: how an export writes a nested value."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)


def text_of(output: Any) -> str:
    if output is None:
        return ""
    if isinstance(output, str):
        return output
    return json_text(output)


def cell_text(value: Any) -> str:
    """A CSV cell: None empty, an object or a list as JSON, anything else as str."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json_text(value)
    return str(value)


def job_csv_row(row: dict[str, Any]) -> list[Any]:
    """A job's CSV cells, as they are: csv_lines writes None as empty and defuses them."""
    record = job_record(row)
    counts = record["counts"]
    return [
        record["id"],
        record["created_at"],
        record["created_by"],
        record["credential"],
        record["provider"],
        record["model"],
        record["status"],
        record["outcome"],
        record["provider_status"],
        counts["items"],
        counts["completed"],
        counts["failed"],
        counts["cancelled"],
        counts["invalid"],
        record["error"],
        record["started_at"],
        record["finished_at"],
        record["duration_seconds"],
        record["tokens"]["in"],
        record["tokens"]["out"],
        record["tokens"]["estimated"],
        record["cost"]["estimated"],
        record["cost"]["actual"],
        record["demo"],
    ]


def csv_chunks(
    jobs: Iterable[dict[str, Any]], *, rows_per_chunk: int = EXPORT_CHUNK
) -> Iterator[str]:
    """The CSV text in pieces of ``rows_per_chunk`` rows (the header first)."""
    return csv_lines(CSV_HEADER, (job_csv_row(row) for row in jobs), rows_per_chunk)


def jsonl_chunks(
    jobs: Iterable[dict[str, Any]], *, rows_per_chunk: int = EXPORT_CHUNK
) -> Iterator[str]:
    return jsonl_lines((job_record(row) for row in jobs), rows_per_chunk)


# --- one job's items ---------------------------------------------------------------------


class ItemColumns:
    """The columns of an items export: the input first (and the dataset row's
    fields, named after the first row), the output or its structured fields,
    then the item's state."""

    STATE = [
        "status",
        "error",
        "valid",
        "validation_error",
        "latency_ms",
        "tokens_in",
        "tokens_out",
        "tokens_estimated",
        "attempts",
    ]

    def __init__(self, job: Job, first: Item | None) -> None:
        self.fields = field_names(job, first.input_fields if first is not None else None)
        self.structured = structured_columns(job)
        self.scorers = [scorer["name"] for scorer in job.scorers]

    @property
    def header(self) -> list[str]:
        outputs = [f"output.{name}" for name in self.structured] or ["output"]
        scores = [f"score:{name}" for name in self.scorers]
        return ["index", *self.fields, "input", *outputs, *self.STATE, *scores]

    def verdicts(self, item: Item) -> list[str]:
        found = getattr(item, "export_scores", {})
        return [VERDICT_TEXT[found.get(name)] for name in self.scorers]

    def record(self, item: Item) -> dict[str, Any]:
        data: dict[str, Any] = {"index": item.index}
        merged_from = getattr(item, "merged_from", None)
        if merged_from is not None:
            data["from_job"] = merged_from
        if self.fields:
            data["fields"] = item.input_fields or {}
        data["input"] = item.input
        data["output"] = item.output
        for name in self.STATE:
            data[name] = getattr(item, name)
        if self.scorers:
            data["scores"] = dict(zip(self.scorers, self.verdicts(item), strict=True))
        return data

    def cells(self, item: Item) -> list[Any]:
        row_fields = item.input_fields or {}
        output = item.output
        if self.structured:
            outputs = [
                text_of(output.get(name)) if isinstance(output, dict) else ""
                for name in self.structured
            ]
            if not isinstance(output, dict) and output is not None:
                outputs[0] = text_of(output)  # not an object: shown as it came
        else:
            outputs = [text_of(output)]
        state = [getattr(item, name) for name in self.STATE]
        values = [item.index, *(row_fields.get(f) for f in self.fields), item.input, *outputs]
        return [*values, *state, *self.verdicts(item)]


#: A verdict as an export's cell: passed, failed, or blank (not scored).
VERDICT_TEXT: dict[bool | None, str] = {True: "pass", False: "fail", None: ""}


def with_scores(job: Job, items: Iterator[Item]) -> Iterator[Item]:
    """The items, each with ``export_scores`` ({scorer: passed}), read for
    EXPORT_CHUNK items at a time in one query (none without scorers)."""
    if not job.scorers:
        yield from items
        return
    while True:
        chunk = [item for _, item in zip(range(EXPORT_CHUNK), items, strict=False)]
        if not chunk:
            return
        by_item: dict[int, dict[str, bool | None]] = {item.pk: {} for item in chunk}
        rows = ItemScore.objects.filter(item_id__in=list(by_item)).values_list(
            "item_id", "scorer", "passed"
        )
        for item_id, scorer, passed in rows:
            by_item[item_id][scorer] = passed
        for item in chunk:
            item.export_scores = by_item[item.pk]  # type: ignore[attr-defined]
        yield from chunk


def items_csv(job: Job, items: Iterator[Item]) -> Iterator[str]:
    first, rows = peek(with_scores(job, items))
    columns = ItemColumns(job, first)
    return csv_lines(columns.header, (columns.cells(item) for item in rows), EXPORT_CHUNK)


def items_jsonl(job: Job, items: Iterator[Item]) -> Iterator[str]:
    first, rows = peek(with_scores(job, items))
    columns = ItemColumns(job, first)
    return jsonl_lines((columns.record(item) for item in rows), EXPORT_CHUNK)


def items_xlsx(job: Job, items: Iterator[Item]) -> IO[bytes]:
    first, rows = peek(with_scores(job, items))
    columns = ItemColumns(job, first)
    return xlsx_file(f"Job {job.pk}", columns.header, (columns.cells(item) for item in rows))


# --- writers -------------------------------------------------------------------------------


T = TypeVar("T")


def peek(rows: Iterator[T]) -> tuple[T | None, Iterator[T]]:
    """The first of rows (None when there is none) and all of them, the first
    included: an export's columns come from its first row."""
    first = next(rows, None)

    def chained() -> Iterator[T]:
        if first is not None:
            yield first
            yield from rows

    return first, chained()


def csv_lines(header: list[str], rows: Iterable[list[Any]], per_chunk: int) -> Iterator[str]:
    """CSV text in chunks of per_chunk rows; None is an empty cell, and every
    cell (the header too: its names may come from an upload) defused by csv_safe."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([csv_safe(name) for name in header])
    for n, row in enumerate(rows, start=1):
        writer.writerow([csv_safe(cell_text(cell)) for cell in row])
        if n % per_chunk == 0:
            yield _drain(buffer)
    yield _drain(buffer)


def jsonl_lines(records: Iterable[dict[str, Any]], per_chunk: int) -> Iterator[str]:
    lines: list[str] = []
    for record in records:
        lines.append(json.dumps(record, ensure_ascii=False, default=str))
        if len(lines) == per_chunk:
            yield "\n".join(lines) + "\n"
            lines = []
    if lines:
        yield "\n".join(lines) + "\n"


def xlsx_file(title: str, header: list[str], rows: Iterable[list[Any]]) -> IO[bytes]:
    """A workbook of one sheet, written row by row (openpyxl's write-only mode)
    to a temporary file, returned open at its start."""
    book = Workbook(write_only=True)
    sheet = book.create_sheet(title)
    sheet.append([_xlsx_cell(name) for name in header])
    for row in rows:
        sheet.append([_xlsx_cell(cell) for cell in row])
    handle = tempfile.TemporaryFile()  # noqa: SIM115  (the response closes it)
    book.save(handle)
    handle.seek(0)
    return handle


def _xlsx_cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        value = json_text(value)  # openpyxl takes scalars only
    if isinstance(value, str):
        # openpyxl refuses control characters; a formula start is defused as in CSV.
        cleaned = "".join(ch for ch in value if ch in "\t\n\r" or ord(ch) >= 32)
        return csv_safe(cleaned)
    return value


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
