"""Structured output: parse each output into an object and check it against the
job's schema. Invalid rows are flagged with the reason, never hidden."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

LAMINI_TYPES = {
    "str": "string",
    "string": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
}


def as_json_schema(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The job's ``output_schema`` as a JSON Schema (a Lamini type map is converted)."""
    if not schema:
        return None
    if "properties" in schema or schema.get("type") in ("object", "array") or "$schema" in schema:
        return schema
    if all(isinstance(v, str) and v.lower() in LAMINI_TYPES for v in schema.values()):
        return {
            "type": "object",
            "properties": {
                name: {"type": LAMINI_TYPES[kind.lower()]} for name, kind in schema.items()
            },
            "required": list(schema),
        }
    return schema


def columns(schema: dict[str, Any] | None) -> list[str]:
    json_schema = as_json_schema(schema) or {}
    properties = json_schema.get("properties")
    return list(properties) if isinstance(properties, dict) else []


def parse_output(value: Any) -> Any:
    """A JSON text becomes the object it holds; anything else stays as it is."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("```"):
            text = text.strip("`").removeprefix("json").strip()
        if text[:1] in ("{", "["):
            try:
                return json.loads(text)
            except ValueError:
                return value
    return value


def parse_outputs(schema: dict[str, Any] | None, outputs: list[Any] | None) -> list[Any] | None:
    if not schema or outputs is None:
        return outputs
    return [parse_output(value) if value is not None else None for value in outputs]


@lru_cache(maxsize=64)
def _validator(schema_text: str) -> Draft202012Validator | None:
    try:
        schema = json.loads(schema_text)
        Draft202012Validator.check_schema(schema)
    except (ValueError, SchemaError):
        return None
    return Draft202012Validator(schema)


def problems(schema: dict[str, Any] | None, value: Any) -> list[str]:
    """Why ``value`` does not fit the schema (empty when it does)."""
    json_schema = as_json_schema(schema)
    if json_schema is None or value is None:
        return []
    if isinstance(value, str):
        return ["not a JSON object: the provider returned text"]
    validator = _validator(json.dumps(json_schema, sort_keys=True))
    if validator is None:
        return []
    messages = []
    for error in sorted(validator.iter_errors(value), key=lambda e: list(e.path)):
        where = ".".join(str(p) for p in error.path)
        messages.append(f"{where}: {error.message}" if where else error.message)
    return messages[:5]
