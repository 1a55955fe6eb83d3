"""Batch mode under bad input and faults, through the dashboard's task code
against the simulators over loopback (the fixtures of test_batch): malformed
result lines, a create answered 413, a batch the provider lost."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from dashboard.core import clock
from dashboard.jobs import batch, worker
from dashboard.jobs.serialize import job_batches
from dashboard.models import Job
from providers.batch import custom_id
from providers.simulators import completion_text
from providers.simulators.base import Fault
from tests.conftest import FakeClock, outputs
from tests.jobs import test_batch as base
from tests.jobs.test_batch import CLAUDE, MODEL, batch_job, drive

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


# --- a create refused as too large (413) -------------------------------------------------------


def chunk_table(job: Job) -> list[tuple[int, int, int, str]]:
    return list(
        job.chunks.order_by("number").values_list("number", "start_index", "end_index", "state")
    )


def one_row_body(credential: Any, job: Job, prompt: str) -> int:
    """The bytes of a create body that holds one row of ``prompt``."""
    from dashboard.core.connect import build_provider
    from providers.anthropic import batch_requests_body

    with build_provider(credential) as provider:
        line = provider.batch_line(custom_id(job.pk, 0), prompt, batch.job_spec(job))
    return len(batch_requests_body([line]))


def test_a_413_splits_the_chunk_in_halves_down_to_single_rows(claude: Any, now: FakeClock) -> None:
    credential, sim = claude
    prompts = ["q0", "q1", "q2", "q3"]
    job = batch_job(credential, prompts, model=CLAUDE, max_tokens=16)
    sim.max_bytes = one_row_body(credential, job, "q0") + 10  # one row goes, two do not

    job = drive(job, now)

    assert job.status == "completed", job.error
    assert outputs(job) == [completion_text(CLAUDE, p, 16).strip() for p in prompts]
    assert chunk_table(job) == [
        (0, 0, 4, "split"),
        (1, 0, 2, "split"),
        (2, 2, 4, "split"),
        (3, 0, 1, "ended"),
        (4, 1, 2, "ended"),
        (5, 2, 3, "ended"),
        (6, 3, 4, "ended"),
    ]
    first = job.chunks.get(number=0)
    assert "HTTP 413" in first.error and "split into batches 2 and 3" in first.error
    assert not first.remote_id and first.requests == 4
    assert sim.count("POST /v1/messages/batches") == 7 and len(sim.batches) == 4
    assert job.events.filter(kind="retry", message__contains="split into batches").count() == 3
    # The API's batches are the remote ones: a split chunk never was one, and
    # its rows are counted once, in the halves.
    answered = job_batches(job)
    assert [b["status"] for b in answered] == ["ended"] * 4
    assert sum(b["items"] for b in answered) == len(prompts)


def test_a_single_row_still_too_large_fails_with_a_readable_error(
    claude: Any, now: FakeClock
) -> None:
    credential, sim = claude
    job = batch_job(credential, ["small", "big " * 500], model=CLAUDE)
    sim.max_bytes = one_row_body(credential, job, "small") + 10

    job = drive(job, now)

    assert job.status == "completed", job.error
    small, big = job.items.order_by("index")
    assert small.status == "completed"
    assert big.status == "failed"
    assert big.error.startswith("This row alone is too large for a batch: ")
    assert "HTTP 413" in big.error and "request_too_large" in big.error
    assert chunk_table(job) == [(0, 0, 2, "split"), (1, 0, 1, "ended"), (2, 1, 2, "failed")]


def test_an_openai_upload_answered_413_splits_the_chunk(
    credential: Any, sim: Any, now: FakeClock
) -> None:
    sim.faults.append(
        Fault(
            status=413,
            body={"error": {"message": "Request Entity Too Large", "type": "invalid_request"}},
            method="POST",
            path=r"^/v1/files$",
        )
    )
    job = batch_job(credential, ["a", "b", "c"])

    job = drive(job, now)

    assert job.status == "completed", job.error
    assert outputs(job) == [completion_text(MODEL, p).strip() for p in "abc"]
    assert chunk_table(job) == [(0, 0, 3, "split"), (1, 0, 1, "ended"), (2, 1, 3, "ended")]
    assert sim.files_uploaded == 2 and sim.batches_created == 2


def test_a_worker_dying_mid_split_leaves_the_chunk_to_look_up_then_split(
    credential: Any, sim: Any, now: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db.models import QuerySet

    from dashboard.core.connect import build_provider

    too_large = {"status": 413, "method": "POST", "path": r"^/v1/files$"}
    sim.faults.append(Fault(**too_large))
    job = batch_job(credential, ["a", "b"])
    spec = batch.job_spec(job)

    def died(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise SystemExit("the worker died")

    with build_provider(credential) as provider:
        (chunk,) = batch.chunks_cut(job, provider, spec)
        chunk = job.chunks.get()
        with monkeypatch.context() as patched:
            patched.setattr(QuerySet, "bulk_create", died)
            with pytest.raises(SystemExit):
                batch.chunk_create(job, provider, spec, chunk, "worker-1")
    # Nothing of the split was kept: the chunk is mid-create, as after any crash there.
    assert chunk_table(job) == [(0, 0, 2, "submitting")]
    job.chunks.update(lease_expires_at=clock.now() - timedelta(seconds=1))
    sim.faults.append(Fault(**too_large))  # the provider refuses it again

    job = drive(job, now)

    assert job.status == "completed", job.error
    assert chunk_table(job) == [(0, 0, 2, "split"), (1, 0, 1, "ended"), (2, 1, 2, "ended")]
    assert sim.batches_created == 2 and sim.files_uploaded == 2


def test_halves_of_a_job_cancelled_meanwhile_are_never_created(
    claude: Any, now: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dashboard.jobs.services import job_cancel

    credential, sim = claude
    job = batch_job(credential, ["q0", "q1"], model=CLAUDE)
    sim.max_bytes = one_row_body(credential, job, "q0") + 10
    real = batch.chunk_split

    def cancel_first(job: Job, *args: Any) -> Any:
        assert job_cancel(Job.objects.get(pk=job.pk))  # asked while the create was under way
        return real(job, *args)

    monkeypatch.setattr(batch, "chunk_split", cancel_first)

    job = drive(job, now)

    assert job.status == "cancelled"
    assert chunk_table(job) == [(0, 0, 2, "split"), (1, 0, 1, "failed"), (2, 1, 2, "failed")]
    assert sim.count("POST /v1/messages/batches") == 1 and not sim.batches
    assert set(job.items.values_list("status", flat=True)) == {"cancelled"}
