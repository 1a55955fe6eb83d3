"""Token usage: ``run_items`` beside ``run``, the OpenAI-compatible ``usage``
object (whole and streamed answers), and usage on async poll results."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from providers import ItemResult, JobSpec, RemoteState, RemoteStatus, TokenUsage
from providers.lamini import LaminiProvider
from providers.openai_compat import (
    OpenAIProvider,
    build_request,
    parse_usage,
    read_stream_usage,
    wants_stream_usage,
)
from providers.simulators.base import completion_text
from providers.simulators.lamini import LaminiSimulator
from providers.simulators.openai_compat import OpenAISimulator
from providers.simulators.together import TogetherSimulator
from providers.together import TogetherProvider

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


class Ticks:
    """A clock that moves a quarter of a second each time it is read."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


def usage(prompt: Any, completion: Any) -> dict[str, Any]:
    return {"usage": {"prompt_tokens": prompt, "completion_tokens": completion}}


# -- pure translation -----------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (usage(12, 7), TokenUsage(12, 7)),
        ({"usage": {"prompt_tokens": 3, "total_tokens": 3}}, TokenUsage(3, None)),
        (usage(0, 0), TokenUsage(0, 0)),
        (usage(True, -1), None),
        (usage("12", 7.0), None),
        ({"usage": None}, None),
        ({"usage": "lots"}, None),
        ({}, None),
    ],
)
def test_parse_usage(body: dict[str, Any], expected: TokenUsage | None) -> None:
    assert parse_usage(body) == expected


def event(content: str | None = None, finish: str | None = None, **extra: Any) -> str:
    choices = (
        []
        if content is None and finish is None
        else [
            {
                "index": 0,
                "delta": {} if content is None else {"content": content},
                "finish_reason": finish,
            }
        ]
    )
    return "data: " + json.dumps({"choices": choices, **extra})


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        # OpenAI's include_usage: "usage": null on every chunk, then a chunk without choices
        (
            [
                event("Hi", usage=None),
                "",
                event(finish="stop", usage=None),
                "",
                event(**usage(5, 1)),
                "",
                "data: [DONE]",
                "",
            ],
            TokenUsage(5, 1),
        ),
        # usage on the finishing chunk itself (llama.cpp, Together's v1)
        (
            [event("Hi"), "", event(finish="stop", **usage(4, 2)), "", "data: [DONE]", ""],
            TokenUsage(4, 2),
        ),
        # running totals on every chunk: the last one counts
        (
            [
                event("Hi", **usage(4, 1)),
                "",
                event(" there", "stop", **usage(4, 2)),
                "",
                "data: [DONE]",
            ],
            TokenUsage(4, 2),
        ),
        ([event("Hi"), "", event(finish="stop"), "", "data: [DONE]", ""], None),
    ],
)
def test_read_stream_usage(lines: list[str], expected: TokenUsage | None) -> None:
    text, found = read_stream_usage(lines, lambda chunk: None)
    assert text.startswith("Hi") and found == expected


@pytest.mark.parametrize(
    ("job", "credential", "wanted"),
    [
        ({}, {}, False),
        ({}, {"stream_usage": True}, True),
        ({"stream_usage": False}, {"stream_usage": True}, False),
        ({"stream_usage": "yes"}, {}, True),
        ({"stream_usage": "off"}, {}, False),
        ({"stream_usage": 1}, {}, True),
        ({"stream_usage": "maybe"}, {}, False),
    ],
)
def test_wants_stream_usage(job: dict[str, Any], credential: dict[str, Any], wanted: bool) -> None:
    assert wants_stream_usage(job, credential) is wanted


@pytest.mark.parametrize(("stream", "sent"), [(True, True), (False, False)])
def test_stream_options_only_on_streamed_requests(stream: bool, sent: bool) -> None:
    body = build_request(JobSpec(MODEL, ["p"], stream=stream), "p", include_usage=True)
    assert ("stream_options" in body) is sent
    assert "stream_options" not in build_request(JobSpec(MODEL, ["p"], stream=True), "p")


# -- the adapters over MockTransport ---------------------------------------------


def test_openai_run_items_reports_usage_and_latency_run_still_returns_outputs() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={"choices": [{"index": 0, "message": {"content": "Hello"}}], **usage(9, 1)},
        )

    provider = OpenAIProvider(
        secret="k", base_url="http://h", transport=httpx.MockTransport(handler), clock=Ticks()
    )
    spec = JobSpec(MODEL, ["Say hi"])
    assert provider.run_items(spec, [0]) == [ItemResult("Hello", 9, 1, 250)]
    assert provider.run(spec, [0]) == ["Hello"]


def test_openai_stream_answered_with_json_keeps_its_usage() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"choices": [{"index": 0, "message": {"content": "Hi"}}], **usage(3, 1)}
        )

    provider = OpenAIProvider(
        secret="k", base_url="http://h", transport=httpx.MockTransport(handler)
    )
    (item,) = provider.run_items(JobSpec(MODEL, ["p"], stream=True), [0])
    assert (item.output, item.tokens_in, item.tokens_out) == ("Hi", 3, 1)


def test_default_run_items_wraps_run_without_usage() -> None:
    answers = iter(["one", "two"])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"output": {"choices": [{"text": next(answers)}]}})

    provider = TogetherProvider(
        secret="k", base_url="http://h", transport=httpx.MockTransport(handler), clock=Ticks()
    )
    spec = JobSpec("m", ["a", "b"])
    assert provider.run_items(spec, [0]) == [ItemResult("one", None, None, 250)]
    assert provider.run(spec, [1]) == ["two"]


def test_a_batched_call_shares_its_latency() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=["x", "y", "z"])

    provider = LaminiProvider(
        secret="k", base_url="http://h", transport=httpx.MockTransport(handler), clock=Ticks()
    )
    items = provider.run_items(JobSpec("m", ["a", "b", "c"]), [0, 1, 2])
    assert items == [ItemResult(o, None, None, 250) for o in ("x", "y", "z")]


# -- against the simulators --------------------------------------------------------


@pytest.fixture(scope="module")
def openai_sim() -> Iterator[OpenAISimulator]:
    sim = OpenAISimulator(stream_chunk_delay=0)
    sim.start()
    yield sim
    sim.stop()


def words(text: str) -> int:
    return len(text.split())


def test_openai_simulator_whole_answer(openai_sim: OpenAISimulator) -> None:
    with OpenAIProvider(secret=openai_sim.token, base_url=openai_sim.base_url) as provider:
        spec = JobSpec(MODEL, ["Say hi to me"], system_prompt="Be brief.", max_tokens=4)
        (item,) = provider.run_items(spec, [0])
    assert item.output == completion_text(MODEL, "Say hi to me", 4).strip()
    assert (item.tokens_in, item.tokens_out) == (2 + 4, words(item.output))
    assert item.latency_ms is not None and item.latency_ms >= 0


@pytest.mark.parametrize(
    ("credential", "job", "reported"),
    [({}, {}, False), ({"stream_usage": True}, {}, True), ({}, {"stream_usage": "true"}, True)],
)
def test_openai_simulator_streamed(
    openai_sim: OpenAISimulator, credential: dict[str, Any], job: dict[str, Any], reported: bool
) -> None:
    chunks: list[str] = []
    provider = OpenAIProvider(
        secret=openai_sim.token, base_url=openai_sim.base_url, options=credential
    )
    with provider:
        spec = JobSpec(MODEL, ["Say hi to me"], stream=True, options=job)
        (item,) = provider.run_items(spec, [0], lambda index, text: chunks.append(text))
    assert item.output == "".join(chunks) == completion_text(MODEL, "Say hi to me").strip()
    expected = (4, words(item.output)) if reported else (None, None)
    assert (item.tokens_in, item.tokens_out) == expected


def test_openai_simulator_refuses_stream_options_without_stream(
    openai_sim: OpenAISimulator,
) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "x"}],
        "stream_options": {"include_usage": True},
    }
    response = httpx.post(
        f"{openai_sim.base_url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {openai_sim.token}"},
    )
    assert response.status_code == 400 and "stream_options" in response.json()["error"]["message"]


@pytest.mark.parametrize("sim_class", [TogetherSimulator, LaminiSimulator])
def test_providers_without_usage_report_none(sim_class: type) -> None:
    sim = sim_class()
    sim.start()
    try:
        cls = TogetherProvider if sim_class is TogetherSimulator else LaminiProvider
        with cls(secret=sim.token, base_url=sim.base_url) as provider:
            items = provider.run_items(JobSpec("m", ["a"]), [0])
    finally:
        sim.stop()
    assert [(i.tokens_in, i.tokens_out) for i in items] == [(None, None)]
    assert items[0].output.strip() == completion_text("m", "a").strip()


# -- async: usage on a poll result -------------------------------------------------


def test_remote_status_carries_usage_per_output() -> None:
    plain = RemoteStatus("r", RemoteState.COMPLETED, "Completed", outputs=["a", "b"])
    assert plain.usage is None
    assert plain.item_results() == [ItemResult("a"), ItemResult("b")]
    counted = RemoteStatus(
        "r",
        RemoteState.COMPLETED,
        "Completed",
        outputs=["a", "b", "c"],
        usage=[TokenUsage(3, 1), None],
    )
    assert counted.item_results() == [ItemResult("a", 3, 1), ItemResult("b"), ItemResult("c")]
    assert RemoteStatus("r", RemoteState.RUNNING, "Processing").item_results() is None


def test_token_usage_from_counts() -> None:
    assert TokenUsage.from_counts(3, None) == TokenUsage(3, None)
    assert TokenUsage.from_counts(None, "2") is None
