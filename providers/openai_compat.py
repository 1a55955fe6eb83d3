"""Any OpenAI-compatible chat completions server (vLLM, Ollama, the llama.cpp
server, Together's v1 API, OpenAI itself): the credential's ``base_url`` picks it.

What this adapter relies on from the protocol:

* Default base URL ``https://api.openai.com``; auth header
  ``Authorization: Bearer <key>``. The path is
  ``/v1/chat/completions`` under ``base_url``, or ``/chat/completions`` when
  ``base_url`` already ends in ``/v1`` (the way those servers document their
  base URL); the model list is ``GET .../v1/models``.
* Request, one per prompt: ``model``, ``messages`` (a ``system`` message when
  the job has a system prompt, then the ``user`` prompt), ``stream``, and
  ``max_tokens``, ``temperature``, ``top_p`` when set. ``top_k`` and
  ``repetition_penalty`` are not OpenAI's own: they are sent only when set,
  as the extra sampling parameters vLLM and Together accept; a server that
  does not know them may ignore them or answer 400 (REJECTED). Structured
  output is ``response_format: {"type": "json_schema", "json_schema":
  {"name", "schema", "strict": false}}`` (a ``{"field": "str"}`` map is
  converted to a JSON Schema first); the answer is the JSON text.
* Answer: ``choices[0].message.content`` (a string, or a list of text parts),
  and ``usage.prompt_tokens`` / ``usage.completion_tokens``, which
  :meth:`OpenAIProvider.run_items` reports. A ``message.refusal`` is
  REJECTED; an ``error`` object in a 200 answer is REJECTED too.
* Streaming answers Server-Sent Events: ``data: {...}`` lines whose
  ``choices[0].delta.content`` are the text chunks, ending with
  ``data: [DONE]``. The Content-Type is not trusted (some servers say
  ``text/plain``); only ``application/json`` means the server ignored
  ``stream`` and answered whole. Usage is read from the last event that
  carries one; the ``stream_usage`` option asks for it with
  ``stream_options: {"include_usage": true}``, which some servers refuse,
  so it is opt-in.
* Errors: ``{"error": {"message", "type", ...}}``, the message quoted
  redacted; 401/403 auth, 429 rate limit (``Retry-After`` honoured), 5xx.
* Retries: a completion creates nothing to duplicate, so 5xx, timeouts and
  429s may be retried a bounded number of times.
* Connection check: ``GET /v1/models``, free (``connection_check_billed`` is
  False); ``lists_models`` is True.
* Batch API (``openai-batch.md``; :class:`providers.batch.BatchAPI`): the
  requests go as a JSONL file to ``POST /v1/files`` (``purpose=batch``), then
  ``POST /v1/batches`` (``metadata`` carries the dashboard's job and chunk, so
  ``GET /v1/batches`` finds a batch whose create was never recorded);
  ``GET /v1/batches/{id}`` and ``.../cancel`` report it, and the output and
  error files (``GET /v1/files/{id}/content``) are streamed a line at a time,
  each line at most ``max_response_bytes`` (a longer one is skipped, and fails
  only the row it names, as does a line that is not JSON). A line's body is exactly what the
  online call sends, without ``stream``. The same ``/v1`` rule as the chat path
  applies. Many OpenAI-compatible servers have no batch API: a 404 on
  ``/v1/files`` or ``/v1/batches`` says so (NOT_FOUND), and
  :meth:`OpenAIProvider.batch_available` asks first.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from .base import (
    ChunkCallback,
    ErrorKind,
    ItemResult,
    JobSpec,
    ModelInfo,
    Provider,
    ProviderError,
    SpecError,
    TokenUsage,
    redacted,
    shorten,
)
from .batch import (
    BatchAPI,
    BatchLimits,
    BatchPhase,
    BatchResult,
    BatchState,
    LongLine,
    ResultKind,
    bounded_lines,
    custom_id_in,
    long_line_message,
    result_object,
    spool,
    unreadable,
)

LABEL = "OpenAI-compatible"

#: Spec fields sent under their own names when set.
PARAMS = ("max_tokens", "temperature", "top_p", "top_k", "repetition_penalty")

#: Lamini type words (any case) -> JSON Schema types.
TYPE_WORDS = {
    "str": "string",
    "string": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
}

DONE = "[DONE]"


# -- pure translation -----------------------------------------------------------


def api_path(base_url: str, path: str) -> str:
    """``/v1`` + ``path`` relative to ``base_url``, never doubling a trailing ``/v1``."""
    base = urlsplit(base_url).path.rstrip("/")
    return path if base.endswith("/v1") else f"/v1{path}"


def chat_path(base_url: str) -> str:
    """The chat path relative to ``base_url``, never doubling a trailing ``/v1``."""
    return api_path(base_url, "/chat/completions")


def is_json_schema(schema: dict[str, Any]) -> bool:
    """The same test the dashboard uses to tell them apart: a type map may
    have a field called "type", but its value is then a type word."""
    return (
        "properties" in schema or schema.get("type") in ("object", "array") or "$schema" in schema
    )


def to_json_schema(schema: Any) -> dict[str, Any] | None:
    """``output_schema`` as a JSON Schema: a JSON Schema is kept as it is, a
    Lamini-style type map is converted; anything else is a SpecError."""
    if schema is None or schema == {}:
        return None
    if not isinstance(schema, dict):
        raise SpecError("output_schema must be a JSON object.", "output_schema")
    if is_json_schema(schema):
        properties = schema.get("properties")
        if properties is not None and not isinstance(properties, dict):
            raise SpecError("output_schema 'properties' must be a JSON object.", "output_schema")
        return schema
    properties = {}
    for name, word in schema.items():
        kind = TYPE_WORDS.get(word.strip().lower()) if isinstance(word, str) else None
        if kind is None:
            raise SpecError(
                f"output_schema field {name!r} has type {json.dumps(word)}: use a JSON Schema "
                'object, or a map of field names to "str", "int", "float" or "bool".',
                "output_schema",
            )
        properties[name] = {"type": kind}
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def build_response_format(schema: Any) -> dict[str, Any] | None:
    json_schema = to_json_schema(schema)
    if json_schema is None:
        return None
    return {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": json_schema, "strict": False},
    }


def build_request(spec: JobSpec, prompt: str, *, include_usage: bool = False) -> dict[str, Any]:
    """One chat completion; ``include_usage`` asks a streamed answer to end with
    a usage chunk (``stream_options``, which some servers refuse: opt-in)."""
    messages = []
    if spec.system_prompt:
        messages.append({"role": "system", "content": spec.system_prompt})
    messages.append({"role": "user", "content": prompt})
    body: dict[str, Any] = {"model": spec.model, "messages": messages}
    for name in PARAMS:
        value = getattr(spec, name)
        if value is not None:
            body[name] = value
    response_format = build_response_format(spec.output_schema)
    if response_format is not None:
        body["response_format"] = response_format
    body["stream"] = spec.stream
    if spec.stream and include_usage:
        body["stream_options"] = {"include_usage": True}
    return body


def wants_stream_usage(job_options: dict[str, Any], credential_options: dict[str, Any]) -> bool:
    """The ``stream_usage`` option: the job's value wins over the credential's."""
    value = job_options.get("stream_usage", credential_options.get("stream_usage"))
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return value is True or value == 1


def parse_usage(body: dict[str, Any]) -> TokenUsage | None:
    """``usage.prompt_tokens`` / ``usage.completion_tokens``, when the answer has them."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    return TokenUsage.from_counts(usage.get("prompt_tokens"), usage.get("completion_tokens"))


def _protocol(why: str) -> ProviderError:
    return ProviderError(
        f"{LABEL} server sent an answer without text: {why}", kind=ErrorKind.PROTOCOL
    )


def _error_message(error: Any) -> str:
    if isinstance(error, dict):
        message = error.get("message")
        return shorten(str(message) if message else json.dumps(error), 300)
    return shorten(str(error), 300)


def _refused(error: Any) -> ProviderError:
    detail = _error_message(error)
    return ProviderError(
        f"{LABEL} server refused the request: {detail}", kind=ErrorKind.REJECTED, detail=detail
    )


def _text(content: Any) -> str | None:
    """A message's content: a string, or (some servers) a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        if len(parts) == len(content) and all(isinstance(p, str) for p in parts):
            return "".join(parts)
    return None


def parse_response(body: dict[str, Any]) -> str:
    """``choices[0].message.content`` of a whole (non-streamed) completion."""
    if body.get("error"):
        raise _refused(body["error"])
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise _protocol("the answer has no 'choices'")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise _protocol("the first choice has no 'message' object")
    text = _text(message.get("content"))
    if text is not None:
        return text
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        detail = shorten(refusal, 300)
        raise ProviderError(
            f"The model refused to answer: {detail}", kind=ErrorKind.REJECTED, detail=detail
        )
    raise _protocol("the first choice's message has no text 'content'")


class SSEDecoder:
    """Server-Sent Events, fed one line at a time (without its line ending):
    returns the data of each event a blank line completes."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> list[str]:
        line = line.rstrip("\r\n")
        if not line:
            return self.flush()
        if line.startswith(":"):  # a comment (keep-alive)
            return []
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        return []  # event:, id:, retry: carry nothing this protocol uses

    def flush(self) -> list[str]:
        data, self._data = self._data, []
        return ["\n".join(data)] if data else []


def read_stream(lines: Iterable[str], emit: Callable[[str], None]) -> str:
    """The text of a streamed completion (see :func:`read_stream_usage`)."""
    return read_stream_usage(lines, emit)[0]


def read_stream_usage(
    lines: Iterable[str], emit: Callable[[str], None]
) -> tuple[str, TokenUsage | None]:
    """The text of a streamed completion and the last usage any event carried:
    each ``delta.content`` is passed to ``emit`` as it arrives; reading stops at
    ``data: [DONE]``."""
    decoder = SSEDecoder()
    chunks: list[str] = []
    state = {"done": False, "finished": False}
    usage: list[TokenUsage] = []

    def handle(data: str) -> None:
        if data.strip() == DONE:
            state["done"] = True
            return
        try:
            event = json.loads(data)
        except ValueError:
            if "\n" in data:  # a server that forgot the blank line between events
                for line in data.split("\n"):
                    if not state["done"] and line.strip():
                        handle(line)
                return
            raise ProviderError(
                f"{LABEL} server sent a stream event that is not JSON: {shorten(data, 120)!r}",
                kind=ErrorKind.PROTOCOL,
            ) from None
        if not isinstance(event, dict):
            raise ProviderError(
                f"{LABEL} server sent a stream event of an unexpected shape "
                f"({type(event).__name__})",
                kind=ErrorKind.PROTOCOL,
            )
        if event.get("error"):
            raise _refused(event["error"])
        if (reported := parse_usage(event)) is not None:
            usage.append(reported)
        for choice in event.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(text, str) and text:
                chunks.append(text)
                emit(text)
            if choice.get("finish_reason"):
                state["finished"] = True

    def result() -> tuple[str, TokenUsage | None]:
        return "".join(chunks), (usage[-1] if usage else None)

    for line in lines:
        for data in decoder.feed(line):
            handle(data)
            if state["done"]:
                return result()
    for data in decoder.flush():  # the last event without its blank line
        handle(data)
    if not (state["done"] or state["finished"]):
        raise ProviderError(
            f"{LABEL} server ended the stream before 'data: {DONE}'; the answer may be cut short",
            kind=ErrorKind.PROTOCOL,
        )
    return result()


def parse_models(body: dict[str, Any]) -> list[ModelInfo]:
    """``GET /v1/models``: ``{"object": "list", "data": [{"id": ...}, ...]}``."""
    items = body.get("data")
    if not isinstance(items, list):
        raise ProviderError(
            f"{LABEL} server sent a model list without 'data'", kind=ErrorKind.PROTOCOL
        )
    return [
        ModelInfo(item["id"])
        for item in items
        if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]
    ]


# -- batch translation ----------------------------------------------------------

#: The endpoint every request line and every batch names.
BATCH_ENDPOINT = "/v1/chat/completions"
BATCH_LIMITS = BatchLimits(max_requests=50_000, max_bytes=200 * 1024 * 1024)
#: ``GET /v1/batches`` pages (of 100) a lookup by metadata reads at most, newest first.
FIND_PAGES = 10

BATCH_PHASES = {
    "validating": BatchPhase.VALIDATING,
    "in_progress": BatchPhase.RUNNING,
    "finalizing": BatchPhase.RUNNING,
    "cancelling": BatchPhase.RUNNING,
    "completed": BatchPhase.ENDED,
    "expired": BatchPhase.ENDED,
    "cancelled": BatchPhase.ENDED,
    "failed": BatchPhase.FAILED,
}
#: A request's ``error.code`` -> what became of it (any other code: ERRORED).
RESULT_KINDS = {"batch_expired": ResultKind.EXPIRED, "batch_cancelled": ResultKind.CANCELLED}


def build_batch_line(custom_id: str, spec: JobSpec, prompt: str) -> dict[str, Any]:
    """One request of a batch input file: the online call's body, without ``stream``."""
    body = build_request(spec, prompt)
    body.pop("stream", None)
    return {"custom_id": custom_id, "method": "POST", "url": BATCH_ENDPOINT, "body": body}


def _batch_protocol(why: str) -> ProviderError:
    return ProviderError(f"{LABEL} server sent a batch {why}", kind=ErrorKind.PROTOCOL)


def _count_of(counts: dict[str, Any], name: str) -> int | None:
    value = counts.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _file_id(value: Any) -> str:
    return value if isinstance(value, str) else ""


def batch_errors(errors: Any) -> list[str]:
    """``errors.data`` as "line N: code: message" strings."""
    data = errors.get("data") if isinstance(errors, dict) else None
    found = []
    for entry in data if isinstance(data, list) else ():
        if not isinstance(entry, dict):
            continue
        parts = [str(entry[key]) for key in ("code", "message") if entry.get(key)]
        line = entry.get("line")
        prefix = f"line {line}: " if isinstance(line, int) and not isinstance(line, bool) else ""
        found.append(prefix + (": ".join(parts) or "invalid"))
    return found


def parse_batch(body: dict[str, Any]) -> BatchState:
    """A batch object as a :class:`BatchState`."""
    remote_id, status = body.get("id"), body.get("status")
    if not isinstance(remote_id, str) or not remote_id:
        raise _batch_protocol("object without an 'id'")
    phase = BATCH_PHASES.get(status) if isinstance(status, str) else None
    if phase is None:
        raise _batch_protocol(f"object with an unknown status: {shorten(str(status), 60)!r}")
    counts = body.get("request_counts")
    counts = counts if isinstance(counts, dict) else {}
    metadata = body.get("metadata")
    return BatchState(
        remote_id=remote_id,
        phase=phase,
        provider_status=status,
        total=_count_of(counts, "total"),
        completed=_count_of(counts, "completed"),
        failed=_count_of(counts, "failed"),
        counts_live=True,
        input_file_id=_file_id(body.get("input_file_id")),
        output_file_id=_file_id(body.get("output_file_id")),
        error_file_id=_file_id(body.get("error_file_id")),
        errors=tuple(batch_errors(body.get("errors"))),
        ended_as=status if phase is BatchPhase.ENDED else "",
        metadata={
            str(k): str(v) for k, v in (metadata.items() if isinstance(metadata, dict) else ())
        },
    )


def parse_result_line(line: dict[str, Any]) -> BatchResult:
    """One line of an output or error file (its message not yet redacted)."""
    custom = line.get("custom_id")
    if not isinstance(custom, str) or not custom:
        raise _batch_protocol("result line without a 'custom_id'")
    response, error = line.get("response"), line.get("error")
    if isinstance(response, dict):
        status, body = response.get("status_code"), response.get("body")
        body = body if isinstance(body, dict) else {}
        if status == 200:
            try:
                text = parse_response(body)
            except ProviderError as exc:
                return BatchResult(
                    custom, ResultKind.ERRORED, code=exc.kind.value, message=exc.message
                )
            usage = parse_usage(body)
            result = ItemResult(
                text,
                tokens_in=usage.tokens_in if usage else None,
                tokens_out=usage.tokens_out if usage else None,
            )
            return BatchResult(custom, ResultKind.SUCCEEDED, result=result)
        if isinstance(status, int) and not isinstance(status, bool):
            detail = body.get("error")
            code = (detail.get("code") or detail.get("type")) if isinstance(detail, dict) else None
            message = _error_message(detail) if detail else f"HTTP {status}"
            return BatchResult(
                custom, ResultKind.ERRORED, code=str(code or status), message=message
            )
    if isinstance(error, dict):
        code = str(error.get("code") or "")
        kind = RESULT_KINDS.get(code, ResultKind.ERRORED)
        return BatchResult(custom, kind, code=code, message=_error_message(error))
    return BatchResult(
        custom, ResultKind.ERRORED, code="protocol", message="The result line has no response."
    )


# -- the adapter ----------------------------------------------------------------


class OpenAIProvider(BatchAPI, Provider):
    slug = "openai"
    label = LABEL
    default_base_url = "https://api.openai.com"
    kind = "sync"
    supports_stream = True
    lists_models = True
    supported_fields = frozenset({"system_prompt", *PARAMS, "output_schema"})
    option_names = ("stream_usage",)
    # ``GET /v1/models`` is free and needs the key.
    connection_check_billed = False

    @property
    def path(self) -> str:
        return chat_path(self.base_url)

    def validate(self, spec: JobSpec) -> None:
        super().validate(spec)
        to_json_schema(spec.output_schema)

    @redacted
    def run(
        self, spec: JobSpec, indexes: list[int], on_chunk: ChunkCallback | None = None
    ) -> list[Any]:
        return [item.output for item in self.run_items(spec, indexes, on_chunk)]

    @redacted
    def run_items(
        self, spec: JobSpec, indexes: list[int], on_chunk: ChunkCallback | None = None
    ) -> list[ItemResult]:
        (index,) = indexes
        include_usage = wants_stream_usage(spec.options, self.options)
        body = build_request(spec, spec.prompts[index], include_usage=include_usage)
        started = self.clock()
        if spec.stream:
            text, usage = self._run_streamed(body, index, on_chunk)
        else:
            answer = self.json(self.request("POST", self.path, json=body))
            text, usage = parse_response(answer), parse_usage(answer)
        return [
            ItemResult(
                text,
                tokens_in=usage.tokens_in if usage else None,
                tokens_out=usage.tokens_out if usage else None,
                latency_ms=self._elapsed_ms(started),
            )
        ]

    def _run_streamed(
        self, body: dict[str, Any], index: int, on_chunk: ChunkCallback | None
    ) -> tuple[str, TokenUsage | None]:
        def emit(text: str) -> None:
            if on_chunk is not None:
                on_chunk(index, text)

        path = self.path
        try:
            with self.client.stream(
                "POST", path, json=body, headers={"Accept": "text/event-stream"}
            ) as response:
                if response.status_code >= 400:
                    self.read(response)
                    self.raise_for_status(response)
                content_type = response.headers.get("content-type", "")
                if content_type.startswith("application/json"):
                    # A server that ignores ``stream`` answers the whole completion.
                    self.read(response)
                    answer = self.json(response)
                    text = parse_response(answer)
                    if text:
                        emit(text)
                    return text, parse_usage(answer)
                return read_stream_usage(self.capped(response.iter_lines()), emit)
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, "POST", path) from None

    @redacted
    def list_models(self) -> list[ModelInfo]:
        path = self.path.removesuffix("/chat/completions") + "/models"
        return parse_models(self.json(self.request("GET", path)))

    def probe_connection(self, model: str) -> str:
        return f"The server listed {len(self.list_models())} models."

    # -- batch API ----------------------------------------------------------------

    def batch_limits(self) -> BatchLimits:
        return BATCH_LIMITS

    def batch_line(self, custom_id: str, prompt: str, spec: JobSpec) -> bytes:
        line = build_batch_line(custom_id, spec, prompt)
        return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode()

    @redacted
    def batch_upload(self, lines: Iterable[bytes]) -> str:
        """The input file, written to a temporary file as the lines come and
        uploaded from it (multipart, with its length): never whole in memory."""

        def too_large() -> ProviderError:
            return ProviderError(
                f"A batch input file is at most {BATCH_LIMITS.max_bytes // (1024 * 1024)} MB.",
                kind=ErrorKind.INVALID_SPEC,
            )

        with spool(
            lines, line_end=b"\n", max_bytes=BATCH_LIMITS.max_bytes, too_large=too_large
        ) as body:
            if not body.count:
                raise ProviderError(
                    "A batch needs at least one request.", kind=ErrorKind.INVALID_SPEC
                )
            answer = self._batch_json(
                "POST",
                "/files",
                data={"purpose": "batch"},
                files={"file": ("batch.jsonl", body.file, "application/jsonl")},
            )
        file_id = answer.get("id")
        if not isinstance(file_id, str) or not file_id:
            raise _batch_protocol("file object without an 'id'")
        return file_id

    @redacted
    def batch_create(
        self, lines: Iterable[bytes], input_file_id: str | None, metadata: dict[str, str]
    ) -> BatchState:
        if not input_file_id:
            raise ProviderError(
                "An OpenAI batch is created from an uploaded file.", kind=ErrorKind.INVALID_SPEC
            )
        body = {
            "input_file_id": input_file_id,
            "endpoint": BATCH_ENDPOINT,
            "completion_window": "24h",
            "metadata": {str(k): str(v) for k, v in metadata.items()},
        }
        return self._state(self._batch_json("POST", "/batches", json=body))

    @redacted
    def batch_find(
        self, metadata: dict[str, str], *, pages: int = FIND_PAGES, since: float | None = None
    ) -> BatchState | None:
        """The newest batch whose metadata holds every pair of ``metadata``,
        among the newest ``pages`` pages of batches (and, with ``since``, those
        created at that Unix time or later); None when there is none."""
        wanted = {str(k): str(v) for k, v in metadata.items()}
        if not wanted:  # would match any batch at all
            raise ProviderError(
                "A batch is looked up by its metadata.", kind=ErrorKind.INVALID_SPEC
            )
        after: str | None = None
        for _ in range(pages):
            params: dict[str, Any] = {"limit": 100, **({"after": after} if after else {})}
            page = self._batch_json("GET", "/batches", params=params)
            batches = page.get("data")
            if not isinstance(batches, list):
                raise _batch_protocol("list without 'data'")
            for batch in batches:
                if not isinstance(batch, dict):
                    continue
                created = batch.get("created_at")
                if since is not None and isinstance(created, int | float) and created < since:
                    return None  # newest first: every later one is older still
                found = batch.get("metadata")
                if isinstance(found, dict) and all(found.get(k) == v for k, v in wanted.items()):
                    return self._state(batch)
            last = batches[-1].get("id") if batches and isinstance(batches[-1], dict) else None
            if not page.get("has_more") or not isinstance(last, str) or not last:
                return None
            after = last
        return None

    @redacted
    def batch_get(self, remote_id: str) -> BatchState:
        path = self.batch_path(f"/batches/{quote(remote_id, safe='')}")
        return self._state(self.json(self.request("GET", path)))

    @redacted
    def batch_cancel(self, remote_id: str) -> BatchState:
        path = self.batch_path(f"/batches/{quote(remote_id, safe='')}/cancel")
        return self._state(self.json(self.request("POST", path)))

    @redacted
    def batch_results(self, state: BatchState) -> Iterator[BatchResult]:
        """Every line of the output file, then of the error file (either may be
        absent), read as it arrives. A line that cannot be read (longer than
        ``max_response_bytes``, not JSON, not an object, without a
        ``custom_id``) is an ERRORED result for the row it still names, or
        for none; the lines after it are read as ever."""
        for file_id in (state.output_file_id, state.error_file_id):
            if file_id:
                yield from self._file_results(file_id)

    @redacted
    def batch_available(self) -> bool:
        """Whether the server has a batch API: ``GET /v1/batches?limit=1``
        answers (True) or is not found (False); anything else raises."""
        try:
            self.request("GET", self.batch_path("/batches"), params={"limit": 1})
        except ProviderError as exc:
            if exc.status_code == 404:
                return False
            raise
        return True

    def batch_path(self, path: str) -> str:
        return api_path(self.base_url, path)

    def _batch_json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """A call to a batch collection (``/files``, ``/batches``), where a 404
        means the server has no batch API."""
        full = self.batch_path(path)
        try:
            return self.json(self.request(method, full, **kwargs))
        except ProviderError as exc:
            if exc.status_code != 404:
                raise
            said = f": {exc.detail}" if exc.detail else ""
            raise ProviderError(
                f"{self.label} server at {self.base_url} has no batch API "
                f"({method} {full} answered 404 Not Found{said}); run the job online instead.",
                kind=ErrorKind.NOT_FOUND,
                status_code=404,
                detail=exc.detail,
            ) from None

    def _state(self, body: dict[str, Any]) -> BatchState:
        state = parse_batch(body)
        if not state.errors:
            return state
        return replace(state, errors=tuple(self.readable(error) for error in state.errors))

    def _file_results(self, file_id: str) -> Iterator[BatchResult]:
        path = self.batch_path(f"/files/{quote(file_id, safe='')}/content")
        try:
            with self.client.stream("GET", path) as response:
                if response.status_code >= 400:
                    self.read(response)
                    self.raise_for_status(response)
                lines = bounded_lines(response.iter_bytes(), self.max_response_bytes)
                for raw in lines:
                    yield self._result(raw)
        except httpx.HTTPError as exc:
            raise self.redact_error(self.transport_error(exc, "GET", path)) from None
        except ProviderError as exc:
            raise self.redact_error(exc) from None

    def _result(self, raw: bytes | LongLine) -> BatchResult:
        if isinstance(raw, LongLine):
            message = long_line_message(self.label, raw, self.max_response_bytes)
            return unreadable(custom_id_in(raw.head), message)
        line = result_object(raw, f"{LABEL} server", lambda text: self.readable(text, 120))
        if isinstance(line, BatchResult):
            return line
        result = parse_result_line(line)
        if not result.message:
            return result
        return replace(
            result, message=self.readable(result.message), code=self.readable(result.code)
        )
