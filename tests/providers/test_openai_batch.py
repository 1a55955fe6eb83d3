"""The OpenAI Batch API in the OpenAI-compatible adapter: translation tables,
whole batches against the simulator over loopback (upload, create, poll,
cancel, expiry, validation failures, lookup by metadata, a server without a
batch API) and the result stream over MockTransport (read as it arrives, a
bound on each line)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from providers.base import ErrorKind, JobSpec, ProviderError
from providers.batch import BatchPhase, BatchResult, BatchState, ResultKind, custom_id
from providers.openai_compat import (
    BATCH_LIMITS,
    OpenAIProvider,
    build_request,
    parse_batch,
    parse_result_line,
)
from providers.simulators.base import completion_text
from providers.simulators.openai_compat import OpenAISimulator

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
METADATA = {"dashboard_job": "7", "dashboard_chunk": "1"}


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def spec(prompts: list[str], **kwargs: Any) -> JobSpec:
    return JobSpec(model=MODEL, prompts=prompts, **kwargs)


def by_id(results: list[BatchResult]) -> dict[str, BatchResult]:
    found = {r.custom_id: r for r in results}
    assert len(found) == len(results), "a custom_id came twice"
    return found


# -- translation ------------------------------------------------------------------------


def test_limits_are_openais() -> None:
    provider = OpenAIProvider(secret="sk-x")
    assert provider.batch and provider.batch_limits() == BATCH_LIMITS
    assert (BATCH_LIMITS.max_requests, BATCH_LIMITS.max_bytes) == (50_000, 200 * 1024 * 1024)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"system_prompt": "Be brief.", "max_tokens": 16, "temperature": 0.0, "top_k": 40},
        {"output_schema": {"answer": "str", "score": "int"}},
        {"stream": True, "options": {"stream_usage": True}},
    ],
)
def test_a_line_carries_exactly_the_online_body_without_stream(kwargs: dict[str, Any]) -> None:
    job = spec(["Say hi"], **kwargs)
    line = json.loads(OpenAIProvider(secret="sk-x").batch_line("job7-item0", "Say hi", job))
    online = build_request(job, "Say hi", include_usage=True)
    online.pop("stream")
    online.pop("stream_options", None)
    assert line == {
        "custom_id": "job7-item0",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": online,
    }
    assert "stream" not in line["body"]
    if "output_schema" in kwargs:
        assert line["body"]["response_format"]["type"] == "json_schema"


@pytest.mark.parametrize(
    ("status", "phase", "ended_as"),
    [
        ("validating", BatchPhase.VALIDATING, ""),
        ("in_progress", BatchPhase.RUNNING, ""),
        ("finalizing", BatchPhase.RUNNING, ""),
        ("cancelling", BatchPhase.RUNNING, ""),
        ("completed", BatchPhase.ENDED, "completed"),
        ("expired", BatchPhase.ENDED, "expired"),
        ("cancelled", BatchPhase.ENDED, "cancelled"),
        ("failed", BatchPhase.FAILED, ""),
    ],
)
def test_batch_status_words(status: str, phase: BatchPhase, ended_as: str) -> None:
    state = parse_batch(
        {
            "id": "batch_1",
            "status": status,
            "request_counts": {"total": 3, "completed": 2, "failed": 1},
            "input_file_id": "file-in",
            "output_file_id": "file-out",
            "error_file_id": None,
            "metadata": METADATA,
        }
    )
    assert (state.phase, state.provider_status, state.ended_as) == (phase, status, ended_as)
    assert (state.total, state.completed, state.failed, state.counts_live) == (3, 2, 1, True)
    assert (state.input_file_id, state.output_file_id, state.error_file_id) == (
        "file-in",
        "file-out",
        "",
    )
    assert state.metadata == METADATA


def test_an_unknown_status_word_is_a_protocol_error() -> None:
    with pytest.raises(ProviderError) as caught:
        parse_batch({"id": "batch_1", "status": "thinking"})
    assert caught.value.kind is ErrorKind.PROTOCOL and "thinking" in caught.value.message


def test_validation_errors_read_as_lines() -> None:
    state = parse_batch(
        {
            "id": "batch_1",
            "status": "failed",
            "errors": {
                "object": "list",
                "data": [
                    {
                        "code": "duplicate_custom_id",
                        "line": 2,
                        "message": "Duplicate.",
                        "param": None,
                    },
                    {"code": "token_limit_exceeded", "line": None, "message": "Too many tokens."},
                ],
            },
        }
    )
    assert state.errors == (
        "line 2: duplicate_custom_id: Duplicate.",
        "token_limit_exceeded: Too many tokens.",
    )


def completion(content: Any, **message: Any) -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, **message}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2},
    }


@pytest.mark.parametrize(
    ("line", "kind", "output", "code"),
    [
        (
            {"response": {"status_code": 200, "body": completion("hi")}},
            ResultKind.SUCCEEDED,
            "hi",
            "",
        ),
        (
            {"response": {"status_code": 200, "body": completion(None, refusal="No.")}},
            ResultKind.ERRORED,
            None,
            "rejected",
        ),
        (
            {
                "response": {
                    "status_code": 400,
                    "body": {"error": {"message": "bad max_tokens", "code": "invalid_value"}},
                }
            },
            ResultKind.ERRORED,
            None,
            "invalid_value",
        ),
        (
            {
                "response": {
                    "status_code": 500,
                    "body": {"error": {"message": "oops", "type": "server_error"}},
                }
            },
            ResultKind.ERRORED,
            None,
            "server_error",
        ),
        ({"response": {"status_code": 502, "body": None}}, ResultKind.ERRORED, None, "502"),
        (
            {"error": {"code": "batch_expired", "message": "late"}},
            ResultKind.EXPIRED,
            None,
            "batch_expired",
        ),
        (
            {"error": {"code": "batch_cancelled", "message": "cancelled"}},
            ResultKind.CANCELLED,
            None,
            "batch_cancelled",
        ),
        (
            {"error": {"code": "request_timeout", "message": "slow"}},
            ResultKind.ERRORED,
            None,
            "request_timeout",
        ),
    ],
)
def test_result_lines(line: dict[str, Any], kind: ResultKind, output: Any, code: str) -> None:
    result = parse_result_line({"id": "batch_req_1", "custom_id": "job7-item3", **line})
    assert (result.custom_id, result.kind, result.code) == ("job7-item3", kind, code)
    if kind is ResultKind.SUCCEEDED:
        assert result.result is not None
        assert (result.result.output, result.result.tokens_in, result.result.tokens_out) == (
            output,
            5,
            2,
        )
    else:
        assert result.result is None and result.message


# -- against the simulator ------------------------------------------------------------------


@pytest.fixture(scope="module")
def running_sim() -> Iterator[OpenAISimulator]:
    with OpenAISimulator() as sim:
        yield sim


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(running_sim: OpenAISimulator, clock: FakeClock) -> OpenAISimulator:
    running_sim.reset()
    running_sim.clock, running_sim.step_seconds = clock, 1.0
    return running_sim


@pytest.fixture(params=["", "/v1"], ids=["root", "v1"])
def provider(sim: OpenAISimulator, request: pytest.FixtureRequest) -> Iterator[OpenAIProvider]:
    with OpenAIProvider(secret=sim.token, base_url=sim.base_url + request.param) as adapter:
        yield adapter


def submit(
    provider: OpenAIProvider, job: JobSpec, metadata: dict[str, str] = METADATA
) -> BatchState:
    lines = [provider.batch_line(custom_id(7, i), p, job) for i, p in enumerate(job.prompts)]
    file_id = provider.batch_upload(lines)
    assert file_id
    return provider.batch_create(lines, file_id, metadata)


def test_a_whole_batch(provider: OpenAIProvider, sim: OpenAISimulator, clock: FakeClock) -> None:
    prompts = [f"Question {i}" for i in range(20)]
    job = spec(prompts, system_prompt="Be brief.")
    state = submit(provider, job)
    assert (state.phase, state.provider_status, state.metadata) == (
        BatchPhase.VALIDATING,
        "validating",
        METADATA,
    )
    # What went up: one .jsonl file of the lines, with purpose=batch.
    (uploaded,) = sim.files.values()
    assert (uploaded.purpose, uploaded.filename) == ("batch", "batch.jsonl")
    assert [json.loads(line)["custom_id"] for line in uploaded.data.splitlines()] == [
        custom_id(7, i) for i in range(20)
    ]
    assert state.input_file_id == uploaded.id

    clock.advance(2.0)  # half way through in_progress: the counts move
    state = provider.batch_get(state.remote_id)
    assert (state.phase, state.provider_status) == (BatchPhase.RUNNING, "in_progress")
    assert (state.total, state.completed, state.failed, state.counts_live) == (20, 10, 0, True)
    clock.advance(1.0)
    assert provider.batch_get(state.remote_id).provider_status == "finalizing"
    clock.advance(1.0)
    state = provider.batch_get(state.remote_id)
    assert (state.phase, state.ended_as, state.completed) == (BatchPhase.ENDED, "completed", 20)
    assert state.output_file_id and not state.error_file_id  # nothing failed: no error file

    results = list(provider.batch_results(state))
    assert [r.custom_id for r in results] != [custom_id(7, i) for i in range(20)]  # shuffled
    found = by_id(results)
    for i, prompt in enumerate(prompts):
        result = found[custom_id(7, i)]
        assert result.kind is ResultKind.SUCCEEDED and result.result is not None
        assert result.result.output == completion_text(MODEL, prompt).strip()
        assert result.result.tokens_in == len(f"Be brief. {prompt}".split())
        assert result.result.tokens_out == len(result.result.output.split())
    assert (sim.files_uploaded, sim.batches_created) == (1, 1)


def test_structured_output_comes_back_as_the_online_call_returns_it(
    provider: OpenAIProvider, sim: OpenAISimulator, clock: FakeClock
) -> None:
    job = spec(["Rate this"], output_schema={"answer": "str", "score": "int"})
    state = submit(provider, job)
    clock.advance(10)
    (result,) = provider.batch_results(provider.batch_get(state.remote_id))
    assert result.result is not None
    assert result.result.output == provider.run(job, [0])[0]
    assert set(json.loads(result.result.output)) == {"answer", "score"}


def test_a_failed_request_is_an_error_line(
    provider: OpenAIProvider, sim: OpenAISimulator, clock: FakeClock
) -> None:
    state = submit(provider, spec(["fine", "please [[fail]]", "fine too"]))
    clock.advance(10)
    state = provider.batch_get(state.remote_id)
    assert (state.completed, state.failed) == (2, 1)
    found = by_id(list(provider.batch_results(state)))
    assert [found[custom_id(7, i)].kind for i in range(3)] == [
        ResultKind.SUCCEEDED,
        ResultKind.ERRORED,
        ResultKind.SUCCEEDED,
    ]
    assert found[custom_id(7, 1)].code == "server_error"
    assert "error processing your request" in found[custom_id(7, 1)].message


def test_every_request_failed_there_is_no_output_file(
    provider: OpenAIProvider, sim: OpenAISimulator, clock: FakeClock
) -> None:
    state = submit(provider, spec(["[[fail]] a", "[[fail]] b"]))
    clock.advance(10)
    state = provider.batch_get(state.remote_id)
    assert state.ended_as == "completed" and not state.output_file_id and state.error_file_id
    results = list(provider.batch_results(state))
    assert sorted(r.custom_id for r in results) == [custom_id(7, 0), custom_id(7, 1)]
    assert {r.kind for r in results} == {ResultKind.ERRORED}


def test_a_bad_input_file_fails_validation_with_reasons(
    provider: OpenAIProvider, sim: OpenAISimulator, clock: FakeClock
) -> None:
    job = spec(["a", "b"])
    good = provider.batch_line("same", "a", job)
    no_body = json.dumps({"custom_id": "other", "method": "POST", "url": "/v1/chat/completions"})
    file_id = provider.batch_upload([good, good, no_body.encode()])
    state = provider.batch_create([], file_id, METADATA)
    assert state.phase is BatchPhase.VALIDATING
    clock.advance(1.5)
    state = provider.batch_get(state.remote_id)
    assert (state.phase, state.provider_status, state.ended_as) == (BatchPhase.FAILED, "failed", "")
    assert state.errors == (
        "line 2: duplicate_custom_id: The custom_id for this request is a duplicate of another "
        "request. The custom_id parameter must be unique for each request in a batch.",
        "line 3: missing_required_parameter: Missing 'body'.",
    )
    assert not state.output_file_id and not state.error_file_id
    assert list(provider.batch_results(state)) == []


def test_cancel_keeps_what_finished_and_cancels_the_rest(
    provider: OpenAIProvider, sim: OpenAISimulator, clock: FakeClock
) -> None:
    state = submit(provider, spec([f"q{i}" for i in range(10)]))
    clock.advance(1.9)  # 0.9 of the 2 s of in_progress: 4 of 10 ran
    state = provider.batch_cancel(state.remote_id)
    assert (state.phase, state.provider_status, state.completed) == (
        BatchPhase.RUNNING,
        "cancelling",
        4,
    )
    clock.advance(5.0)  # would have completed by now, had it not been cancelled
    state = provider.batch_get(state.remote_id)
    assert (state.phase, state.ended_as, state.completed) == (BatchPhase.ENDED, "cancelled", 4)
    found = by_id(list(provider.batch_results(state)))
    assert len(found) == 10
    assert [found[custom_id(7, i)].kind for i in range(10)] == [ResultKind.SUCCEEDED] * 4 + [
        ResultKind.CANCELLED
    ] * 6
    assert {found[custom_id(7, i)].code for i in range(4, 10)} == {"batch_cancelled"}
    with pytest.raises(ProviderError) as caught:  # an ended batch cannot be cancelled
        provider.batch_cancel(state.remote_id)
    assert caught.value.kind is ErrorKind.REJECTED and caught.value.status_code == 409


def test_cancelled_while_validating_nothing_ran(
    provider: OpenAIProvider, sim: OpenAISimulator, clock: FakeClock
) -> None:
    state = submit(provider, spec(["a", "b", "c"]))
    provider.batch_cancel(state.remote_id)
    clock.advance(2.0)
    state = provider.batch_get(state.remote_id)
    assert state.ended_as == "cancelled" and not state.output_file_id
    assert {r.kind for r in provider.batch_results(state)} == {ResultKind.CANCELLED}


def test_expiry_keeps_what_finished_and_expires_the_rest(
    provider: OpenAIProvider, sim: OpenAISimulator, clock: FakeClock
) -> None:
    state = submit(provider, spec([f"q{i}" for i in range(10)]))
    clock.advance(1.5)
    sim.expire(state.remote_id, done=3)
    state = provider.batch_get(state.remote_id)
    assert (state.phase, state.ended_as, state.completed, state.total) == (
        BatchPhase.ENDED,
        "expired",
        3,
        10,
    )
    found = by_id(list(provider.batch_results(state)))
    assert [found[custom_id(7, i)].kind for i in range(10)] == [ResultKind.SUCCEEDED] * 3 + [
        ResultKind.EXPIRED
    ] * 7
    assert found[custom_id(7, 9)].code == "batch_expired"


def test_a_batch_is_found_by_its_metadata_across_pages(
    provider: OpenAIProvider, sim: OpenAISimulator
) -> None:
    job = spec(["a"])
    lines = [provider.batch_line("r0", "a", job)]
    file_id = provider.batch_upload(lines)
    created = [
        provider.batch_create(lines, file_id, {"dashboard_job": "7", "dashboard_chunk": str(n)})
        for n in range(230)
    ]
    sim.requests.clear()
    # The oldest, on the third page of 100, newest first.
    found = provider.batch_find({"dashboard_job": "7", "dashboard_chunk": "0"})
    assert found is not None and found.remote_id == created[0].remote_id
    assert found.metadata == {"dashboard_job": "7", "dashboard_chunk": "0"}
    assert sim.count("GET /v1/batches") == 3
    newest = provider.batch_find({"dashboard_chunk": "229"})
    assert newest is not None and newest.remote_id == created[-1].remote_id
    assert provider.batch_find({"dashboard_job": "8", "dashboard_chunk": "0"}) is None
    # The number of pages read is bounded.
    sim.requests.clear()
    assert provider.batch_find({"dashboard_job": "7", "dashboard_chunk": "0"}, pages=2) is None
    assert sim.count("GET /v1/batches") == 2
    assert sim.batches_created == 230 and sim.files_uploaded == 1


def test_a_lookup_without_metadata_is_refused(
    provider: OpenAIProvider, sim: OpenAISimulator
) -> None:
    with pytest.raises(ProviderError) as caught:
        provider.batch_find({})
    assert caught.value.kind is ErrorKind.INVALID_SPEC
    assert sim.count("GET /v1/batches") == 0


def test_a_server_without_a_batch_api(provider: OpenAIProvider, sim: OpenAISimulator) -> None:
    assert provider.batch_available() is True
    sim.batch_api = False
    assert provider.batch_available() is False
    lines = [provider.batch_line("r0", "a", spec(["a"]))]
    for call in (
        lambda: provider.batch_upload(lines),
        lambda: provider.batch_create(lines, "file-1", METADATA),
        lambda: provider.batch_find(METADATA),
    ):
        with pytest.raises(ProviderError) as caught:
            call()
        assert caught.value.kind is ErrorKind.NOT_FOUND and caught.value.status_code == 404
        assert "has no batch API" in caught.value.message
        assert "run the job online" in caught.value.message
    assert sim.files_uploaded == 0 and sim.batches_created == 0
    # Online calls are unchanged.
    assert provider.run(spec(["a"]), [0]) == [completion_text(MODEL, "a").strip()]


def test_an_unknown_batch_is_not_found(provider: OpenAIProvider, sim: OpenAISimulator) -> None:
    with pytest.raises(ProviderError) as caught:
        provider.batch_get("batch_nope")
    assert caught.value.kind is ErrorKind.NOT_FOUND and "batch_nope" in caught.value.message


def test_a_missing_result_file_fails_the_read(
    provider: OpenAIProvider, sim: OpenAISimulator
) -> None:
    state = BatchState("batch_1", BatchPhase.ENDED, "completed", output_file_id="file-gone")
    with pytest.raises(ProviderError) as caught:
        list(provider.batch_results(state))
    assert caught.value.kind is ErrorKind.NOT_FOUND and "file-gone" in caught.value.message


# -- over MockTransport --------------------------------------------------------------------

SECRET = "sk-live-abcdef0123456789"


def mocked(handler: Any, **kwargs: Any) -> OpenAIProvider:
    return OpenAIProvider(secret=SECRET, transport=httpx.MockTransport(handler), **kwargs)


def result_line(n: int) -> bytes:
    body = completion(f"answer {n}")
    line = {
        "id": f"r{n}",
        "custom_id": f"job1-item{n}",
        "response": {"status_code": 200, "body": body},
    }
    return json.dumps(line).encode() + b"\n"


def test_results_are_read_as_they_arrive() -> None:
    sent = {"lines": 0, "ended": False}
    total = 5000

    def body() -> Iterator[bytes]:
        for n in range(total):
            sent["lines"] += 1
            data = result_line(n)
            yield data[:10]  # lines split across chunks, as a network splits them
            yield data[10:]
        sent["ended"] = True

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/files/file-out/content"
        return httpx.Response(200, content=body())

    state = BatchState("batch_1", BatchPhase.ENDED, "completed", output_file_id="file-out")
    results = mocked(handler).batch_results(state)
    first = next(results)
    assert first.custom_id == "job1-item0" and first.result and first.result.output == "answer 0"
    assert not sent["ended"] and sent["lines"] < 10
    rest = list(results)
    assert sent["ended"] and len(rest) == total - 1
    assert rest[-1].custom_id == f"job1-item{total - 1}"


def test_the_output_file_then_the_error_file() -> None:
    files = {
        "/v1/files/file-out/content": result_line(0),
        "/v1/files/file-err/content": json.dumps(
            {
                "custom_id": "job1-item1",
                "response": None,
                "error": {"code": "batch_expired", "message": "late"},
            }
        ).encode(),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=files[request.url.path])

    state = BatchState(
        "batch_1", BatchPhase.ENDED, "expired", output_file_id="file-out", error_file_id="file-err"
    )
    results = list(mocked(handler, base_url="https://gw.example/v1").batch_results(state))
    assert [(r.custom_id, r.kind) for r in results] == [
        ("job1-item0", ResultKind.SUCCEEDED),
        ("job1-item1", ResultKind.EXPIRED),
    ]


def test_an_over_long_line_fails_its_row_and_the_read_goes_on() -> None:
    pulled = {"chunks": 0}

    def body() -> Iterator[bytes]:
        yield result_line(0)
        yield b'{"id": "batch_req_1", "custom_id": "job1-item1", "response": {"body": "'
        for _ in range(2000):  # 1 MB without a newline, read past and never held
            pulled["chunks"] += 1
            yield b"x" * 512
        yield b'"}}\n' + result_line(2)

    state = BatchState("batch_1", BatchPhase.ENDED, "completed", output_file_id="file-out")
    provider = mocked(
        lambda request: httpx.Response(200, content=body()), max_response_bytes=64 * 1024
    )
    results = list(provider.batch_results(state))
    assert [(r.custom_id, r.kind) for r in results] == [
        ("job1-item0", ResultKind.SUCCEEDED),
        ("job1-item1", ResultKind.ERRORED),
        ("job1-item2", ResultKind.SUCCEEDED),
    ]
    assert results[1].code == "unreadable"
    assert "result line of 1.0 MB, over the 0.0625 MB read per line" in results[1].message
    assert pulled["chunks"] == 2000


def test_a_long_line_in_one_chunk_fails_only_its_row() -> None:
    big = json.dumps({"custom_id": "a", "error": {"code": "x", "message": "y" * 5000}}).encode()
    content = result_line(0) + big + b"\n" + result_line(2)
    state = BatchState("batch_1", BatchPhase.ENDED, "completed", output_file_id="file-out")
    provider = mocked(lambda request: httpx.Response(200, content=content), max_response_bytes=4096)
    results = list(provider.batch_results(state))
    assert [(r.custom_id, r.code) for r in results] == [
        ("job1-item0", ""),
        ("a", "unreadable"),
        ("job1-item2", ""),
    ]


def test_result_messages_are_redacted() -> None:
    line = {
        "custom_id": "job1-item0",
        "response": {
            "status_code": 401,
            "body": {
                "error": {
                    "message": f"Incorrect API key provided: {SECRET}",
                    "code": "invalid_api_key",
                }
            },
        },
    }
    state = BatchState("batch_1", BatchPhase.ENDED, "completed", error_file_id="file-err")
    provider = mocked(lambda request: httpx.Response(200, content=json.dumps(line).encode()))
    (result,) = provider.batch_results(state)
    assert result.kind is ResultKind.ERRORED and result.code == "invalid_api_key"
    assert SECRET not in result.message and "[redacted]" in result.message


def test_validation_errors_and_error_answers_are_redacted() -> None:
    batch = {
        "id": "batch_1",
        "status": "failed",
        "errors": {"data": [{"code": "bad", "line": 1, "message": f"key {SECRET} in the body"}]},
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/content"):
            return httpx.Response(403, json={"error": {"message": f"not yours: {SECRET}"}})
        return httpx.Response(200, json=batch)

    provider = mocked(handler)
    state = provider.batch_get("batch_1")
    assert state.phase is BatchPhase.FAILED and SECRET not in state.errors[0]
    with pytest.raises(ProviderError) as caught:
        list(provider.batch_results(replace(state, output_file_id="file-x")))
    assert caught.value.kind is ErrorKind.AUTH and SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("line", "custom", "said"),
    [
        (b'{"id": "batch_req_9", "custom_id": "job1-item5", "respo', "job1-item5", "not JSON"),
        (b"<html>502 bad gateway</html>", "", "not JSON"),
        (b'["job1-item5"]', "", "unexpected shape (list)"),
        (b'{"response": {"status_code": 200}}', "", "without a 'custom_id'"),
        (b'{"custom_id": 5, "response": null}', "", "without a 'custom_id'"),
        (b'{"custom_id": "job1-item5", "what": 1}', "job1-item5", "has no response"),
    ],
)
def test_a_malformed_line_fails_only_the_row_it_names(line: bytes, custom: str, said: str) -> None:
    state = BatchState("batch_1", BatchPhase.ENDED, "completed", output_file_id="file-out")
    content = result_line(0) + line + b"\n" + result_line(2)
    provider = mocked(lambda request: httpx.Response(200, content=content))
    first, bad, last = provider.batch_results(state)
    assert (first.kind, last.kind) == (ResultKind.SUCCEEDED, ResultKind.SUCCEEDED)
    assert bad.kind is ResultKind.ERRORED and bad.custom_id == custom and said in bad.message


def test_an_unreadable_line_is_redacted() -> None:
    state = BatchState("batch_1", BatchPhase.ENDED, "completed", output_file_id="file-out")
    content = b'{"custom_id": "job1-item0", "key": "' + SECRET.encode() + b'", oops\n'
    provider = mocked(lambda request: httpx.Response(200, content=content))
    (bad,) = provider.batch_results(state)
    assert bad.custom_id == "job1-item0" and SECRET not in bad.message


def test_the_upload_and_create_requests() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/files":
            return httpx.Response(200, json={"id": "file-1", "object": "file"})
        return httpx.Response(
            200, json={"id": "batch_1", "status": "validating", "metadata": METADATA}
        )

    provider = mocked(handler, base_url="https://gw.example/v1")
    lines = [b'{"custom_id":"a"}', b'{"custom_id":"b"}']
    assert provider.batch_upload(lines) == "file-1"
    state = provider.batch_create(lines, "file-1", METADATA)
    assert state.remote_id == "batch_1" and state.phase is BatchPhase.VALIDATING
    upload, create = seen
    assert upload.url.path == "/v1/files" and upload.headers["authorization"] == f"Bearer {SECRET}"
    form = upload.read()
    assert b'name="purpose"\r\n\r\nbatch' in form
    assert b'filename="batch.jsonl"' in form and b'{"custom_id":"a"}\n{"custom_id":"b"}\n' in form
    assert create.url.path == "/v1/batches"
    assert json.loads(create.content) == {
        "input_file_id": "file-1",
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "metadata": METADATA,
    }


def test_find_stops_at_the_horizon() -> None:
    pages: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        pages.append(str(request.url.params.get("after", "")))
        data = [
            {"id": "batch_new", "status": "completed", "created_at": 2000, "metadata": {}},
            {"id": "batch_old", "status": "completed", "created_at": 900, "metadata": {}},
        ]
        return httpx.Response(200, json={"data": data, "has_more": True, "last_id": "batch_old"})

    assert mocked(handler).batch_find(METADATA, since=1000) is None
    assert pages == [""]  # older than the horizon: no second page
