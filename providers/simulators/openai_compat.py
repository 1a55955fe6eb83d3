"""An OpenAI-compatible server: ``POST /v1/chat/completions`` (whole answers
with ``usage``, ``response_format`` JSON Schema output, ``stream: true``
Server-Sent Events ending in a usage chunk when ``stream_options.include_usage``
asks for one) and ``GET /v1/models``, with OpenAI's ``{"error": {"message",
"type", ...}}`` error bodies.

And the Batch API (``openai-batch.md``): ``/v1/files`` (multipart upload,
``/content``), ``/v1/batches`` (create, get, list newest first with ``after``,
``cancel``). A batch runs on ``clock``: ``validating`` for ``step_seconds``
(then ``failed`` when a line is bad: not JSON, no ``custom_id``, a duplicate
one, no ``body``, another model), ``in_progress`` for two steps with the
requests finishing in input order, ``finalizing`` for one, then
``completed``. A cancel is ``cancelling`` for a step, then ``cancelled``;
:meth:`OpenAISimulator.expire` ends a batch ``expired``. What did not run goes
to the error file as ``batch_cancelled`` / ``batch_expired``; a prompt holding
``[[fail]]`` answers a 500 line. Result lines come in a shuffled order.
``batch_api = False`` answers 404 on every batch path (a server without one).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from .base import DEFAULT_TOKEN, Request, Response, Simulator, completion_text

MODELS = (
    "meta-llama/Llama-3.1-8B-Instruct",
    "Qwen/Qwen2.5-7B-Instruct",
    "mistralai/Mistral-7B-Instruct-v0.3",
)
ROLES = ("system", "developer", "user", "assistant", "tool")
WORDS_PER_CHUNK = 3
BATCH_ENDPOINT = "/v1/chat/completions"
MAX_BATCH_REQUESTS = 50_000
#: In a prompt: this request of a batch answers a 500 line.
FAIL_MARK = "[[fail]]"


def error(status: int, message: str, kind: str = "invalid_request_error", **extra: Any) -> Response:
    return Response(status, {"error": {"message": message, "type": kind, **extra}})


def invalid(message: str, param: str | None = None) -> Response:
    return error(400, message, param=param, code=None)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def sample_value(schema: Any, seed: str) -> Any:
    """A deterministic value of the schema's type (nested objects and arrays too)."""
    if not isinstance(schema, dict):
        return f"value {_digest(seed)[:6]}"
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return sample_value(schema[key][0], seed)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None and isinstance(schema.get("properties"), dict):
        kind = "object"
    number = int(_digest(seed)[:6], 16)
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return {}
        return {name: sample_value(sub, f"{seed}.{name}") for name, sub in properties.items()}
    if kind == "array":
        return [sample_value(schema.get("items"), f"{seed}[0]")]
    if kind in ("integer", "number"):
        # In the schema's range when it gives one, as strict structured output keeps it.
        low, high = schema.get("minimum"), schema.get("maximum")
        if kind == "integer":
            value: float = number % 1000
        else:
            value = (number % 100000) / 100
        if _bound(low) and _bound(high) and low <= high:
            span = high - low
            value = low + (number % 1001) / 1000 * span
            return int(value) if kind == "integer" else value
        value = max(value, low) if _bound(low) else value
        value = min(value, high) if _bound(high) else value
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return number % 2 == 0
    if kind == "null":
        return None
    return f"{seed.rsplit('.', 1)[-1]} {_digest(seed)[:6]}"


def _bound(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def count_usage(messages: list[dict[str, Any]], text: str) -> dict[str, int]:
    """Words stand in for tokens: deterministic, and enough to check the plumbing."""
    prompt_tokens = sum(len(m["content"].split()) for m in messages)
    completion_tokens = len(text.split())
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def split_words(text: str, per_chunk: int = WORDS_PER_CHUNK) -> list[str]:
    """Word-group chunks that join back to exactly ``text``."""
    words = text.split(" ")
    return [
        (" " if start else "") + " ".join(words[start : start + per_chunk])
        for start in range(0, len(words), per_chunk)
    ]


def sse(data: Any) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


class OpenAISimulator(Simulator):
    name = "openai"

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        stream_chunk_delay: float = 0.02,
        step_seconds: float = 1.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.stream_chunk_delay = stream_chunk_delay
        #: How long each phase of a batch lasts, on ``clock``.
        self.step_seconds = step_seconds
        self.clock = clock or time.monotonic
        #: False: every batch path answers 404, as on a server without a batch API.
        self.batch_api = True
        self.files: dict[str, SimFile] = {}
        self.batches: dict[str, SimBatch] = {}
        self.files_uploaded = 0
        self.batches_created = 0
        self._serial = itertools.count(1)
        super().__init__(token=token, latency=latency, host=host, port=port)

    def setup_routes(self) -> None:
        self.route("POST", "/v1/chat/completions", self.chat)
        self.route("GET", "/v1/models", self.models)
        self.route("POST", "/v1/files", self.batch_only(self.upload))
        self.route("GET", "/v1/files/(?P<file_id>[^/]+)", self.batch_only(self.file_info))
        self.route("GET", "/v1/files/(?P<file_id>[^/]+)/content", self.batch_only(self.content))
        self.route("POST", "/v1/batches", self.batch_only(self.create_batch))
        self.route("GET", "/v1/batches", self.batch_only(self.list_batches))
        self.route("GET", "/v1/batches/(?P<batch_id>[^/]+)", self.batch_only(self.get_batch))
        self.route(
            "POST", "/v1/batches/(?P<batch_id>[^/]+)/cancel", self.batch_only(self.cancel_batch)
        )

    def reset(self) -> None:
        """Forget files, batches, faults and counters (one server, many tests)."""
        with self.lock:
            self.files.clear()
            self.batches.clear()
            self.faults.clear()
            self.requests.clear()
            self.files_uploaded = self.batches_created = self.submissions = 0
            self.batch_api = True

    def unauthorized(self) -> Response:
        return error(401, "Incorrect API key provided", code="invalid_api_key")

    def not_found(self, request: Request) -> Response:
        return error(404, f"Unknown request URL: {request.method} {request.path}")

    def models(self, request: Request) -> Response:
        return Response(
            200,
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 1700000000, "owned_by": "simulator"}
                    for m in MODELS
                ],
            },
        )

    def chat(self, request: Request) -> Response:
        try:
            body = request.json()
        except ValueError:
            return invalid("We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return invalid("The request body must be a JSON object.")
        model, messages = body.get("model"), body.get("messages")
        if not isinstance(model, str) or not model:
            return invalid("you must provide a model parameter", "model")
        if not isinstance(messages, list) or not messages:
            return invalid("'messages' must be a non-empty array", "messages")
        prompt = None
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ROLES:
                return invalid(f"messages[{i}] needs a 'role' of {', '.join(ROLES)}", "messages")
            if not isinstance(message.get("content"), str):
                return invalid(f"messages[{i}].content must be a string", "messages")
            if message["role"] == "user":
                prompt = message["content"]
        if prompt is None:
            return invalid("'messages' must hold a user message", "messages")
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        if max_tokens is not None and (
            not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
        ):
            return invalid("'max_tokens' must be a positive integer", "max_tokens")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            return invalid("'stream' must be a boolean", "stream")
        schema, problem = self._schema(body.get("response_format"))
        if problem:
            return invalid(problem, "response_format")
        stream_options = body.get("stream_options")
        if stream_options is not None and (not stream or not isinstance(stream_options, dict)):
            return invalid("'stream_options' is an object, allowed only with stream", "stream")
        include_usage = bool((stream_options or {}).get("include_usage"))

        full = completion_text(model, prompt).strip()
        text = completion_text(model, prompt, max_tokens).strip()
        finish = "length" if text != full else "stop"
        if schema is not None:
            text = json.dumps(sample_value(schema, _digest(model, prompt)[:12]))
            finish = "stop"
        completion_id = f"chatcmpl-{_digest(model, prompt, str(time.time_ns()))[:24]}"
        created = int(time.time())
        usage = count_usage(messages, text)
        if stream:
            return Response(
                200,
                stream=self._events(
                    completion_id, created, model, text, finish, usage if include_usage else None
                ),
                content_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        return Response(
            200,
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
            },
        )

    @staticmethod
    def _schema(response_format: Any) -> tuple[dict[str, Any] | None, str]:
        """The JSON Schema asked for (None for plain text) and what is wrong, if anything."""
        if response_format is None:
            return None, ""
        if not isinstance(response_format, dict):
            return None, "'response_format' must be an object"
        kind = response_format.get("type")
        if kind == "text":
            return None, ""
        if kind == "json_object":
            return {"type": "object", "properties": {"answer": {"type": "string"}}}, ""
        if kind != "json_schema":
            return None, f"Invalid value for 'response_format.type': {kind!r}"
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            return None, "'response_format.json_schema' needs a 'name'"
        if not isinstance(spec.get("schema"), dict):
            return None, "'response_format.json_schema.schema' must be an object"
        return spec["schema"], ""

    def _events(
        self,
        completion_id: str,
        created: int,
        model: str,
        text: str,
        finish: str,
        usage: dict[str, int] | None,
    ) -> Iterator[str]:
        head = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            # With include_usage every chunk says "usage": null until the last one.
            return sse({**head, "choices": [choice], **({"usage": None} if usage else {})})

        yield chunk({"role": "assistant", "content": ""})
        for i, piece in enumerate(split_words(text)):
            if i and self.stream_chunk_delay:
                time.sleep(self.stream_chunk_delay)
            yield chunk({"content": piece})
        yield chunk({}, finish)
        if usage:
            yield sse({**head, "choices": [], "usage": usage})
        yield sse("[DONE]")

    # -- batch API -----------------------------------------------------------------

    def batch_only(self, handler: Callable[..., Response]) -> Callable[..., Response]:
        def route(request: Request, **params: str) -> Response:
            if not self.batch_api:
                return self.not_found(request)
            return handler(request, **params)

        return route

    def expire(self, batch_id: str, done: int | None = None) -> None:
        """End a batch ``expired`` now, with its first ``done`` requests run
        (default: as many as have run by now)."""
        with self.lock:
            batch = self.batches[batch_id]
            ran = self._phase(batch)[1] if done is None else min(done, len(batch.requests))
            batch.expired_at, batch.frozen = self.clock(), ran

    def status_of(self, batch_id: str) -> str:
        with self.lock:
            return self._phase(self.batches[batch_id])[0]

    def wall(self, at: float) -> int:
        """The Unix time of a ``clock()`` reading."""
        return int(time.time() + at - self.clock())

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{_digest(prefix, str(next(self._serial)), str(time.time_ns()))[:24]}"

    def upload(self, request: Request) -> Response:
        fields = multipart_fields(request.headers.get("content-type", ""), request.body)
        if fields is None:
            return invalid("The body must be multipart/form-data with 'purpose' and 'file'.")
        purpose, upload = fields.get("purpose"), fields.get("file")
        if purpose is None or not purpose[1]:
            return invalid("Missing required parameter: 'purpose'.", "purpose")
        if upload is None or upload[0] is None:
            return invalid("Missing required parameter: 'file'.", "file")
        filename, data = upload[0], upload[1]
        kind = purpose[1].decode(errors="replace")
        if kind == "batch" and not filename.endswith(".jsonl"):
            return invalid("Invalid file format for Batch API. Must be .jsonl", "file")
        if len(data) > 200 * 1024 * 1024:
            return invalid("File is larger than the 200 MB allowed for batch input.", "file")
        with self.lock:
            sim_file = SimFile(self._new_id("file-"), filename, kind, data, int(time.time()))
            self.files[sim_file.id] = sim_file
            self.files_uploaded += 1
        return Response(200, sim_file.view())

    def file_info(self, request: Request, file_id: str) -> Response:
        with self.lock:
            sim_file = self.files.get(file_id)
        if sim_file is None:
            return error(404, f"No such File object: {file_id}")
        return Response(200, sim_file.view())

    def content(self, request: Request, file_id: str) -> Response:
        with self.lock:
            sim_file = self.files.get(file_id)
        if sim_file is None:
            return error(404, f"No such File object: {file_id}")
        return Response(200, sim_file.data, content_type="application/octet-stream")

    def create_batch(self, request: Request) -> Response:
        try:
            body = request.json()
        except ValueError:
            return invalid("We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return invalid("The request body must be a JSON object.")
        if body.get("endpoint") != BATCH_ENDPOINT:
            return invalid(f"Invalid 'endpoint': use {BATCH_ENDPOINT}.", "endpoint")
        if body.get("completion_window") != "24h":
            return invalid(
                "Invalid 'completion_window': only '24h' is supported.", "completion_window"
            )
        metadata = body.get("metadata") or {}
        if (
            not isinstance(metadata, dict)
            or len(metadata) > 16
            or not all(isinstance(k, str) and len(k) <= 64 for k in metadata)
            or not all(isinstance(v, str) and len(v) <= 512 for v in metadata.values())
        ):
            return invalid("'metadata' holds up to 16 string pairs.", "metadata")
        file_id = body.get("input_file_id")
        with self.lock:
            sim_file = self.files.get(file_id) if isinstance(file_id, str) else None
        if sim_file is None or sim_file.purpose != "batch":
            return invalid(f"Invalid 'input_file_id': {file_id!r}.", "input_file_id")
        requests, errors = read_batch_input(sim_file.data)
        with self.lock:
            batch = SimBatch(
                id=self._new_id("batch_"),
                serial=next(self._serial),
                input_file_id=sim_file.id,
                metadata=dict(metadata),
                created=self.clock(),
                created_at=int(time.time()),
                requests=requests,
                errors=errors,
            )
            self.batches[batch.id] = batch
            self.batches_created += 1
            self.submissions += 1
            return Response(200, self._view(batch))

    def get_batch(self, request: Request, batch_id: str) -> Response:
        with self.lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return error(404, f"No batch found with id '{batch_id}'.")
            return Response(200, self._view(batch))

    def list_batches(self, request: Request) -> Response:
        query = parse_qs(request.query)
        try:
            limit = int(query.get("limit", ["20"])[0])
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            return invalid("'limit' must be an integer from 1 to 100.", "limit")
        with self.lock:
            newest = sorted(self.batches.values(), key=lambda b: b.serial, reverse=True)
            after = query.get("after", [""])[0]
            if after:
                ids = [b.id for b in newest]
                if after not in ids:
                    return invalid(f"No batch found with id '{after}'.", "after")
                newest = newest[ids.index(after) + 1 :]
            page = [self._view(b) for b in newest[:limit]]
        return Response(
            200,
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(newest) > limit,
            },
        )

    def cancel_batch(self, request: Request, batch_id: str) -> Response:
        with self.lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return error(404, f"No batch found with id '{batch_id}'.")
            status, done = self._phase(batch)
            if status in ("completed", "failed", "expired", "cancelled"):
                return error(409, f"Cannot cancel a batch with status '{status}'.")
            if batch.cancel_at is None:
                batch.cancel_at, batch.frozen = self.clock(), done
            return Response(200, self._view(batch))

    # -- batch behaviour (called under the lock) -------------------------------------

    def _phase(self, batch: SimBatch) -> tuple[str, int]:
        """(status, requests run so far) at this moment."""
        total, step = len(batch.requests), self.step_seconds
        now = self.clock()
        if batch.expired_at is not None:
            return "expired", batch.frozen
        if batch.cancel_at is not None:
            return ("cancelled" if now >= batch.cancel_at + step else "cancelling"), batch.frozen
        elapsed = now - batch.created
        if elapsed < step:
            return "validating", 0
        if batch.errors:
            return "failed", 0
        running = elapsed - step
        if running < 2 * step:
            return "in_progress", min(total, int(total * running / (2 * step)))
        return ("finalizing" if running < 3 * step else "completed"), total

    def _outcome(self, batch: SimBatch, index: int) -> tuple[int, dict[str, Any]]:
        """(status code, body) of one request, run once."""
        if index not in batch.outcomes:
            body = batch.requests[index][1]
            if FAIL_MARK in json.dumps(body.get("messages")):
                answer = error(
                    500, "The server had an error processing your request.", "server_error"
                )
            elif body.get("stream"):
                answer = invalid("'stream' is not supported in a batch.", "stream")
            else:
                answer = self.chat(Request("POST", BATCH_ENDPOINT, {}, json.dumps(body).encode()))
            batch.outcomes[index] = (answer.status, answer.body)
        return batch.outcomes[index]

    def _write_results(self, batch: SimBatch, status: str, done: int) -> None:
        """The output and error files of an ended batch, once, each in a shuffled order."""
        if batch.results_written:
            return
        batch.results_written = True
        succeeded: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        unrun = "batch_expired" if status == "expired" else "batch_cancelled"
        for index, (custom_id, _) in enumerate(batch.requests):
            line: dict[str, Any] = {"id": self._new_id("batch_req_"), "custom_id": custom_id}
            if index < done:
                code, body = self._outcome(batch, index)
                line["response"] = {
                    "status_code": code,
                    "request_id": _digest(batch.id, custom_id)[:32],
                    "body": body,
                }
                line["error"] = None
                (succeeded if code == 200 else failed).append(line)
            else:
                message = (
                    "This request could not be executed before the completion window expired."
                    if unrun == "batch_expired"
                    else "This request was not executed because the batch was cancelled."
                )
                line["response"], line["error"] = None, {"code": unrun, "message": message}
                failed.append(line)
        shuffle = random.Random(batch.id).shuffle
        for lines, purpose, attr in (
            (succeeded, "output", "output_file_id"),
            (failed, "error", "error_file_id"),
        ):
            if not lines:
                continue
            shuffle(lines)
            data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
            sim_file = SimFile(
                self._new_id("file-"),
                f"batch_{purpose}.jsonl",
                "batch_output",
                data,
                int(time.time()),
            )
            self.files[sim_file.id] = sim_file
            setattr(batch, attr, sim_file.id)

    def _view(self, batch: SimBatch) -> dict[str, Any]:
        status, done = self._phase(batch)
        step = self.step_seconds
        if status in ("completed", "expired", "cancelled"):
            self._write_results(batch, status, done)
        outcomes = [self._outcome(batch, i) for i in range(done)]
        codes = [code for code, _ in outcomes]
        usage = [body.get("usage") or {} for code, body in outcomes if code == 200]
        stopped = next((t for t in (batch.cancel_at, batch.expired_at) if t is not None), None)
        started = not batch.errors and batch.created + step <= (
            self.clock() if stopped is None else stopped
        )

        def at(seconds: float | None) -> int | None:
            return None if seconds is None else self.wall(seconds)

        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": BATCH_ENDPOINT,
            "errors": {"object": "list", "data": batch.errors} if status == "failed" else None,
            "input_file_id": batch.input_file_id,
            "completion_window": "24h",
            "status": status,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": batch.created_at,
            "in_progress_at": at(batch.created + step) if started else None,
            "expires_at": batch.created_at + 24 * 3600,
            "finalizing_at": at(batch.created + 3 * step)
            if status in ("finalizing", "completed")
            else None,
            "completed_at": at(batch.created + 4 * step) if status == "completed" else None,
            "failed_at": at(batch.created + step) if status == "failed" else None,
            "expired_at": at(batch.expired_at),
            "cancelling_at": at(batch.cancel_at),
            "cancelled_at": at(batch.cancel_at + step)
            if status == "cancelled" and batch.cancel_at is not None
            else None,
            "request_counts": {
                "total": 0 if status in ("validating", "failed") else len(batch.requests),
                "completed": codes.count(200),
                "failed": len(codes) - codes.count(200),
            },
            "metadata": batch.metadata or None,
            "usage": {
                "input_tokens": sum(u.get("prompt_tokens", 0) for u in usage),
                "output_tokens": sum(u.get("completion_tokens", 0) for u in usage),
                "total_tokens": sum(u.get("total_tokens", 0) for u in usage),
            },
        }


@dataclass
class SimFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
        }


@dataclass
class SimBatch:
    id: str
    serial: int
    input_file_id: str
    metadata: dict[str, str]
    #: ``clock()`` at creation, and the Unix time the answers show.
    created: float
    created_at: int
    #: (custom_id, body) per line, in input order (the order they run in).
    requests: list[tuple[str, dict[str, Any]]]
    #: Validation errors (``errors.data``): the batch fails after validating.
    errors: list[dict[str, Any]]
    cancel_at: float | None = None
    expired_at: float | None = None
    #: Requests run when it was cancelled or expired.
    frozen: int = 0
    outcomes: dict[int, tuple[int, Any]] = field(default_factory=dict)
    results_written: bool = False
    output_file_id: str | None = None
    error_file_id: str | None = None


_DISPOSITION = re.compile(rb'([a-z]+)="([^"]*)"')


def multipart_fields(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]] | None:
    """name -> (filename or None, bytes) of a multipart/form-data body; None
    when it is not one."""
    kind, _, params = content_type.partition(";")
    boundary = params.strip().removeprefix("boundary=").strip('"')
    if kind.strip().lower() != "multipart/form-data" or not boundary:
        return None
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in body.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.partition(b"\r\n\r\n")
        disposition = next(
            (
                line
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-disposition")
            ),
            b"",
        )
        found = {
            k.decode(): v.decode(errors="replace") for k, v in _DISPOSITION.findall(disposition)
        }
        if "name" in found:
            fields[found["name"]] = (found.get("filename"), data.removesuffix(b"\r\n"))
    return fields


def _line_error(
    code: str, line: int | None, message: str, param: str | None = None
) -> dict[str, Any]:
    return {"code": code, "line": line, "message": message, "param": param}


def read_batch_input(data: bytes) -> tuple[list[tuple[str, dict[str, Any]]], list[dict[str, Any]]]:
    """The requests of a batch input file, and what is wrong with it (``errors.data``)."""
    requests: list[tuple[str, dict[str, Any]]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    model: str | None = None
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            line = None
        if not isinstance(line, dict):
            errors.append(
                _line_error(
                    "invalid_json_line", number, "This line is not parseable as valid JSON."
                )
            )
            continue
        custom_id, body = line.get("custom_id"), line.get("body")
        if not isinstance(custom_id, str) or not custom_id:
            errors.append(
                _line_error(
                    "missing_required_parameter", number, "Missing 'custom_id'.", "custom_id"
                )
            )
        elif custom_id in seen:
            errors.append(
                _line_error(
                    "duplicate_custom_id",
                    number,
                    "The custom_id for this request is a duplicate of another request. "
                    "The custom_id parameter must be unique for each request in a batch.",
                    "custom_id",
                )
            )
        elif line.get("method") != "POST" or line.get("url") != BATCH_ENDPOINT:
            errors.append(
                _line_error(
                    "invalid_url", number, f"Each request must be POST {BATCH_ENDPOINT}.", "url"
                )
            )
        elif not isinstance(body, dict):
            errors.append(
                _line_error("missing_required_parameter", number, "Missing 'body'.", "body")
            )
        elif model is not None and body.get("model") != model:
            errors.append(
                _line_error(
                    "mismatched_model",
                    number,
                    "Every request of a batch must use the same model.",
                    "body.model",
                )
            )
        else:
            model = model or body.get("model")
            seen.add(custom_id)
            requests.append((custom_id, body))
    if not requests and not errors:
        errors.append(_line_error("empty_file", None, "The input file holds no requests."))
    if len(requests) > MAX_BATCH_REQUESTS:
        errors.append(
            _line_error(
                "too_many_requests", None, f"A batch holds at most {MAX_BATCH_REQUESTS} requests."
            )
        )
    return requests, errors
