"""Lamini's synchronous completions API, with typed (structured) output.

What this adapter relies on from Lamini's protocol:

* One call, ``POST {base_url}/v1/completions``, default base URL
  ``https://api.lamini.ai``. Auth header ``Authorization: Bearer <key>``.
* Request: ``model_name``; ``prompt`` as a string for one prompt or a list of
  strings for a batch (one call answers up to :data:`MAX_BATCH` prompts);
  ``out_type``, a flat map of field name to ``"str"``, ``"int"``, ``"float"``
  or ``"bool"`` (the only valid types; the word ``"string"`` is accepted as
  str, and a flat JSON Schema object is converted). ``max_tokens`` is sent
  when the job sets it; newer servers also accept it.
* Answer: the same shape as ``prompt``: one item for a string, a list with
  one item per prompt for a list. With ``out_type`` each item is an object
  with those fields (in no particular order); without it, the text (or
  ``{"output": text}``). The answer reports no token usage.
* Errors: bodies are ``{"detail": ...}`` (a list of ``{loc, msg}`` for
  FastAPI's 422), quoted redacted. HTTP 594 is Lamini's "model not found"
  (NOT_FOUND); 400, 401, 422, 429 and 503 also occur.
* Retries: a completion creates nothing to duplicate, so the dashboard may
  retry 5xx, timeouts and 429s a bounded number of times; 594 and other 4xx
  are final.
* Connection check: the only documented call is a completion, so the check
  is one short prompt with ``max_tokens: 1`` on ``connection_check_model``:
  billed.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from .base import (
    CONNECTION_CHECK_PROMPT,
    ChunkCallback,
    ErrorKind,
    JobSpec,
    Provider,
    ProviderError,
    SpecError,
    redacted,
)

#: Prompts per call: big batches make one slow request that fails as a whole.
MAX_BATCH = 100
MODEL_NOT_FOUND_STATUS = 594

#: Lamini type words accepted in a type map -> the word sent.
LAMINI_TYPES = {"str": "str", "string": "str", "int": "int", "float": "float", "bool": "bool"}
#: JSON Schema scalar types -> Lamini type words.
SCHEMA_TYPES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}
#: Schema keywords that restrict values in ways Lamini cannot enforce.
_UNEXPRESSIBLE = ("enum", "const", "$ref", "anyOf", "oneOf", "allOf", "not")


def _refuse(field: str, why: str) -> SpecError:
    return SpecError(
        f"output_schema field {field!r} cannot be expressed as a Lamini out_type: {why}",
        "output_schema",
    )


def is_json_schema(schema: dict[str, Any]) -> bool:
    """A type map may have fields called "type" or "properties", but never with
    these values: a type map's values are type words."""
    return (
        isinstance(schema.get("properties"), dict)
        or schema.get("type") in ("object", "array")
        or "$schema" in schema
    )


def build_out_type(schema: dict[str, Any] | None) -> dict[str, str] | None:
    """The ``out_type`` for an output schema (a Lamini type map or a flat JSON
    Schema object); a SpecError names the first field that cannot be sent."""
    if schema is None:
        return None
    if not isinstance(schema, dict):
        raise SpecError("output_schema must be a JSON object.", "output_schema")
    fields = _from_json_schema(schema) if is_json_schema(schema) else _from_type_map(schema)
    if not fields:
        raise SpecError(
            "output_schema has no fields; Lamini needs at least one typed field.", "output_schema"
        )
    return fields


def _from_type_map(schema: dict[str, Any]) -> dict[str, str]:
    out_type = {}
    for name, word in schema.items():
        if not isinstance(word, str):
            raise _refuse(
                name,
                f"a type map value must be one of str, int, float, bool, not {json.dumps(word)}",
            )
        if word.strip().lower() not in LAMINI_TYPES:
            raise _refuse(name, f"type {word!r} is not one of str, int, float, bool")
        out_type[name] = LAMINI_TYPES[word.strip().lower()]
    return out_type


def _from_json_schema(schema: dict[str, Any]) -> dict[str, str]:
    if schema.get("type", "object") != "object":
        raise SpecError("output_schema must describe an object.", "output_schema")
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        raise SpecError("output_schema has no 'properties' object.", "output_schema")
    return {name: _schema_type(name, prop) for name, prop in properties.items()}


def _schema_type(name: str, prop: Any) -> str:
    if not isinstance(prop, dict):
        raise _refuse(name, "its schema is not an object")
    for keyword in _UNEXPRESSIBLE:
        if keyword in prop:
            raise _refuse(name, f"Lamini has no equivalent of {keyword!r}; use a plain type")
    kind = prop.get("type")
    if kind is None:
        raise _refuse(name, "it has no 'type'")
    if isinstance(kind, list):
        raise _refuse(name, f"union types ({', '.join(map(str, kind))}) are not supported")
    if kind == "object":
        raise _refuse(name, "nested objects are not supported; out_type is flat")
    if kind == "array":
        raise _refuse(name, "arrays are not supported; out_type has only str, int, float, bool")
    if kind not in SCHEMA_TYPES:
        raise _refuse(name, f"type {kind!r} has no Lamini equivalent")
    return SCHEMA_TYPES[kind]


def build_request(spec: JobSpec, prompts: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model_name": spec.model,
        "prompt": prompts[0] if len(prompts) == 1 else list(prompts),
    }
    out_type = build_out_type(spec.output_schema)
    if out_type is not None:
        body["out_type"] = out_type
    if spec.max_tokens is not None:
        body["max_tokens"] = spec.max_tokens
    return body


def parse_response(body: Any, count: int, out_type: dict[str, str] | None) -> list[Any]:
    """One output per prompt; a ValueError says how the answer differs."""
    if count == 1:
        items = body if isinstance(body, list) and len(body) == 1 else [body]
    elif not isinstance(body, list):
        raise ValueError(f"expected a list of {count} answers, got {type(body).__name__}")
    elif len(body) != count:
        raise ValueError(f"expected {count} answers, got {len(body)}")
    else:
        items = body
    return [_parse_item(item, out_type) for item in items]


def _parse_item(item: Any, out_type: dict[str, str] | None) -> Any:
    if out_type is None:
        # Servers without out_type answer either the text or {"output": text}.
        if isinstance(item, str):
            return item
        if isinstance(item, dict) and set(item) == {"output"} and isinstance(item["output"], str):
            return item["output"]
        raise ValueError(f"expected text, got {type(item).__name__}")
    if not isinstance(item, dict):
        raise ValueError(
            f"expected an object with {', '.join(out_type)}, got {type(item).__name__}"
        )
    # The answer is a hash in no particular order: show fields in schema order.
    ordered = {name: item[name] for name in out_type if name in item}
    ordered.update((k, v) for k, v in item.items() if k not in ordered)
    return ordered


def format_detail(detail: Any) -> str:
    """FastAPI's 422 ``detail`` is a list of {loc, msg}; say it in one line."""
    if isinstance(detail, list):
        parts = []
        for entry in detail:
            if isinstance(entry, dict) and "msg" in entry:
                loc = ".".join(str(p) for p in entry.get("loc", ()) if p != "body")
                parts.append(f"{loc}: {entry['msg']}" if loc else str(entry["msg"]))
            else:
                parts.append(json.dumps(entry))
        return "; ".join(parts)
    return detail if isinstance(detail, str) else json.dumps(detail)


class LaminiProvider(Provider):
    slug = "lamini"
    label = "Lamini"
    default_base_url = "https://api.lamini.ai"
    kind = "sync"
    supported_fields = frozenset({"max_tokens", "output_schema"})
    documented_models = ("meta-llama/Llama-2-7b-chat-hf",)
    # The only documented call is a completion: the check is one short prompt.
    connection_check_model = documented_models[0]

    def validate(self, spec: JobSpec) -> None:
        super().validate(spec)
        build_out_type(spec.output_schema)

    def units(self, spec: JobSpec) -> list[list[int]]:
        indexes = list(range(len(spec.prompts)))
        return [indexes[i : i + MAX_BATCH] for i in range(0, len(indexes), MAX_BATCH)]

    @redacted
    def run(
        self, spec: JobSpec, indexes: list[int], on_chunk: ChunkCallback | None = None
    ) -> list[Any]:
        body = build_request(spec, [spec.prompts[i] for i in indexes])
        try:
            response = self.request("POST", "/v1/completions", json=body)
        except ProviderError as exc:
            if exc.status_code == MODEL_NOT_FOUND_STATUS:
                raise ProviderError(
                    f"Lamini does not know the model {spec.model}",
                    kind=ErrorKind.NOT_FOUND,
                    status_code=exc.status_code,
                ) from None
            raise
        try:
            return parse_response(
                self.json(response, expect=(dict, list, str)), len(indexes), body.get("out_type")
            )
        except ValueError as exc:
            raise ProviderError(
                f"Lamini sent an answer of an unexpected shape: {exc}", kind=ErrorKind.PROTOCOL
            ) from None

    def probe_connection(self, model: str) -> str:
        spec = JobSpec(model=model, prompts=[CONNECTION_CHECK_PROMPT], max_tokens=1)
        self.run(spec, [0])
        return f"Lamini answered a one-prompt completion from {model}."

    def error_detail(self, response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            return super().error_detail(response)
        if isinstance(body, dict) and body.get("detail"):
            return self.readable(format_detail(body["detail"]))
        return super().error_detail(response)
