"""A comparison's grid as CSV, JSONL or XLSX: one row per input (its fields
first, then the prompt), then one group of columns per target: the output
(structured fields as their own columns), status, error, validity, latency
and the reviewers' votes. Written in chunks; formulas defused in CSV and XLSX."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any

from dashboard.jobs.export import csv_lines, jsonl_lines, peek, text_of, xlsx_file
from dashboard.jobs.results import field_names, structured_columns
from dashboard.models import Comparison, Job

from .grid import Cell, GridRow, iter_grid

ROWS_PER_CHUNK = 500
CELL_STATE = ("status", "error", "valid", "latency_ms")
VOTES = ("up", "down", "best")


class GridColumns:
    def __init__(self, targets: list[Job], first: GridRow | None) -> None:
        self.targets = targets
        fields = first.input_fields if first is not None else None
        self.fields = field_names(targets[0], fields) if targets else list(fields or [])
        self.structured = [structured_columns(job) for job in targets]

    def prefix(self, number: int) -> str:
        job = self.targets[number]
        return f"T{number + 1} {job.provider}/{job.model}"

    @property
    def header(self) -> list[str]:
        names = ["index", *self.fields, "input"]
        for number, columns in enumerate(self.structured):
            prefix = self.prefix(number)
            outputs = [f"output.{name}" for name in columns] or ["output"]
            names += [f"{prefix} {name}" for name in (*outputs, *CELL_STATE, *VOTES)]
        return names

    def cells(self, row: GridRow) -> list[Any]:
        fields = row.input_fields or {}
        values: list[Any] = [row.index, *(fields.get(name) for name in self.fields), row.input]
        for cell, columns in zip(row.cells, self.structured, strict=True):
            values += self._outputs(cell, columns)
            item = cell.item
            values += [
                item.status if item else None,
                item.error if item else None,
                item.valid if item else None,
                item.latency_ms if item else None,
                cell.up,
                cell.down,
                cell.best,
            ]
        return values

    @staticmethod
    def _outputs(cell: Cell, columns: list[str]) -> list[Any]:
        output = cell.item.output if cell.item else None
        if not columns:
            return [text_of(output)]
        if isinstance(output, dict):
            return [text_of(output.get(name)) for name in columns]
        return [text_of(output)] + [""] * (len(columns) - 1)

    def record(self, row: GridRow) -> dict[str, Any]:
        targets = []
        for number, cell in enumerate(row.cells):
            item = cell.item
            job = self.targets[number]
            targets.append(
                {
                    "job": job.pk,
                    "provider": job.provider,
                    "model": job.model,
                    "output": item.output if item else None,
                    **{name: getattr(item, name) if item else None for name in CELL_STATE},
                    "from_job": getattr(item, "merged_from", None),
                    "ratings": [
                        {
                            "user": r.user.get_username(),
                            "score": r.score,
                            "best": r.best,
                            "at": r.updated_at.isoformat(),
                        }
                        for r in cell.ratings
                    ],
                }
            )
        return {
            "index": row.index,
            "fields": row.input_fields,
            "input": row.input,
            "targets": targets,
            "notes": [
                {
                    "user": note.author.get_username() if note.author else None,
                    "text": note.text,
                    "at": note.created_at.isoformat(),
                }
                for note in row.notes
            ],
        }


def _with_columns(
    comparison: Comparison, targets: list[Job]
) -> tuple[GridColumns, Iterator[GridRow]]:
    first, rows = peek(iter_grid(comparison, targets, chunk=ROWS_PER_CHUNK))
    return GridColumns(targets, first), rows


def grid_csv(comparison: Comparison, targets: list[Job]) -> Iterator[str]:
    columns, rows = _with_columns(comparison, targets)
    return csv_lines(columns.header, (columns.cells(row) for row in rows), ROWS_PER_CHUNK)


def grid_jsonl(comparison: Comparison, targets: list[Job]) -> Iterator[str]:
    columns, rows = _with_columns(comparison, targets)
    return jsonl_lines((columns.record(row) for row in rows), ROWS_PER_CHUNK)


def grid_xlsx(comparison: Comparison, targets: list[Job]) -> IO[bytes]:
    columns, rows = _with_columns(comparison, targets)
    title = f"Comparison {comparison.pk}"
    return xlsx_file(title, columns.header, (columns.cells(row) for row in rows))
