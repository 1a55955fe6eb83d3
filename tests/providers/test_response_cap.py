"""A provider's answer is read only up to a size cap: a larger one (compressed
or not, streamed or not) fails the call with a readable error, and the
dashboard passes the cap from DASHBOARD_MAX_RESPONSE_MB."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import pytest

from dashboard.core.connect import build_provider
from dashboard.jobs import worker
from providers.base import ErrorKind, JobSpec, ProviderError
from providers.bytez import BytezProvider
from providers.openai_compat import OpenAIProvider
from providers.together import TogetherProvider
from tests.conftest import item_errors, make_credential, make_job

MB = 1024 * 1024
MODEL = "m"


def together_answer(text: str) -> dict[str, Any]:
    return {"status": "finished", "output": {"choices": [{"text": text}]}}


def together(handler: Any, **kwargs: Any) -> TogetherProvider:
    return TogetherProvider(secret="k", transport=httpx.MockTransport(handler), **kwargs)


def spec(**kwargs: Any) -> JobSpec:
    return JobSpec(model=MODEL, prompts=["hi"], **kwargs)


def test_an_answer_over_the_cap_fails_the_call() -> None:
    body = json.dumps(together_answer("x" * (2 * MB))).encode()
    with (
        together(lambda r: httpx.Response(200, content=body), max_response_bytes=MB) as provider,
        pytest.raises(ProviderError) as info,
    ):
        provider.run(spec(), [0])
    assert info.value.kind is ErrorKind.PROTOCOL and not info.value.retryable
    assert info.value.message == "Together sent an answer larger than 1 MB; it was not read."


def test_an_answer_under_the_cap_reads_as_usual() -> None:
    body = json.dumps(together_answer("y" * (MB // 2))).encode()
    with together(lambda r: httpx.Response(200, content=body), max_response_bytes=MB) as provider:
        assert provider.run(spec(), [0]) == ["y" * (MB // 2)]
    with together(lambda r: httpx.Response(200, content=body)) as provider:
        assert provider.max_response_bytes == 32 * MB
        assert provider.run(spec(), [0]) == ["y" * (MB // 2)]


def test_a_compressed_answer_counts_at_its_full_size() -> None:
    """About 20 KB on the wire, 20 MB once decoded."""
    body = gzip.compress(json.dumps(together_answer("z" * (20 * MB))).encode())
    assert len(body) < 100_000

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"Content-Encoding": "gzip"})

    with together(handler, max_response_bytes=MB) as provider, pytest.raises(ProviderError) as info:
        provider.run(spec(), [0])
    assert "larger than 1 MB" in info.value.message


def test_an_error_answer_over_the_cap_is_refused_too() -> None:
    body = b"e" * (2 * MB)
    with (
        together(lambda r: httpx.Response(500, content=body), max_response_bytes=MB) as provider,
        pytest.raises(ProviderError) as info,
    ):
        provider.run(spec(), [0])
    assert "larger than 1 MB" in info.value.message


def sse(text: str, pieces: int) -> bytes:
    event = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    line = f"data: {json.dumps(event)}\n\n"
    return (line * pieces + "data: [DONE]\n\n").encode()


def test_a_streamed_answer_over_the_cap_stops() -> None:
    body = sse("w" * 1000, 3000)  # about 3 MB of text

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"Content-Type": "text/event-stream"})

    chunks: list[str] = []
    provider = OpenAIProvider(
        secret="k", transport=httpx.MockTransport(handler), max_response_bytes=MB
    )
    with provider, pytest.raises(ProviderError) as info:
        provider.run(spec(stream=True), [0], on_chunk=lambda i, text: chunks.append(text))
    assert "larger than 1 MB" in info.value.message
    assert sum(len(c) for c in chunks) <= MB
    # Under the cap the same stream is read whole.
    small = OpenAIProvider(secret="k", transport=httpx.MockTransport(handler))
    with small:
        (result,) = small.run(spec(stream=True), [0])
    assert getattr(result, "output", result) == "w" * 3_000_000


def test_a_streamed_bytez_run_over_the_cap_stops() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"v" * (2 * MB), headers={"Content-Type": "text/plain"})

    provider = BytezProvider(
        secret="k", transport=httpx.MockTransport(handler), max_response_bytes=MB
    )
    with provider, pytest.raises(ProviderError) as info:
        provider.run(spec(stream=True), [0])
    assert "larger than 1 MB" in info.value.message


@pytest.mark.django_db
def test_the_dashboard_passes_its_setting(team: Any, settings: Any) -> None:
    settings.DASHBOARD_MAX_RESPONSE_MB = 3
    assert build_provider(make_credential(team)).max_response_bytes == 3 * MB


@pytest.mark.django_db
def test_an_item_whose_answer_is_too_large_fails_readably(
    team: Any, sims: Any, settings: Any
) -> None:
    settings.DASHBOARD_MAX_RESPONSE_MB = 1
    sim = sims.get("together")
    job = make_job(make_credential(team, base_url=sim.base_url), ["a"])
    sim.add_fault(status=200, body=together_answer("x" * (2 * MB)))
    worker.advance_job(job.pk)
    job.refresh_from_db()
    assert job.status == "failed"
    assert "larger than 1 MB" in item_errors(job)["0"]
