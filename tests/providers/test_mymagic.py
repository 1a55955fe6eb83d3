"""MyMagic adapter: pure translation tables, HTTP edge cases, and the simulator."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from providers.base import ErrorKind, JobSpec, ProviderError, RemoteState, RemoteStatus, SpecError
from providers.mymagic import (
    QUESTION_REQUIRED,
    MyMagicProvider,
    build_request,
    parse_result,
    parse_status,
    to_json_schema,
)
from providers.simulators.base import DEFAULT_TOKEN, completion_text
from providers.simulators.mymagic import MyMagicSimulator

MODEL = "llama3_70b"


def spec(**kwargs: Any) -> JobSpec:
    values: dict[str, Any] = {"model": MODEL, "prompts": ["a", "b"], "question": "Q?"}
    values.update(kwargs)
    return JobSpec(**values)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- build_request ----------------------------------------------------------------

BASE = {"model": MODEL, "question": "Q?", "list_inputs": ["a", "b"], "return_output": True}
STORAGE = {"storage_provider": "s3", "bucket_name": "bkt", "session": "s1", "region": "eu-west-2"}


@pytest.mark.parametrize(
    ("job", "credential", "indexes", "extra"),
    [
        pytest.param({}, {}, None, {}, id="minimal"),
        pytest.param(
            {"system_prompt": "Be brief.", "max_tokens": 5},
            {},
            None,
            {"system_prompt": "Be brief.", "max_tokens": 5},
            id="system-and-max-tokens",
        ),
        pytest.param({}, STORAGE, None, STORAGE, id="credential-storage"),
        pytest.param(
            {"options": {"bucket_name": "job-bkt", "return_output": "false"}},
            {**STORAGE, "return_output": True},
            None,
            {**STORAGE, "bucket_name": "job-bkt", "return_output": False},
            id="job-options-win",
        ),
        pytest.param(
            {"options": {"region": "", "bucket_name": None}},
            {"region": "us-east-1", "bucket_name": "b"},
            None,
            {"region": "us-east-1", "bucket_name": "b"},
            id="blank-job-option-keeps-credential",
        ),
        pytest.param(
            {"options": {"input_json_file": "in.json", "role_arn": "arn:aws:iam::1:role/r"}},
            {"return_output": False},
            None,
            {
                "input_json_file": "in.json",
                "role_arn": "arn:aws:iam::1:role/r",
                "return_output": False,
            },
            id="input-file-role",
        ),
        pytest.param({"options": {"temperature": 3}}, {}, None, {}, id="foreign-option-ignored"),
        pytest.param({}, {}, [1], {"list_inputs": ["b"]}, id="indexes"),
        pytest.param({"max_tokens": 0}, {}, None, {"max_tokens": 0}, id="max-tokens-zero-is-set"),
        pytest.param({"output_schema": {}}, {}, None, {}, id="empty-schema-not-sent"),
    ],
)
def test_build_request(job: dict, credential: dict, indexes: list[int] | None, extra: dict) -> None:
    assert build_request(spec(**job), indexes, credential) == {**BASE, **extra}


OBJECT_SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        pytest.param(OBJECT_SCHEMA, OBJECT_SCHEMA, id="json-schema"),
        pytest.param({"type": "string"}, {"type": "string"}, id="json-schema-scalar"),
        pytest.param({"properties": {"a": {}}}, {"properties": {"a": {}}}, id="properties-only"),
        pytest.param(
            {"name": "str", "age": "int", "score": "float", "ok": "bool"},
            {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "age": {"type": "integer"},
                    "score": {"type": "number"},
                    "ok": {"type": "boolean"},
                },
                "required": ["name", "age", "score", "ok"],
            },
            id="flat-map",
        ),
        pytest.param(
            {"type": "str", "label": "string"},
            {
                "type": "object",
                "properties": {"type": {"type": "string"}, "label": {"type": "string"}},
                "required": ["type", "label"],
            },
            id="flat-map-with-field-named-type",
        ),
    ],
)
def test_to_json_schema(schema: dict, expected: dict) -> None:
    assert to_json_schema(schema) == expected


@pytest.mark.parametrize(
    "schema",
    [{"a": "date"}, {"a": 3}, {}, ["str"], "str"],
    ids=["unknown-type", "non-text-type", "empty", "list", "string"],
)
def test_to_json_schema_refuses(schema: Any) -> None:
    with pytest.raises(SpecError) as info:
        to_json_schema(schema)
    assert info.value.field_name == "output_schema"
    assert "str, int, float" in info.value.message


def test_structured_output_is_a_json_string() -> None:
    body = build_request(spec(output_schema={"n": "int"}))
    assert json.loads(body["structured_output"])["properties"] == {"n": {"type": "integer"}}


@pytest.mark.parametrize("question", ["", "   "])
def test_question_required(question: str) -> None:
    provider = MyMagicProvider(secret="k")
    with pytest.raises(SpecError) as info:
        provider.validate(spec(question=question))
    assert info.value.message == QUESTION_REQUIRED
    assert info.value.field_name == "question"
    assert info.value.kind is ErrorKind.INVALID_SPEC


def test_bad_return_output_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="return_output"):
        build_request(spec(options={"return_output": "maybe"}))


def test_units_and_metadata() -> None:
    provider = MyMagicProvider(secret="k")
    assert provider.units(spec(prompts=["a", "b", "c"])) == [[0, 1, 2]]
    assert provider.base_url == "https://fastapi.mymagic.ai"
    assert provider.kind == "async" and provider.poll_batch_size == 1
    assert set(provider.documented_models) == {
        "llama3_70b",
        "llama2_70b",
        "llama2_7b",
        "codellama_70b",
        "mixtral_8x7",
        "mistral_7b",
    }
    assert "bucket_name" in provider.option_names


# -- parse_status -------------------------------------------------------------------

Q, R, C, F = RemoteState.QUEUED, RemoteState.RUNNING, RemoteState.COMPLETED, RemoteState.FAILED


@pytest.mark.parametrize(
    ("body", "expected_count", "state", "outputs", "raw", "cold"),
    [
        ({"status": "Queued"}, None, Q, None, None, False),
        ({"status": "Processing"}, None, R, None, None, False),
        ({"status": "Waiting for instance"}, None, Q, None, None, True),
        ({"status": "waiting  FOR instance"}, None, Q, None, None, True),
        ({"status": "Frobnicating"}, None, R, None, None, False),
        ({"status": "Completed", "result": ["x", "y"]}, 2, C, ["x", "y"], None, False),
        ({"status": "completed", "result": ["x", "y"]}, None, C, ["x", "y"], None, False),
        ({"status": "Completed", "result": {"outputs": ["x"]}}, 1, C, ["x"], None, False),
        ({"status": "Completed", "result": {"output": ["x"]}}, 1, C, ["x"], None, False),
        ({"status": "Completed", "result": {"results": ["x"]}}, 1, C, ["x"], None, False),
        ({"status": "Completed", "result": {"responses": ["x"]}}, 1, C, ["x"], None, False),
        ({"status": "Completed", "result": "only"}, 1, C, ["only"], None, False),
        ({"status": "Completed", "result": "only"}, None, C, ["only"], None, False),
        ({"status": "Completed", "result": "only"}, 2, C, None, "only", False),
        ({"status": "Completed", "result": ["x"]}, 2, C, None, ["x"], False),
        ({"status": "Completed", "result": {"foo": 1}}, 1, C, None, {"foo": 1}, False),
        ({"status": "Completed", "result": 42}, 1, C, None, 42, False),
        ({"status": "Completed", "result": []}, None, C, None, [], False),
        ({"status": "Completed"}, 1, C, None, None, False),
        (
            {"status": "Completed", "result": ['{"n": 1}', {"n": 2}]},
            2,
            C,
            ['{"n": 1}', {"n": 2}],
            None,
            False,
        ),
    ],
)
def test_parse_status(
    body: dict, expected_count: int | None, state: RemoteState, outputs: Any, raw: Any, cold: bool
) -> None:
    status = parse_status("j1", body, expected_count)
    assert status == RemoteStatus(
        "j1", state, body["status"], outputs=outputs, raw_result=raw, cold_start=cold
    )


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"status": "Error", "error": "CUDA out of memory"}, "CUDA out of memory"),
        ({"status": "ERROR"}, "MyMagic reported an error without a message."),
    ],
)
def test_parse_status_error(body: dict, error: str) -> None:
    status = parse_status("j1", body)
    assert (status.state, status.provider_status, status.error) == (F, body["status"], error)


@pytest.mark.parametrize("body", [{}, {"status": ""}, {"status": 3}])
def test_parse_status_without_word(body: dict) -> None:
    with pytest.raises(ValueError, match="status"):
        parse_status("j1", body)


def test_parse_result_prefers_first_known_key() -> None:
    assert parse_result({"outputs": ["a"], "results": ["b"]}, 1) == ["a"]


# -- HTTP edge cases (MockTransport) ----------------------------------------------

Handler = Callable[[httpx.Request], httpx.Response]


def mock_provider(handler: Handler, **kwargs: Any) -> MyMagicProvider:
    return MyMagicProvider(
        secret="tok", base_url="https://mm.test", transport=httpx.MockTransport(handler), **kwargs
    )


def test_submit_request_shape() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "Submitted", "job_id": "abc"})

    provider = mock_provider(handler, options={"bucket_name": "b"})
    assert provider.submit(spec(max_tokens=7), [0, 1]) == "abc"
    (request,) = seen
    assert (request.method, request.url.path) == ("POST", "/v1/completions")
    assert request.headers["authorization"] == "Bearer tok"
    assert json.loads(request.content) == {**BASE, "max_tokens": 7, "bucket_name": "b"}


@pytest.mark.parametrize(
    ("body", "remote_id"),
    [
        ({"status": "Submitted", "job_id": "j"}, "j"),
        ({"task_id": "t"}, "t"),
        ({"job_id": 12}, "12"),
    ],
)
def test_submit_accepts_job_id_or_task_id(body: dict, remote_id: str) -> None:
    provider = mock_provider(lambda request: httpx.Response(200, json=body))
    assert provider.submit(spec(), [0, 1]) == remote_id


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (httpx.Response(200, json={"status": "Submitted"}), ErrorKind.PROTOCOL),
        (httpx.Response(200, json=["job"]), ErrorKind.PROTOCOL),
        (httpx.Response(200, text="<html>oops</html>"), ErrorKind.PROTOCOL),
        (httpx.Response(500, json={"detail": "boom"}), ErrorKind.SERVER),
        (httpx.Response(400, json={"status": "Error", "error": "bad"}), ErrorKind.REJECTED),
    ],
)
def test_submit_errors(response: httpx.Response, kind: ErrorKind) -> None:
    provider = mock_provider(lambda request: response)
    with pytest.raises(ProviderError) as info:
        provider.submit(spec(), [0, 1])
    assert info.value.kind is kind


def test_submit_401_is_auth() -> None:
    provider = mock_provider(lambda request: httpx.Response(401, json={"detail": "bad token"}))
    with pytest.raises(ProviderError) as info:
        provider.submit(spec(), [0, 1])
    assert info.value.kind is ErrorKind.AUTH
    assert "authentication" in info.value.message


def test_submit_429_retry_after() -> None:
    provider = mock_provider(
        lambda request: httpx.Response(429, headers={"Retry-After": "7"}, json={})
    )
    with pytest.raises(ProviderError) as info:
        provider.submit(spec(), [0, 1])
    assert (info.value.kind, info.value.retry_after) == (ErrorKind.RATE_LIMIT, 7.0)
    assert info.value.created_nothing


def test_submit_refuses_bad_spec_before_any_request() -> None:
    provider = mock_provider(lambda request: pytest.fail("no request expected"))
    with pytest.raises(SpecError):
        provider.submit(spec(question=""), [0, 1])


def test_poll_one_request_per_id_and_bad_id_isolated() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        job_id = request.url.path.rsplit("/", 1)[1]
        if job_id == "gone":
            return httpx.Response(404, json={"detail": "Not Found"})
        if job_id == "sick":
            return httpx.Response(502, text="bad gateway")
        if job_id == "junk":
            return httpx.Response(200, text="not json")
        if job_id == "mute":
            return httpx.Response(200, json={"result": []})
        return httpx.Response(200, json={"status": "Completed", "result": ["out"]})

    provider = mock_provider(handler)
    ids = ["ok1", "gone", "sick", "junk", "mute", "ok2"]
    result = provider.poll(ids)
    assert paths == [f"/v1/job_status/{i}" for i in ids]
    assert list(result) == ids
    kinds = {rid: r.kind for rid, r in result.items() if isinstance(r, ProviderError)}
    assert kinds == {
        "gone": ErrorKind.NOT_FOUND,
        "sick": ErrorKind.SERVER,
        "junk": ErrorKind.PROTOCOL,
        "mute": ErrorKind.PROTOCOL,
    }
    assert result["ok1"] == RemoteStatus("ok1", C, "Completed", outputs=["out"])
    assert result["ok2"] == RemoteStatus("ok2", C, "Completed", outputs=["out"])


def test_poll_with_expected_counts_keeps_wrong_length_raw() -> None:
    body = {"status": "Completed", "result": ["only one"]}
    provider = mock_provider(lambda request: httpx.Response(200, json=body))
    status = provider.poll(["j"], expected={"j": 2})["j"]
    assert isinstance(status, RemoteStatus)
    assert (status.outputs, status.raw_result) == (None, ["only one"])


def test_poll_timeout_goes_in_slot() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    result = mock_provider(handler).poll(["a"])
    assert isinstance(result["a"], ProviderError) and result["a"].kind is ErrorKind.TIMEOUT


# -- against the simulator ---------------------------------------------------------


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[MyMagicSimulator]:
    # One server for the module keeps the file fast; `sim` resets it per test.
    with MyMagicSimulator() as sim:
        yield sim


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(shared_sim: MyMagicSimulator, clock: FakeClock) -> MyMagicSimulator:
    shared_sim.reset()
    shared_sim.clock, shared_sim.step_seconds, shared_sim.legacy_task_id = clock, 1.0, False
    return shared_sim


@pytest.fixture
def provider(sim: MyMagicSimulator) -> Iterator[MyMagicProvider]:
    with run_against(sim) as provider:
        yield provider


def run_against(sim: MyMagicSimulator, **kwargs: Any) -> MyMagicProvider:
    return MyMagicProvider(secret=DEFAULT_TOKEN, base_url=sim.base_url, **kwargs)


def poll_one(provider: MyMagicProvider, remote_id: str) -> RemoteStatus:
    status = provider.poll([remote_id])[remote_id]
    assert isinstance(status, RemoteStatus), status
    return status


def test_simulator_lifecycle_with_fake_clock(
    sim: MyMagicSimulator, clock: FakeClock, provider: MyMagicProvider
) -> None:
    job = spec(prompts=["first", "second"], max_tokens=6)
    remote_id = provider.submit(job, [0, 1])
    seen = [poll_one(provider, remote_id)]
    for _ in range(3):
        clock.advance(1.0)
        seen.append(poll_one(provider, remote_id))
    assert sim.submissions == 1
    assert sim.max_overlap[remote_id] == 1
    assert [s.provider_status for s in seen] == ["Queued", "Processing", "Processing", "Completed"]
    assert [s.state for s in seen] == [Q, R, R, C]
    assert seen[-1].outputs == [completion_text(MODEL, f"Q?\n{p}", 6) for p in job.prompts]


def test_simulator_real_time_and_documented_max_tokens_default() -> None:
    with MyMagicSimulator(step_seconds=0.02) as sim, run_against(sim) as provider:
        remote_id = provider.submit(spec(prompts=["one"]), [0])
        deadline = time.monotonic() + 2.0
        words = []
        while time.monotonic() < deadline:
            status = poll_one(provider, remote_id)
            words.append(status.provider_status)
            if status.state.terminal:
                break
            time.sleep(0.01)
        assert sim.running_ids() == []
    assert status.state is C
    assert "Processing" in words
    # No max_tokens sent: the provider's documented default of 10 applies.
    assert status.outputs == [completion_text(MODEL, "Q?\none", 10)]


def test_simulator_cold_start(sim: MyMagicSimulator, provider: MyMagicProvider) -> None:
    remote_id = provider.submit(spec(question="[[cold]] Q?"), [0, 1])
    status = poll_one(provider, remote_id)
    assert (status.state, status.provider_status, status.cold_start) == (
        Q,
        "Waiting for instance",
        True,
    )


def test_simulator_failure(sim: MyMagicSimulator, provider: MyMagicProvider) -> None:
    sim.step_seconds = 0
    remote_id = provider.submit(spec(prompts=["ok", "bad [[fail]]"]), [0, 1])
    status = poll_one(provider, remote_id)
    assert (status.state, status.provider_status) == (F, "Error")
    assert "input 1" in status.error


def test_simulator_structured_output(sim: MyMagicSimulator, provider: MyMagicProvider) -> None:
    sim.step_seconds = 0
    schema = {"name": "str", "age": "int", "score": "float", "ok": "bool"}
    remote_id = provider.submit(spec(output_schema=schema), [0, 1])
    status = poll_one(provider, remote_id)
    assert status.outputs is not None and len(status.outputs) == 2
    for item in status.outputs:
        assert isinstance(item["name"], str) and isinstance(item["age"], int)
        assert isinstance(item["score"], float) and isinstance(item["ok"], bool)


def test_simulator_legacy_task_id_and_no_return_output(sim: MyMagicSimulator) -> None:
    sim.step_seconds, sim.legacy_task_id = 0, True
    with run_against(sim, options={"return_output": False}) as provider:
        remote_id = provider.submit(spec(), [0, 1])
        status = poll_one(provider, remote_id)
    assert sim.jobs[remote_id].return_output is False
    # Results went to storage: completed, nothing to show.
    assert (status.state, status.outputs, status.raw_result) == (C, None, None)


def test_simulator_running_ids(
    sim: MyMagicSimulator, clock: FakeClock, provider: MyMagicProvider
) -> None:
    remote_id = provider.submit(spec(), [0, 1])
    assert (sim.running_ids(), sim.status_of(remote_id)) == ([], "Queued")
    clock.advance(1.5)
    assert (sim.running_ids(), sim.status_of(remote_id)) == ([remote_id], "Processing")


def test_simulator_validates_body_and_auth(sim: MyMagicSimulator) -> None:
    response = httpx.post(
        f"{sim.base_url}/v1/completions",
        headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"},
        json={"model": MODEL, "list_inputs": ["a"]},
    )
    assert response.status_code == 400
    assert response.json() == {"status": "Error", "error": "'question' is required"}
    with (
        MyMagicProvider(secret="wrong", base_url=sim.base_url) as provider,
        pytest.raises(ProviderError) as info,
    ):
        provider.submit(spec(), [0, 1])
    assert info.value.kind is ErrorKind.AUTH
    assert sim.submissions == 0


def test_simulator_fault_and_unknown_id(sim: MyMagicSimulator, provider: MyMagicProvider) -> None:
    sim.step_seconds = 0
    remote_id = provider.submit(spec(), [0, 1])
    sim.add_fault(status=503, method="GET", path=remote_id)
    result = provider.poll([remote_id, "nope"])
    again = provider.poll([remote_id])
    assert isinstance(result[remote_id], ProviderError)
    assert result[remote_id].kind is ErrorKind.SERVER
    assert isinstance(result["nope"], ProviderError)
    assert result["nope"].kind is ErrorKind.NOT_FOUND
    assert isinstance(again[remote_id], RemoteStatus) and again[remote_id].state is C
