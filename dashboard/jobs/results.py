"""A job's results as rows: one per prompt, with its output or error, and for
structured output the fields in schema order and what does not fit."""

from __future__ import annotations

from typing import Any

from dashboard.core import structured
from dashboard.models import Job


def structured_columns(job: Job) -> list[str]:
    return structured.columns(job.spec.get("output_schema"))


def job_rows(job: Job) -> list[dict[str, Any]]:
    outputs = job.outputs or []
    errors = job.output_errors or {}
    schema = job.spec.get("output_schema")
    names = structured_columns(job)
    rows = []
    for i, prompt in enumerate(job.prompts):
        output = outputs[i] if i < len(outputs) else None
        row = {"index": i, "prompt": prompt, "output": output, "error": errors.get(str(i), "")}
        if schema:
            row["invalid"] = structured.problems(schema, output)
            row["fields"] = [output.get(n) if isinstance(output, dict) else None for n in names]
        rows.append(row)
    return rows
