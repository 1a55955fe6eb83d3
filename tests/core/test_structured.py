"""Structured output: parsed into objects, checked against the schema, shown as a
table with invalid rows flagged."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard.core import structured
from dashboard.jobs import worker
from dashboard.models import Job
from tests.conftest import finish_items, make_credential, make_job, outputs

SCHEMA = {"age": "int", "units": "str"}


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (
            {"age": "int", "units": "string"},
            {
                "type": "object",
                "properties": {"age": {"type": "integer"}, "units": {"type": "string"}},
                "required": ["age", "units"],
            },
        ),
        (
            {"type": "object", "properties": {"a": {"type": "number"}}},
            {"type": "object", "properties": {"a": {"type": "number"}}},
        ),
        (None, None),
    ],
)
def test_as_json_schema(schema: Any, expected: Any) -> None:
    assert structured.as_json_schema(schema) == expected


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ('{"age": 3}', {"age": 3}),
        ('```json\n{"age": 3}\n```', {"age": 3}),
        ("not json {", "not json {"),
        ('{"broken": ', '{"broken": '),
        ({"age": 3}, {"age": 3}),
    ],
)
def test_parse_output(value: Any, parsed: Any) -> None:
    assert structured.parse_output(value) == parsed


def test_problems() -> None:
    assert structured.problems(SCHEMA, {"age": 3, "units": "y"}) == []
    assert structured.problems(SCHEMA, {"age": "three", "units": "y"}) == [
        "age: 'three' is not of type 'integer'"
    ]
    assert structured.problems(SCHEMA, {"age": 3}) == ["'units' is a required property"]
    assert structured.problems(SCHEMA, "plain text") == [
        "not a JSON object: the provider returned text"
    ]


@pytest.mark.django_db
def test_job_page_shows_a_table_and_flags_invalid_rows(team: Any, bob: Any, client: Any) -> None:
    job = make_job(
        make_credential(team, "lamini"), ["Carl", "Paul", "<b>Eve</b>"], output_schema=SCHEMA
    )
    finish_items(
        job,
        [
            {"age": 10, "units": "years"},
            {"age": "ten", "units": "years"},
            {"age": 1, "units": "<script>x</script>"},
        ],
    )
    Job.objects.filter(pk=job.pk).update(status="completed")
    client.force_login(bob)
    page = client.get(job.get_absolute_url()).content.decode()
    assert (
        '<th role="columnheader" class="mono">age</th>'
        '<th role="columnheader" class="mono">units</th>' in page
    )
    assert page.count('class="badge status-completed">valid') == 2
    assert "age: &#x27;ten&#x27; is not of type &#x27;integer&#x27;" in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "<script>x" not in page


@pytest.mark.django_db
def test_json_text_outputs_are_parsed_when_the_job_completes(team: Any, sims: Any) -> None:
    sim = sims.get("together")
    credential = make_credential(team, base_url=sim.base_url)
    job = make_job(
        credential,
        ["a"],
        output_schema={"type": "object", "properties": {"x": {"type": "integer"}}},
    )
    sim.add_fault(
        status=200, body={"status": "finished", "output": {"choices": [{"text": ' {"x": 5}'}]}}
    )
    worker.advance_job(job.pk)
    job.refresh_from_db()
    assert job.status == "completed" and outputs(job) == [{"x": 5}]
