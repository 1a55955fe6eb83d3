"""Anthropic's Messages API and Message Batches API (``anthropic-batches.md``).

What this adapter relies on from the protocol:

* Default base URL ``https://api.anthropic.com``; every call sends
  ``x-api-key: <key>`` and ``anthropic-version: 2023-06-01`` (no
  ``Authorization`` header). Paths are ``/v1/...`` under ``base_url``, never
  doubling a ``/v1`` the base URL already ends in.
* ``POST /v1/messages``, one prompt per request: ``model``, ``max_tokens``
  (required by the API: the job's, else :data:`DEFAULT_MAX_TOKENS`),
  ``messages`` (the ``user`` prompt), ``system`` when the job has a system
  prompt, and ``temperature`` (0 to 1), ``top_p``, ``top_k`` when set. There is
  no ``repetition_penalty`` and no ``question``: a job with one is refused.
* The answer's text is its ``text`` content blocks joined; usage is
  ``usage.input_tokens`` / ``usage.output_tokens``.
* Structured output is one tool whose ``input_schema`` is the job's schema
  (a ``{"field": "str"}`` map converted first), forced with ``tool_choice:
  {"type": "tool", "name": "output"}``; the output is that ``tool_use``
  block's ``input`` object. A tool's input is an object, so an array schema is
  refused.
* ``stream: true`` answers Server-Sent Events: ``message_start`` (input
  tokens), ``content_block_delta`` (``text_delta`` text or ``input_json_delta``
  partial JSON, both passed to the stream callback), ``message_delta``
  (output tokens), ``message_stop``; ``ping`` is ignored and an ``error`` event
  fails the call as its error type says.
* Errors: ``{"type": "error", "error": {"type", "message"}}``; 401/403 auth,
  404 not found, 413 too large (invalid spec), 429 rate limit with
  ``retry-after``, 500 and 529 (overloaded) retryable.
* ``GET /v1/models`` (paged by ``after_id`` while ``has_more``) is the model
  list and the free connection check.
* Batches (:class:`providers.batch.BatchAPI`): the requests go inline in
  ``POST /v1/messages/batches``; there is no metadata to find a batch by, so
  ``batch_find`` cannot tell. Results are JSONL at the batch's
  ``results_url``, read line by line; a line that cannot be read (not JSON,
  longer than ``max_response_bytes``, without a ``custom_id``) fails only the
  row it still names.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
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
    parse_retry_after,
    redacted,
    shorten,
)
from .batch import (
    BatchAPI,
    BatchLimits,
    BatchLookupUnsupported,
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
from .openai_compat import SSEDecoder, to_json_schema

LABEL = "Anthropic"
API_VERSION = "2023-06-01"
#: The API requires ``max_tokens``; a job that sets none gets this (the
#: value of Anthropic's own examples).
DEFAULT_MAX_TOKENS = 1024
#: Spec fields sent under their own names when set.
PARAMS = ("temperature", "top_p", "top_k")
#: The forced tool of structured output.
TOOL_NAME = "output"
#: Model pages asked for, and how many at most (a server that says ``has_more`` for ever).
MODELS_PAGE_SIZE = 1000
MAX_MODEL_PAGES = 20
BATCH_MAX_REQUESTS = 100_000
BATCH_MAX_BYTES = 256 * 1024 * 1024

#: Error ``type`` words -> kinds, for errors that come without an HTTP status
#: (a stream's ``error`` event, an errored batch line).
ERROR_KINDS = {
    "invalid_request_error": ErrorKind.REJECTED,
    "authentication_error": ErrorKind.AUTH,
    "permission_error": ErrorKind.AUTH,
    "not_found_error": ErrorKind.NOT_FOUND,
    "request_too_large": ErrorKind.INVALID_SPEC,
    "rate_limit_error": ErrorKind.RATE_LIMIT,
    "api_error": ErrorKind.SERVER,
    "overloaded_error": ErrorKind.SERVER,
}

_UNEXPRESSIBLE = {
    "repetition_penalty": "a repetition penalty",
    "question": "a question applied to every prompt (put it in the prompt or the system prompt)",
}


# -- pure translation -----------------------------------------------------------


def api_path(base_url: str, path: str) -> str:
    """``/v1`` + ``path`` relative to ``base_url``, never doubling a trailing ``/v1``."""
    base = urlsplit(base_url).path.rstrip("/")
    return path if base.endswith("/v1") else "/v1" + path


def tool_schema(schema: Any) -> dict[str, Any] | None:
    """``output_schema`` as a tool's ``input_schema`` (an object schema), or None."""
    json_schema = to_json_schema(schema)
    if json_schema is None:
        return None
    kind = json_schema.get("type", "object")
    if kind != "object":
        raise SpecError(
            "Anthropic returns structured output as a tool's input, which is an object: "
            f"output_schema must describe an object, not {json.dumps(kind)}.",
            "output_schema",
        )
    return json_schema if "type" in json_schema else {"type": "object", **json_schema}


def build_request(spec: JobSpec, prompt: str) -> dict[str, Any]:
    """One Messages body, streamed when the spec says so."""
    body: dict[str, Any] = {
        "model": spec.model,
        "max_tokens": spec.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": prompt}],
    }
    if spec.system_prompt:
        body["system"] = spec.system_prompt
    for name in PARAMS:
        value = getattr(spec, name)
        if value is not None:
            body[name] = value
    schema = tool_schema(spec.output_schema)
    if schema is not None:
        body["tools"] = [
            {
                "name": TOOL_NAME,
                "description": "Record the answer in the requested structure.",
                "input_schema": schema,
            }
        ]
        body["tool_choice"] = {"type": "tool", "name": TOOL_NAME}
    if spec.stream:
        body["stream"] = True
    return body


def parse_usage(usage: Any) -> TokenUsage | None:
    if not isinstance(usage, dict):
        return None
    return TokenUsage.from_counts(usage.get("input_tokens"), usage.get("output_tokens"))


def _protocol(why: str) -> ProviderError:
    return ProviderError(f"{LABEL} sent an answer without {why}", kind=ErrorKind.PROTOCOL)


def error_parts(error: Any) -> tuple[str, str]:
    """(type, message) of an error object: ``{"type": "error", "error": {...}}``
    or the inner ``{"type", "message"}``."""
    if isinstance(error, dict) and isinstance(error.get("error"), dict):
        error = error["error"]
    if isinstance(error, dict):
        kind, message = error.get("type"), error.get("message")
        return (
            kind if isinstance(kind, str) else "",
            str(message) if message else json.dumps(error),
        )
    return "", str(error)


def error_from_event(error: Any) -> ProviderError:
    """An ``error`` that came in a 200 answer (a stream event): its type says the kind."""
    kind_word, message = error_parts(error)
    detail = shorten(message, 300)
    kind = ERROR_KINDS.get(kind_word, ErrorKind.SERVER)
    word = f" ({kind_word})" if kind_word else ""
    return ProviderError(
        f"{LABEL} ended the answer with an error{word}: {detail}", kind=kind, detail=detail
    )


def parse_message(body: dict[str, Any], structured: bool | None) -> Any:
    """The output of a Messages answer: the forced tool's ``input`` when
    ``structured``, else the text blocks joined. ``structured=None`` (a batch
    line, whose request is not at hand) takes the tool's input when there is one."""
    if body.get("type") == "error":
        raise error_from_event(body)
    content = body.get("content")
    if not isinstance(content, list):
        raise _protocol("a 'content' list")
    blocks = [block for block in content if isinstance(block, dict)]
    if structured is not False:
        for block in blocks:
            if block.get("type") == "tool_use" and block.get("name") == TOOL_NAME:
                if "input" not in block:
                    raise _protocol("the tool's 'input'")
                return block["input"]
        if structured:
            raise _protocol(f"the structured output (no '{TOOL_NAME}' tool_use block)")
    texts = [block.get("text") for block in blocks if block.get("type") == "text"]
    return "".join(text for text in texts if isinstance(text, str))


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class StreamReader:
    """The events of a streamed Messages answer, fed one SSE data at a time."""

    def __init__(self, emit: Callable[[str], None], structured: bool) -> None:
        self.emit, self.structured = emit, structured
        self.text: list[str] = []
        self.json: list[str] = []
        self.tokens_in: Any = None
        self.tokens_out: Any = None
        self.stop_reason: Any = None
        self.tool_seen = False
        self.done = False

    def feed(self, data: str) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            raise ProviderError(
                f"{LABEL} sent a stream event that is not JSON: {shorten(data, 120)!r}",
                kind=ErrorKind.PROTOCOL,
            ) from None
        if not isinstance(event, dict):
            raise ProviderError(
                f"{LABEL} sent a stream event of an unexpected shape ({type(event).__name__})",
                kind=ErrorKind.PROTOCOL,
            )
        kind = event.get("type")
        if kind == "error":
            raise error_from_event(event)
        if kind == "message_start":
            usage = _object(_object(event.get("message")).get("usage"))
            self.tokens_in = usage.get("input_tokens")
            self.tokens_out = usage.get("output_tokens", self.tokens_out)
        elif kind == "content_block_start":
            block = _object(event.get("content_block"))
            if block.get("type") == "tool_use" and block.get("name") == TOOL_NAME:
                self.tool_seen = True
        elif kind == "content_block_delta":
            self._delta(_object(event.get("delta")))
        elif kind == "message_delta":
            self.tokens_out = _object(event.get("usage")).get("output_tokens", self.tokens_out)
            self.stop_reason = _object(event.get("delta")).get("stop_reason", self.stop_reason)
        elif kind == "message_stop":
            self.done = True
        # ping, content_block_start/stop and unknown events carry nothing we use

    def _delta(self, delta: dict[str, Any]) -> None:
        if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
            piece, sink = delta["text"], self.text
        elif delta.get("type") == "input_json_delta" and isinstance(delta.get("partial_json"), str):
            piece, sink = delta["partial_json"], self.json
        else:
            return
        if piece:
            sink.append(piece)
            self.emit(piece)

    def result(self) -> tuple[Any, TokenUsage | None]:
        usage = TokenUsage.from_counts(self.tokens_in, self.tokens_out)
        if not self.structured:
            return "".join(self.text), usage
        if not self.tool_seen:
            raise _protocol(f"the structured output (no '{TOOL_NAME}' tool_use block)")
        text = "".join(self.json) or "{}"  # a tool called with no input streams no deltas
        try:
            return json.loads(text), usage
        except ValueError:
            cut = " (stopped at max_tokens)" if self.stop_reason == "max_tokens" else ""
            raise ProviderError(
                f"{LABEL} streamed a structured answer that is not whole JSON{cut}: "
                f"{shorten(text, 120)!r}",
                kind=ErrorKind.PROTOCOL,
            ) from None


def read_stream(
    lines: Iterable[str], emit: Callable[[str], None], *, structured: bool = False
) -> tuple[Any, TokenUsage | None]:
    """The output and usage of a streamed answer; reading stops at ``message_stop``."""
    decoder = SSEDecoder()
    reader = StreamReader(emit, structured)
    for line in lines:
        for data in decoder.feed(line):
            reader.feed(data)
            if reader.done:
                return reader.result()
    for data in decoder.flush():
        reader.feed(data)
    if not reader.done:
        raise ProviderError(
            f"{LABEL} ended the stream before 'message_stop'; the answer may be cut short",
            kind=ErrorKind.PROTOCOL,
        )
    return reader.result()


def parse_models_page(body: dict[str, Any]) -> tuple[list[ModelInfo], str | None]:
    """One page of ``GET /v1/models``: its models, and the cursor of the next page."""
    items = body.get("data")
    if not isinstance(items, list):
        raise _protocol("a model list ('data')")
    models = [
        ModelInfo(item["id"])
        for item in items
        if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]
    ]
    last_id = body.get("last_id")
    more = body.get("has_more") is True and isinstance(last_id, str) and bool(last_id)
    return models, (last_id if more else None)


#: A create's body: ``{"requests": [...]}`` from lines that are already JSON
#: objects, joined, not re-parsed (``batch_create`` streams it from a file).
BODY_OPENING, BODY_SEPARATOR, BODY_CLOSING = b'{"requests":[', b",", b"]}"


def batch_requests_body(lines: Iterable[bytes]) -> bytes:
    """The create's body for ``lines``, whole (for a small batch, and tests)."""
    return BODY_OPENING + BODY_SEPARATOR.join(lines) + BODY_CLOSING


def parse_batch(body: dict[str, Any]) -> BatchState:
    """A Message Batch object as a :class:`BatchState`."""
    remote_id = body.get("id")
    if not isinstance(remote_id, str) or not remote_id:
        raise _protocol("a batch 'id'")
    status = str(body.get("processing_status") or "")
    counts = body.get("request_counts")
    counts = counts if isinstance(counts, dict) else {}

    def count(name: str) -> int:
        value = counts.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    names = ("processing", "succeeded", "errored", "canceled", "expired")
    ended = status == "ended"
    results_url = body.get("results_url")
    return BatchState(
        remote_id=remote_id,
        # in_progress, canceling, and any word the document does not name: still running.
        phase=BatchPhase.ENDED if ended else BatchPhase.RUNNING,
        provider_status=status,
        total=sum(count(name) for name in names),
        completed=count("succeeded") if ended else None,
        failed=count("errored") + count("expired") + count("canceled") if ended else None,
        processing=count("processing"),
        counts_live=False,
        results_url=results_url if isinstance(results_url, str) else "",
        ended_as="ended" if ended else "",
    )


RESULT_KINDS = {
    "succeeded": ResultKind.SUCCEEDED,
    "errored": ResultKind.ERRORED,
    "canceled": ResultKind.CANCELLED,
    "expired": ResultKind.EXPIRED,
}
_RESULT_WORDS = {
    ResultKind.CANCELLED: ("canceled", "The batch was canceled before this request ran."),
    ResultKind.EXPIRED: ("expired", "The batch ended (24 hours) before this request ran."),
}


def parse_result_line(line: bytes, redact: Callable[[str], str]) -> BatchResult:
    """One JSONL result line. A line that is not JSON, or names no
    ``custom_id``, is an unreadable result (for the row its head still
    names, if any); a line that can be matched but makes no sense fails only
    its item."""
    row = result_object(line, LABEL, lambda text: shorten(redact(text), 120))
    if isinstance(row, BatchResult):
        return row
    cid = row["custom_id"]
    result = row.get("result")
    result = result if isinstance(result, dict) else {}
    kind = RESULT_KINDS.get(str(result.get("type")))
    if kind is ResultKind.SUCCEEDED:
        message = result.get("message")
        try:
            if not isinstance(message, dict):
                raise _protocol("a 'message' in a succeeded result")
            output = parse_message(message, None)
        except ProviderError as exc:
            return BatchResult(
                cid, ResultKind.ERRORED, code="protocol", message=redact(exc.message)
            )
        usage = parse_usage(message.get("usage")) or TokenUsage()
        return BatchResult(cid, kind, result=ItemResult(output, usage.tokens_in, usage.tokens_out))
    if kind is ResultKind.ERRORED:
        code, text = error_parts(result.get("error"))
        return BatchResult(cid, kind, code=code or "error", message=redact(shorten(text, 300)))
    if kind is not None:
        code, text = _RESULT_WORDS[kind]
        return BatchResult(cid, kind, code=code, message=text)
    word = shorten(redact(str(result.get("type"))), 40)
    return BatchResult(
        cid, ResultKind.ERRORED, code="protocol", message=f"Unknown result type {word!r}."
    )


# -- the adapter ----------------------------------------------------------------


class AnthropicProvider(BatchAPI, Provider):
    slug = "anthropic"
    label = LABEL
    default_base_url = "https://api.anthropic.com"
    #: Models of Anthropic's public documentation, so the new-job form starts
    #: with one before the model list (``GET /v1/models``) was fetched.
    documented_models = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1")
    kind = "sync"
    supports_stream = True
    lists_models = True
    supported_fields = frozenset({"system_prompt", "max_tokens", *PARAMS, "output_schema"})
    # ``GET /v1/models`` is free and needs the key.
    connection_check_billed = False

    def _new_client(self) -> httpx.Client:
        client = super()._new_client()
        del client.headers["Authorization"]
        client.headers["x-api-key"] = self._secret
        client.headers["anthropic-version"] = API_VERSION
        return client

    def path(self, path: str) -> str:
        return api_path(self.base_url, path)

    def validate(self, spec: JobSpec) -> None:
        super().validate(spec)
        for name, what in _UNEXPRESSIBLE.items():
            if getattr(spec, name):
                raise SpecError(f"Anthropic's Messages API has no {what}.", name)
        if spec.temperature is not None and not 0 <= spec.temperature <= 1:
            raise SpecError("Anthropic takes a temperature from 0 to 1.", "temperature")
        tool_schema(spec.output_schema)

    # -- online --------------------------------------------------------------

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
        body = build_request(spec, spec.prompts[index])
        structured = "tools" in body
        started = self.clock()
        if spec.stream:
            output, usage = self._run_streamed(body, index, structured, on_chunk)
        else:
            answer = self.json(self.request("POST", self.path("/messages"), json=body))
            output, usage = parse_message(answer, structured), parse_usage(answer.get("usage"))
        return [
            ItemResult(
                output,
                tokens_in=usage.tokens_in if usage else None,
                tokens_out=usage.tokens_out if usage else None,
                latency_ms=self._elapsed_ms(started),
            )
        ]

    def _run_streamed(
        self,
        body: dict[str, Any],
        index: int,
        structured: bool,
        on_chunk: ChunkCallback | None,
    ) -> tuple[Any, TokenUsage | None]:
        def emit(text: str) -> None:
            if on_chunk is not None:
                on_chunk(index, text)

        path = self.path("/messages")
        try:
            with self.client.stream(
                "POST", path, json=body, headers={"Accept": "text/event-stream"}
            ) as response:
                if response.status_code >= 400:
                    self.read(response)
                    self.raise_for_status(response)
                lines = self.capped(response.iter_lines())
                return read_stream(lines, emit, structured=structured)
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, "POST", path) from None

    # -- models and the connection check ------------------------------------------

    @redacted
    def list_models(self) -> list[ModelInfo]:
        models: list[ModelInfo] = []
        params: dict[str, Any] = {"limit": MODELS_PAGE_SIZE}
        for _ in range(MAX_MODEL_PAGES):
            page, after = parse_models_page(
                self.json(self.request("GET", self.path("/models"), params=params))
            )
            models.extend(page)
            if after is None or after == params.get("after_id"):
                break
            params = {"limit": MODELS_PAGE_SIZE, "after_id": after}
        return models

    def probe_connection(self, model: str) -> str:
        return f"{LABEL} listed {len(self.list_models())} models."

    # -- errors ----------------------------------------------------------------

    def error_detail(self, response: httpx.Response) -> str:
        """The documented ``{"type": "error", "error": {"type", "message"}}`` as
        "message (type)"; any other shape as the base class reads it."""
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            kind = error.get("type")
            suffix = f" ({kind})" if isinstance(kind, str) and kind else ""
            return self.readable(error["message"] + suffix)
        return super().error_detail(response)

    def raise_for_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if status not in (413, 529):
            super().raise_for_status(response)
            return
        detail = self.redact(self.error_detail(response))
        suffix = f": {detail}" if detail else ""
        if status == 413:
            raise ProviderError(
                f"{LABEL} refused a request too large (HTTP 413){suffix}",
                kind=ErrorKind.INVALID_SPEC,
                status_code=status,
                detail=detail,
            )
        raise ProviderError(
            f"{LABEL} is overloaded (HTTP 529){suffix}",
            kind=ErrorKind.SERVER,
            status_code=status,
            detail=detail,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )

    # -- batches ---------------------------------------------------------------

    def batch_limits(self) -> BatchLimits:
        return BatchLimits(max_requests=BATCH_MAX_REQUESTS, max_bytes=BATCH_MAX_BYTES)

    def batch_line(self, custom_id: str, prompt: str, spec: JobSpec) -> bytes:
        params = build_request(spec, prompt)
        params.pop("stream", None)  # a batch request is never streamed
        line = {"custom_id": custom_id, "params": params}
        return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode()

    @redacted
    def batch_upload(self, lines: Iterable[bytes]) -> str | None:
        return None  # the requests go inline in the create call

    @redacted
    def batch_create(
        self, lines: Iterable[bytes], input_file_id: str | None, metadata: dict[str, str]
    ) -> BatchState:
        # Anthropic keeps no metadata with a batch: ``metadata`` is not sent.
        # The body (``{"requests": [...]}``, the lines joined, not re-parsed)
        # goes from a temporary file with its length: never whole in memory.
        with spool(
            lines, separator=BODY_SEPARATOR, opening=BODY_OPENING, closing=BODY_CLOSING
        ) as body:
            if not body.count:
                raise SpecError("A batch needs at least one request.", "prompts")
            response = self.request(
                "POST",
                self.path("/messages/batches"),
                content=body.chunks(),
                headers={"Content-Type": "application/json", "Content-Length": str(body.size)},
            )
        return parse_batch(self.json(response))

    @redacted
    def batch_find(self, metadata: dict[str, str]) -> BatchState | None:
        raise BatchLookupUnsupported(
            "Anthropic cannot find a batch by what was sent with it: a create that may "
            "have happened stays unknown."
        )

    @redacted
    def batch_get(self, remote_id: str) -> BatchState:
        return parse_batch(self.json(self.request("GET", self._batch_path(remote_id))))

    @redacted
    def batch_cancel(self, remote_id: str) -> BatchState:
        path = self._batch_path(remote_id) + "/cancel"
        return parse_batch(self.json(self.request("POST", path)))

    @redacted
    def batch_results(self, state: BatchState) -> Iterator[BatchResult]:
        """Every result line, read as it streams in (never the whole file)."""
        target = self._results_target(state)
        try:
            with self.client.stream(
                "GET", target, headers={"Accept": "application/binary"}
            ) as response:
                if response.status_code >= 400:
                    self.read(response)
                    self.raise_for_status(response)
                for line in bounded_lines(response.iter_bytes(), self.max_response_bytes):
                    if isinstance(line, LongLine):
                        message = long_line_message(LABEL, line, self.max_response_bytes)
                        yield unreadable(custom_id_in(line.head), message)
                    else:
                        yield parse_result_line(line, self.redact)
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, "GET", "results") from None

    def _batch_path(self, remote_id: str) -> str:
        return self.path("/messages/batches/") + quote(remote_id, safe="")

    def _results_target(self, state: BatchState) -> str:
        """The results URL, when it is on the credential's own host; else the
        documented results path under the base URL: the key is never sent to
        a host the credential does not name."""
        url = state.results_url
        if url:
            parts, base = urlsplit(url), urlsplit(self.base_url)
            if not parts.scheme and url.startswith("/") and not url.startswith("//"):
                return url
            if (parts.scheme, parts.netloc) == (base.scheme, base.netloc):
                return url
        return self._batch_path(state.remote_id) + "/results"
