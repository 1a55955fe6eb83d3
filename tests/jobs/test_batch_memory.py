"""Creating a big chunk holds a slice of it, never the whole: the worker's
``chunk_create`` builds the lines from the items 1,000 rows at a time and the
adapter streams them to the upload. The memory of the call is traced
(``tracemalloc``) while 12 MB of lines go to a transport that reads the body
as it arrives and keeps it on disk. (Figure 10 of ``make bench`` measures the
worker's RSS at 50,000 rows.)"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from dashboard.jobs import batch
from dashboard.jobs.services import job_create
from providers import JobSpec
from providers.batch import custom_id
from providers.openai_compat import OpenAIProvider
from providers.simulators.openai_compat import multipart_fields
from tests.conftest import make_credential
from tests.providers.test_batch_streaming import Drain, traced

pytestmark = pytest.mark.django_db

ROWS = 6_000
PROMPT = "lorem ipsum " * 170  # about 2 KB a row: 12 MB of lines in all


def answer(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/v1/files":
        return httpx.Response(200, json={"id": "file-1", "object": "file"})
    body = json.loads(request.content)
    assert body["input_file_id"] == "file-1"
    return httpx.Response(200, json={"id": "batch_1", "status": "validating"})


def test_a_big_chunk_is_built_and_uploaded_a_slice_at_a_time(team: Any, nudges: list[Any]) -> None:
    credential = make_credential(team, "openai", base_url="https://api.test")
    prompts = [f"{i} {PROMPT}" for i in range(ROWS)]
    job = job_create(
        team=team, credential=credential, spec=JobSpec(model="m", prompts=prompts), mode="batch"
    )
    drain = Drain(answer)
    provider = OpenAIProvider(secret="sk-x", base_url="https://api.test", transport=drain)
    spec = batch.job_spec(job)
    try:
        (chunk,) = batch.chunks_cut(job, provider, spec)

        created, peak = traced(lambda: batch.chunk_create(job, provider, spec, chunk, "worker-1"))

        assert created
        chunk.refresh_from_db()
        assert (chunk.state, chunk.remote_id, chunk.input_file_id) == ("live", "batch_1", "file-1")
        upload = drain.seen[0]
        fields = multipart_fields(upload.headers["content-type"], upload.read())
        assert fields is not None
        lines = fields["file"][1].splitlines()
        assert len(lines) == ROWS
        assert [json.loads(line)["custom_id"] for line in lines] == [
            custom_id(job.pk, i) for i in range(ROWS)
        ]
        # A slice is 1,000 rows (a sixth): the rows read and their lines, not the file.
        size = len(fields["file"][1])
        assert size > 12 * 10**6
        assert peak < size / 2, f"held {peak / 2**20:.1f} MB of a {size / 2**20:.0f} MB file"
    finally:
        drain.close()
