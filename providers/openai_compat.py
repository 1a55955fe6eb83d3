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
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

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


def chat_path(base_url: str) -> str:
    """The chat path relative to ``base_url``, never doubling a trailing ``/v1``."""
    path = urlsplit(base_url).path.rstrip("/")
    return "/chat/completions" if path.endswith("/v1") else "/v1/chat/completions"


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


# -- the adapter ----------------------------------------------------------------


class OpenAIProvider(Provider):
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
