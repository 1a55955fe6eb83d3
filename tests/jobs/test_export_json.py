"""Exports of nested values: a dict or list cell is compact JSON text in CSV
and XLSX (never a Python repr, never a 500), formulas still defused."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from openpyxl import load_workbook

from dashboard.compare import export as compare_export
from dashboard.compare.services import Target, comparison_create
from dashboard.datasets.services import Inputs
from dashboard.jobs import export, results
from dashboard.jobs.services import job_create, job_transition
from providers import JobSpec
from tests.conftest import finish_items, make_credential

pytestmark = pytest.mark.django_db

SCHEMA = {
    "type": "object",
    "properties": {
        "tags": {"type": "array", "items": {"type": "string"}},
        "meta": {"type": "object"},
    },
}
OUTPUTS = [
    {"tags": ["a", "b"], "meta": {"score": 1, "nested": {"deep": [1, 2]}}},
    {"tags": [], "meta": {"formula": "=1+1"}},
]


FIELDS = [
    {"doc": {"title": "One", "pages": [1, 2]}, "tags": ["x", "y"]},
    {"doc": {"title": "=HYPERLINK(1)"}, "tags": []},
]


def nested_job(team: Any, alice: User) -> Any:
    """A job over a dataset whose rows hold nested values, asking for a
    structured output that holds nested values too."""
    job = job_create(
        team=team,
        credential=make_credential(team),
        spec=JobSpec(model="m", prompts=["one", "two"], output_schema=SCHEMA),
        user=alice,
        input_fields=FIELDS,
        input_columns=["doc", "tags"],
    )
    finish_items(job, OUTPUTS)
    assert job_transition(job.pk, "completed")
    return job


def compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


EXPECTED = [
    ["index", "doc", "tags", "input", "output.tags", "output.meta"],
    ["0", compact(FIELDS[0]["doc"]), '["x","y"]', "one", '["a","b"]', compact(OUTPUTS[0]["meta"])],
    ["1", compact(FIELDS[1]["doc"]), "[]", "two", "[]", '{"formula":"=1+1"}'],
]


def test_a_job_over_nested_values_exports_as_xlsx_with_json_cells(team: Any, alice: User) -> None:
    job = nested_job(team, alice)
    book = load_workbook(export.items_xlsx(job, results.iter_items(job)), read_only=True)
    rows = [
        [("" if v is None else str(v)) for v in row[:6]]
        for row in book.worksheets[0].iter_rows(values_only=True)
    ]
    assert rows == EXPECTED
    assert json.loads(rows[1][1]) == FIELDS[0]["doc"]


def test_a_job_over_nested_values_exports_as_csv_with_json_not_reprs(
    team: Any, alice: User
) -> None:
    job = nested_job(team, alice)
    text = "".join(export.items_csv(job, results.iter_items(job)))
    rows = [row[:6] for row in csv.reader(io.StringIO(text))]
    assert rows == EXPECTED
    assert "{'" not in text  # no Python repr anywhere


def test_a_comparison_over_nested_values_exports_as_xlsx_and_csv(team: Any, alice: User) -> None:
    inputs = Inputs(prompts=["one", "two"], input_fields=FIELDS, columns=["doc", "tags"])
    comparison = comparison_create(
        team=team,
        name="nested",
        user=alice,
        inputs=inputs,
        targets=[
            Target(make_credential(team), JobSpec(model=f"m{i}", prompts=inputs.prompts))
            for i in range(2)
        ],
    )
    targets = list(comparison.jobs.order_by("id"))
    finish_items(targets[0], [{"a": [1]}, ["x", {"y": None}]])

    book = load_workbook(compare_export.grid_xlsx(comparison, targets), read_only=True)
    sheet = [list(row[:5]) for row in book.worksheets[0].iter_rows(values_only=True)]
    assert sheet[1] == [0, compact(FIELDS[0]["doc"]), '["x","y"]', "one", '{"a":[1]}']
    assert sheet[2][4] == '["x",{"y":null}]'
    text = "".join(compare_export.grid_csv(comparison, targets))
    assert next(csv.reader(io.StringIO(text.splitlines()[1])))[1] == compact(FIELDS[0]["doc"])
    assert "{'" not in text
