"""Structured output: parse each output into an object and check it against the
job's schema. Invalid rows are flagged with the reason, never hidden.

A schema is checked where the worker runs it, so it may do nothing but
compute: a ``$ref`` resolves only inside the schema (nothing is ever fetched:
a remote one is refused at submit, and validation retrieves nothing), and a
``pattern`` runs on the ``regex`` package under a time limit shared by one
output's checks, so a pattern that backtracks for ever marks the row invalid
instead of holding the worker. ``patternProperties`` (which jsonschema would
run on ``re``, with no limit) is refused."""

from __future__ import annotations

import json
import time
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

import regex
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import SchemaError, ValidationError
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable

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


#: Seconds that the ``pattern`` checks of one output may take in all.
PATTERN_SECONDS = 0.1
#: Keywords whose value names another schema by URI.
REFERENCE_KEYWORDS = ("$ref", "$dynamicRef")
#: Keywords refused: jsonschema runs them on ``re``, which has no time limit.
UNSUPPORTED_KEYWORDS = ("patternProperties",)

_pattern_deadline: ContextVar[float] = ContextVar("pattern_deadline", default=0.0)


class PatternTimeout(Exception):
    def __init__(self, pattern: str) -> None:
        super().__init__(pattern)
        self.pattern = pattern


def _retrieve_nothing(uri: str) -> Resource[Any]:
    raise NoSuchResource(ref=uri)


#: Resolves what the schema holds and nothing else: no URL, no file.
_REGISTRY: Registry[Any] = Registry(retrieve=_retrieve_nothing)


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Any:
    if not validator.is_type(instance, "string"):
        return
    left = _pattern_deadline.get() - time.monotonic()
    if left <= 0:
        raise PatternTimeout(pattern)
    try:
        # concurrent=False keeps the GIL (see evals.scorers._regex).
        found = regex.search(pattern, instance, timeout=left, concurrent=False)
    except TimeoutError:
        raise PatternTimeout(pattern) from None
    except regex.error as exc:  # re compiled it (check_schema); regex reads a few forms otherwise
        yield ValidationError(f"pattern {pattern!r} cannot be run: {exc}")
        return
    if found is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


#: Draft 2020-12 with ``pattern`` on ``regex``, under the time limit.
OutputValidator = validators.extend(Draft202012Validator, {"pattern": _pattern})


def schema_problem(schema: dict[str, Any] | None) -> str:
    """Why the job's ``output_schema`` cannot be used ("" when it can): not a
    valid JSON Schema, a reference outside the schema, or a keyword refused.
    Every way a job is submitted asks this (``jobs.forms.check_job_spec``)."""
    json_schema = as_json_schema(schema)
    if json_schema is None:
        return ""
    try:
        return _schema_problem(json_schema)
    except RecursionError:
        return "output_schema is nested too deeply."


def _schema_problem(schema: dict[str, Any]) -> str:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        at = f" (at {where})" if where else ""
        return f"output_schema is not a valid JSON Schema{at}: {exc.message}"
    except (ArithmeticError, ValueError, TypeError) as exc:  # re.compile of a "pattern"
        return f"output_schema is not a valid JSON Schema: {exc}"
    for keyword, value in _keywords(schema):
        if keyword in REFERENCE_KEYWORDS and isinstance(value, str) and not value.startswith("#"):
            return (
                f"output_schema may only refer to its own parts ({keyword} starting with #): "
                f"{value[:200]!r} points outside it, and nothing is fetched."
            )
        if keyword in UNSUPPORTED_KEYWORDS:
            return f"output_schema may not use {keyword}; name the properties, or use pattern."
    return ""


def _keywords(node: Any) -> Any:
    """Every (key, value) pair of every object in ``node``, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _keywords(value)
    elif isinstance(node, list):
        for value in node:
            yield from _keywords(value)


@lru_cache(maxsize=64)
def _validator(schema_text: str) -> Any:
    """The validator of a usable schema, else the reason it cannot be used."""
    schema = json.loads(schema_text)
    problem = schema_problem(schema)
    if problem:
        return problem
    return OutputValidator(schema, registry=_REGISTRY)


def problems(schema: dict[str, Any] | None, value: Any) -> list[str]:
    """Why ``value`` does not fit the schema (empty when it does)."""
    json_schema = as_json_schema(schema)
    if json_schema is None or value is None:
        return []
    if isinstance(value, str):
        return ["not a JSON object: the provider returned text"]
    validator = _validator(json.dumps(json_schema, sort_keys=True))
    if isinstance(validator, str):
        # A job saved before the schema was checked at submit.
        return [f"the output could not be checked: {validator}"]
    token = _pattern_deadline.set(time.monotonic() + PATTERN_SECONDS)
    try:
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
    except PatternTimeout as exc:
        return [
            f"pattern {exc.pattern[:100]!r} took more than {PATTERN_SECONDS:g} s to check; "
            "the output is counted as invalid"
        ]
    except Unresolvable as exc:
        return [f"the output could not be checked: the schema's reference {exc} does not resolve"]
    finally:
        _pattern_deadline.reset(token)
    messages = []
    for error in errors:
        where = ".".join(str(p) for p in error.path)
        messages.append(f"{where}: {error.message}" if where else error.message)
    return messages[:5]
