"""An OpenAI-compatible server: ``POST /v1/chat/completions`` (whole answers
with ``usage``, ``response_format`` JSON Schema output, ``stream: true``
Server-Sent Events ending in a usage chunk when ``stream_options.include_usage``
asks for one) and ``GET /v1/models``, with OpenAI's ``{"error": {"message",
"type", ...}}`` error bodies."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

from .base import DEFAULT_TOKEN, Request, Response, Simulator, completion_text

MODELS = (
    "meta-llama/Llama-3.1-8B-Instruct",
    "Qwen/Qwen2.5-7B-Instruct",
    "mistralai/Mistral-7B-Instruct-v0.3",
)
ROLES = ("system", "developer", "user", "assistant", "tool")
WORDS_PER_CHUNK = 3


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
    if kind == "integer":
        return number % 1000
    if kind == "number":
        return (number % 100000) / 100
    if kind == "boolean":
        return number % 2 == 0
    if kind == "null":
        return None
    return f"{seed.rsplit('.', 1)[-1]} {_digest(seed)[:6]}"


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
    ) -> None:
        self.stream_chunk_delay = stream_chunk_delay
        super().__init__(token=token, latency=latency, host=host, port=port)

    def setup_routes(self) -> None:
        self.route("POST", "/v1/chat/completions", self.chat)
        self.route("GET", "/v1/models", self.models)

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
