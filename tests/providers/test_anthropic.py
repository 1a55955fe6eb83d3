"""Anthropic adapter: request building and answer parsing tables, edge cases
over MockTransport (statuses, SSE events, paging, the results stream), and
whole calls (online and batches) against the simulator over loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from providers import PROVIDERS, get_provider_class
from providers import anthropic as module
from providers.anthropic import (
    DEFAULT_MAX_TOKENS,
    AnthropicProvider,
    api_path,
    build_request,
    parse_batch,
    parse_message,
    parse_result_line,
    read_stream,
)
from providers.base import ErrorKind, JobSpec, ProviderError, SpecError
from providers.batch import (
    BatchLookupUnsupported,
    BatchPhase,
    BatchState,
    ResultKind,
    custom_id,
    supports_batch,
)
from providers.redaction import REDACTED
from providers.simulators import DEFAULT_TOKEN, get_simulator_class
from providers.simulators.anthropic import AnthropicSimulator
from providers.simulators.base import completion_text
from tests.conftest import FakeClock, use_clock

MODEL = "claude-haiku-4-5"
SCHEMA = {"age": "int", "name": "str"}
OBJECT_SCHEMA = {
    "type": "object",
    "properties": {"age": {"type": "integer"}, "name": {"type": "string"}},
    "required": ["age", "name"],
    "additionalProperties": False,
}


def spec(**kwargs: Any) -> JobSpec:
    return JobSpec(**{"model": MODEL, "prompts": ["Say hi"], **kwargs})


def mock(handler: Any, **kwargs: Any) -> AnthropicProvider:
    return AnthropicProvider(
        secret="sk-ant-0123456789",
        base_url="https://api.anthropic.test",
        transport=httpx.MockTransport(handler),
        **kwargs,
    )


def sse(*events: dict[str, Any]) -> str:
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)


START = {"type": "message_start", "message": {"usage": {"input_tokens": 7, "output_tokens": 1}}}
STOP = {"type": "message_stop"}


def delta(kind: str, piece: str) -> dict[str, Any]:
    field = "text" if kind == "text_delta" else "partial_json"
    return {"type": "content_block_delta", "index": 0, "delta": {"type": kind, field: piece}}


def test_registered_in_both_registries_with_a_batch_api() -> None:
    assert PROVIDERS["anthropic"][2] == "Anthropic"
    assert get_provider_class("anthropic") is AnthropicProvider
    assert get_simulator_class("anthropic") is AnthropicSimulator
    assert AnthropicProvider.default_base_url == "https://api.anthropic.com"
    assert AnthropicProvider.kind == "sync" and AnthropicProvider.supports_stream
    assert AnthropicProvider.supported_fields == {
        "system_prompt",
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "output_schema",
    }
    provider = AnthropicProvider(secret="k")
    assert supports_batch(provider)
    limits = provider.batch_limits()
    assert (limits.max_requests, limits.max_bytes) == (100_000, 256 * 1024 * 1024)


# -- pure translation -----------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "path"),
    [
        ("https://api.anthropic.com", "/v1/messages"),
        ("https://gw.example/anthropic", "/v1/messages"),
        ("https://gw.example/anthropic/v1/", "/messages"),
    ],
)
def test_api_path_never_doubles_v1(base_url: str, path: str) -> None:
    assert api_path(base_url, "/messages") == path


@pytest.mark.parametrize(
    ("kwargs", "extra"),
    [
        ({}, {"max_tokens": DEFAULT_MAX_TOKENS}),
        (
            {"max_tokens": 16, "system_prompt": "Be brief.", "stream": True},
            {"max_tokens": 16, "system": "Be brief.", "stream": True},
        ),
        (
            {"temperature": 0.0, "top_p": 0.9, "top_k": 40},
            {"max_tokens": DEFAULT_MAX_TOKENS, "temperature": 0.0, "top_p": 0.9, "top_k": 40},
        ),
    ],
)
def test_build_request(kwargs: dict[str, Any], extra: dict[str, Any]) -> None:
    assert build_request(spec(**kwargs), "Say hi") == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hi"}],
        **extra,
    }


@pytest.mark.parametrize("schema", [SCHEMA, OBJECT_SCHEMA])
def test_structured_output_is_one_forced_tool(schema: dict[str, Any]) -> None:
    body = build_request(spec(output_schema=schema), "Carl")
    (tool,) = body["tools"]
    assert tool["input_schema"] == OBJECT_SCHEMA and tool["name"] == "output"
    assert body["tool_choice"] == {"type": "tool", "name": "output"}


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({"repetition_penalty": 1.1}, "repetition_penalty", "repetition penalty"),
        ({"question": "Which country?"}, "question", "question"),
        ({"temperature": 1.5}, "temperature", "0 to 1"),
        ({"output_schema": {"type": "array", "items": {}}}, "output_schema", "an object"),
        ({"output_schema": {"age": "integer-ish"}}, "output_schema", "JSON Schema"),
    ],
)
def test_what_the_api_lacks_is_refused_before_any_call(
    kwargs: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(SpecError) as caught:
        AnthropicProvider(secret="k").validate(spec(**kwargs))
    assert caught.value.field_name == field
    assert words in caught.value.message


def test_answer_text_is_the_text_blocks_joined() -> None:
    body = {"content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": " there"}]}
    assert parse_message(body, False) == "Hello there"
    assert parse_message({"content": []}, False) == ""


def test_structured_answer_is_the_tool_input() -> None:
    body = {
        "content": [{"type": "tool_use", "id": "t1", "name": "output", "input": {"age": 3}}],
        "usage": {"input_tokens": 3, "output_tokens": 4},
    }
    assert parse_message(body, True) == {"age": 3}
    with pytest.raises(ProviderError) as caught:
        parse_message({"content": [{"type": "text", "text": "no tool"}]}, True)
    assert caught.value.kind is ErrorKind.PROTOCOL
    with pytest.raises(ProviderError):
        parse_message({"id": "msg"}, False)


def test_stream_text_usage_and_pings() -> None:
    text = sse(
        START,
        {"type": "ping"},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
        delta("text_delta", "Hel"),
        {"type": "ping"},
        delta("text_delta", "lo"),
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 2},
        },
        STOP,
        {"type": "never read"},
    )
    chunks: list[str] = []
    output, usage = read_stream(text.splitlines(), chunks.append)
    assert output == "Hello" and chunks == ["Hel", "lo"]
    assert usage is not None and (usage.tokens_in, usage.tokens_out) == (7, 2)


def test_stream_structured_output_from_partial_json() -> None:
    block = {"type": "tool_use", "id": "t", "name": "output", "input": {}}
    text = sse(
        START,
        {"type": "content_block_start", "index": 0, "content_block": block},
        delta("input_json_delta", '{"age": '),
        delta("input_json_delta", '4, "name": "x"}'),
        {"type": "message_delta", "usage": {"output_tokens": 9}},
        STOP,
    )
    chunks: list[str] = []
    output, usage = read_stream(text.splitlines(), chunks.append, structured=True)
    assert output == {"age": 4, "name": "x"} and "".join(chunks) == '{"age": 4, "name": "x"}'
    assert usage is not None and usage.tokens_out == 9


@pytest.mark.parametrize(
    ("error_type", "kind"),
    [
        ("overloaded_error", ErrorKind.SERVER),
        ("api_error", ErrorKind.SERVER),
        ("invalid_request_error", ErrorKind.REJECTED),
        ("rate_limit_error", ErrorKind.RATE_LIMIT),
    ],
)
def test_an_error_event_ends_the_stream(error_type: str, kind: ErrorKind) -> None:
    error = {"type": "error", "error": {"type": error_type, "message": "Overloaded"}}
    text = sse(START, delta("text_delta", "Hel"), error, delta("text_delta", "never"), STOP)
    chunks: list[str] = []
    with pytest.raises(ProviderError) as caught:
        read_stream(text.splitlines(), chunks.append)
    assert caught.value.kind is kind and error_type in caught.value.message
    assert chunks == ["Hel"]


def test_a_stream_cut_short_is_a_protocol_error() -> None:
    with pytest.raises(ProviderError) as caught:
        read_stream(sse(START, delta("text_delta", "Hel")).splitlines(), lambda _: None)
    assert caught.value.kind is ErrorKind.PROTOCOL and "message_stop" in caught.value.message


def batch_object(status: str, **counts: int) -> dict[str, Any]:
    names = ("processing", "succeeded", "errored", "canceled", "expired")
    return {
        "id": "msgbatch_1",
        "type": "message_batch",
        "processing_status": status,
        "request_counts": {name: counts.get(name, 0) for name in names},
        "results_url": "https://api.anthropic.test/v1/messages/batches/msgbatch_1/results"
        if status == "ended"
        else None,
    }


@pytest.mark.parametrize(
    ("body", "phase", "completed", "failed", "processing"),
    [
        (batch_object("in_progress", processing=10), BatchPhase.RUNNING, None, None, 10),
        (batch_object("canceling", processing=10), BatchPhase.RUNNING, None, None, 10),
        (
            batch_object("ended", succeeded=6, errored=1, canceled=2, expired=1),
            BatchPhase.ENDED,
            6,
            4,
            0,
        ),
        (batch_object("something_new", processing=10), BatchPhase.RUNNING, None, None, 10),
    ],
)
def test_batch_object_to_state(
    body: dict[str, Any], phase: BatchPhase, completed: Any, failed: Any, processing: int
) -> None:
    state = parse_batch(body)
    assert (state.phase, state.completed, state.failed, state.processing) == (
        phase,
        completed,
        failed,
        processing,
    )
    assert state.provider_status == body["processing_status"] and state.total == 10
    assert state.counts_live is False and state.results_url == (body["results_url"] or "")


def test_result_lines_of_every_kind() -> None:
    message = {
        "content": [{"type": "text", "text": "Hi"}],
        "usage": {"input_tokens": 3, "output_tokens": 1},
    }
    error = {"type": "error", "error": {"type": "invalid_request_error", "message": "bad sk-xyz"}}
    rows = [
        {"custom_id": "a", "result": {"type": "succeeded", "message": message}},
        {"custom_id": "b", "result": {"type": "errored", "error": error}},
        {"custom_id": "c", "result": {"type": "canceled"}},
        {"custom_id": "d", "result": {"type": "expired"}},
        {"custom_id": "e", "result": {"type": "succeeded", "message": {"no": "content"}}},
        {"custom_id": "f", "result": {"type": "brand_new"}},
    ]
    results = [
        parse_result_line(json.dumps(row).encode(), lambda t: t.replace("sk-xyz", REDACTED))
        for row in rows
    ]
    assert [(r.custom_id, r.kind, r.code) for r in results] == [
        ("a", ResultKind.SUCCEEDED, ""),
        ("b", ResultKind.ERRORED, "invalid_request_error"),
        ("c", ResultKind.CANCELLED, "canceled"),
        ("d", ResultKind.EXPIRED, "expired"),
        ("e", ResultKind.ERRORED, "protocol"),
        ("f", ResultKind.ERRORED, "protocol"),
    ]
    first = results[0].result
    assert first is not None and (first.output, first.tokens_in, first.tokens_out) == ("Hi", 3, 1)
    assert results[1].message == f"bad {REDACTED}"
    # Lines that cannot be read: the row they still name fails, or none does.
    nameless = parse_result_line(b'{"result": {"type": "expired"}}', str)
    assert (nameless.custom_id, nameless.kind) == ("", ResultKind.ERRORED)
    assert "without a 'custom_id'" in nameless.message
    listed = parse_result_line(b'["a"]', str)
    assert listed.custom_id == "" and "unexpected shape (list)" in listed.message
    cut = parse_result_line(b'{"custom_id": "a", sk-xyz', lambda t: t.replace("sk-xyz", REDACTED))
    assert (cut.custom_id, cut.kind, cut.code) == ("a", ResultKind.ERRORED, "unreadable")
    assert "not JSON" in cut.message and "sk-xyz" not in cut.message


def test_batch_line_is_a_messages_body_never_streamed() -> None:
    line = AnthropicProvider(secret="k").batch_line(
        "job1-item0", "Carl", spec(stream=True, output_schema=SCHEMA, system_prompt="S")
    )
    assert b"\n" not in line
    row = json.loads(line)
    assert row["custom_id"] == "job1-item0" and "stream" not in row["params"]
    assert row["params"] == {
        **build_request(spec(output_schema=SCHEMA, system_prompt="S"), "Carl"),
    }


# -- edge cases over MockTransport ------------------------------------------------


def test_headers_are_anthropics_own() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"content": [{"type": "text", "text": "ok"}]})

    mock(handler).run(spec(), [0])
    (request,) = seen
    assert request.url == "https://api.anthropic.test/v1/messages"
    assert request.headers["x-api-key"] == "sk-ant-0123456789"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers


@pytest.mark.parametrize(
    ("status", "error_type", "kind", "retryable"),
    [
        (400, "invalid_request_error", ErrorKind.REJECTED, False),
        (401, "authentication_error", ErrorKind.AUTH, False),
        (403, "permission_error", ErrorKind.AUTH, False),
        (404, "not_found_error", ErrorKind.NOT_FOUND, False),
        (413, "request_too_large", ErrorKind.INVALID_SPEC, False),
        (429, "rate_limit_error", ErrorKind.RATE_LIMIT, True),
        (500, "api_error", ErrorKind.SERVER, True),
        (529, "overloaded_error", ErrorKind.SERVER, True),
    ],
)
def test_error_statuses(status: int, error_type: str, kind: ErrorKind, retryable: bool) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"type": "error", "error": {"type": error_type, "message": "Words from Anthropic"}}
        return httpx.Response(status, json=body, headers={"retry-after": "7"})

    with pytest.raises(ProviderError) as caught:
        mock(handler).run(spec(), [0])
    exc = caught.value
    assert (exc.kind, exc.retryable, exc.status_code) == (kind, retryable, status)
    assert f"Words from Anthropic ({error_type})" in exc.message and str(status) in exc.message
    if status in (429, 529):
        assert exc.retry_after == 7.0
    if status == 529:
        assert "overloaded" in exc.message


def test_models_follow_after_id_until_has_more_is_false() -> None:
    pages = {
        None: {"data": [{"id": "a"}, {"id": "b"}], "has_more": True, "last_id": "b"},
        "b": {"data": [{"id": "c"}], "has_more": True, "last_id": "c"},
        "c": {"data": [{"id": "d"}], "has_more": False, "last_id": "d"},
    }
    asked: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("after_id")
        asked.append(after)
        return httpx.Response(200, json=pages[after])

    assert [m.name for m in mock(handler).list_models()] == ["a", "b", "c", "d"]
    assert asked == [None, "b", "c"]


def test_models_paging_is_bounded() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        last = f"m{len(calls)}"
        return httpx.Response(200, json={"data": [{"id": last}], "has_more": True, "last_id": last})

    assert len(mock(handler).list_models()) == module.MAX_MODEL_PAGES == len(calls)


def test_batch_create_joins_the_lines_without_metadata() -> None:
    sent: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.content)
        assert request.url.path == "/v1/messages/batches"
        assert request.headers["content-type"] == "application/json"
        return httpx.Response(200, json=batch_object("in_progress", processing=2))

    provider = mock(handler)
    lines = [provider.batch_line(custom_id(3, i), p, spec()) for i, p in enumerate("ab")]
    state = provider.batch_create(lines, None, {"dashboard_job": "3", "dashboard_chunk": "1"})
    assert state.remote_id == "msgbatch_1" and state.phase is BatchPhase.RUNNING
    assert sent == [b'{"requests":[' + lines[0] + b"," + lines[1] + b"]}"]
    assert json.loads(sent[0])["requests"][1]["custom_id"] == "job3-item1"
    assert b"metadata" not in sent[0]
    with pytest.raises(BatchLookupUnsupported):
        provider.batch_find({"dashboard_job": "3"})


class Lines(httpx.SyncByteStream):
    """A results body that counts how much of it was sent."""

    def __init__(self, count: int, chunk_lines: int = 10) -> None:
        self.count, self.chunk_lines, self.sent = count, chunk_lines, 0

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, self.count, self.chunk_lines):
            rows = [
                {"custom_id": f"job1-item{i}", "result": {"type": "expired"}}
                for i in range(start, min(start + self.chunk_lines, self.count))
            ]
            self.sent += len(rows)
            yield "".join(json.dumps(row) + "\n" for row in rows).encode()


def test_results_are_read_line_by_line_not_whole() -> None:
    body = Lines(10_000)
    urls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        urls.append(str(request.url))
        assert request.headers["x-api-key"] == "sk-ant-0123456789"
        return httpx.Response(200, stream=body)

    state = parse_batch(batch_object("ended", expired=10_000))
    # The cap is per line: the whole file is far larger than it.
    results = mock(handler, max_response_bytes=4096).batch_results(state)
    first = next(results)
    assert first.custom_id == "job1-item0" and body.sent < 100
    assert sum(1 for _ in results) == 9_999 and body.sent == 10_000
    assert urls == [state.results_url]


def test_one_line_over_the_cap_fails_its_row_and_the_rest_are_read() -> None:
    row = {"custom_id": "x", "result": {"type": "errored", "error": {"message": "y" * 5000}}}
    ok = {"custom_id": "z", "result": {"type": "canceled"}}

    def handler(request: httpx.Request) -> httpx.Response:
        body = "".join(json.dumps(r) + "\n" for r in (ok, row, ok, row))
        return httpx.Response(200, content=body.encode())

    state = parse_batch(batch_object("ended", errored=1))
    results = list(mock(handler, max_response_bytes=4096).batch_results(state))
    assert [(r.custom_id, r.kind, r.code) for r in results] == [
        ("z", ResultKind.CANCELLED, "canceled"),
        ("x", ResultKind.ERRORED, "unreadable"),
        ("z", ResultKind.CANCELLED, "canceled"),
        ("x", ResultKind.ERRORED, "unreadable"),
    ]
    assert "over the 0.00390625 MB read per line; it was skipped" in results[1].message


def test_results_url_on_another_host_never_gets_the_key() -> None:
    urls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        urls.append(str(request.url))
        return httpx.Response(200, content=b'{"custom_id": "a", "result": {"type": "canceled"}}')

    state = BatchState(
        remote_id="msgbatch_1",
        phase=BatchPhase.ENDED,
        provider_status="ended",
        results_url="https://elsewhere.test/v1/messages/batches/msgbatch_1/results",
    )
    (result,) = mock(handler).batch_results(state)
    assert result.kind is ResultKind.CANCELLED
    assert urls == ["https://api.anthropic.test/v1/messages/batches/msgbatch_1/results"]


def test_results_errors_are_redacted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"error": {"message": request.headers["x-api-key"]}})

    state = parse_batch(batch_object("ended", expired=1))
    with pytest.raises(ProviderError) as caught:
        list(mock(handler).batch_results(state))
    assert caught.value.kind is ErrorKind.SERVER
    assert "0123456789" not in caught.value.message and REDACTED in caught.value.message


# -- against the simulator ----------------------------------------------------------


@pytest.fixture
def sim(sims: Any) -> AnthropicSimulator:
    simulator = sims.get("anthropic")
    simulator.stream_chunk_delay = 0.0
    return simulator


def against(sim: AnthropicSimulator, secret: str = DEFAULT_TOKEN) -> AnthropicProvider:
    return AnthropicProvider(secret=secret, base_url=sim.base_url)


def test_plain_answer_with_usage(sim: AnthropicSimulator) -> None:
    (item,) = against(sim).run_items(spec(system_prompt="Be brief"), [0])
    assert item.output == completion_text(MODEL, "Say hi").strip()
    assert (item.tokens_in, item.tokens_out) == (4, len(item.output.split()))
    assert sim.count("POST /v1/messages") == 1


def test_streamed_answer(sim: AnthropicSimulator) -> None:
    chunks: list[tuple[int, str]] = []
    (item,) = against(sim).run_items(
        spec(prompts=["a", "Tell a long story"], stream=True),
        [1],
        lambda i, c: chunks.append((i, c)),
    )
    expected = completion_text(MODEL, "Tell a long story").strip()
    assert item.output == expected == "".join(c for _, c in chunks)
    assert len(chunks) > 1 and {i for i, _ in chunks} == {1}
    assert item.tokens_in == 4 and item.tokens_out == len(expected.split())


@pytest.mark.parametrize("stream", [False, True])
def test_structured_answer_fits_the_schema(sim: AnthropicSimulator, stream: bool) -> None:
    (item,) = against(sim).run_items(
        spec(prompts=["Carl"], output_schema=SCHEMA, stream=stream), [0]
    )
    assert set(item.output) == {"age", "name"} and isinstance(item.output["age"], int)
    assert item.tokens_in == 1 and item.tokens_out


def test_stream_error_event_from_the_simulator(sim: AnthropicSimulator) -> None:
    chunks: list[str] = []
    with pytest.raises(ProviderError) as caught:
        against(sim).run(
            spec(prompts=["one two three four five six seven [[overload]]"], stream=True),
            [0],
            lambda _, c: chunks.append(c),
        )
    assert caught.value.kind is ErrorKind.SERVER and caught.value.retryable
    assert "overloaded_error" in caught.value.message and len(chunks) == 2


def test_overloaded_and_rate_limited_from_the_simulator(sim: AnthropicSimulator) -> None:
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    sim.add_fault(status=529, body=overloaded, path="/v1/messages")
    limited = {"type": "error", "error": {"type": "rate_limit_error", "message": "Slow down"}}
    sim.add_fault(status=429, body=limited, headers={"retry-after": "12"}, path="/v1/messages")
    provider = against(sim)
    for kind, retry_after in ((ErrorKind.SERVER, None), (ErrorKind.RATE_LIMIT, 12.0)):
        with pytest.raises(ProviderError) as caught:
            provider.run(spec(), [0])
        assert (caught.value.kind, caught.value.retryable) == (kind, True)
        assert caught.value.retry_after == retry_after
    assert provider.run(spec(), [0]) == [completion_text(MODEL, "Say hi").strip()]


def test_bad_key_and_missing_version(sim: AnthropicSimulator) -> None:
    with pytest.raises(ProviderError) as caught:
        against(sim, "wrong-key-0123").run(spec(), [0])
    assert caught.value.kind is ErrorKind.AUTH and "authentication_error" in caught.value.message
    answer = httpx.post(
        sim.base_url + "/v1/messages", headers={"x-api-key": DEFAULT_TOKEN}, json={}
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request_error"


def test_model_pages_from_the_simulator(
    sim: AnthropicSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim.model_count = 45
    monkeypatch.setattr(module, "MODELS_PAGE_SIZE", 10)
    models = against(sim).list_models()
    assert len(models) == len({m.name for m in models}) == 45
    assert sim.count("GET /v1/models") == 5


def run_batch(
    sim: AnthropicSimulator, prompts: list[str], **kwargs: Any
) -> tuple[AnthropicProvider, BatchState]:
    provider = against(sim)
    job = spec(**kwargs)
    lines = [provider.batch_line(custom_id(9, i), p, job) for i, p in enumerate(prompts)]
    return provider, provider.batch_create(lines, None, {"dashboard_job": "9"})


def test_batch_runs_until_the_clock_says_it_ended(sims: Any, sim_clock: FakeClock) -> None:
    sim = use_clock(sims.get("anthropic"), sim_clock, step_seconds=10.0)
    prompts = [f"prompt {i}" for i in range(8)]
    provider, state = run_batch(sim, prompts)
    assert (state.phase, state.provider_status, state.processing) == (
        BatchPhase.RUNNING,
        "in_progress",
        8,
    )
    sim_clock.advance(9.0)
    state = provider.batch_get(state.remote_id)
    assert state.phase is BatchPhase.RUNNING and state.completed is None and not state.results_url
    sim_clock.advance(1.0)
    state = provider.batch_get(state.remote_id)
    assert (state.phase, state.completed, state.failed, state.processing) == (
        BatchPhase.ENDED,
        8,
        0,
        0,
    )
    results = list(provider.batch_results(state))
    order = [r.custom_id for r in results]
    assert order != sorted(order, key=lambda c: int(c.rsplit("item", 1)[1]))  # not request order
    by_id = {r.custom_id: r for r in results}
    for i, prompt in enumerate(prompts):
        result = by_id[custom_id(9, i)]
        assert result.kind is ResultKind.SUCCEEDED and result.result is not None
        assert result.result.output == completion_text(MODEL, prompt).strip()
        assert result.result.tokens_in == 2 and result.result.tokens_out
    assert sim.paths[f"GET /v1/messages/batches/{state.remote_id}/results"] == 1
    assert sim.submissions == 1


def test_an_ended_batch_makes_each_result_once(
    sims: Any, sim_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every status check of an ended batch counts its results: they are made
    once, not on every look (a 50,000-request batch, figure 10)."""
    from providers.simulators import anthropic as simulator

    sim = use_clock(sims.get("anthropic"), sim_clock, step_seconds=10.0)
    provider, state = run_batch(sim, [f"prompt {i}" for i in range(4)])
    made: list[Any] = []
    answer = simulator.answer
    monkeypatch.setattr(simulator, "answer", lambda body: made.append(body) or answer(body))
    sim_clock.advance(10.0)

    for _ in range(3):
        state = provider.batch_get(state.remote_id)
    results = [list(provider.batch_results(state)) for _ in range(2)]

    assert state.phase is BatchPhase.ENDED and state.completed == 4
    assert results[0] == results[1] and len(results[0]) == 4
    assert len(made) == 4


def test_batch_with_every_result_kind(sims: Any, sim_clock: FakeClock) -> None:
    sim = use_clock(sims.get("anthropic"), sim_clock, step_seconds=10.0)
    prompts = ["fine", "too [[expire]]", "hot", "late", "later"]
    provider, state = run_batch(sim, prompts)
    # A request whose params the API refuses comes back errored, not as a 400.
    bad = json.dumps(
        {"custom_id": "job9-item9", "params": {"model": MODEL, "messages": [], "max_tokens": 5}}
    ).encode()
    bad_state = provider.batch_create([bad], None, {})
    sim_clock.advance(5.0)  # items 0 and 1 of 5 are done, 2 at 6 s: cancel now
    cancelling = provider.batch_cancel(state.remote_id)
    assert (cancelling.phase, cancelling.provider_status) == (BatchPhase.RUNNING, "canceling")
    ended = provider.batch_get(state.remote_id)
    assert (ended.phase, ended.completed, ended.failed) == (BatchPhase.ENDED, 1, 4)
    kinds = {r.custom_id: (r.kind, r.code) for r in provider.batch_results(ended)}
    assert kinds == {
        "job9-item0": (ResultKind.SUCCEEDED, ""),
        "job9-item1": (ResultKind.EXPIRED, "expired"),
        "job9-item2": (ResultKind.CANCELLED, "canceled"),
        "job9-item3": (ResultKind.CANCELLED, "canceled"),
        "job9-item4": (ResultKind.CANCELLED, "canceled"),
    }
    sim_clock.advance(5.0)
    (errored,) = provider.batch_results(provider.batch_get(bad_state.remote_id))
    assert (errored.custom_id, errored.kind, errored.code) == (
        "job9-item9",
        ResultKind.ERRORED,
        "invalid_request_error",
    )
    assert "messages" in errored.message


def test_batch_of_unknown_id_is_not_found(sim: AnthropicSimulator) -> None:
    with pytest.raises(ProviderError) as caught:
        against(sim).batch_get("msgbatch_nope")
    assert caught.value.kind is ErrorKind.NOT_FOUND


def test_simulator_lists_batches_newest_first(sims: Any, sim_clock: FakeClock) -> None:
    sim = use_clock(sims.get("anthropic"), sim_clock)
    first = run_batch(sim, ["a"])[1].remote_id
    second = run_batch(sim, ["b"])[1].remote_id
    headers = {"x-api-key": DEFAULT_TOKEN, "anthropic-version": "2023-06-01"}
    page = httpx.get(sim.base_url + "/v1/messages/batches?limit=1", headers=headers).json()
    assert [b["id"] for b in page["data"]] == [second] and page["has_more"] is True
    rest = httpx.get(
        sim.base_url + f"/v1/messages/batches?limit=5&after_id={second}", headers=headers
    ).json()
    assert [b["id"] for b in rest["data"]] == [first] and rest["has_more"] is False


def test_a_streamed_error_event_is_redacted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        key = request.headers["x-api-key"]
        error = {"type": "error", "error": {"type": "api_error", "message": f"echo {key}"}}
        return httpx.Response(
            200, text=sse(START, error), headers={"content-type": "text/event-stream"}
        )

    with pytest.raises(ProviderError) as caught:
        mock(handler).run(spec(stream=True), [0])
    assert caught.value.kind is ErrorKind.SERVER
    assert "0123456789" not in str(caught.value) and REDACTED in caught.value.message
