"""Batch mode under bad input and faults, through the dashboard's task code
against the simulators over loopback (the fixtures of test_batch): malformed
result lines, a create answered 413, a batch the provider lost."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dashboard.jobs import batch, worker
from dashboard.models import Job
from providers.batch import custom_id
from providers.simulators.base import Fault
from tests.conftest import FakeClock, outputs
from tests.jobs import test_batch as base
from tests.jobs.test_batch import CLAUDE, batch_job, drive

pytestmark = pytest.mark.django_db

# The fixtures of test_batch: the simulators on the dashboard's fake clock.
now, sim, credential, claude = base.now, base.sim, base.credential, base.claude


def chat_line(job: Job, index: int, text: str) -> bytes:
    body = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    }
    line = {"custom_id": custom_id(job.pk, index), "response": {"status_code": 200, "body": body}}
    return json.dumps({"id": f"batch_req_{index}", **line}).encode()


def claude_line(job: Job, index: int, text: str) -> bytes:
    message = {
        "content": [{"type": "text", "text": text}],
        "usage": {"input_tokens": 3, "output_tokens": 2},
    }
    result = {"type": "succeeded", "message": message}
    return json.dumps({"custom_id": custom_id(job.pk, index), "result": result}).encode()


def malformed_file(job: Job, good: Any) -> bytes:
    """Rows 0 and 5 answered well; 1 cut short (its id still readable), 2 an
    object without a custom_id, 3 over 1 MB (its id at its head), 4 nothing."""
    cut = good(job, 1, "one")[:60]
    assert custom_id(job.pk, 1).encode() in cut
    nameless = b'{"response": {"status_code": 200}}'
    huge = good(job, 3, "x" * (1024 * 1024 + 10))
    lines = [good(job, 5, "five"), cut, nameless, b"<html>502</html>", huge, good(job, 0, "zero")]
    return b"\n".join(lines) + b"\n"


def assert_only_bad_rows_failed(job: Job) -> None:
    assert job.status == "completed", job.error
    assert outputs(job)[0] == "zero" and outputs(job)[5] == "five"
    by_index = {item.index: item for item in job.items.all()}
    assert {i for i, item in by_index.items() if item.status == "completed"} == {0, 5}
    assert by_index[1].error.startswith("unreadable: ") and "not JSON" in by_index[1].error
    assert "over the 1 MB read per line; it was skipped" in by_index[3].error
    assert by_index[2].error == batch.NO_RESULT and by_index[4].error == batch.NO_RESULT
    assert job.events.filter(
        kind="error", message__contains="2 result line(s) could not be read and named no row"
    ).exists()


def test_malformed_openai_result_lines_fail_only_their_rows(
    credential: Any, sim: Any, now: FakeClock, settings: Any
) -> None:
    settings.DASHBOARD_MAX_RESPONSE_MB = 1
    job = batch_job(credential, [f"q{i}" for i in range(6)])
    sim.faults.append(
        Fault(
            status=200,
            body=malformed_file(job, chat_line),
            method="GET",
            path=r"^/v1/files/[^/]+/content$",
            content_type="application/octet-stream",
        )
    )
    job = drive(job, now)
    assert_only_bad_rows_failed(job)


def test_malformed_anthropic_result_lines_fail_only_their_rows(
    claude: Any, now: FakeClock, settings: Any
) -> None:
    settings.DASHBOARD_MAX_RESPONSE_MB = 1
    credential, sim = claude
    job = batch_job(credential, [f"q{i}" for i in range(6)], model=CLAUDE)
    sim.faults.append(
        Fault(
            status=200,
            body=malformed_file(job, claude_line),
            method="GET",
            path=r"/results$",
            content_type="application/binary",
        )
    )
    job = drive(job, now)
    assert_only_bad_rows_failed(job)


def test_a_stray_line_of_another_job_is_ignored_not_unreadable(
    credential: Any, sim: Any, now: FakeClock
) -> None:
    job = batch_job(credential, ["a"])
    other = chat_line(job, 0, "zero").replace(
        custom_id(job.pk, 0).encode(), custom_id(job.pk + 1, 0).encode()
    )
    body = other + b"\n" + chat_line(job, 0, "zero") + b"\n"
    sim.faults.append(
        Fault(status=200, body=body, method="GET", path=r"/content$", content_type="text/plain")
    )
    job = drive(job, now)
    assert job.status == "completed" and outputs(job) == ["zero"]
    assert job.events.filter(message__contains="1 result line(s) named no row").exists()
    assert not job.events.filter(message__contains="could not be read").exists()


# --- a batch the provider lost -----------------------------------------------------------------


def test_a_lost_batch_fails_its_rows_at_once_and_the_job_ends(
    credential: Any, sim: Any, now: FakeClock
) -> None:
    job = batch_job(credential, [f"q{i}" for i in range(4)], options={"batch_max_requests": 2})
    worker.advance_job(job.pk)
    lost, kept = job.chunks.order_by("number")
    del sim.batches[lost.remote_id]

    job = drive(job, now)

    assert job.status == "completed", job.error
    lost.refresh_from_db()
    said = f"The provider no longer knows batch {lost.remote_id} (404): "
    assert lost.state == "failed" and lost.error.startswith(said)
    assert "No batch found with id" in lost.error
    errors = dict(job.items.values_list("index", "error"))
    assert errors[0] == errors[1] == lost.error and errors[2] == errors[3] == ""
    assert lost.poll_failures == 1  # asked once, not retried
    assert job.events.filter(kind="error", message__contains=said).exists()
    assert job.items_completed == 2 and job.items_failed == 2


def test_a_lost_anthropic_batch_fails_the_job_with_that_reason(claude: Any, now: FakeClock) -> None:
    credential, sim = claude
    job = batch_job(credential, ["a", "b"], model=CLAUDE)
    worker.advance_job(job.pk)
    chunk = job.chunks.get()
    sim.batches.clear()

    job = drive(job, now)

    assert job.status == "failed"
    assert job.error.startswith(f"The provider no longer knows batch {chunk.remote_id} (404): ")
    assert set(job.items.values_list("error", flat=True)) == {job.error}
    assert sim.count("GET /v1/messages/batches/(?P<batch_id>[^/]+)") == 1
