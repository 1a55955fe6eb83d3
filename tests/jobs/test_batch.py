"""Batch mode through the dashboard's own task code (worker step, per-batch
polls, cancel, retry), against the OpenAI simulator over loopback on a fake
clock shared by the simulator and the dashboard."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from dashboard.core import clock
from dashboard.jobs import batch, worker
from dashboard.jobs import sweep as job_sweep
from dashboard.jobs.serialize import job_json
from dashboard.jobs.services import job_cancel, job_retry
from dashboard.models import BatchChunk, Job
from providers import JobSpec
from providers.batch import BatchLookupUnsupported, custom_id
from providers.simulators import completion_text
from providers.simulators import openai_compat as openai_sim
from providers.simulators.base import Fault
from tests.api.conftest import Api, api_for, assert_error
from tests.conftest import FakeClock, make_credential, outputs, use_clock

pytestmark = pytest.mark.django_db

POLL = 30
MODEL = "gpt-test"


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch, sim_clock: FakeClock) -> FakeClock:
    """The dashboard's clock follows the simulator's fake one."""
    start = timezone.now()
    monkeypatch.setattr(clock, "now", lambda: start + timedelta(seconds=sim_clock.now - 1000))
    return sim_clock


@pytest.fixture
def sim(sims: Any, now: FakeClock, settings: Any) -> Any:
    settings.BATCH_POLL_SECONDS = POLL
    return use_clock(sims.get("openai"), now, step_seconds=10.0)


@pytest.fixture
def credential(team: Any, sim: Any) -> Any:
    return make_credential(team, "openai", base_url=sim.base_url, secret=sim.token)


def batch_job(credential: Any, prompts: list[str], **spec: Any) -> Job:
    from dashboard.jobs.services import job_create

    spec.setdefault("model", MODEL)
    return job_create(
        team=credential.team,
        credential=credential,
        spec=JobSpec(prompts=prompts, **spec),
        mode="batch",
    )


def live_chunks() -> list[int]:
    return list(
        BatchChunk.objects.filter(state="live", job__status__in=["pending", "queued", "running"])
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def drive(job: Job, now: FakeClock, *, step: float = 1.0, seconds: float = 400) -> Job:
    """The worker's step, then every live chunk's poll task each ``step``
    seconds of fake time (a task that is not due does nothing)."""
    worker.advance_job(job.pk)
    waited = 0.0
    while waited < seconds:
        job.refresh_from_db()
        if job.is_terminal:
            break
        now.advance(step)
        waited += step
        for chunk_id in live_chunks():
            batch.batch_poll(chunk_id)
    job.refresh_from_db()
    return job


def gets(sim: Any) -> int:
    """The simulator's GET /v1/batches/{id} answered so far."""
    return sum(n for key, n in sim.requests.items() if key.startswith("GET /v1/batches/(?P"))


def test_a_batch_job_completes_with_outputs_matched_by_custom_id(
    credential: Any, sim: Any, now: FakeClock
) -> None:
    prompts = ["one", "two", "three [[fail]]", "four", "five"]
    job = batch_job(credential, prompts, max_tokens=20)

    job = drive(job, now)

    assert job.status == "completed", job.error
    assert job.mode == "batch"
    expected = [completion_text(MODEL, p, 20).strip() for p in prompts]
    got = outputs(job)
    for i in (0, 1, 3, 4):
        assert got[i] == expected[i]
    failed = job.items.get(index=2)
    assert failed.status == "failed" and failed.error.startswith("server_error: ")
    assert job.items_completed == 4 and job.items_failed == 1 and job.items_running == 0
    assert job.tokens_in > 0 and job.tokens_out > 0 and not job.tokens_estimated
    assert job.items.filter(status="completed", tokens_estimated=False).count() == 4
    (chunk,) = job.chunks.all()
    assert chunk.state == "ended" and chunk.remote_id and chunk.input_file_id
    assert (sim.files_uploaded, sim.batches_created) == (1, 1)


def test_chunks_follow_batch_max_requests(credential: Any, sim: Any, now: FakeClock) -> None:
    job = batch_job(credential, [f"q{i}" for i in range(5)], options={"batch_max_requests": 2})

    job = drive(job, now)

    assert job.status == "completed", job.error
    ranges = list(job.chunks.values_list("start_index", "end_index", "requests"))
    assert ranges == [(0, 2, 2), (2, 4, 2), (4, 5, 1)]
    assert sim.batches_created == 3 and sim.files_uploaded == 3
    assert outputs(job) == [completion_text(MODEL, f"q{i}").strip() for i in range(5)]


def test_a_credential_limit_cuts_chunks_too(team: Any, sim: Any, now: FakeClock) -> None:
    credential = make_credential(
        team, "openai", base_url=sim.base_url, secret=sim.token, options={"batch_max_requests": 3}
    )
    job = drive(batch_job(credential, [f"q{i}" for i in range(5)]), now)
    assert job.status == "completed" and job.chunks.count() == 2


def test_a_validation_failure_fails_every_row_and_the_job_with_its_errors(
    credential: Any, sim: Any, now: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(openai_sim, "MAX_BATCH_REQUESTS", 2)
    job = drive(batch_job(credential, ["a", "b", "c"]), now)

    assert job.status == "failed"
    assert "at most 2 requests" in job.error
    assert set(job.items.values_list("status", flat=True)) == {"failed"}
    assert all("at most 2 requests" in e for e in job.items.values_list("error", flat=True))
    assert job.chunks.get().state == "failed"


def test_expiry_keeps_finished_rows_and_fails_the_rest(
    credential: Any, sim: Any, now: FakeClock
) -> None:
    job = batch_job(credential, [f"q{i}" for i in range(5)])
    worker.advance_job(job.pk)
    chunk = job.chunks.get()
    now.advance(POLL)
    batch.batch_poll(chunk.pk)
    sim.expire(chunk.remote_id if chunk.remote_id else job.chunks.get().remote_id, done=2)
    now.advance(POLL)
    chunk.refresh_from_db()
    batch.batch_poll(chunk.pk)

    job.refresh_from_db()
    assert job.status == "completed"
    assert job.items_completed == 2 and job.items_failed == 3
    errors = set(job.items.filter(status="failed").values_list("error", flat=True))
    assert errors == {batch.EXPIRED}


def test_cancel_mid_way_asks_the_provider_and_keeps_finished_rows(
    credential: Any,
    sim: Any,
    now: FakeClock,
    nudges: list[Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    job = batch_job(credential, [f"q{i}" for i in range(10)], options={"batch_max_requests": 5})
    worker.advance_job(job.pk)
    assert job.chunks.filter(state="live").count() == 2
    now.advance(POLL - 10 + 9)  # 0.9 of in_progress: some rows ran
    job.refresh_from_db()

    with django_capture_on_commit_callbacks(execute=True):
        assert job_cancel(job)
    job.refresh_from_db()
    assert job.status == "running" and job.cancel_requested_at is not None
    assert ("dashboard.tasks.batch_cancel", job.pk) in nudges
    assert batch.batch_cancel(job.pk) == 2
    assert sum(n for key, n in sim.requests.items() if key.endswith("/cancel")) == 2

    job = drive(job, now, seconds=200)
    assert job.status == "cancelled"
    assert 0 < job.items_completed < 10
    assert job.items_completed + job.items_cancelled == 10
    for item in job.items.filter(status="completed"):
        assert item.output == completion_text(MODEL, item.input).strip()
    assert set(job.chunks.values_list("state", flat=True)) == {"ended"}


def test_a_cancel_before_any_batch_exists_ends_the_job_at_once(credential: Any) -> None:
    job = batch_job(credential, ["a"])
    assert job_cancel(job)
    job.refresh_from_db()
    assert job.status == "cancelled" and job.items_cancelled == 1


def test_a_pending_chunk_is_never_created_after_a_cancel(
    credential: Any, sim: Any, now: FakeClock
) -> None:
    job = batch_job(credential, ["a", "b"], options={"batch_max_requests": 1})
    spec = batch.job_spec(job)
    from dashboard.core.connect import build_provider

    with build_provider(credential) as provider:
        batch.chunks_cut(job, provider, spec)
        first = job.chunks.get(number=0)
        assert batch.chunk_create(job, provider, spec, first, "me")
    assert job_cancel(job)
    assert job.chunks.get(number=1).state == "failed"
    worker.advance_job(job.pk)
    assert sim.batches_created == 1
    job = drive(job, now, seconds=200)
    assert job.status == "cancelled"
    assert job.items.get(index=1).status == "cancelled"


def _crashed_chunk(job: Job, credential: Any, *, create: bool) -> BatchChunk:
    """A chunk left ``submitting`` by a worker that died, its lease run out,
    after the create (``create``) or before it."""
    from dashboard.core.connect import build_provider

    spec = batch.job_spec(job)
    with build_provider(credential) as provider:
        (chunk,) = batch.chunks_cut(job, provider, spec)
        chunk = BatchChunk.objects.get(job=job)
        lines = batch.chunk_lines(job, provider, spec, chunk)
        file_id = provider.batch_upload(lines)
        if create:
            provider.batch_create(lines, file_id, batch.metadata(chunk))
    BatchChunk.objects.filter(pk=chunk.pk).update(
        state="submitting",
        input_file_id=file_id,
        lease_owner="dead-worker",
        lease_expires_at=clock.now() - timedelta(seconds=5),
    )
    return chunk


def test_a_crash_after_the_create_is_found_by_metadata_not_created_twice(
    credential: Any, sim: Any, now: FakeClock
) -> None:
    job = batch_job(credential, ["a", "b"])
    chunk = _crashed_chunk(job, credential, create=True)
    assert sim.batches_created == 1
    # The sweep nudges the job: it has a chunk a dead worker left mid-create.
    assert job_sweep.sweep()["jobs"] >= 1

    job = drive(job, now)

    assert job.status == "completed", job.error
    assert sim.batches_created == 1 and sim.files_uploaded == 1
    chunk.refresh_from_db()
    assert chunk.state == "ended" and chunk.remote_id
    assert job.events.filter(message__contains="not created again").exists()


def test_a_crash_before_the_create_creates_it_once(
    credential: Any, sim: Any, now: FakeClock
) -> None:
    job = batch_job(credential, ["a", "b"])
    _crashed_chunk(job, credential, create=False)
    assert sim.batches_created == 0

    job = drive(job, now)

    assert job.status == "completed", job.error
    # Created once, from the file already uploaded (never uploaded twice).
    assert sim.batches_created == 1 and sim.files_uploaded == 1


def test_a_lookup_the_api_cannot_do_leaves_the_chunk_unknown(
    credential: Any, sim: Any, now: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from providers.openai_compat import OpenAIProvider

    def unsupported(self: Any, metadata: Any) -> Any:
        raise BatchLookupUnsupported("no lookup")

    monkeypatch.setattr(OpenAIProvider, "batch_find", unsupported)
    job = batch_job(credential, ["a", "b"])
    chunk = _crashed_chunk(job, credential, create=True)

    worker.advance_job(job.pk)

    chunk.refresh_from_db()
    job.refresh_from_db()
    assert chunk.state == "unknown"
    assert job.status == "failed"
    assert set(job.items.values_list("error", flat=True)) == {batch.UNKNOWN}
    assert sim.batches_created == 1  # no blind resubmit
    new = batch.chunk_resubmit(chunk)
    assert new.mode == "batch" and new.retry_of_id == job.pk and new.progress_total == 2


def test_an_upload_is_not_repeated_for_a_chunk_that_has_its_file(
    credential: Any, sim: Any, now: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from providers.openai_compat import OpenAIProvider

    real = OpenAIProvider.batch_create
    calls = {"n": 0}

    def flaky(self: Any, *args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            from providers import ErrorKind, ProviderError

            raise ProviderError("busy", kind=ErrorKind.SERVER, status_code=503)
        return real(self, *args)

    monkeypatch.setattr(OpenAIProvider, "batch_create", flaky)
    job = batch_job(credential, ["a"])
    # The create is refused once (503): the chunk goes back to pending with its
    # file kept, and the step creates it again from that file.
    job = drive(job, now)
    assert job.status == "completed", job.error
    assert calls["n"] == 2
    assert sim.files_uploaded == 1 and sim.batches_created == 1
    assert job.events.filter(kind="retry", message__contains="Creating batch 1 failed").exists()


def test_a_server_without_the_batch_api_fails_the_job_saying_so(
    credential: Any, sim: Any, now: FakeClock
) -> None:
    sim.batch_api = False
    job = batch_job(credential, ["a", "b"])
    worker.advance_job(job.pk)
    job.refresh_from_db()
    assert job.status == "failed"
    assert "has no batch API" in job.error and "run the job online" in job.error
    assert set(job.items.values_list("status", flat=True)) == {"failed"}


def test_polls_are_no_more_often_than_the_setting(
    credential: Any, sim: Any, now: FakeClock
) -> None:
    job = batch_job(credential, ["a", "b"])
    job = drive(job, now, step=1.0)  # a poll task every fake second
    assert job.status == "completed"
    # The batch ends 40 s after its create: polls at 30 s and 60 s, no more.
    assert gets(sim) == 2


def test_a_result_of_another_job_is_refused(credential: Any) -> None:
    job = batch_job(credential, ["a", "b"])
    chunk = BatchChunk(job=job, number=0, start_index=0, end_index=2)
    assert batch.index_of(job, chunk, custom_id(job.pk, 1)) == 1
    assert batch.index_of(job, chunk, custom_id(job.pk + 1, 1)) is None
    assert batch.index_of(job, chunk, custom_id(job.pk, 2)) is None
    assert batch.index_of(job, chunk, f"job{job.pk}-item01") is None


def test_poll_errors_back_off_then_the_batch_is_read(
    credential: Any, sim: Any, now: FakeClock
) -> None:
    job = batch_job(credential, ["a"])
    worker.advance_job(job.pk)
    chunk = job.chunks.get()
    sim.faults.append(Fault(status=503, method="GET", path=r"^/v1/batches/", times=2))
    now.advance(POLL)
    assert batch.batch_poll(chunk.pk) == "retry"
    chunk.refresh_from_db()
    assert chunk.poll_failures == 1 and chunk.state == "live"
    assert chunk.next_poll_at >= clock.now() + timedelta(seconds=POLL - 1)
    assert batch.batch_poll(chunk.pk) == "skipped"  # not due yet
    job = drive(job, now, seconds=600)
    assert job.status == "completed", job.error
    assert job.events.filter(kind="retry", message__contains="Status check 1").exists()


def test_a_results_file_that_fails_to_download_is_read_again_later(
    credential: Any, sim: Any, now: FakeClock
) -> None:
    """A 503 on the output file's download is a failed check of that batch,
    retried later; the job does not fail, and the rows are read in the end."""
    job = batch_job(credential, ["a", "b"])
    sim.faults.append(Fault(status=503, method="GET", path=r"^/v1/files/.*/content$", times=1))
    job = drive(job, now, seconds=600)
    assert job.status == "completed", job.error
    assert outputs(job) == [completion_text(MODEL, p).strip() for p in ("a", "b")]
    assert job.events.filter(kind="retry", message__contains="results").exists()


def test_results_gone_fail_only_that_batchs_rows(credential: Any, sim: Any, now: FakeClock) -> None:
    """The output file of one batch is gone (404: past its retention, deleted):
    that batch's unfinished rows fail saying so; the other batch's rows are
    read, and the job ends as its rows say, not failed whole."""
    job = batch_job(credential, ["a", "b", "c"], options={"batch_max_requests": 2})
    sim.faults.append(Fault(status=404, method="GET", path=r"^/v1/files/.*/content$", times=1))
    job = drive(job, now, seconds=600)
    assert job.status == "completed", job.error
    failed = list(job.items.filter(status="failed"))
    assert len(failed) in (1, 2) and job.items_completed == 3 - len(failed)
    assert all("results" in item.error and "404" in item.error for item in failed)
    assert job.chunks.filter(state="failed").count() == 1
    assert job.chunks.filter(state="ended").count() == 1


def test_a_batch_job_has_a_deadline_that_covers_the_window(credential: Any) -> None:
    job = batch_job(credential, ["a"])
    assert (job.deadline_at - job.created_at).total_seconds() >= 24 * 3600
    short = batch_job(credential, ["a"], options={"deadline_seconds": 3600})
    assert (short.deadline_at - short.created_at).total_seconds() == 3600


def test_a_batch_price_is_kept(credential: Any) -> None:
    from decimal import Decimal

    from dashboard.models import Price

    Price.objects.create(
        team=credential.team,
        provider="openai",
        model=MODEL,
        input_per_mtok=Decimal("2"),
        output_per_mtok=Decimal("4"),
    )
    job = batch_job(credential, ["a"])
    assert (job.price_input_per_mtok, job.price_output_per_mtok) == (Decimal("1"), Decimal("2"))


# --- retry ----------------------------------------------------------------------------------


def test_retry_failed_rows_as_batch_and_as_online(
    credential: Any, sim: Any, now: FakeClock
) -> None:
    job = drive(batch_job(credential, ["a", "b [[fail]]"]), now)
    assert job.status == "completed" and job.items_failed == 1

    again = job_retry(job, failed_only=True)
    assert again.mode == "batch" and again.progress_total == 1
    online = job_retry(job, failed_only=True, mode="online")
    assert online.mode == "online"
    worker.advance_job(online.pk)
    online.refresh_from_db()
    assert online.status == "completed" and not online.chunks.exists()
    assert sim.batches_created == 1


# --- the API ---------------------------------------------------------------------------------


def test_the_api_takes_mode_and_answers_batches(
    client: Any, alice: Any, credential: Any, sim: Any, now: FakeClock
) -> None:
    api: Api = api_for(client, alice)
    body = {"credential": credential.pk, "model": MODEL, "prompts": ["a", "b", "c"]}
    created = api.post("jobs", {**body, "mode": "batch", "options": {"batch_max_requests": 2}})
    assert created.status_code == 201, created.content
    job = Job.objects.get(pk=created.json()["id"])
    assert job.mode == "batch"
    worker.advance_job(job.pk)

    answer = api.get(f"jobs/{job.pk}").json()
    assert answer["mode"] == "batch"
    assert [(b["status"], b["items"]) for b in answer["batches"]] == [("live", 2), ("live", 1)]
    assert all(b["remote_id"].startswith("batch_") for b in answer["batches"])
    assert answer["batches"][0]["provider_status"] == "validating"

    online = api.post("jobs", body)
    assert api.get(f"jobs/{online.json()['id']}").json()["batches"] == []
    assert job_json(Job.objects.get(pk=online.json()["id"]))["mode"] == "online"


def test_the_api_refuses_batch_mode_where_there_is_no_batch_api(
    client: Any, alice: Any, team: Any
) -> None:
    api: Api = api_for(client, alice)
    together = make_credential(team, "together")
    body = {"credential": together.pk, "model": "m", "prompts": ["a"], "mode": "batch"}
    error = assert_error(api.post("jobs", body), 400, "mode")
    assert "Batch mode needs an OpenAI or Anthropic credential" in error["fields"]["mode"][0]
    assert "Together" in error["fields"]["mode"][0]
    assert_error(api.post("jobs", {**body, "mode": "fast"}), 400, "mode")
    assert not Job.objects.exists()
    assert_error(
        api.post("jobs", {**body, "mode": "online", "options": {"batch_max_requests": 0}}),
        400,
        "options",
    )


def test_the_api_retry_takes_a_mode(
    client: Any, alice: Any, credential: Any, sim: Any, now: FakeClock
) -> None:
    api: Api = api_for(client, alice)
    job = drive(batch_job(credential, ["a", "b [[fail]]"]), now)
    retried = api.post(f"jobs/{job.pk}/retry", {"failed_only": True, "mode": "online"})
    assert retried.status_code == 201, retried.content
    assert retried.json()["mode"] == "online"
    retried = api.post(f"jobs/{job.pk}/retry", {"failed_only": True})
    assert retried.json()["mode"] == "batch"
    assert_error(api.post(f"jobs/{job.pk}/retry", {"mode": "nope"}), 400, "mode")


# --- Anthropic ---------------------------------------------------------------------------------

CLAUDE = "claude-haiku-4-5"


@pytest.fixture
def claude(team: Any, sims: Any, now: FakeClock, settings: Any) -> Any:
    settings.BATCH_POLL_SECONDS = POLL
    sim = use_clock(sims.get("anthropic"), now, step_seconds=10.0)
    return make_credential(team, "anthropic", base_url=sim.base_url), sim


def test_an_anthropic_batch_job_completes(claude: Any, now: FakeClock) -> None:
    credential, sim = claude
    prompts = ["one", "two", "three"]
    job = batch_job(credential, prompts, model=CLAUDE, max_tokens=32)

    job = drive(job, now)

    assert job.status == "completed", job.error
    assert outputs(job) == [completion_text(CLAUDE, p, 32).strip() for p in prompts]
    assert job.items.filter(tokens_estimated=False).count() == 3
    assert sim.count("POST /v1/messages/batches") == 1
    assert sim.count("POST /v1/messages") == 0  # nothing went online


def test_an_anthropic_crash_mid_create_is_unknown_not_resubmitted(
    claude: Any, now: FakeClock
) -> None:
    credential, sim = claude
    job = batch_job(credential, ["a", "b"], model=CLAUDE)
    from dashboard.core.connect import build_provider

    spec = batch.job_spec(job)
    with build_provider(credential) as provider:
        (chunk,) = batch.chunks_cut(job, provider, spec)
        chunk = BatchChunk.objects.get(job=job)
        lines = batch.chunk_lines(job, provider, spec, chunk)
        provider.batch_create(lines, None, batch.metadata(chunk))
    BatchChunk.objects.filter(pk=chunk.pk).update(
        state="submitting", lease_expires_at=clock.now() - timedelta(seconds=5)
    )

    worker.advance_job(job.pk)

    chunk.refresh_from_db()
    job.refresh_from_db()
    assert chunk.state == "unknown" and chunk.error == batch.UNKNOWN
    assert job.status == "failed"
    assert set(job.items.values_list("error", flat=True)) == {batch.UNKNOWN}
    assert sim.count("POST /v1/messages/batches") == 1
    assert job_json(job)["batches"][0]["status"] == "unknown"


def test_a_batch_job_past_its_deadline_has_its_batches_cancelled(
    credential: Any,
    sim: Any,
    now: FakeClock,
    nudges: list[Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    """A deadline ends the job; its batches still at the provider are asked to
    cancel, so they are no longer paid for."""
    sim.step_seconds = 100.0  # the batch is still running at the deadline
    job = batch_job(credential, ["a", "b"], options={"deadline_seconds": 60})
    worker.advance_job(job.pk)
    assert job.chunks.filter(state="live").count() == 1
    now.advance(61)
    with django_capture_on_commit_callbacks(execute=True):
        assert job_sweep.sweep()["deadline"] == 1
    job.refresh_from_db()
    assert job.status == "failed" and "deadline" in job.error
    assert ("dashboard.tasks.batch_cancel", job.pk) in nudges
    assert batch.batch_cancel(job.pk) == 1
    assert sum(n for key, n in sim.requests.items() if key.endswith("/cancel")) == 1
