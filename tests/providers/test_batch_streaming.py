"""A batch's request body is streamed, never held whole: the OpenAI input file
and the Anthropic inline create go from a temporary file, with their length,
to a transport that reads the body as it arrives (as a server does) and keeps
it on disk, not in memory. The memory of the call is traced (``tracemalloc``)
while 20 MB of lines go out."""

from __future__ import annotations

import json
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import httpx
import pytest

from providers.anthropic import AnthropicProvider
from providers.base import ErrorKind, JobSpec, ProviderError
from providers.batch import custom_id, spool
from providers.openai_compat import OpenAIProvider
from providers.simulators.openai_compat import multipart_fields

LINES = 5_000
#: Each prompt about 4 KB: 20 MB of lines in all.
PROMPT = "lorem ipsum " * 340
#: What the call may hold at once, against the 20 MB it sends.
MOST = 4 * 1024 * 1024


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: IO[bytes]

    def read(self) -> bytes:
        self.body.seek(0)
        return self.body.read()


class Drain(httpx.BaseTransport):
    """The server end: each request body read as it streams, kept in a
    temporary file (not in memory), then answered by ``answer``."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answer = answer
        self.seen: list[Seen] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close(), after the test reads it)
        for chunk in request.stream:  # type: ignore[union-attr]
            body.write(chunk)
        self.seen.append(Seen(request.method, request.url.path, dict(request.headers), body))
        return self.answer(request)

    def close(self) -> None:
        for seen in self.seen:
            seen.body.close()


def lines_of(provider: Any, count: int = LINES) -> Iterator[bytes]:
    """The lines of ``count`` requests, built as they are read (as the worker's are)."""
    job = JobSpec(model="m", prompts=[])
    for i in range(count):
        yield provider.batch_line(custom_id(1, i), f"{i} {PROMPT}", job)


def traced(call: Callable[[], Any]) -> tuple[Any, int]:
    """(what ``call`` returned, the most memory it held at once)."""
    tracemalloc.start()
    try:
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


@pytest.fixture
def openai() -> Iterator[tuple[OpenAIProvider, Drain]]:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"id": "file-1", "object": "file", "purpose": "batch"})

    drain = Drain(answer)
    yield OpenAIProvider(secret="sk-x", base_url="https://api.test", transport=drain), drain
    drain.close()


def test_the_openai_input_file_is_uploaded_from_disk_never_whole(
    openai: tuple[OpenAIProvider, Drain],
) -> None:
    provider, drain = openai

    file_id, peak = traced(lambda: provider.batch_upload(lines_of(provider)))

    assert file_id == "file-1"
    (seen,) = drain.seen
    body = seen.read()
    expected = b"".join(line + b"\n" for line in lines_of(provider))
    assert len(expected) > 5 * MOST
    assert peak < MOST, f"held {peak / 2**20:.1f} MB of a {len(expected) / 2**20:.0f} MB file"
    # Sent with its length (servers, the simulator among them, read by it), not chunked.
    assert int(seen.headers["content-length"]) == len(body)
    assert "transfer-encoding" not in seen.headers
    fields = multipart_fields(seen.headers["content-type"], body)
    assert fields is not None
    assert fields["purpose"] == (None, b"batch")
    assert fields["file"] == ("batch.jsonl", expected)


def test_an_input_file_over_the_limit_stops_while_it_is_written(
    openai: tuple[OpenAIProvider, Drain], monkeypatch: pytest.MonkeyPatch
) -> None:
    from providers import openai_compat

    provider, drain = openai
    limits = openai_compat.BatchLimits(max_requests=50_000, max_bytes=10 * 1024 * 1024)
    monkeypatch.setattr(openai_compat, "BATCH_LIMITS", limits)
    read = 0

    def counted() -> Iterator[bytes]:
        nonlocal read
        for line in lines_of(provider):
            read += 1
            yield line

    with pytest.raises(ProviderError) as caught:
        provider.batch_upload(counted())
    assert caught.value.kind is ErrorKind.INVALID_SPEC
    assert "at most 10 MB" in caught.value.message
    assert drain.seen == [] and read < LINES


def test_an_empty_input_file_is_refused_before_any_request(
    openai: tuple[OpenAIProvider, Drain],
) -> None:
    provider, drain = openai
    with pytest.raises(ProviderError, match="at least one request"):
        provider.batch_upload(iter(()))
    assert drain.seen == []


def test_the_anthropic_create_body_is_sent_from_disk_never_whole() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={"id": "msgbatch_1", "type": "message_batch", "processing_status": "in_progress"},
        )

    drain = Drain(answer)
    provider = AnthropicProvider(
        secret="sk-ant-0123456789", base_url="https://api.anthropic.test", transport=drain
    )
    try:
        state, peak = traced(lambda: provider.batch_create(lines_of(provider), None, {}))

        assert state.remote_id == "msgbatch_1"
        (seen,) = drain.seen
        body = seen.read()
        lines = list(lines_of(provider))
        assert body == b'{"requests":[' + b",".join(lines) + b"]}"
        assert len(body) > 5 * MOST
        assert peak < MOST, f"held {peak / 2**20:.1f} MB of a {len(body) / 2**20:.0f} MB body"
        assert int(seen.headers["content-length"]) == len(body)
        assert "transfer-encoding" not in seen.headers
        assert seen.headers["content-type"] == "application/json"
        requests = json.loads(body)["requests"]
        assert len(requests) == LINES and requests[-1]["custom_id"] == custom_id(1, LINES - 1)
    finally:
        drain.close()


@pytest.mark.parametrize(
    ("kwargs", "lines", "expected"),
    [
        ({"line_end": b"\n"}, [b"a", b"b"], b"a\nb\n"),
        ({"separator": b",", "opening": b"[", "closing": b"]"}, [b"1", b"2", b"3"], b"[1,2,3]"),
        ({"separator": b",", "opening": b"[", "closing": b"]"}, [], b"[]"),
    ],
)
def test_spool_writes_the_body_and_counts_it(
    kwargs: dict[str, bytes], lines: list[bytes], expected: bytes
) -> None:
    with spool(iter(lines), **kwargs) as body:
        assert (body.count, body.size) == (len(lines), len(expected))
        assert b"".join(body.chunks()) == expected
        assert b"".join(body.chunks()) == expected  # read again from the start
    assert body.file.closed  # the temporary file is gone with the block
