"""Anthropic's Messages API and Message Batches API (``anthropic-batches.md``).

``POST /v1/messages`` answers whole (with ``usage``) or streamed as
Server-Sent Events; a forced tool (``tool_choice: {"type": "tool"}``) answers a
``tool_use`` block whose ``input`` fits the tool's ``input_schema``. A prompt
holding ``[[overload]]`` streams a few words and then an ``error`` event
(``overloaded_error``). ``GET /v1/models`` is paged (``limit``, ``after_id``;
``model_count`` models).

Batches run on ``clock``: request *i* of *n* is done ``step_seconds * (i+1)/n``
after the create, and the batch has ended once all are. A cancel ends the
batch at once: requests not yet done come back ``canceled``. A prompt holding
``[[expire]]`` comes back ``expired``; bad params come back ``errored``
(``invalid_request_error``), as they do at Anthropic. Results are JSONL in
an order that is not the request order, one streamed chunk a line.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from .base import Request, Response, Simulator, bad_request, completion_text
from .openai_compat import sample_value, split_words

API_VERSION = "2023-06-01"
MODELS = (
    ("claude-sonnet-4-5", "Claude Sonnet 4.5"),
    ("claude-haiku-4-5", "Claude Haiku 4.5"),
    ("claude-opus-4-1", "Claude Opus 4.1"),
)
CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024


def error(status: int, kind: str, message: str) -> Response:
    return Response(status, error_body(kind, message))


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


class Invalid(Exception):
    """A Messages body the API refuses (400 ``invalid_request_error``)."""


@dataclass
class Answer:
    model: str
    prompt: str
    content: list[dict[str, Any]]
    stop_reason: str
    usage: dict[str, int]
    #: The JSON text of a tool's input, or the text, as streamed.
    streamed: str
    tool: bool

    def message(self) -> dict[str, Any]:
        return {
            "id": f"msg_{_digest(self.model, self.prompt)[:24]}",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": self.content,
            "stop_reason": self.stop_reason,
            "stop_sequence": None,
            "usage": self.usage,
        }


def answer(body: Any) -> Answer:
    """The answer to one Messages body (online or a batch request's params)."""
    if not isinstance(body, dict):
        raise Invalid("The request body must be a JSON object.")
    model, messages, max_tokens = body.get("model"), body.get("messages"), body.get("max_tokens")
    if not isinstance(model, str) or not model:
        raise Invalid("model: Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise Invalid("max_tokens: Field required (an integer of at least 1)")
    if not isinstance(messages, list) or not messages:
        raise Invalid("messages: at least one message is required")
    prompt = None
    words_in = 0
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise Invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        text = _content_text(message.get("content"))
        if text is None:
            raise Invalid(f"messages.{i}.content: a string or a list of text blocks")
        words_in += len(text.split())
        if message["role"] == "user":
            prompt = text
    if prompt is None:
        raise Invalid("messages: a user message is required")
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        raise Invalid("system: Input should be a valid string")
    words_in += len((system or "").split())
    temperature = body.get("temperature")
    if temperature is not None and not (
        isinstance(temperature, int | float) and 0 <= temperature <= 1
    ):
        raise Invalid("temperature: Input should be less than or equal to 1")
    for name in ("top_p", "top_k"):
        if body.get(name) is not None and not isinstance(body[name], int | float):
            raise Invalid(f"{name}: Input should be a number")
    unknown = set(body) - {
        "model",
        "messages",
        "max_tokens",
        "system",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "stream",
        "tools",
        "tool_choice",
        "metadata",
    }
    if unknown:
        raise Invalid(f"{sorted(unknown)[0]}: Extra inputs are not permitted")
    schema = _forced_tool(body.get("tools"), body.get("tool_choice"))
    if schema is not None:
        name, input_schema = schema
        value = sample_value(input_schema, _digest(model, prompt)[:12])
        block = {"type": "tool_use", "id": f"toolu_{_digest(prompt)[:20]}", "name": name}
        text = json.dumps(value)
        usage = {"input_tokens": words_in, "output_tokens": len(text.split())}
        return Answer(model, prompt, [{**block, "input": value}], "tool_use", usage, text, True)
    full = completion_text(model, prompt).strip()
    text = completion_text(model, prompt, max_tokens).strip()
    stop = "max_tokens" if text != full else "end_turn"
    usage = {"input_tokens": words_in, "output_tokens": len(text.split())}
    return Answer(model, prompt, [{"type": "text", "text": text}], stop, usage, text, False)


def _content_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [b.get("text") for b in content if isinstance(b, dict) and b.get("type") == "text"]
        if len(texts) == len(content) and all(isinstance(t, str) for t in texts):
            return "".join(texts)
    return None


def _forced_tool(tools: Any, choice: Any) -> tuple[str, dict[str, Any]] | None:
    if tools is None and choice is None:
        return None
    if not isinstance(tools, list) or not tools:
        raise Invalid("tools: a non-empty list is required with tool_choice")
    by_name = {}
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise Invalid(f"tools.{i}.name: Field required")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise Invalid(f"tools.{i}.input_schema: type must be 'object'")
        by_name[tool["name"]] = schema
    if not isinstance(choice, dict) or choice.get("type") != "tool":
        # The model may answer in text; this simulator always uses the first tool.
        name = next(iter(by_name))
        return name, by_name[name]
    if choice.get("name") not in by_name:
        raise Invalid("tool_choice.name: no tool of that name")
    return choice["name"], by_name[choice["name"]]


def _page(request: Request) -> tuple[int, str | None]:
    """``limit`` (1 to 1000, default 20) and ``after_id`` of a list request."""
    query = parse_qs(request.query)
    limit = (query.get("limit") or ["20"])[0]
    if not limit.isascii() or not limit.isdigit() or not 1 <= int(limit) <= 1000:
        raise bad_request("limit: an integer from 1 to 1000")
    return int(limit), (query.get("after_id") or [None])[0]


def event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n"


@dataclass
class Batch:
    id: str
    created: float  # clock()
    created_at: datetime
    requests: list[dict[str, Any]]
    cancelled_at: float | None = None
    #: index -> its result, made once the batch has ended (it never changes after).
    results: dict[int, dict[str, Any]] = field(default_factory=dict)

    def done_at(self, index: int, step: float) -> float:
        return self.created + step * (index + 1) / len(self.requests)

    def ended_at(self, step: float) -> float:
        end = self.created + step
        return end if self.cancelled_at is None else min(end, self.cancelled_at)


class AnthropicSimulator(Simulator):
    name = "anthropic"

    def __init__(
        self,
        *,
        step_seconds: float = 5.0,
        clock: Callable[[], float] | None = None,
        stream_chunk_delay: float = 0.02,
        model_count: int = len(MODELS),
        **kwargs: Any,
    ) -> None:
        self.step_seconds = step_seconds
        self.clock = clock or time.monotonic
        self.stream_chunk_delay = stream_chunk_delay
        self.model_count = model_count
        self.batches: dict[str, Batch] = {}
        #: The largest create body taken; a larger one is answered 413 (tests lower it).
        self.max_bytes = MAX_BYTES
        #: Requests per actual path ("GET /v1/messages/batches/msgbatch_1"), for tests.
        self.paths: Counter[str] = Counter()
        self._serial = 0
        super().__init__(**kwargs)

    def setup_routes(self) -> None:
        batch = "/v1/messages/batches/(?P<batch_id>[^/]+)"
        self.route("POST", "/v1/messages", self.messages)
        self.route("GET", "/v1/models", self.models)
        self.route("POST", "/v1/messages/batches", self.batch_create)
        self.route("GET", "/v1/messages/batches", self.batch_list)
        self.route("GET", batch, self.batch_get)
        self.route("DELETE", batch, self.batch_delete)
        self.route("POST", batch + "/cancel", self.batch_cancel)
        self.route("GET", batch + "/results", self.batch_results)

    def reset(self) -> None:
        """Forget batches, faults and counters, so one server can serve many tests."""
        with self.lock:
            self.batches.clear()
            self.max_bytes = MAX_BYTES
            self.paths.clear()
            self.faults.clear()
            self.requests.clear()

    # -- auth and errors -----------------------------------------------------------

    def authorized(self, request: Request) -> bool:
        return request.headers.get("x-api-key", "") == self.token

    def unauthorized(self) -> Response:
        return error(401, "authentication_error", "invalid x-api-key")

    def not_found(self, request: Request) -> Response:
        return error(404, "not_found_error", f"Not found: {request.method} {request.path}")

    def dispatch(self, request: Request) -> Response:
        with self.lock:
            self.paths[f"{request.method} {request.path}"] += 1
        if request.headers.get("anthropic-version") != API_VERSION:
            return error(
                400,
                "invalid_request_error",
                f"anthropic-version: header is required and must be {API_VERSION}",
            )
        return super().dispatch(request)

    # -- online ------------------------------------------------------------------

    def messages(self, request: Request) -> Response:
        try:
            body = request.json()
        except ValueError:
            return error(400, "invalid_request_error", "The body is not valid JSON.")
        try:
            result = answer(body)
        except Invalid as exc:
            return error(400, "invalid_request_error", str(exc))
        if body.get("stream") is True:
            return Response(
                200,
                stream=self._events(result),
                content_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        return Response(200, result.message())

    def _events(self, result: Answer) -> Iterator[str]:
        message = {**result.message(), "content": [], "stop_reason": None}
        message["usage"] = {"input_tokens": result.usage["input_tokens"], "output_tokens": 1}
        yield event("message_start", {"message": message})
        if result.tool:
            block = {**result.content[0], "input": {}}
            delta_type, field = "input_json_delta", "partial_json"
        else:
            block = {"type": "text", "text": ""}
            delta_type, field = "text_delta", "text"
        yield event("content_block_start", {"index": 0, "content_block": block})
        yield event("ping", {})
        for i, piece in enumerate(split_words(result.streamed)):
            if i and self.stream_chunk_delay:
                time.sleep(self.stream_chunk_delay)
            if i == 2 and "[[overload]]" in result.prompt:
                yield event("error", error_body("overloaded_error", "Overloaded"))
                return
            yield event(
                "content_block_delta", {"index": 0, "delta": {"type": delta_type, field: piece}}
            )
        yield event("content_block_stop", {"index": 0})
        yield event(
            "message_delta",
            {
                "delta": {"stop_reason": result.stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": result.usage["output_tokens"]},
            },
        )
        yield event("message_stop", {})

    def models(self, request: Request) -> Response:
        limit, after = _page(request)
        extra = ((f"claude-sim-{i}", f"Sim {i}") for i in range(len(MODELS), self.model_count))
        names = [*MODELS[: self.model_count], *extra]
        start = next((i + 1 for i, (m, _) in enumerate(names) if m == after), 0)
        page = names[start : start + limit]
        data = [
            {"type": "model", "id": m, "display_name": d, "created_at": "2025-01-01T00:00:00Z"}
            for m, d in page
        ]
        return Response(
            200,
            {
                "data": data,
                "has_more": start + len(page) < len(names),
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            },
        )

    # -- batches -------------------------------------------------------------------

    def batch_create(self, request: Request) -> Response:
        if len(request.body) > self.max_bytes:
            return error(413, "request_too_large", "Request exceeds the maximum allowed size.")
        try:
            body = request.json()
        except ValueError:
            return error(400, "invalid_request_error", "The body is not valid JSON.")
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not 1 <= len(requests) <= MAX_REQUESTS:
            return error(400, "invalid_request_error", "requests: 1 to 100000 items")
        seen: set[str] = set()
        for i, item in enumerate(requests):
            cid = item.get("custom_id") if isinstance(item, dict) else None
            if not isinstance(cid, str) or not CUSTOM_ID.fullmatch(cid):
                return error(400, "invalid_request_error", f"requests.{i}.custom_id: invalid")
            if cid in seen:
                return error(400, "invalid_request_error", f"requests.{i}.custom_id: duplicate")
            if not isinstance(item.get("params"), dict):
                return error(400, "invalid_request_error", f"requests.{i}.params: required")
            if item["params"].get("stream"):
                return error(400, "invalid_request_error", f"requests.{i}.params.stream: no")
            seen.add(cid)
        with self.lock:
            self._serial += 1
            self.submissions += 1
            batch_id = f"msgbatch_{self._serial:04d}{_digest(str(time.time_ns()))[:12]}"
            batch = Batch(batch_id, self.clock(), datetime.now(UTC), requests)
            self.batches[batch_id] = batch
        return Response(200, self._object(batch))

    def batch_list(self, request: Request) -> Response:
        limit, after = _page(request)
        with self.lock:
            newest = list(reversed(self.batches.values()))
        ids = [b.id for b in newest]
        start = ids.index(after) + 1 if after in ids else 0
        page = [self._object(b) for b in newest[start : start + limit]]
        return Response(
            200,
            {
                "data": page,
                "has_more": start + len(page) < len(newest),
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
            },
        )

    def batch_get(self, request: Request, batch_id: str) -> Response:
        batch = self.batches.get(batch_id)
        if batch is None:
            return self.not_found(request)
        return Response(200, self._object(batch))

    def batch_cancel(self, request: Request, batch_id: str) -> Response:
        batch = self.batches.get(batch_id)
        if batch is None:
            return self.not_found(request)
        now = self.clock()
        with self.lock:
            running = now < batch.ended_at(self.step_seconds)
            if running and batch.cancelled_at is None:
                batch.cancelled_at = now
        # The cancel answers "canceling"; the next look finds the batch ended.
        return Response(200, self._object(batch, canceling=running))

    def batch_delete(self, request: Request, batch_id: str) -> Response:
        batch = self.batches.get(batch_id)
        if batch is None:
            return self.not_found(request)
        if not self._ended(batch):
            return error(400, "invalid_request_error", "A batch can be deleted once it ended.")
        with self.lock:
            del self.batches[batch_id]
        return Response(200, {"id": batch_id, "type": "message_batch_deleted"})

    def batch_results(self, request: Request, batch_id: str) -> Response:
        batch = self.batches.get(batch_id)
        if batch is None:
            return self.not_found(request)
        if not self._ended(batch):
            return error(404, "not_found_error", "The batch has not ended: no results yet.")
        rows = [self._result(batch, i) for i in range(len(batch.requests))]
        rows.sort(key=lambda row: _digest(row["custom_id"]))  # any order, as documented
        lines = (json.dumps(row) + "\n" for row in rows)
        return Response(200, stream=lines, content_type="application/binary")

    # -- batch state ---------------------------------------------------------------

    def _ended(self, batch: Batch) -> bool:
        return self.clock() >= batch.ended_at(self.step_seconds)

    def _result(self, batch: Batch, index: int) -> dict[str, Any]:
        """The result of request ``index`` of an ended batch, made once (a
        50,000-request batch is looked at on every status check)."""
        found = batch.results.get(index)
        if found is None:
            found = batch.results[index] = self._make_result(batch, index)
        return found

    def _make_result(self, batch: Batch, index: int) -> dict[str, Any]:
        item = batch.requests[index]
        params = item["params"]
        cancelled = batch.cancelled_at
        if cancelled is not None and batch.done_at(index, self.step_seconds) > cancelled:
            result: dict[str, Any] = {"type": "canceled"}
        elif "[[expire]]" in json.dumps(params.get("messages")):
            result = {"type": "expired"}
        else:
            try:
                result = {"type": "succeeded", "message": answer(params).message()}
            except Invalid as exc:
                result = {
                    "type": "errored",
                    "error": error_body("invalid_request_error", str(exc)),
                }
        return {"custom_id": item["custom_id"], "result": result}

    def _object(self, batch: Batch, *, canceling: bool = False) -> dict[str, Any]:
        ended = self._ended(batch) and not canceling
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        if ended:
            for i in range(len(batch.requests)):
                counts[self._result(batch, i)["result"]["type"]] += 1
        else:
            counts["processing"] = len(batch.requests)
        status = "ended" if ended else "canceling" if batch.cancelled_at else "in_progress"

        def at(clock_time: float | None) -> str | None:
            if clock_time is None:
                return None
            moment = batch.created_at + timedelta(seconds=clock_time - batch.created)
            return moment.isoformat().replace("+00:00", "Z")

        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "created_at": at(batch.created),
            "expires_at": at(batch.created + 24 * 3600),
            "ended_at": at(batch.ended_at(self.step_seconds)) if ended else None,
            "cancel_initiated_at": at(batch.cancelled_at),
            "archived_at": None,
            "results_url": (
                f"{self.base_url}/v1/messages/batches/{batch.id}/results" if ended else None
            ),
        }
