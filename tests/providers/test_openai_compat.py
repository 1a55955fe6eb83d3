"""OpenAI-compatible adapter: request building and answer parsing tables, edge
cases over MockTransport (statuses, SSE framing), and whole calls against the
simulator over loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from providers import PROVIDERS, get_provider_class
from providers.base import ErrorKind, JobSpec, ProviderError, SpecError
from providers.openai_compat import (
    OpenAIProvider,
    SSEDecoder,
    build_request,
    chat_path,
    parse_models,
    parse_response,
    read_stream,
    to_json_schema,
)
from providers.simulators import get_simulator_class
from providers.simulators.base import completion_text
from providers.simulators.openai_compat import OpenAISimulator, sample_value, split_words

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def spec(**kwargs: Any) -> JobSpec:
    return JobSpec(**{"model": MODEL, "prompts": ["Say hi"], **kwargs})


def answer(content: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


def sse_event(content: str | None = None, finish: str | None = None) -> str:
    delta = {} if content is None else {"content": content}
    return "data: " + json.dumps(
        {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    )


def test_registered_last_in_both_registries() -> None:
    assert list(PROVIDERS).index("openai") == 5 and PROVIDERS["openai"][2] == "OpenAI-compatible"
    assert get_provider_class("openai") is OpenAIProvider
    assert get_simulator_class("openai") is OpenAISimulator
    assert OpenAIProvider.kind == "sync" and OpenAIProvider.supports_stream
    assert OpenAIProvider.supported_fields == {
        "system_prompt",
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "repetition_penalty",
        "output_schema",
    }


# -- pure translation -----------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "path"),
    [
        ("https://api.openai.com", "/v1/chat/completions"),
        ("http://127.0.0.1:8000", "/v1/chat/completions"),
        ("http://localhost:11434/v1", "/chat/completions"),
        ("https://api.together.xyz/v1/", "/chat/completions"),
        ("https://gw.example/llm", "/v1/chat/completions"),
        ("https://gw.example/llm/v1", "/chat/completions"),
        ("https://gw.example/v10", "/v1/chat/completions"),
    ],
)
def test_chat_path_never_doubles_v1(base_url: str, path: str) -> None:
    assert chat_path(base_url) == path


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, {"messages": [{"role": "user", "content": "Say hi"}], "stream": False}),
        (
            {"system_prompt": "Be brief.", "stream": True},
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Say hi"},
                ],
                "stream": True,
            },
        ),
        (
            {"max_tokens": 16, "temperature": 0.0, "top_p": 0.9},
            {
                "messages": [{"role": "user", "content": "Say hi"}],
                "max_tokens": 16,
                "temperature": 0.0,
                "top_p": 0.9,
                "stream": False,
            },
        ),
        (
            {"top_k": 40, "repetition_penalty": 1.1},
            {
                "messages": [{"role": "user", "content": "Say hi"}],
                "top_k": 40,
                "repetition_penalty": 1.1,
                "stream": False,
            },
        ),
    ],
)
def test_build_request(kwargs: dict[str, Any], expected: dict[str, Any]) -> None:
    assert build_request(spec(**kwargs), "Say hi") == {"model": MODEL, **expected}


TYPE_MAP_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "score": {"type": "number"},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "age", "score", "ok"],
    "additionalProperties": False,
}
NESTED = {
    "type": "object",
    "properties": {"tags": {"type": "array", "items": {"type": "string"}}},
}


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (None, None),
        ({}, None),
        (NESTED, NESTED),
        ({"properties": {"a": {"type": "string"}}}, {"properties": {"a": {"type": "string"}}}),
        (
            {"type": "array", "items": {"type": "integer"}},
            {"type": "array", "items": {"type": "integer"}},
        ),
        ({"name": "str", "age": "int", "score": "float", "ok": "bool"}, TYPE_MAP_SCHEMA),
        (
            {"name": "String", "age": " INT "},
            {
                "type": "object",
                "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                "required": ["name", "age"],
                "additionalProperties": False,
            },
        ),
        # A field called "type" in a type map, as the dashboard reads it.
        (
            {"type": "string"},
            {
                "type": "object",
                "properties": {"type": {"type": "string"}},
                "required": ["type"],
                "additionalProperties": False,
            },
        ),
    ],
)
def test_output_schema_conversion(schema: Any, expected: Any) -> None:
    assert to_json_schema(schema) == expected
    body = build_request(spec(output_schema=schema), "x")
    if expected is None:
        assert "response_format" not in body
    else:
        assert body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": expected, "strict": False},
        }


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        (["name"], "must be a JSON object"),
        ({"name": "text"}, "'name'"),
        ({"name": "str", "when": "datetime"}, "'when'"),
        ({"count": 3}, "'count'"),
        ({"nested": {"a": "str"}}, "'nested'"),
        ({"type": "object", "properties": ["a"]}, "'properties' must be a JSON object"),
    ],
)
def test_output_schema_refusals(schema: Any, words: str) -> None:
    with pytest.raises(SpecError) as info:
        to_json_schema(schema)
    assert info.value.field_name == "output_schema" and words in info.value.message
    with OpenAIProvider(secret="k") as provider, pytest.raises(SpecError):
        provider.validate(spec(output_schema=schema))


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (answer("Hello."), "Hello."),
        (answer(""), ""),
        (answer([{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]), "Hello"),
        ({**answer("a"), "choices": [*answer("a")["choices"], *answer("b")["choices"]]}, "a"),
    ],
)
def test_parse_response(body: dict[str, Any], text: str) -> None:
    assert parse_response(body) == text


@pytest.mark.parametrize(
    ("body", "kind", "words"),
    [
        ({}, ErrorKind.PROTOCOL, "no 'choices'"),
        ({"choices": []}, ErrorKind.PROTOCOL, "no 'choices'"),
        ({"choices": ["x"]}, ErrorKind.PROTOCOL, "no 'message'"),
        ({"choices": [{"text": "legacy"}]}, ErrorKind.PROTOCOL, "no 'message'"),
        (answer(None), ErrorKind.PROTOCOL, "no text 'content'"),
        (answer(42), ErrorKind.PROTOCOL, "no text 'content'"),
        (
            {"error": {"message": "context too long", "type": "BadRequestError", "code": 400}},
            ErrorKind.REJECTED,
            "context too long",
        ),
        ({"error": "overloaded"}, ErrorKind.REJECTED, "overloaded"),
        (
            {"choices": [{"message": {"content": None, "refusal": "I can't help"}}]},
            ErrorKind.REJECTED,
            "I can't help",
        ),
    ],
)
def test_parse_response_failures(body: dict[str, Any], kind: ErrorKind, words: str) -> None:
    with pytest.raises(ProviderError) as info:
        parse_response(body)
    assert info.value.kind is kind and words in info.value.message
    assert "OpenAI-compatible" in info.value.message or kind is ErrorKind.REJECTED


def test_sse_decoder_framing() -> None:
    decoder = SSEDecoder()
    fed = [
        ": keep-alive",
        "event: message",
        "id: 1",
        "data: one",
        "data:two",
        "",
        "",
        "data: [DONE]\r",
        "",
    ]
    assert [data for line in fed for data in decoder.feed(line)] == ["one\ntwo", "[DONE]"]
    assert decoder.feed("data: tail") == [] and decoder.flush() == ["tail"]


@pytest.mark.parametrize(
    ("lines", "text"),
    [
        ([sse_event("Hel"), "", sse_event("lo"), "", "data: [DONE]", ""], "Hello"),
        # Role-only first chunk, a usage-only chunk with no choices, a finish chunk.
        (
            [
                'data: {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}',
                "",
                sse_event("Hi"),
                "",
                sse_event(None, "stop"),
                "",
                'data: {"choices": [], "usage": {"total_tokens": 3}}',
                "",
                "data: [DONE]",
                "",
            ],
            "Hi",
        ),
        # Nothing after [DONE] is read.
        ([sse_event("a"), "", "data: [DONE]", "", "data: not json", ""], "a"),
        # No blank lines between events.
        ([sse_event("a"), sse_event("b"), "data: [DONE]", ""], "ab"),
        # No [DONE], but a finish_reason: llama.cpp's older servers.
        ([sse_event("a"), "", sse_event("b", "length")], "ab"),
        # Only [DONE]: an empty answer.
        (["data: [DONE]", ""], ""),
    ],
)
def test_read_stream(lines: list[str], text: str) -> None:
    got: list[str] = []
    assert read_stream(lines, got.append) == text
    assert "".join(got) == text and all(got)


@pytest.mark.parametrize(
    ("lines", "kind", "words"),
    [
        (["data: {oops", ""], ErrorKind.PROTOCOL, "not JSON"),
        (["data: [1, 2]", ""], ErrorKind.PROTOCOL, "unexpected shape"),
        ([sse_event("a"), ""], ErrorKind.PROTOCOL, "before 'data: [DONE]'"),
        ([], ErrorKind.PROTOCOL, "before 'data: [DONE]'"),
        (
            [sse_event("a"), "", 'data: {"error": {"message": "engine died", "code": 500}}', ""],
            ErrorKind.REJECTED,
            "engine died",
        ),
    ],
)
def test_read_stream_failures(lines: list[str], kind: ErrorKind, words: str) -> None:
    with pytest.raises(ProviderError) as info:
        read_stream(lines, lambda text: None)
    assert info.value.kind is kind and words in info.value.message


def test_parse_models() -> None:
    body = {"object": "list", "data": [{"id": "a"}, {"id": ""}, {"x": 1}, "b", {"id": "c"}]}
    assert [m.name for m in parse_models(body)] == ["a", "c"]
    with pytest.raises(ProviderError) as info:
        parse_models({"models": []})
    assert info.value.kind is ErrorKind.PROTOCOL


# -- edge cases over MockTransport -------------------------------------------------


def mocked(handler: Any, base_url: str | None = None) -> OpenAIProvider:
    return OpenAIProvider(
        secret="sk-secret", base_url=base_url, transport=httpx.MockTransport(handler)
    )


def test_request_sent_with_bearer_auth_and_body() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=answer("fine"))

    with mocked(handler) as provider:
        outputs = provider.run(spec(prompts=["a", "b"], system_prompt="S", top_k=5), [1])
    assert outputs == ["fine"]
    request = seen[0]
    assert request.headers["Authorization"] == "Bearer sk-secret"
    assert (request.method, str(request.url)) == (
        "POST",
        "https://api.openai.com/v1/chat/completions",
    )
    body = json.loads(request.content)
    assert body["messages"][-1] == {"role": "user", "content": "b"}
    assert body["top_k"] == 5 and body["stream"] is False


def test_base_url_ending_in_v1() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json=answer("x"))

    with mocked(handler, "http://localhost:11434/v1/") as provider:
        provider.run(spec(), [0])
    assert seen == ["http://localhost:11434/v1/chat/completions"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("response", "kind", "retry_after", "words"),
    [
        (
            httpx.Response(
                401,
                json={
                    "error": {
                        "message": "Incorrect API key provided",
                        "type": "invalid_request_error",
                    }
                },
            ),
            ErrorKind.AUTH,
            None,
            "Incorrect API key provided",
        ),
        (
            httpx.Response(
                429,
                headers={"Retry-After": "7"},
                json={"error": {"message": "Rate limit reached", "type": "requests"}},
            ),
            ErrorKind.RATE_LIMIT,
            7.0,
            "Rate limit reached",
        ),
        (httpx.Response(500, text="boom"), ErrorKind.SERVER, None, "boom"),
        (
            httpx.Response(404, json={"error": {"message": "The model `x` does not exist."}}),
            ErrorKind.NOT_FOUND,
            None,
            "does not exist",
        ),
        (
            httpx.Response(400, json={"error": {"message": "top_k unknown", "code": None}}),
            ErrorKind.REJECTED,
            None,
            "top_k unknown",
        ),
        (
            httpx.Response(
                200, headers={"Content-Type": "application/json"}, content=b"<html>gw</html>"
            ),
            ErrorKind.PROTOCOL,
            None,
            "not JSON",
        ),
        (httpx.Response(200, json=["not", "an", "object"]), ErrorKind.PROTOCOL, None, "shape"),
        (httpx.Response(200, json={"id": "x"}), ErrorKind.PROTOCOL, None, "'choices'"),
        (
            httpx.Response(200, json={"error": {"message": "prompt too long"}}),
            ErrorKind.REJECTED,
            None,
            "prompt too long",
        ),
    ],
)
def test_run_errors(
    response: httpx.Response,
    kind: ErrorKind,
    retry_after: float | None,
    words: str,
    stream: bool,
) -> None:
    with mocked(lambda request: response) as provider, pytest.raises(ProviderError) as info:
        provider.run(spec(stream=stream), [0], lambda i, t: None)
    assert info.value.kind is kind and info.value.retry_after == retry_after
    assert words in info.value.message
    assert "sk-secret" not in info.value.message


def test_plain_text_body_is_protocol_when_not_streamed() -> None:
    with (
        mocked(lambda r: httpx.Response(200, text="<html>gateway</html>")) as provider,
        pytest.raises(ProviderError) as info,
    ):
        provider.run(spec(), [0])
    assert info.value.kind is ErrorKind.PROTOCOL


@pytest.mark.parametrize("content_type", ["text/event-stream", "text/plain; charset=utf-8", None])
def test_streamed_sse_split_across_network_chunks(content_type: str | None) -> None:
    payload = (
        "\n\n".join(
            [
                'data: {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}',
                sse_event("Once"),
                sse_event(" upon a"),
                sse_event(" tim\u00e9"),
                sse_event(None, "stop"),
                "data: [DONE]",
            ]
        )
        + "\n\n"
    ).encode()
    # Cut every few bytes: lines, the "data:" prefix and a UTF-8 character split.
    pieces = [payload[i : i + 7] for i in range(0, len(payload), 7)]
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        headers = {"Content-Type": content_type} if content_type else {}
        return httpx.Response(200, headers=headers, content=iter(pieces))

    got: list[tuple[int, str]] = []
    with mocked(handler) as provider:
        outputs = provider.run(
            spec(stream=True, prompts=["a", "b"]), [1], lambda i, t: got.append((i, t))
        )
    assert outputs == ["Once upon a tim\u00e9"]
    assert got == [(1, "Once"), (1, " upon a"), (1, " tim\u00e9")]
    assert sent[0]["stream"] is True and sent[0]["messages"][-1]["content"] == "b"


def test_streamed_crlf_lines() -> None:
    payload = (
        sse_event("a") + "\r\n\r\n" + sse_event("b") + "\r\n\r\ndata: [DONE]\r\n\r\n"
    ).encode()
    with mocked(lambda r: httpx.Response(200, content=payload)) as provider:
        assert provider.run(spec(stream=True), [0]) == ["ab"]


def test_streamed_request_answered_with_json() -> None:
    got: list[str] = []
    with mocked(lambda r: httpx.Response(200, json=answer("all at once"))) as provider:
        assert provider.run(spec(stream=True), [0], lambda i, t: got.append(t)) == ["all at once"]
    assert got == ["all at once"]


def test_streamed_without_on_chunk() -> None:
    payload = f"{sse_event('x')}\n\ndata: [DONE]\n\n".encode()
    with mocked(lambda r: httpx.Response(200, content=payload)) as provider:
        assert provider.run(spec(stream=True), [0]) == ["x"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ConnectError("refused"), ErrorKind.CONNECTION),
        (httpx.ConnectTimeout("slow"), ErrorKind.CONNECTION),
        (httpx.ReadTimeout("slow"), ErrorKind.TIMEOUT),
        (httpx.RemoteProtocolError("cut"), ErrorKind.TIMEOUT),
    ],
)
def test_transport_errors(exc: Exception, kind: ErrorKind, stream: bool) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    with mocked(handler) as provider, pytest.raises(ProviderError) as info:
        provider.run(spec(stream=stream), [0])
    assert info.value.kind is kind


def test_stream_cut_midway_after_chunks() -> None:
    def chunks() -> Iterator[bytes]:
        yield (sse_event("part") + "\n\n").encode()
        raise httpx.ReadTimeout("stalled")

    got: list[str] = []
    with (
        mocked(lambda r: httpx.Response(200, content=chunks())) as provider,
        pytest.raises(ProviderError) as info,
    ):
        provider.run(spec(stream=True), [0], lambda i, t: got.append(t))
    assert info.value.kind is ErrorKind.TIMEOUT and got == ["part"]


def test_list_models_path() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json={"object": "list", "data": [{"id": "m"}]})

    with mocked(handler) as provider:
        assert [m.name for m in provider.list_models()] == ["m"]
    with mocked(handler, "http://h/v1") as provider:
        provider.list_models()
    assert seen == ["/v1/models", "/v1/models"]


# -- the simulator's own pieces ------------------------------------------------------


def test_split_words_joins_back() -> None:
    for text in ("", "one", "a b c d e f g", " lead and  double"):
        assert "".join(split_words(text)) == text
    assert len(split_words("a b c d e f g")) == 3


def test_sample_value_types() -> None:
    schema = {
        "type": "object",
        "properties": {
            "s": {"type": "string"},
            "i": {"type": "integer"},
            "n": {"type": "number"},
            "b": {"type": "boolean"},
            "e": {"enum": ["x", "y"]},
            "o": {"type": ["null", "integer"]},
            "l": {"type": "array", "items": {"type": "boolean"}},
            "d": {"properties": {"k": {"type": "string"}}},
        },
    }
    value = sample_value(schema, "seed")
    assert value == sample_value(schema, "seed")
    assert isinstance(value["s"], str) and type(value["i"]) is int
    assert type(value["n"]) is float and type(value["b"]) is bool
    assert value["e"] == "x" and type(value["o"]) is int
    assert isinstance(value["l"][0], bool) and isinstance(value["d"]["k"], str)


# -- against the simulator ----------------------------------------------------------


@pytest.fixture(scope="module")
def running_sim() -> Iterator[OpenAISimulator]:
    with OpenAISimulator(stream_chunk_delay=0.001) as sim:
        yield sim


@pytest.fixture
def sim(running_sim: OpenAISimulator) -> OpenAISimulator:
    running_sim.faults.clear()
    running_sim.requests.clear()
    return running_sim


@pytest.fixture(scope="module", params=["", "/v1"], ids=["root", "v1"])
def running_provider(
    running_sim: OpenAISimulator, request: pytest.FixtureRequest
) -> Iterator[OpenAIProvider]:
    # Both spellings of a base URL: the server's root, and the root plus "/v1".
    base_url = running_sim.base_url + request.param
    with OpenAIProvider(secret=running_sim.token, base_url=base_url) as adapter:
        yield adapter


@pytest.fixture
def provider(running_provider: OpenAIProvider, sim: OpenAISimulator) -> OpenAIProvider:
    return running_provider


def test_sim_plain(provider: OpenAIProvider, sim: OpenAISimulator) -> None:
    job = spec(prompts=["What is 2+2?"], system_prompt="Be brief.", temperature=0.2)
    outputs = provider.run(job, [0])
    assert outputs == [completion_text(MODEL, "What is 2+2?").strip()]
    assert provider.run(job, [0]) == outputs  # deterministic
    assert sim.count("POST /v1/chat/completions") == 2


def test_sim_max_tokens(provider: OpenAIProvider) -> None:
    (text,) = provider.run(spec(max_tokens=3), [0])
    assert text == completion_text(MODEL, "Say hi", 3).strip() and len(text.split()) == 3


@pytest.mark.parametrize(
    "schema",
    [
        {"name": "str", "age": "int", "score": "float", "ok": "bool"},
        TYPE_MAP_SCHEMA,
    ],
)
def test_sim_structured(provider: OpenAIProvider, schema: dict[str, Any]) -> None:
    (text,) = provider.run(spec(output_schema=schema), [0])
    value = json.loads(text)
    assert set(value) == {"name", "age", "score", "ok"}
    assert isinstance(value["name"], str) and type(value["age"]) is int
    assert type(value["score"]) is float and type(value["ok"]) is bool


def test_sim_streamed(provider: OpenAIProvider) -> None:
    prompt = "Tell me a long story about a lighthouse keeper and a cat"
    got: list[tuple[int, str]] = []
    job = spec(prompts=["x", prompt], stream=True)
    (text,) = provider.run(job, [1], lambda i, t: got.append((i, t)))
    assert text == completion_text(MODEL, prompt).strip()
    assert len(got) >= 3 and {i for i, _ in got} == {1}
    assert "".join(t for _, t in got) == text


def test_sim_streamed_structured(provider: OpenAIProvider) -> None:
    got: list[str] = []
    (text,) = provider.run(
        spec(stream=True, output_schema={"a": "str", "b": "int", "c": "bool"}),
        [0],
        lambda i, t: got.append(t),
    )
    assert len(got) >= 2 and "".join(got) == text
    assert set(json.loads(text)) == {"a", "b", "c"}


def test_sim_auth(sim: OpenAISimulator) -> None:
    with (
        OpenAIProvider(secret="wrong", base_url=sim.base_url) as adapter,
        pytest.raises(ProviderError) as info,
    ):
        adapter.run(spec(), [0])
    assert info.value.kind is ErrorKind.AUTH
    assert "Incorrect API key provided" in info.value.message


@pytest.mark.parametrize("stream", [False, True])
def test_sim_faults(provider: OpenAIProvider, sim: OpenAISimulator, stream: bool) -> None:
    sim.add_fault(
        status=429,
        headers={"Retry-After": "2"},
        body={"error": {"message": "Rate limit reached", "type": "requests"}},
    )
    with pytest.raises(ProviderError) as info:
        provider.run(spec(stream=stream), [0])
    assert info.value.kind is ErrorKind.RATE_LIMIT and info.value.retry_after == 2.0
    sim.add_fault(status=503, body="upstream down", content_type="text/plain")
    with pytest.raises(ProviderError) as info:
        provider.run(spec(stream=stream), [0])
    assert info.value.kind is ErrorKind.SERVER and "upstream down" in info.value.message
    assert provider.run(spec(stream=stream), [0]) == [completion_text(MODEL, "Say hi").strip()]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": MODEL, "messages": []}, "messages"),
        ({"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}, "role"),
        ({"model": MODEL, "messages": [{"role": "system", "content": "x"}]}, "user message"),
        (
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "o"}},
            },
            "schema",
        ),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            "max_tokens",
        ),
    ],
)
def test_sim_validation(sim: OpenAISimulator, body: dict[str, Any], words: str) -> None:
    response = httpx.post(
        f"{sim.base_url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {sim.token}"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and words in error["message"]


def test_sim_models_and_401_body(sim: OpenAISimulator) -> None:
    with OpenAIProvider(secret=sim.token, base_url=sim.base_url) as adapter:
        assert MODEL in [m.name for m in adapter.list_models()]
    response = httpx.get(f"{sim.base_url}/v1/models")
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Incorrect API key provided"
    assert response.json()["error"]["type"] == "invalid_request_error"
