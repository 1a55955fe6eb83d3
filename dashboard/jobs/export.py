"""The history exports: CSV and JSONL written in chunks, so memory stays flat
whatever the number of jobs. Cells that a spreadsheet would run as a formula
are defused."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from dashboard.core.keyset import CHUNK as EXPORT_CHUNK

PROMPT_SEPARATOR = "\n---\n"  # the same separator the job form splits on

CSV_HEADER = [
    "id",
    "created_at",
    "created_by",
    "credential",
    "provider",
    "model",
    "status",
    "provider_status",
    "prompts",
    "outputs",
    "error",
    "started_at",
    "finished_at",
    "duration_seconds",
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


def job_record(row: dict[str, Any]) -> dict[str, Any]:
    """One job (a row of ``jobs_for_export``) as the JSONL export writes it."""
    return {
        "id": row["id"],
        "provider": row["provider"],
        "model": row["model"],
        "credential": row["credential_name"],
        "status": row["status"],
        "provider_status": row["provider_status"],
        "spec": row["spec"],
        "outputs": row["outputs"],
        "output_errors": row["output_errors"],
        "error": row["error"],
        "created_by": row["created_by__username"],
        "created_at": _iso(row["created_at"]),
        "started_at": _iso(row["started_at"]),
        "finished_at": _iso(row["finished_at"]),
        "duration_seconds": duration_seconds(row["started_at"], row["finished_at"]),
    }


def _output_text(output: Any) -> str:
    if output is None:
        return ""
    if isinstance(output, str):
        return output
    return json.dumps(output, ensure_ascii=False, sort_keys=True)


def job_csv_row(row: dict[str, Any]) -> list[str]:
    record = job_record(row)
    prompts = PROMPT_SEPARATOR.join(str(p) for p in (row["spec"] or {}).get("prompts") or [])
    outputs = PROMPT_SEPARATOR.join(_output_text(o) for o in (row["outputs"] or []))
    cells = [
        record["id"],
        record["created_at"],
        record["created_by"],
        record["credential"],
        record["provider"],
        record["model"],
        record["status"],
        record["provider_status"],
        prompts,
        outputs,
        record["error"],
        record["started_at"],
        record["finished_at"],
        record["duration_seconds"],
    ]
    return [csv_safe("" if cell is None else str(cell)) for cell in cells]


def csv_chunks(
    jobs: Iterable[dict[str, Any]], *, rows_per_chunk: int = EXPORT_CHUNK
) -> Iterator[str]:
    """The CSV text in pieces of ``rows_per_chunk`` rows (the header first)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADER)
    for n, row in enumerate(jobs, start=1):
        writer.writerow(job_csv_row(row))
        if n % rows_per_chunk == 0:
            yield _drain(buffer)
    yield _drain(buffer)


def jsonl_chunks(
    jobs: Iterable[dict[str, Any]], *, rows_per_chunk: int = EXPORT_CHUNK
) -> Iterator[str]:
    lines: list[str] = []
    for row in jobs:
        lines.append(json.dumps(job_record(row), ensure_ascii=False, default=str))
        if len(lines) == rows_per_chunk:
            yield "\n".join(lines) + "\n"
            lines = []
    if lines:
        yield "\n".join(lines) + "\n"


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
