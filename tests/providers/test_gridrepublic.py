"""GridRepublic adapter: pure translation tables, HTTP edge cases, and the simulator."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from providers.base import ErrorKind, JobSpec, ProviderError, RemoteState, RemoteStatus, SpecError
from providers.gridrepublic import (
    APP,
    GridRepublicProvider,
    build_request,
    parse_jobs,
    parse_status,
    parse_submit,
    status_path,
)
from providers.simulators.base import DEFAULT_TOKEN, completion_text
from providers.simulators.gridrepublic import GridRepublicSimulator

MODEL = "gemma:2b"
Q, R, C, F = RemoteState.QUEUED, RemoteState.RUNNING, RemoteState.COMPLETED, RemoteState.FAILED


def spec(prompts: list[str] | None = None, **kwargs: Any) -> JobSpec:
    return JobSpec(model=MODEL, prompts=prompts or ["When does 1+1=10?"], **kwargs)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- build_request / validate -----------------------------------------------------


@pytest.mark.parametrize(
    "prompt", ["When does 1+1=10?", 'say "hi"', "line\nbreak", "ünïcode ✓", "[[fail]]"]
)
def test_build_request(prompt: str) -> None:
    body = build_request(spec([prompt]), prompt)
    assert body == {"app": APP, "commandLine": body["commandLine"], "tag": MODEL}
    assert json.loads(body["commandLine"]) == {"inputs": [prompt]}


def test_units_and_metadata() -> None:
    provider = GridRepublicProvider(secret="k")
    assert provider.units(spec(["a", "b", "c"])) == [[0], [1], [2]]
    assert provider.base_url == "https://api.gridrepublic.services"
    assert (provider.kind, provider.poll_batch_size, provider.supported_fields) == (
        "async",
        50,
        frozenset(),
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("question", "Q?"), ("system_prompt", "Be brief."), ("output_schema", {"a": "str"})],
)
def test_validate_refuses_what_a_bare_prompt_cannot_carry(field: str, value: Any) -> None:
    with pytest.raises(SpecError) as info:
        GridRepublicProvider(secret="k").validate(spec(**{field: value}))
    assert info.value.field_name == field


def test_validate_accepts_model_and_prompts() -> None:
    GridRepublicProvider(secret="k").validate(spec(["a", "b"]))


def test_status_path_keeps_commas_literal() -> None:
    assert status_path(["a1", "b2", "c/3"]) == "/remotejobs/v2/jobs/a1,b2,c%2F3"


# -- parse_submit -------------------------------------------------------------------


def test_parse_submit_first_id() -> None:
    assert parse_submit({"success": True, "ids": ["a9ab", "other"]}) == "a9ab"


@pytest.mark.parametrize(
    ("body", "kind", "text"),
    [
        ({"success": False, "error": "Invalid input format"}, ErrorKind.REJECTED, "Invalid input"),
        ({"success": False}, ErrorKind.REJECTED, "no reason"),
        ({"success": True, "ids": []}, ErrorKind.PROTOCOL, "without job ids"),
        ({"success": True}, ErrorKind.PROTOCOL, "without job ids"),
        ({"success": True, "ids": [7]}, ErrorKind.PROTOCOL, "without job ids"),
        ({"ids": ["x"]}, ErrorKind.PROTOCOL, "without job ids"),
    ],
)
def test_parse_submit_errors(body: dict, kind: ErrorKind, text: str) -> None:
    with pytest.raises(ProviderError) as info:
        parse_submit(body)
    assert info.value.kind is kind
    assert text in info.value.message


# -- parse_status -------------------------------------------------------------------

WORDS = [
    *[(w, C) for w in ("finished", "completed", "complete", "done", "success", "succeeded")],
    ("exited", C),
    *[(w, F) for w in ("failed", "error", "aborted", "killed", "cancelled", "canceled")],
    *[(w, Q) for w in ("queued", "pending", "created")],
    ("starting", R),
    ("running", R),
    ("hibernating", R),
]


def entry(status: str | None = None, vm: str | None = None, log: Any = "out") -> dict:
    default: dict[str, Any] = {"outputFiles": [], "log": log, "app": APP}
    if status is not None:
        default["status"] = status
    body: dict[str, Any] = {"states": {"default": default}, "copy": 0, "tag": MODEL}
    if vm is not None:
        body["vmStatus"] = vm
    return body


@pytest.mark.parametrize(("word", "state"), WORDS + [(w.upper(), s) for w, s in WORDS])
def test_parse_status_words(word: str, state: RemoteState) -> None:
    status = parse_status("j", entry(word, vm="running"))
    assert (status.state, status.provider_status, status.log) == (state, word, "out")
    assert status.outputs == (["out"] if state is C else None)
    assert bool(status.error) == (state is F)


@pytest.mark.parametrize(("word", "state"), WORDS)
def test_parse_status_vm_status_fallback(word: str, state: RemoteState) -> None:
    status = parse_status("j", {"vmStatus": word})
    assert (status.state, status.provider_status, status.log) == (state, word, None)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (entry("running", log="1+1=2. When"), RemoteStatus("j", R, "running", log="1+1=2. When")),
        (entry("", vm="Queued", log=""), RemoteStatus("j", Q, "Queued", log="")),
        (entry("Done", log="all"), RemoteStatus("j", C, "Done", outputs=["all"], log="all")),
        (
            entry("failed", log="partial\nTraceback: boom\n"),
            RemoteStatus(
                "j",
                F,
                "failed",
                log="partial\nTraceback: boom\n",
                error="GridRepublic reported the job failed: Traceback: boom",
            ),
        ),
        (
            {**entry("killed", log=""), "error": "out of memory"},
            RemoteStatus(
                "j",
                F,
                "killed",
                log="",
                error="GridRepublic reported the job killed: out of memory",
            ),
        ),
        (
            entry("error", log=None),
            RemoteStatus("j", F, "error", error="GridRepublic reported the job error"),
        ),
    ],
    ids=[
        "running-log",
        "vm-fallback-on-blank",
        "completed",
        "failed-last-line",
        "failed-error",
        "failed-bare",
    ],
)
def test_parse_status_shapes(body: dict, expected: RemoteStatus) -> None:
    assert parse_status("j", body) == expected


def test_parse_status_completed_without_log_keeps_raw() -> None:
    body = entry("finished", log=None)
    status = parse_status("j", body)
    assert (status.state, status.outputs, status.raw_result) == (C, None, body)


@pytest.mark.parametrize("body", [{}, {"states": "x"}, entry(None), entry(None, vm="")])
def test_parse_status_without_word(body: dict) -> None:
    with pytest.raises(ValueError, match="vmStatus"):
        parse_status("j", body)


def test_parse_jobs_slots() -> None:
    body = {
        "success": True,
        "jobs": {
            "ok": entry("running"),
            "bad": {"success": False, "error": "unknown job"},
            "odd": ["not", "an", "object"],
            "mute": {"copy": 0},
        },
    }
    result = parse_jobs(body, ["ok", "bad", "odd", "mute", "missing"])
    assert result["ok"] == RemoteStatus("ok", R, "running", log="out")
    kinds = {k: v.kind for k, v in result.items() if isinstance(v, ProviderError)}
    assert kinds == {
        "bad": ErrorKind.NOT_FOUND,
        "odd": ErrorKind.PROTOCOL,
        "mute": ErrorKind.PROTOCOL,
        "missing": ErrorKind.NOT_FOUND,
    }
    assert "unknown job" in str(result["bad"])


def test_parse_jobs_without_jobs() -> None:
    with pytest.raises(ValueError, match="jobs"):
        parse_jobs({"success": True}, ["a"])


# -- HTTP edge cases (MockTransport) ----------------------------------------------

Handler = Callable[[httpx.Request], httpx.Response]


def mock_provider(handler: Handler) -> GridRepublicProvider:
    return GridRepublicProvider(
        secret="tok", base_url="https://gr.test", transport=httpx.MockTransport(handler)
    )


def ids_of(request: httpx.Request) -> list[str]:
    return request.url.path.rsplit("/", 1)[1].split(",")


def jobs_answer(ids: list[str], unknown: frozenset[str] = frozenset()) -> httpx.Response:
    jobs = {
        i: {"success": False, "error": "unknown job"} if i in unknown else entry("running", log=i)
        for i in ids
    }
    return httpx.Response(200, json={"success": True, "jobs": jobs})


def test_submit_request_shape() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"success": True, "ids": ["a9ab011455bb6aeb"]})

    job = spec(["first", "When does 1+1=10?"])
    assert mock_provider(handler).submit(job, [1]) == "a9ab011455bb6aeb"
    (request,) = seen
    assert (request.method, request.url.path) == ("POST", "/remotejobs/v2/jobs")
    assert request.headers["authorization"] == "Bearer tok"
    assert json.loads(request.content) == build_request(job, "When does 1+1=10?")


@pytest.mark.parametrize(
    ("response", "kind", "text"),
    [
        (
            httpx.Response(400, json={"success": False, "error": "Invalid input format"}),
            ErrorKind.REJECTED,
            "Invalid input format",
        ),
        (httpx.Response(200, json={"success": False, "error": "Nope"}), ErrorKind.REJECTED, "Nope"),
        (httpx.Response(200, text="ok!"), ErrorKind.PROTOCOL, "not JSON"),
        (httpx.Response(401, json={"success": False}), ErrorKind.AUTH, "authentication"),
        (httpx.Response(503, text="down"), ErrorKind.SERVER, "503"),
    ],
)
def test_submit_errors(response: httpx.Response, kind: ErrorKind, text: str) -> None:
    with pytest.raises(ProviderError) as info:
        mock_provider(lambda request: response).submit(spec(), [0])
    assert info.value.kind is kind
    assert text in info.value.message


def test_submit_429_retry_after() -> None:
    provider = mock_provider(lambda r: httpx.Response(429, headers={"Retry-After": "12"}))
    with pytest.raises(ProviderError) as info:
        provider.submit(spec(), [0])
    assert (info.value.kind, info.value.retry_after) == (ErrorKind.RATE_LIMIT, 12.0)


def test_poll_batches_of_fifty_with_commas() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return jobs_answer(ids_of(request))

    ids = [f"job{i:03d}" for i in range(120)]
    result = mock_provider(handler).poll(ids + ids[:3])
    assert [len(ids_of(r)) for r in seen] == [50, 50, 20]
    assert seen[0].url.raw_path.decode() == "/remotejobs/v2/jobs/" + ",".join(ids[:50])
    assert list(result) == ids
    assert all(isinstance(s, RemoteStatus) and s.log == i for i, s in result.items())


def test_poll_unknown_entry_does_not_stall_others() -> None:
    requests: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(ids_of(request))
        return jobs_answer(ids_of(request), unknown=frozenset({"bad"}))

    result = mock_provider(handler).poll(["a", "bad", "b"])
    assert requests == [["a", "bad", "b"]]
    assert isinstance(result["bad"], ProviderError) and result["bad"].kind is ErrorKind.NOT_FOUND
    assert isinstance(result["a"], RemoteStatus) and isinstance(result["b"], RemoteStatus)


@pytest.mark.parametrize(
    "refusal",
    [
        httpx.Response(404, json={"success": False, "error": "Job not found"}),
        httpx.Response(400, json={"success": False, "error": "Bad id"}),
        httpx.Response(200, json={"success": False, "error": "Job not found"}),
    ],
    ids=["404", "400", "success-false"],
)
def test_poll_whole_batch_refused_falls_back_to_each_id(refusal: httpx.Response) -> None:
    requests: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        ids = ids_of(request)
        requests.append(ids)
        return refusal if "bad" in ids else jobs_answer(ids)

    result = mock_provider(handler).poll(["a", "bad", "b"])
    assert requests == [["a", "bad", "b"], ["a"], ["bad"], ["b"]]
    assert result["a"] == RemoteStatus("a", R, "running", log="a")
    assert result["b"] == RemoteStatus("b", R, "running", log="b")
    bad = result["bad"]
    assert isinstance(bad, ProviderError) and bad.kind is ErrorKind.NOT_FOUND
    assert "bad" in bad.message


@pytest.mark.parametrize(
    ("response", "kind", "retry_after"),
    [
        (httpx.Response(500, text="oops"), ErrorKind.SERVER, None),
        (httpx.Response(429, headers={"Retry-After": "3"}), ErrorKind.RATE_LIMIT, 3.0),
        (httpx.Response(403, json={}), ErrorKind.AUTH, None),
        (httpx.Response(200, text="<html>"), ErrorKind.PROTOCOL, None),
        (httpx.Response(200, json={"success": True}), ErrorKind.PROTOCOL, None),
    ],
)
def test_poll_batch_failure_goes_in_every_slot(
    response: httpx.Response, kind: ErrorKind, retry_after: float | None
) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return response

    result = mock_provider(handler).poll(["a", "b"])
    assert len(calls) == 1
    for slot in result.values():
        assert isinstance(slot, ProviderError)
        assert (slot.kind, slot.retry_after) == (kind, retry_after)


def test_poll_timeout_goes_in_every_slot() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    result = mock_provider(handler).poll(["a", "b"])
    assert {k: v.kind for k, v in result.items() if isinstance(v, ProviderError)} == {
        "a": ErrorKind.TIMEOUT,
        "b": ErrorKind.TIMEOUT,
    }


# -- against the simulator ---------------------------------------------------------


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[GridRepublicSimulator]:
    # One server for the module keeps the file fast; `sim` resets it per test.
    with GridRepublicSimulator() as sim:
        yield sim


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(shared_sim: GridRepublicSimulator, clock: FakeClock) -> GridRepublicSimulator:
    shared_sim.reset()
    shared_sim.clock, shared_sim.step_seconds = clock, 1.0
    return shared_sim


@pytest.fixture
def provider(sim: GridRepublicSimulator) -> Iterator[GridRepublicProvider]:
    with GridRepublicProvider(secret=DEFAULT_TOKEN, base_url=sim.base_url) as provider:
        yield provider


def poll_one(provider: GridRepublicProvider, remote_id: str) -> RemoteStatus:
    status = provider.poll([remote_id])[remote_id]
    assert isinstance(status, RemoteStatus), status
    return status


def test_simulator_lifecycle_and_growing_log(
    sim: GridRepublicSimulator, clock: FakeClock, provider: GridRepublicProvider
) -> None:
    prompt = "When does 1+1=10?"
    remote_id = provider.submit(spec([prompt]), [0])
    seen = [poll_one(provider, remote_id)]
    for _ in range(6):
        clock.advance(0.5)
        seen.append(poll_one(provider, remote_id))
    final = completion_text(MODEL, prompt)
    assert sim.submissions == 1
    assert [s.provider_status for s in seen] == ["queued"] * 2 + ["running"] * 4 + ["finished"]
    logs = [s.log or "" for s in seen]
    running = {len(log) for s, log in zip(seen, logs, strict=True) if s.state is R}
    assert len(running) >= 2 and max(running) < len(final)
    assert all(final.startswith(log) for log in logs)
    assert logs == sorted(logs, key=len)
    assert seen[-1].outputs == [final] and seen[-1].state is C


def test_simulator_real_time() -> None:
    with (
        GridRepublicSimulator(step_seconds=0.02) as sim,
        GridRepublicProvider(secret=DEFAULT_TOKEN, base_url=sim.base_url) as provider,
    ):
        ids = [provider.submit(spec(["a", "b"]), [i]) for i in (0, 1)]
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            result = provider.poll(ids)
            if all(isinstance(s, RemoteStatus) and s.state.terminal for s in result.values()):
                break
            time.sleep(0.01)
        assert sim.submissions == 2
    assert [s.outputs for s in result.values() if isinstance(s, RemoteStatus)] == [
        [completion_text(MODEL, "a")],
        [completion_text(MODEL, "b")],
    ]


def test_simulator_poll_of_fifty_is_one_request(
    sim: GridRepublicSimulator, provider: GridRepublicProvider
) -> None:
    sim.step_seconds = 0
    prompts = [f"prompt {i}" for i in range(50)]
    job = spec(prompts)
    ids = [provider.submit(job, [i]) for i in range(50)]
    result = provider.poll(ids)
    assert sim.status_requests == 1 and sim.submissions == 50
    assert [s.outputs for s in result.values() if isinstance(s, RemoteStatus)] == [
        [completion_text(MODEL, p)] for p in prompts
    ]
    assert set(sim.max_overlap) == set(ids)


def test_simulator_failure(sim: GridRepublicSimulator, provider: GridRepublicProvider) -> None:
    sim.step_seconds = 0
    remote_id = provider.submit(spec(["boom [[fail]]"]), [0])
    status = poll_one(provider, remote_id)
    assert (status.state, status.provider_status) == (F, "failed")
    assert status.log is not None and status.log.endswith("simulated [[fail]])")
    assert "inference failed" in status.error


def test_simulator_unknown_ids(sim: GridRepublicSimulator, provider: GridRepublicProvider) -> None:
    good = provider.submit(spec(), [0])
    result = provider.poll([good, "nope"])
    assert isinstance(result[good], RemoteStatus) and result[good].state is Q
    assert isinstance(result["nope"], ProviderError)
    assert result["nope"].kind is ErrorKind.NOT_FOUND
    assert sim.status_requests == 1
    alone = provider.poll(["nope", "gone"])
    assert {k: v.kind for k, v in alone.items() if isinstance(v, ProviderError)} == {
        "nope": ErrorKind.NOT_FOUND,
        "gone": ErrorKind.NOT_FOUND,
    }
    assert sim.running_ids() == []


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"app": APP, "commandLine": "not json", "tag": MODEL}, "Invalid input format"),
        ({"app": APP, "commandLine": '{"prompt": "x"}', "tag": MODEL}, "Invalid input format"),
        ({"app": APP, "commandLine": '{"inputs": []}', "tag": MODEL}, "Invalid input format"),
        ({"app": APP, "commandLine": '{"inputs": ["x"]}'}, "Missing tag"),
        ({"app": "other", "commandLine": '{"inputs": ["x"]}', "tag": MODEL}, "Unknown app"),
    ],
)
def test_simulator_validates_body(sim: GridRepublicSimulator, body: dict, error: str) -> None:
    response = httpx.post(
        f"{sim.base_url}/remotejobs/v2/jobs",
        headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"},
        json=body,
    )
    assert (response.status_code, response.json()) == (400, {"success": False, "error": error})
    assert sim.submissions == 0


def test_simulator_auth_and_fault(
    sim: GridRepublicSimulator, provider: GridRepublicProvider
) -> None:
    with (
        GridRepublicProvider(secret="wrong", base_url=sim.base_url) as intruder,
        pytest.raises(ProviderError) as info,
    ):
        intruder.submit(spec(), [0])
    assert info.value.kind is ErrorKind.AUTH
    remote_id = provider.submit(spec(), [0])
    sim.add_fault(status=502, method="GET")
    result = provider.poll([remote_id])
    assert isinstance(result[remote_id], ProviderError)
    assert result[remote_id].kind is ErrorKind.SERVER
    assert isinstance(provider.poll([remote_id])[remote_id], RemoteStatus)
