"""A batch's results are written in item order, whatever the order of the
file (the simulator shuffles its lines), without holding the file: spooled
to a temporary file as they are read (``result_order.ResultSpool``), then
read back by place."""

from __future__ import annotations

import json
import random
import tracemalloc
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from dashboard.core import clock
from dashboard.jobs import batch, worker
from dashboard.jobs.result_order import ResultSpool, pack, unpack
from dashboard.jobs.services import job_create
from providers import ItemResult, JobSpec
from providers.batch import BatchResult, ResultKind
from providers.simulators import completion_text
from tests.conftest import FakeClock, make_credential, use_clock

MODEL = "gpt-test"


@pytest.mark.parametrize(
    "result",
    [
        BatchResult("job1-item0", ResultKind.SUCCEEDED, result=ItemResult("text ünï", 3, 4)),
        BatchResult(
            "job1-item1",
            ResultKind.SUCCEEDED,
            result=ItemResult({"answer": [1, 2.5, None, "x"]}, None, 7, latency_ms=12),
        ),
        BatchResult("job1-item2", ResultKind.ERRORED, code="server_error", message="boom\nline"),
        BatchResult("job1-item3", ResultKind.EXPIRED, code="batch_expired"),
    ],
)
def test_a_result_comes_back_as_it_went(result: BatchResult) -> None:
    data = pack(result)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert unpack(data) == result


def test_results_come_back_in_place_order_the_last_of_a_place_kept() -> None:
    places = list(range(0, 500, 2))  # every other place has a result
    random.Random(7).shuffle(places)
    with ResultSpool(500) as spool:
        for place in places:
            spool.add(place, BatchResult(f"r{place}", ResultKind.ERRORED, message="first"))
        spool.add(10, BatchResult("r10", ResultKind.SUCCEEDED, result=ItemResult("again")))
        got = list(spool)
    assert [place for place, _ in got] == list(range(0, 500, 2))
    assert all(result.custom_id == f"r{place}" for place, result in got)
    assert got[5][1].result == ItemResult("again")


def test_the_spool_holds_places_not_results() -> None:
    output = "lorem ipsum " * 340  # 4 KB a result, 20 MB in all
    tracemalloc.start()
    try:
        with ResultSpool(5_000) as spool:
            for place in reversed(range(5_000)):
                spool.add(place, BatchResult(f"r{place}", ResultKind.SUCCEEDED, ItemResult(output)))
            read = sum(1 for _ in spool)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert read == 5_000
    assert peak < 2 * 1024 * 1024, f"held {peak / 2**20:.1f} MB"


@pytest.mark.django_db
def test_a_shuffled_result_file_is_written_in_item_order(
    team: Any,
    sims: Any,
    sim_clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
) -> None:
    start = timezone.now()
    monkeypatch.setattr(clock, "now", lambda: start + timedelta(seconds=sim_clock.now - 1000))
    settings.BATCH_POLL_SECONDS = 30
    sim = use_clock(sims.get("openai"), sim_clock, step_seconds=10.0)
    credential = make_credential(team, "openai", base_url=sim.base_url, secret=sim.token)
    rows = 2_500
    prompts = [f"q{i}" for i in range(rows)]
    job = job_create(
        team=team, credential=credential, spec=JobSpec(prompts=prompts, model=MODEL), mode="batch"
    )
    worker.advance_job(job.pk)
    (chunk,) = job.chunks.all()
    sim_clock.advance(60)  # completed
    writes: list[list[int]] = []
    write = batch.items_write

    def recorded(job_id: int, changes: Any, **kwargs: Any) -> bool:
        writes.append(sorted(item.index for item in changes.items.values()))
        return write(job_id, changes, **kwargs)

    monkeypatch.setattr(batch, "items_write", recorded)

    assert batch.batch_poll(chunk.pk) == "ended"

    job.refresh_from_db()
    assert job.status == "completed" and job.items_completed == rows
    assert writes == [list(range(0, 1000)), list(range(1000, 2000)), list(range(2000, rows))]
    for item in job.items.filter(index__in=[0, 1234, rows - 1]):
        assert item.output == completion_text(MODEL, item.input).strip()


@pytest.mark.django_db
@pytest.mark.parametrize("present", [[9, 0], [5, 2, 7, 3, 6, 4], [4]])
def test_rows_with_a_result_are_written_and_the_others_fail(
    team: Any, nudges: list[Any], present: list[int]
) -> None:
    """Sparse results (read by their indexes) and a run of them (read as a range)."""
    import httpx

    from dashboard.models import Item
    from providers.batch import BatchPhase, BatchState, custom_id
    from providers.openai_compat import OpenAIProvider

    credential = make_credential(team, "openai", base_url="https://api.test")
    job = job_create(
        team=team,
        credential=credential,
        spec=JobSpec(prompts=[f"q{i}" for i in range(10)], model=MODEL),
        mode="batch",
    )
    lines = [
        {
            "custom_id": custom_id(job.pk, i),
            "response": {
                "status_code": 200,
                "body": {"choices": [{"message": {"role": "assistant", "content": f"a{i}"}}]},
            },
        }
        for i in present
    ]
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/files/file-out/content"
        return httpx.Response(200, content=content)

    provider = OpenAIProvider(
        secret="sk-x", base_url="https://api.test", transport=httpx.MockTransport(handler)
    )
    (chunk,) = batch.chunks_cut(job, provider, batch.job_spec(job))
    Item.objects.filter(job=job).update(status="running")
    type(job).objects.filter(pk=job.pk).update(status="running", items_running=10)
    state = BatchState("batch_1", BatchPhase.ENDED, "completed", output_file_id="file-out")

    assert batch.results_read(job, provider, chunk, state)

    got = dict(job.items.values_list("index", "status"))
    assert got == {i: "completed" if i in present else "failed" for i in range(10)}
    for item in job.items.all():
        if item.index in present:
            assert item.output == f"a{item.index}"
        else:
            assert item.error == batch.NO_RESULT


@pytest.mark.django_db
def test_a_worker_that_dies_after_a_write_leaves_the_rest_to_the_next_read(
    team: Any,
    sims: Any,
    sim_clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
) -> None:
    """The first 1,000 rows committed, then the worker stops: the next poll
    reads the whole file again and writes only the rows not written yet."""
    from dashboard.models import BatchChunk

    start = timezone.now()
    monkeypatch.setattr(clock, "now", lambda: start + timedelta(seconds=sim_clock.now - 1000))
    settings.BATCH_POLL_SECONDS = 30
    sim = use_clock(sims.get("openai"), sim_clock, step_seconds=10.0)
    credential = make_credential(team, "openai", base_url=sim.base_url, secret=sim.token)
    rows = 2_500
    job = job_create(
        team=team,
        credential=credential,
        spec=JobSpec(prompts=[f"q{i}" for i in range(rows)], model=MODEL),
        mode="batch",
    )
    worker.advance_job(job.pk)
    (chunk,) = job.chunks.all()
    sim_clock.advance(60)
    writes: list[list[int]] = []
    write = batch.items_write

    def dies_after_one(job_id: int, changes: Any, **kwargs: Any) -> bool:
        if writes:
            raise SystemExit("killed")
        writes.append(sorted(item.index for item in changes.items.values()))
        return write(job_id, changes, **kwargs)

    monkeypatch.setattr(batch, "items_write", dies_after_one)
    with pytest.raises(SystemExit):
        batch.batch_poll(chunk.pk)
    job.refresh_from_db()
    assert job.items_completed == 1000 and job.status == "running"

    def recorded(job_id: int, changes: Any, **kwargs: Any) -> bool:
        writes.append(sorted(item.index for item in changes.items.values()))
        return write(job_id, changes, **kwargs)

    monkeypatch.setattr(batch, "items_write", recorded)
    BatchChunk.objects.filter(pk=chunk.pk).update(next_poll_at=clock.now())
    assert batch.batch_poll(chunk.pk) == "ended"

    job.refresh_from_db()
    assert job.status == "completed"
    assert (job.items_completed, job.progress_done) == (rows, rows)
    assert writes == [list(range(0, 1000)), list(range(1000, 2000)), list(range(2000, rows))]
    for item in job.items.filter(index__in=[0, 999, 1000, rows - 1]):
        assert item.output == completion_text(MODEL, item.input).strip()
