"""An Anthropic job through the dashboard's own task code, against the
simulator on loopback: outputs and the usage tokens the provider reported."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dashboard.jobs import worker
from dashboard.models import JobEvent
from providers.simulators import completion_text
from tests.conftest import make_credential, make_job, outputs

pytestmark = pytest.mark.django_db

MODEL = "claude-haiku-4-5"


def test_anthropic_job_completes_with_outputs_and_reported_tokens(team: Any, sims: Any) -> None:
    sim = sims.get("anthropic")
    credential = make_credential(team, "anthropic", base_url=sim.base_url)
    prompts = ["Summarise ticket 1", "Summarise ticket two please"]
    job = make_job(credential, prompts, model=MODEL, system_prompt="Be brief", max_tokens=64)
    worker.advance_job(job.pk)
    job.refresh_from_db()
    assert job.status == "completed", job.error
    expected = [completion_text(MODEL, p, 64).strip() for p in prompts]
    assert outputs(job) == expected
    items = list(job.items.order_by("index"))
    # The simulator counts words as tokens: the system prompt's two and the prompt's.
    assert [(i.tokens_in, i.tokens_out, i.tokens_estimated) for i in items] == [
        (2 + len(p.split()), len(text.split()), False)
        for p, text in zip(prompts, expected, strict=True)
    ]
    assert (job.tokens_in, job.tokens_out) == (
        sum(i.tokens_in for i in items),
        sum(i.tokens_out for i in items),
    )
    assert sim.count("POST /v1/messages") == 2


def test_anthropic_structured_stream_job(team: Any, sims: Any) -> None:
    sim = sims.get("anthropic")
    sim.stream_chunk_delay = 0.0
    credential = make_credential(team, "anthropic", base_url=sim.base_url)
    job = make_job(
        credential, ["Carl"], model=MODEL, output_schema={"age": "int", "units": "str"}, stream=True
    )
    worker.advance_job(job.pk)
    job.refresh_from_db()
    assert job.status == "completed", job.error
    (output,) = outputs(job)
    assert set(output) == {"age", "units"} and isinstance(output["age"], int)
    streamed = "".join(
        job.events.filter(kind=JobEvent.Kind.STREAM).values_list("message", flat=True)
    )
    assert streamed and json.loads(streamed) == output
