"""Lamini adapter: out_type building (every refusal), request and answer shapes,
error mapping over MockTransport, and batches against the simulator."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from providers.base import ErrorKind, JobSpec, ProviderError, SpecError
from providers.lamini import (
    LaminiProvider,
    build_out_type,
    build_request,
    format_detail,
    parse_response,
)
from providers.simulators.base import completion_text
from providers.simulators.lamini import LaminiSimulator, value

LLAMA = "meta-llama/Llama-2-7b-chat-hf"
CARL = ["How old is Carl, the llama with a hat?", "How old is Paul, the llama with a hat?"]


def spec(**kwargs: Any) -> JobSpec:
    return JobSpec(**{"model": LLAMA, "prompts": ["What is the hottest day?"], **kwargs})


# -- out_type ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "out_type"),
    [
        (None, None),
        ({"age": "int", "units": "str"}, {"age": "int", "units": "str"}),
        ({"Answer": "string"}, {"Answer": "str"}),
        ({"ok": "bool", "p": "float", "n": "Int"}, {"ok": "bool", "p": "float", "n": "int"}),
        ({"type": "str"}, {"type": "str"}),
        (
            {
                "type": "object",
                "properties": {
                    "a": {"type": "string", "description": "why"},
                    "b": {"type": "integer"},
                    "c": {"type": "number"},
                    "d": {"type": "boolean"},
                },
                "required": ["a"],
                "additionalProperties": False,
            },
            {"a": "str", "b": "int", "c": "float", "d": "bool"},
        ),
        ({"properties": {"a": {"type": "string"}}}, {"a": "str"}),
    ],
)
def test_build_out_type(schema: Any, out_type: dict[str, str] | None) -> None:
    assert build_out_type(schema) == out_type


def props(**fields: Any) -> dict[str, Any]:
    return {"type": "object", "properties": fields}


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"age": "integer"}, ["'age'", "'integer' is not one of str, int, float, bool"]),
        ({"tags": "list"}, ["'tags'", "'list'"]),
        ({"n": 3}, ["'n'", "not 3"]),
        ({"n": {"type": "integer"}}, ["'n'", "type map value"]),
        ({}, ["no fields"]),
        (props(), ["no fields"]),
        ({"type": "array", "items": {"type": "string"}}, ["must describe an object"]),
        ({"type": "object"}, ["no 'properties'"]),
        (props(who=props(name={"type": "string"})), ["'who'", "nested objects"]),
        (props(tags={"type": "array", "items": {"type": "string"}}), ["'tags'", "arrays"]),
        (props(mood={"enum": ["happy", "sad"]}), ["'mood'", "'enum'"]),
        (props(mood={"type": "string", "enum": ["happy"]}), ["'mood'", "'enum'"]),
        (props(k={"const": 1}), ["'k'", "'const'"]),
        (props(k={"$ref": "#/defs/x"}), ["'k'", "'$ref'"]),
        (props(k={"anyOf": [{"type": "string"}]}), ["'k'", "'anyOf'"]),
        (props(k={"type": ["string", "null"]}), ["'k'", "union types (string, null)"]),
        (props(k={"type": "null"}), ["'k'", "'null' has no Lamini equivalent"]),
        (props(k={"description": "x"}), ["'k'", "no 'type'"]),
        (props(k="string"), ["'k'", "not an object"]),
        (["age"], ["must be a JSON object"]),
    ],
)
def test_build_out_type_refusals(schema: Any, words: list[str]) -> None:
    with pytest.raises(SpecError) as info:
        build_out_type(schema)
    assert info.value.field_name == "output_schema"
    assert info.value.kind is ErrorKind.INVALID_SPEC
    for word in words:
        assert word in info.value.message


def test_validate_refuses_before_any_request() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    with LaminiProvider(secret="s", transport=httpx.MockTransport(handler)) as provider:
        provider.validate(spec(output_schema={"a": "str"}))
        with pytest.raises(SpecError):
            provider.validate(spec(output_schema=props(a={"type": "array"})))
        with pytest.raises(SpecError):
            provider.validate(spec(model=""))


# -- requests and answers ----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "prompts", "body"),
    [
        ({}, ["p"], {"model_name": LLAMA, "prompt": "p"}),
        ({}, CARL, {"model_name": LLAMA, "prompt": CARL}),
        (
            {"output_schema": {"age": "int", "units": "string"}, "max_tokens": 50},
            CARL,
            {
                "model_name": LLAMA,
                "prompt": CARL,
                "out_type": {"age": "int", "units": "str"},
                "max_tokens": 50,
            },
        ),
    ],
)
def test_build_request(kwargs: dict[str, Any], prompts: list[str], body: dict[str, Any]) -> None:
    assert build_request(spec(**kwargs), prompts) == body


@pytest.mark.parametrize(("count", "sizes"), [(1, [1]), (100, [100]), (250, [100, 100, 50])])
def test_units_chunk_by_100(count: int, sizes: list[int]) -> None:
    with LaminiProvider(secret="s") as provider:
        units = provider.units(spec(prompts=[f"p{i}" for i in range(count)]))
    assert [len(u) for u in units] == sizes
    assert [i for u in units for i in u] == list(range(count))


AGE = {"age": "int", "units": "str"}


@pytest.mark.parametrize(
    ("body", "count", "out_type", "outputs"),
    [
        ("text", 1, None, ["text"]),
        ({"output": "text"}, 1, None, ["text"]),
        (["text"], 1, None, ["text"]),
        (["a", "b"], 2, None, ["a", "b"]),
        ({"units": "years", "age": 10}, 1, AGE, [{"age": 10, "units": "years"}]),
        (
            [{"units": "y", "age": 1, "extra": True}, {"age": 2, "units": "y"}],
            2,
            AGE,
            [{"age": 1, "units": "y", "extra": True}, {"age": 2, "units": "y"}],
        ),
    ],
)
def test_parse_response(body: Any, count: int, out_type: Any, outputs: list[Any]) -> None:
    result = parse_response(body, count, out_type)
    assert result == outputs
    if out_type:
        assert list(result[0])[:2] == ["age", "units"]  # schema order, not the hash's


@pytest.mark.parametrize(
    ("body", "count", "out_type", "words"),
    [
        (["a"], 2, None, "expected 2 answers, got 1"),
        ({"a": 1}, 2, AGE, "expected a list of 2"),
        (3, 1, None, "expected text"),
        ({"age": 1, "units": "y"}, 1, None, "expected text"),
        ("text", 1, AGE, "expected an object"),
        (["a", "b"], 1, None, "expected text"),
    ],
)
def test_parse_response_refusals(body: Any, count: int, out_type: Any, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_response(body, count, out_type)


def test_format_detail() -> None:
    detail = [{"loc": ["body", "prompt"], "msg": "field required"}, {"msg": "bad"}, "x"]
    assert format_detail(detail) == 'prompt: field required; bad; "x"'
    assert format_detail("plain") == "plain"


# -- edge cases over MockTransport ---------------------------------------------------


def mocked(response: httpx.Response, seen: list[httpx.Request] | None = None) -> LaminiProvider:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return response

    return LaminiProvider(secret="l-secret", transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    ("response", "kind", "words"),
    [
        (httpx.Response(401, json={"detail": "Invalid token"}), ErrorKind.AUTH, "authentication"),
        (httpx.Response(429, headers={"Retry-After": "2"}, json={}), ErrorKind.RATE_LIMIT, "429"),
        (httpx.Response(500, json={"detail": "oops"}), ErrorKind.SERVER, "oops"),
        (httpx.Response(503, json={"detail": "busy"}), ErrorKind.SERVER, "busy"),
        (
            httpx.Response(594, json={"detail": "Model not found"}),
            ErrorKind.NOT_FOUND,
            f"Lamini does not know the model {LLAMA}",
        ),
        (httpx.Response(422, json={"detail": "bad out_type"}), ErrorKind.REJECTED, "bad out_type"),
        (
            httpx.Response(422, json={"detail": [{"loc": ["body", "prompt"], "msg": "required"}]}),
            ErrorKind.REJECTED,
            "prompt: required",
        ),
        (httpx.Response(400, json={"detail": "too long"}), ErrorKind.REJECTED, "too long"),
        (httpx.Response(200, text="not json"), ErrorKind.PROTOCOL, "not JSON"),
        (httpx.Response(200, json=["one"]), ErrorKind.PROTOCOL, "expected 2 answers"),
    ],
)
def test_errors(response: httpx.Response, kind: ErrorKind, words: str) -> None:
    with mocked(response) as provider, pytest.raises(ProviderError) as info:
        provider.run(spec(prompts=CARL), [0, 1])
    assert info.value.kind is kind
    assert words in info.value.message
    if kind is ErrorKind.RATE_LIMIT:
        assert info.value.retry_after == 2.0


def test_request_shape_and_bearer() -> None:
    seen: list[httpx.Request] = []
    with mocked(httpx.Response(200, json=[{"age": 1, "units": "y"}] * 2), seen) as provider:
        provider.run(spec(prompts=["x", *CARL], output_schema=AGE), [1, 2])
    (request,) = seen
    assert (request.method, request.url.path) == ("POST", "/v1/completions")
    assert request.headers["Authorization"] == "Bearer l-secret"
    assert json.loads(request.content) == {"model_name": LLAMA, "prompt": CARL, "out_type": AGE}


# -- against the simulator ------------------------------------------------------------


@pytest.fixture(scope="module")
def running_sim() -> Any:
    # One server for the module: stopping one takes half a second.
    with LaminiSimulator() as sim:
        yield sim


@pytest.fixture
def sim(running_sim: LaminiSimulator) -> LaminiSimulator:
    running_sim.requests.clear()
    return running_sim


@pytest.fixture
def lamini(sim: LaminiSimulator) -> Any:
    with LaminiProvider(secret=sim.token, base_url=sim.base_url) as provider:
        yield provider


def test_batch_with_out_type(sim: LaminiSimulator, lamini: LaminiProvider) -> None:
    schema = {"age": "int", "units": "string", "score": "float", "ok": "bool"}
    prompts = [f"How old is llama {i}?" for i in range(3)]
    outputs = lamini.run(spec(prompts=prompts, output_schema=schema), [0, 1, 2])
    kinds = {"age": "int", "units": "str", "score": "float", "ok": "bool"}
    assert outputs == [
        {name: value(LLAMA, p, name, kind, None) for name, kind in kinds.items()} for p in prompts
    ]
    for output in outputs:
        assert [type(output[k]) for k in kinds] == [int, str, float, bool]
    assert sim.count("POST /v1/completions") == 1


def test_json_schema_and_single_prompt(lamini: LaminiProvider) -> None:
    schema = props(answer={"type": "string"}, sure={"type": "boolean"})
    (output,) = lamini.run(spec(output_schema=schema, max_tokens=3), [0])
    assert set(output) == {"answer", "sure"} and isinstance(output["sure"], bool)
    assert output["answer"] == completion_text(LLAMA, "answer: What is the hottest day?", 3).strip()


def test_text_without_out_type(lamini: LaminiProvider) -> None:
    outputs = lamini.run(spec(prompts=CARL), [0, 1])
    assert outputs == [completion_text(LLAMA, p).strip() for p in CARL]


def test_unknown_model_and_wrong_token(sim: LaminiSimulator, lamini: LaminiProvider) -> None:
    with pytest.raises(ProviderError) as info:
        lamini.run(spec(model="unknown/model"), [0])
    assert info.value.kind is ErrorKind.NOT_FOUND
    assert info.value.message == "Lamini does not know the model unknown/model"
    with (
        LaminiProvider(secret="wrong", base_url=sim.base_url) as provider,
        pytest.raises(ProviderError) as info,
    ):
        provider.run(spec(), [0])
    assert info.value.kind is ErrorKind.AUTH and "Invalid token" in info.value.message


def test_simulator_accepts_output_type_and_refuses_bad_bodies(sim: LaminiSimulator) -> None:
    headers = {"Authorization": f"Bearer {sim.token}"}
    url = f"{sim.base_url}/v1/completions"
    ok = httpx.post(
        url, headers=headers, json={"model_name": LLAMA, "prompt": "p", "output_type": {"n": "int"}}
    )
    assert ok.status_code == 200 and isinstance(ok.json()["n"], int)
    for body in (
        {"prompt": "p"},
        {"model_name": LLAMA, "prompt": []},
        {"model_name": LLAMA, "prompt": "p", "out_type": {"n": "list"}},
    ):
        bad = httpx.post(url, headers=headers, json=body)
        assert bad.status_code == 422 and isinstance(bad.json()["detail"], str)
