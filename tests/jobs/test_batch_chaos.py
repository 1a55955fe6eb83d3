"""Crash safety of batch mode with real worker processes: a qcluster on the
test database against the simulators is SIGKILLed while the provider holds
its upload, its create or its result file half sent (the simulator's
``hold``: the kill lands at that step, every run). Then a new worker takes
over. Each case proves no remote batch created twice, no row lost (every row
completed with its output or failed saying why) and the job ended."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from dashboard.jobs import batch
from dashboard.jobs import sweep as job_sweep
from dashboard.jobs.services import job_create
from dashboard.models import BatchChunk, Item, Job
from dashboard.status import JOB_TERMINAL
from providers import JobSpec
from providers.simulators import completion_text
from providers.simulators.base import Hold, Simulator
from tests.conftest import make_credential
from tests.jobs.test_chaos import wait_until_terminal
from tests.workers import kill, start_qcluster, stop

pytestmark = [pytest.mark.slow, pytest.mark.shared_db, pytest.mark.django_db(transaction=True)]

LEASE = "3"  # seconds: a killed worker's job and batches are taken over this soon
POLL = "1"
MODEL = "gpt-test"
CLAUDE = "claude-haiku-4-5"


@pytest.fixture
def fast(settings: Any) -> None:
    settings.DASHBOARD_LEASE_SECONDS = int(LEASE)
    settings.BATCH_POLL_SECONDS = int(POLL)


def worker(log: Path) -> Any:
    return start_qcluster(log, DASHBOARD_LEASE_SECONDS=LEASE, DASHBOARD_BATCH_POLL_SECONDS=POLL)


def new_job(credential: Any, prompts: list[str], model: str, **options: Any) -> Job:
    return job_create(
        team=credential.team,
        credential=credential,
        spec=JobSpec(prompts=prompts, model=model, options=options),
        mode="batch",
    )


def crash_at(hold: Hold, log: Path, job: Job, *, then: Any = None) -> int:
    """Start a worker, SIGKILL it while ``hold`` holds its request (and, with
    ``then``, once ``then()`` is true), let the request go on at the
    provider, start another worker and wait for the job to end. Returns the
    rows completed when the worker was killed."""
    first = worker(log)
    try:
        deadline = time.monotonic() + 30
        while not hold.arrived.wait(0.5) and time.monotonic() < deadline:
            job_sweep.sweep()  # the scheduler's minute tick, sooner: polls come when due
        assert hold.arrived.is_set(), f"the held request never came:\n{log.read_text()[-3000:]}"
        deadline = time.monotonic() + 30
        while then is not None and not then() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert then is None or then(), "the worker never got that far before the hold"
        kill(first)
        at_kill = Item.objects.filter(job=job, status="completed").count()
    finally:
        hold.release.set()
        stop(first)
    second = worker(log)
    try:
        wait_until_terminal([job], 40, interval=0.5)
        job.refresh_from_db()
    finally:
        stop(second)
    assert job.status in JOB_TERMINAL, f"{job.status}: {log.read_text()[-3000:]}"
    return at_kill


def chunk_of(job: Job, request_id: str) -> int:
    index = batch.index_of(job, BatchChunk(start_index=0, end_index=10**9), request_id)
    assert index is not None, request_id
    (number,) = {
        c.number
        for c in job.chunks.exclude(state=BatchChunk.State.SPLIT)
        if c.start_index <= index < c.end_index
    }
    return number


def uploads_per_chunk(sim: Any, job: Job) -> Counter[int]:
    """Input files the OpenAI simulator took, by the chunk of their first request."""
    counts: Counter[int] = Counter()
    for sim_file in list(sim.files.values()):
        if sim_file.purpose == "batch":
            first = json.loads(sim_file.data.split(b"\n", 1)[0])
            counts[chunk_of(job, first["custom_id"])] += 1
    return counts


def openai_batches_per_chunk(sim: Any, job: Job) -> Counter[int]:
    numbers = dict(job.chunks.values_list("pk", "number"))
    return Counter(numbers[int(b.metadata["dashboard_chunk"])] for b in list(sim.batches.values()))


def anthropic_batches_per_chunk(sim: Simulator, job: Job) -> Counter[int]:
    return Counter(
        chunk_of(job, b.requests[0]["custom_id"])
        for b in list(sim.batches.values())  # type: ignore[attr-defined]
    )


def assert_no_row_lost(job: Job, model: str, *, failed_with: str = "") -> None:
    """Every row ended: completed with its output, or failed with ``failed_with``."""
    for item in Item.objects.filter(job=job):
        if item.status == "completed":
            assert item.output == completion_text(model, item.input).strip(), item.index
        else:
            assert failed_with and item.status == "failed", (item.index, item.status, item.error)
            assert item.error == failed_with, (item.index, item.error)
    job.refresh_from_db()
    assert job.items_running == 0
    assert not Item.objects.filter(job=job, status__in=["pending", "running"]).exists()


def test_sigkill_during_the_upload(team: Any, sims: Any, fast: None, tmp_path: Path) -> None:
    sim = sims.get("openai")
    sim.step_seconds = 0.5
    credential = make_credential(team, "openai", base_url=sim.base_url, secret=sim.token)
    # The second chunk's upload is held: the first chunk's file id is stored by then.
    hold = sim.hold(method="POST", path=r"^/v1/files$", skip=1)
    job = new_job(credential, [f"u{i}" for i in range(4)], MODEL, batch_max_requests=2)

    assert crash_at(hold, tmp_path / "qcluster.log", job) == 0

    assert job.status == "completed", job.error
    assert_no_row_lost(job, MODEL)
    assert job.items_completed == 4
    assert openai_batches_per_chunk(sim, job) == {0: 1, 1: 1}
    # The held upload reached the provider, its answer never came back: the
    # file id was never stored, so that chunk's file went up again (one orphan
    # file, no second batch). The chunk whose id was stored: once.
    assert uploads_per_chunk(sim, job) == {0: 1, 1: 2}


def test_sigkill_during_the_openai_create(team: Any, sims: Any, fast: None, tmp_path: Path) -> None:
    sim = sims.get("openai")
    sim.step_seconds = 0.5
    credential = make_credential(team, "openai", base_url=sim.base_url, secret=sim.token)
    hold = sim.hold(method="POST", path=r"^/v1/batches$")
    job = new_job(credential, [f"c{i}" for i in range(4)], MODEL, batch_max_requests=2)

    crash_at(hold, tmp_path / "qcluster.log", job)

    assert job.status == "completed", job.error
    assert_no_row_lost(job, MODEL)
    assert job.items_completed == 4
    # The create went through at the provider after the kill: found by its metadata.
    assert openai_batches_per_chunk(sim, job) == {0: 1, 1: 1}
    assert uploads_per_chunk(sim, job) == {0: 1, 1: 1}
    assert job.events.filter(message__contains="not created again").exists()


def test_sigkill_during_the_anthropic_create_leaves_it_unknown(
    team: Any, sims: Any, fast: None, tmp_path: Path
) -> None:
    sim = sims.get("anthropic")
    sim.step_seconds = 1.0
    credential = make_credential(team, "anthropic", base_url=sim.base_url)
    hold = sim.hold(method="POST", path=r"^/v1/messages/batches$")
    job = new_job(credential, [f"a{i}" for i in range(4)], CLAUDE, batch_max_requests=2)

    crash_at(hold, tmp_path / "qcluster.log", job)

    # Anthropic cannot be asked whether the create happened: the documented outcome.
    states = dict(job.chunks.values_list("number", "state"))
    assert states == {0: "unknown", 1: "ended"}
    assert anthropic_batches_per_chunk(sim, job) == {0: 1, 1: 1}  # never created twice
    assert_no_row_lost(job, CLAUDE, failed_with=batch.UNKNOWN)
    assert job.status == "completed" and job.items_completed == 2 and job.items_failed == 2


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_sigkill_during_result_ingest(
    provider: str, team: Any, sims: Any, fast: None, tmp_path: Path
) -> None:
    """A job of two 1,250-row batches: the second one's result file held half
    sent, the first one's rows written, when the worker dies. (A chunk's
    results are spooled as they are read and written in item order after,
    so the rows written are those of the chunk that ended; a re-read after a
    partial write is tests/jobs/test_batch_result_order.py's.)"""
    rows = 2500
    sim = sims.get(provider)
    if provider == "openai":
        sim.step_seconds = 0.5
        model = MODEL
        credential = make_credential(team, "openai", base_url=sim.base_url, secret=sim.token)
        hold = sim.hold(method="GET", path=r"^/v1/files/[^/]+/content$", skip=1, after=5)
    else:
        sim.step_seconds = 1.0
        model = CLAUDE
        credential = make_credential(team, "anthropic", base_url=sim.base_url)
        hold = sim.hold(method="GET", path=r"/results$", skip=1, after=600)  # a line a piece
    job = new_job(credential, [f"r{i}" for i in range(rows)], model, batch_max_requests=1250)

    def some_rows_written() -> bool:
        return Item.objects.filter(job=job, status="completed").count() >= batch.WRITE_EVERY

    at_kill = crash_at(hold, tmp_path / "qcluster.log", job, then=some_rows_written)

    # Killed mid-ingest: the first batch's rows written (1,000 or all 1,250), the other half read.
    assert batch.WRITE_EVERY <= at_kill <= 1250

    assert job.status == "completed", job.error
    assert_no_row_lost(job, model)
    assert job.items_completed == rows
    if provider == "openai":
        assert openai_batches_per_chunk(sim, job) == {0: 1, 1: 1}
        assert uploads_per_chunk(sim, job) == {0: 1, 1: 1}
        read = sum(n for key, n in sim.requests.items() if key.startswith("GET /v1/files/"))
    else:
        assert anthropic_batches_per_chunk(sim, job) == {0: 1, 1: 1}
        read = sim.count("GET /v1/messages/batches/(?P<batch_id>[^/]+)/results")
    # The held file read again from the start by the next worker; the first too
    # when the kill came before it was marked ended (its rows are not written twice).
    assert read in (3, 4)
