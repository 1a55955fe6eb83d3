"""Bytez adapter: pure translation tables, edge cases over MockTransport, and the
whole model lifecycle against the simulator over loopback."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from providers.base import ErrorKind, InstanceState, JobSpec, ProviderError, SpecError
from providers.bytez import (
    BytezProvider,
    build_params,
    build_run_request,
    map_state,
    model_available,
    parse_instance,
    parse_instances,
    parse_job,
    parse_models,
    parse_run_response,
    parse_time,
)
from providers.simulators.base import completion_text
from providers.simulators.bytez import BytezSimulator

GPT2 = "openai-community/gpt2"


def spec(**kwargs: Any) -> JobSpec:
    return JobSpec(**{"model": GPT2, "prompts": ["Once upon a time"], **kwargs})


# -- pure translation -----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "params"),
    [
        ({}, {}),
        ({"max_tokens": 20}, {"max_new_tokens": 20}),
        (
            {"temperature": 0.5, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.1},
            {"temperature": 0.5, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.1},
        ),
        (
            {"options": {"params": {"min_length": 30, "max_length": 256}}},
            {"min_length": 30, "max_length": 256},
        ),
        (
            {"max_tokens": 5, "options": {"params": {"max_new_tokens": 99, "min_length": 1}}},
            {"max_new_tokens": 5, "min_length": 1},
        ),
    ],
)
def test_build_params(kwargs: dict[str, Any], params: dict[str, Any]) -> None:
    assert build_params(spec(**kwargs)) == params


def test_build_run_request() -> None:
    assert build_run_request(spec(stream=True, max_tokens=3), "Hi") == {
        "model": GPT2,
        "prompt": "Hi",
        "params": {"max_new_tokens": 3},
        "stream": True,
    }


@pytest.mark.parametrize(
    ("word", "state"),
    [
        ("RUNNING", InstanceState.RUNNING),
        ("running", InstanceState.RUNNING),
        ("READY", InstanceState.RUNNING),
        *[
            (w, InstanceState.LOADING)
            for w in (
                "started",
                "STARTING",
                "loading",
                "pending",
                "creating",
                "provisioning",
                "queued",
                "deploying",
            )
        ],
        *[(w, InstanceState.STOPPED) for w in ("stopped", "DELETED", "terminated", "shutdown")],
        ("shut down", InstanceState.STOPPED),
        ("Expired", InstanceState.EXPIRED),
        *[(w, InstanceState.FAILED) for w in ("failed", "ERROR", "crashed")],
        ("warming-up", InstanceState.LOADING),
        ("", InstanceState.LOADING),
    ],
)
def test_map_state(word: str, state: InstanceState) -> None:
    assert map_state(word) is state


@pytest.mark.parametrize(
    ("body", "output"),
    [
        ({"output": "text", "error": None}, "text"),
        ({"output": [{"generated_text": "gen"}], "error": None}, "gen"),
        ({"output": {"generated_text": "gen"}}, "gen"),
        (
            {"output": [{"generated_text": "a"}, {"generated_text": "b"}]},
            [{"generated_text": "a"}, {"generated_text": "b"}],
        ),
        ({"output": [{"label": "POSITIVE", "score": 0.9}]}, [{"label": "POSITIVE", "score": 0.9}]),
        ({"output": {"answer": 4}}, {"answer": 4}),
        ({"output": "", "error": ""}, ""),
    ],
)
def test_parse_run_response(body: dict[str, Any], output: Any) -> None:
    assert parse_run_response(body, GPT2) == output


@pytest.mark.parametrize(
    ("body", "kind", "words"),
    [
        ({"output": None, "error": "Model is not running"}, ErrorKind.NOT_FOUND, "load it first"),
        ({"output": None, "error": "Model not loaded"}, ErrorKind.NOT_FOUND, GPT2),
        ({"output": None, "error": "prompt too long"}, ErrorKind.REJECTED, "prompt too long"),
        ({"error": None}, ErrorKind.PROTOCOL, "output"),
        ({"output": None}, ErrorKind.PROTOCOL, "output"),
    ],
)
def test_parse_run_response_errors(body: dict[str, Any], kind: ErrorKind, words: str) -> None:
    with pytest.raises(ProviderError) as info:
        parse_run_response(body, GPT2)
    assert info.value.kind is kind
    assert words in info.value.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-28T00:12:18.738Z", datetime(2024, 5, 28, 0, 12, 18, 738000, tzinfo=UTC)),
        ("2024-05-28T02:12:18+02:00", datetime(2024, 5, 28, 0, 12, 18, tzinfo=UTC)),
        ("2024-05-28T00:12:18", datetime(2024, 5, 28, 0, 12, 18, tzinfo=UTC)),
        (1716855138, datetime(2024, 5, 28, 0, 12, 18, tzinfo=UTC)),
        (1716855138000, datetime(2024, 5, 28, 0, 12, 18, tzinfo=UTC)),
        ("yesterday", None),
        ("", None),
        (None, None),
        (True, None),
    ],
)
def test_parse_time(value: Any, expected: datetime | None) -> None:
    assert parse_time(value) == expected


DOC_STATUS = {
    "model": GPT2,
    "status": "RUNNING",
    "concurrency": 1,
    "inferences": 0,
    "expirationPeriodSeconds": 1800,
    "expirationPeriodMinutes": 30,
    "expiresAt": "2024-05-28T00:12:18.738Z",
    "created": "2024-05-27T23:35:35.863Z",
    "modified": "2024-05-27T23:42:19.239Z",
}


def test_parse_instance_document_example() -> None:
    status = parse_instance(DOC_STATUS)
    assert (status.model, status.state, status.provider_status) == (
        GPT2,
        InstanceState.RUNNING,
        "RUNNING",
    )
    assert (status.concurrency, status.inferences, status.expiration_seconds) == (1, 0, 1800)
    assert status.expires_at == datetime(2024, 5, 28, 0, 12, 18, 738000, tzinfo=UTC)
    assert status.created_at == datetime(2024, 5, 27, 23, 35, 35, 863000, tzinfo=UTC)


def test_parse_instance_tolerates_missing_fields() -> None:
    status = parse_instance({"status": "started", "expirationPeriodMinutes": 5}, GPT2)
    assert status.model == GPT2 and status.state is InstanceState.LOADING
    assert status.expiration_seconds == 300
    assert status.concurrency is status.inferences is status.expires_at is None


@pytest.mark.parametrize(
    "body",
    [
        [DOC_STATUS, {"model": "b/c"}, GPT2, {"no": "model"}, 7],
        {"instances": [DOC_STATUS, {"model": "b/c"}, GPT2]},
        {"models": [DOC_STATUS, {"model": "b/c"}, GPT2]},
        {"data": [DOC_STATUS, {"model": "b/c"}, GPT2]},
    ],
)
def test_parse_instances(body: Any) -> None:
    found = parse_instances(body)
    assert [(i.model, i.state, i.provider_status) for i in found] == [
        (GPT2, InstanceState.RUNNING, "RUNNING"),
        ("b/c", InstanceState.RUNNING, ""),
        (GPT2, InstanceState.RUNNING, ""),
    ]


@pytest.mark.parametrize("body", [{"error": "x"}, "text", None])
def test_parse_instances_refuses_other_shapes(body: Any) -> None:
    with pytest.raises(ValueError):
        parse_instances(body)


def test_parse_models_document_example() -> None:
    body = [
        {"name": "EleutherAI/gpt-neo-2.7B", "requiredRAM": 2.232933128273094, "benchmarked": True},
        {"name": "Gustavosta/MagicPrompt.onnx.8-bit", "requiredRAM": None, "benchmarked": False},
        {"name": "x/y"},
        {"requiredRAM": 1},
    ]
    assert [(m.name, m.required_ram_gb, m.benchmarked) for m in parse_models(body)] == [
        ("EleutherAI/gpt-neo-2.7B", 2.232933128273094, True),
        ("Gustavosta/MagicPrompt.onnx.8-bit", None, False),
        ("x/y", None, None),
    ]


@pytest.mark.parametrize(
    ("body", "message", "available"),
    [
        ({"model": GPT2, "success": True, "modified": "2024-06-07T22:28:40.122Z"}, "", False),
        (
            {
                "model": GPT2,
                "success": True,
                "message": "Model is already queued",
                "startTime": None,
            },
            "Model is already queued",
            False,
        ),
        (
            {"model": GPT2, "success": True, "message": "Model available", "startTime": "x"},
            "Model available",
            True,
        ),
    ],
)
def test_parse_job(body: dict[str, Any], message: str, available: bool) -> None:
    status = parse_job(body, GPT2)
    assert status.state is InstanceState.REQUESTED
    assert status.message == message
    assert model_available(status) is available


def test_parse_job_refused() -> None:
    with pytest.raises(ProviderError) as info:
        parse_job({"success": False, "message": "Model too large"}, GPT2)
    assert info.value.kind is ErrorKind.REJECTED and "Model too large" in info.value.message


def test_validate_params_must_be_an_object() -> None:
    with BytezProvider(secret="k") as provider:
        provider.validate(spec(options={"params": {"min_length": 1}}))
        with pytest.raises(SpecError) as info:
            provider.validate(spec(options={"params": [1]}))
    assert info.value.field_name == "options"


# -- edge cases over MockTransport -------------------------------------------------


def mocked(handler: Any) -> BytezProvider:
    return BytezProvider(secret="k-secret", transport=httpx.MockTransport(handler))


def test_401_is_auth_and_key_header_is_sent() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(401, json={"error": "Invalid API key"})

    with mocked(handler) as provider, pytest.raises(ProviderError) as info:
        provider.list_models()
    assert info.value.kind is ErrorKind.AUTH and "authentication" in info.value.message
    assert seen[0].headers["Authorization"] == "Key k-secret"
    assert (seen[0].method, seen[0].url.path) == ("GET", "/model/list")


@pytest.mark.parametrize(
    ("response", "kind", "retry_after"),
    [
        (httpx.Response(429, headers={"Retry-After": "7"}, json={}), ErrorKind.RATE_LIMIT, 7.0),
        (httpx.Response(500, text="boom"), ErrorKind.SERVER, None),
        (httpx.Response(200, text="<html>gateway</html>"), ErrorKind.PROTOCOL, None),
        (httpx.Response(200, json=["not", "an", "object"]), ErrorKind.PROTOCOL, None),
        (httpx.Response(404, json={"error": "Model not loaded"}), ErrorKind.NOT_FOUND, None),
        (httpx.Response(400, json={"error": "bad params"}), ErrorKind.REJECTED, None),
    ],
)
def test_run_errors(response: httpx.Response, kind: ErrorKind, retry_after: float | None) -> None:
    with mocked(lambda request: response) as provider, pytest.raises(ProviderError) as info:
        provider.run(spec(), [0])
    assert info.value.kind is kind and info.value.retry_after == retry_after


def test_run_not_loaded_names_the_model() -> None:
    body = {"output": None, "error": f"Model {GPT2} is not running; load it first"}
    with (
        mocked(lambda r: httpx.Response(400, json=body)) as provider,
        pytest.raises(ProviderError) as info,
    ):
        provider.run(spec(), [0])
    assert info.value.kind is ErrorKind.NOT_FOUND
    assert info.value.message.startswith(f"Model {GPT2} is not loaded on Bytez; load it first")


def test_streamed_chunks_reach_on_chunk_in_order() -> None:
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        chunks = [b"Once ", b"upon a ", "tim\u00e9".encode()[:4], "tim\u00e9".encode()[4:]]
        return httpx.Response(200, headers={"Content-Type": "text/plain"}, content=iter(chunks))

    got: list[tuple[int, str]] = []
    with mocked(handler) as provider:
        outputs = provider.run(
            spec(stream=True, prompts=["a", "b"]), [1], lambda i, t: got.append((i, t))
        )
    assert outputs == ["Once upon a tim\u00e9"]
    assert "".join(t for _, t in got) == outputs[0] and {i for i, _ in got} == {1}
    assert got[0] == (1, "Once ")
    assert sent[0]["stream"] is True and sent[0]["prompt"] == "b"


def test_streamed_error_status_reads_the_body() -> None:
    body = {"output": None, "error": "Model is not running"}
    with (
        mocked(lambda r: httpx.Response(400, json=body)) as provider,
        pytest.raises(ProviderError) as info,
    ):
        provider.run(spec(stream=True), [0], lambda i, t: None)
    assert info.value.kind is ErrorKind.NOT_FOUND and "Model is not running" in info.value.message


def test_streamed_run_answered_with_json() -> None:
    with mocked(lambda r: httpx.Response(200, json={"output": "all", "error": None})) as provider:
        got: list[str] = []
        assert provider.run(spec(stream=True), [0], lambda i, t: got.append(t)) == ["all"]
    assert got == ["all"]


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ConnectError("refused"), ErrorKind.CONNECTION),
        (httpx.ConnectTimeout("slow"), ErrorKind.CONNECTION),
        (httpx.ReadTimeout("slow"), ErrorKind.TIMEOUT),
        (httpx.RemoteProtocolError("cut"), ErrorKind.TIMEOUT),
    ],
)
def test_streamed_transport_errors(exc: Exception, kind: ErrorKind) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    with mocked(handler) as provider, pytest.raises(ProviderError) as info:
        provider.run(spec(stream=True), [0])
    assert info.value.kind is kind


def test_stream_cut_midway_after_chunks() -> None:
    def chunks() -> Any:
        yield b"part "
        raise httpx.ReadTimeout("stalled")

    got: list[str] = []
    with (
        mocked(lambda r: httpx.Response(200, content=chunks())) as provider,
        pytest.raises(ProviderError) as info,
    ):
        provider.run(spec(stream=True), [0], lambda i, t: got.append(t))
    assert info.value.kind is ErrorKind.TIMEOUT and got == ["part "]


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(404, json={"error": "Model not loaded"}),
        httpx.Response(400, json={"error": "Model is not running"}),
        httpx.Response(200, json={"error": "No instance found"}),
    ],
)
def test_instance_status_without_instance_is_not_found(response: httpx.Response) -> None:
    with mocked(lambda r: response) as provider, pytest.raises(ProviderError) as info:
        provider.instance_status(GPT2)
    assert info.value.kind is ErrorKind.NOT_FOUND and GPT2 in info.value.message


def test_lifecycle_methods_and_paths() -> None:
    seen: list[tuple[str, str, Any]] = []
    answers = {
        "/model/job": {"model": GPT2, "success": True, "message": "Model available"},
        "/model/load": {"model": GPT2, "status": "started", "concurrency": 2},
        "/model/status": DOC_STATUS,
        "/model/instances": [DOC_STATUS],
        "/model/delete": {},
    }

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, request.url.path, body))
        return httpx.Response(200, json=answers[request.url.path])

    with mocked(handler) as provider:
        assert model_available(provider.request_model(GPT2))
        loading = provider.load_model(GPT2, concurrency=2, expiration_seconds=300)
        assert (loading.state, loading.provider_status, loading.concurrency) == (
            InstanceState.LOADING,
            "started",
            2,
        )
        assert provider.instance_status(GPT2).state is InstanceState.RUNNING
        assert [i.model for i in provider.list_instances()] == [GPT2]
        provider.shutdown_model(GPT2)
    assert seen == [
        ("POST", "/model/job", {"model": GPT2}),
        (
            "POST",
            "/model/load",
            {"model": GPT2, "concurrency": 2, "expirationPeriodSeconds": 300},
        ),
        ("POST", "/model/status", {"model": GPT2}),
        ("GET", "/model/instances", None),
        ("POST", "/model/delete", {"model": GPT2}),
    ]


# -- against the simulator ----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def running_sim(clock: Clock) -> Any:
    # One server for the module: stopping one takes half a second.
    with BytezSimulator(
        load_seconds=5, request_seconds=10, stream_chunk_delay=0.001, clock=clock
    ) as sim:
        yield sim


@pytest.fixture
def sim(running_sim: BytezSimulator, clock: Clock) -> BytezSimulator:
    clock.now = 1000.0
    running_sim.instances.clear()
    running_sim.job_requests.clear()
    running_sim.faults.clear()
    running_sim.requests.clear()
    return running_sim


@pytest.fixture
def bytez(sim: BytezSimulator) -> Any:
    with BytezProvider(secret=sim.token, base_url=sim.base_url) as provider:
        yield provider


def test_catalog(sim: BytezSimulator, bytez: BytezProvider) -> None:
    models = bytez.list_models()
    assert len(models) == 50 and models[0].name == GPT2
    assert len({m.name for m in models}) == 50
    assert any(m.required_ram_gb is None for m in models)
    assert {m.benchmarked for m in models} == {True, False}
    assert sim.count("GET /model/list") == 1


def test_full_lifecycle(sim: BytezSimulator, bytez: BytezProvider, clock: Clock) -> None:
    first = bytez.request_model(GPT2)
    assert first.state is InstanceState.REQUESTED and not model_available(first)
    assert bytez.request_model(GPT2).message == "Model is already queued"
    clock.now += 10
    assert model_available(bytez.request_model(GPT2))

    loading = bytez.load_model(GPT2, expiration_seconds=120)
    assert (loading.state, loading.provider_status) == (InstanceState.LOADING, "started")
    assert bytez.instance_status(GPT2).provider_status == "LOADING"
    with pytest.raises(ProviderError) as info:
        bytez.run(spec(), [0])
    assert info.value.kind is ErrorKind.NOT_FOUND and "load it first" in info.value.message

    clock.now += 5
    running = bytez.instance_status(GPT2)
    assert (running.state, running.inferences, running.expiration_seconds) == (
        InstanceState.RUNNING,
        0,
        120,
    )
    assert running.expires_at is not None and running.expires_at.tzinfo is not None

    expected = completion_text(GPT2, "Once upon a time")
    assert bytez.run(spec(), [0]) == [expected]
    got: list[str] = []
    assert bytez.run(spec(stream=True), [0], lambda i, t: got.append(t)) == [expected]
    assert len(got) > 1 and "".join(got) == expected
    assert bytez.run(spec(max_tokens=2), [0]) == [completion_text(GPT2, "Once upon a time", 2)]
    assert bytez.instance_status(GPT2).inferences == 3
    assert [i.model for i in bytez.list_instances()] == [GPT2]

    clock.now += 100  # a run resets the expiration period...
    assert bytez.run(spec(), [0]) == [expected]
    clock.now += 100
    assert bytez.instance_status(GPT2).state is InstanceState.RUNNING
    clock.now += 21  # ...and without one the instance is gone
    with pytest.raises(ProviderError) as info:
        bytez.instance_status(GPT2)
    assert info.value.kind is ErrorKind.NOT_FOUND
    assert bytez.list_instances() == [] and sim.instances == {}


def test_shutdown(sim: BytezSimulator, bytez: BytezProvider, clock: Clock) -> None:
    bytez.load_model(GPT2, concurrency=2)
    assert sim.instances[GPT2].concurrency == 2
    assert sim.instances[GPT2].expiration == 1800
    bytez.shutdown_model(GPT2)
    assert sim.instances == {}
    with pytest.raises(ProviderError) as info:
        bytez.shutdown_model(GPT2)
    assert info.value.kind is ErrorKind.NOT_FOUND
    assert sim.count("POST /model/delete") == 2


def test_wrong_key_and_injected_faults(sim: BytezSimulator) -> None:
    with (
        BytezProvider(secret="wrong", base_url=sim.base_url) as provider,
        pytest.raises(ProviderError) as info,
    ):
        provider.list_instances()
    assert info.value.kind is ErrorKind.AUTH

    sim.add_fault(status=429, headers={"Retry-After": "3"}, path="/model/run")
    with (
        BytezProvider(secret=sim.token, base_url=sim.base_url) as provider,
        pytest.raises(ProviderError) as info,
    ):
        provider.run(spec(stream=True), [0])
    assert info.value.kind is ErrorKind.RATE_LIMIT and info.value.retry_after == 3.0


def test_real_clock_lifecycle() -> None:
    with (
        BytezSimulator(load_seconds=0.05, request_seconds=0.05, stream_chunk_delay=0.001) as sim,
        BytezProvider(secret=sim.token, base_url=sim.base_url) as provider,
    ):
        assert not model_available(provider.request_model(GPT2))
        time.sleep(0.06)
        assert model_available(provider.request_model(GPT2))
        assert provider.load_model(GPT2).state is InstanceState.LOADING
        time.sleep(0.06)
        assert provider.instance_status(GPT2).state is InstanceState.RUNNING
        chunks: list[str] = []
        (text,) = provider.run(spec(stream=True), [0], lambda i, t: chunks.append(t))
        assert text == completion_text(GPT2, "Once upon a time") == "".join(chunks)
        assert sim.instances[GPT2].inferences == 1
