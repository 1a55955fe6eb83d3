"""MyMagic's async batch API: one remote job applies ``question`` to every input.

What this adapter relies on from MyMagic's protocol:

* Default base URL ``https://fastapi.mymagic.ai``; auth header
  ``Authorization: Bearer <personal access token>``.
* Submit: ``POST /v1/completions`` with ``model``, ``question``,
  ``list_inputs`` (the prompts) and optionally ``system_prompt``,
  ``max_tokens`` (the provider's default is 10), ``structured_output`` (a
  JSON Schema sent as a *string*) and the storage settings
  (``storage_provider``, ``bucket_name``, ``session``, ``role_arn``,
  ``region``, ``input_json_file``, ``return_output``). ``return_output``
  defaults to false at MyMagic; this adapter sends true unless told
  otherwise, or the dashboard would get no outputs. The answer is
  ``{"status": "Submitted", "job_id": ...}``; an older protocol says
  ``task_id``: both are accepted.
* Status: ``GET /v1/job_status/{job_id}`` answers ``{"status": ...}``. Words
  (compared case-insensitively) map to normalized states: Queued -> queued,
  Waiting for instance -> queued (a model cold start, which can last
  minutes; ``cold_start`` is set), Processing -> running, Completed ->
  completed, Error -> failed. An undocumented word is taken as still
  running; the dashboard's per-job deadline bounds it.
* Completed answers carry ``result``, whose shape is not documented: a list
  (one output per input), an object holding that list under ``outputs``,
  ``output``, ``results`` or ``responses``, or a single string are accepted;
  anything else (or a list of the wrong length) is kept whole as
  ``raw_result`` rather than failing a job that may have worked. Error
  answers carry ``error``, kept (redacted) as the job's error. No token
  usage is reported.
* Errors: error bodies have the same ``{"status": "Error", "error": ...}``
  shape; 401/403 is auth, 404 an unknown id, 429 a rate limit.
* Retries: a submit is a non-idempotent POST, so it may be sent again only
  when ``ProviderError.created_nothing`` (connection refused, 429, a
  refusal); after a timeout the outcome is unknown. Status GETs are safe to
  repeat. MyMagic documents no cancel endpoint and no rate limits.
* Connection check: the status call's error codes are not documented, so an
  unknown id proves nothing about the key; the check submits a one-input,
  one-token job on ``connection_check_model`` (billed, and not tracked).
* ``documented_models`` is the document's whole supported list
  (``documents_model_list``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from .base import (
    CONNECTION_CHECK_PROMPT,
    ErrorKind,
    JobSpec,
    Provider,
    ProviderError,
    RemoteState,
    RemoteStatus,
    SpecError,
    redacted,
    shorten,
)

STORAGE_OPTIONS = (
    "storage_provider",
    "bucket_name",
    "session",
    "role_arn",
    "region",
    "return_output",
    "input_json_file",
)

QUESTION_REQUIRED = "MyMagic applies one question to every input: a question is required."

#: Lamini-style ``out_type`` names -> JSON Schema types ("string" is Lamini's own doc slip).
FLAT_TYPES = {
    "str": "string",
    "string": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
}
JSON_SCHEMA_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
JSON_SCHEMA_MARKERS = frozenset({"$schema", "$ref", "anyOf", "oneOf", "allOf", "enum"})

#: Keys under which an object-shaped ``result`` may hold the list of outputs (the
#: shape is undocumented, so every likely name is accepted).
RESULT_KEYS = ("outputs", "output", "results", "responses")

COLD_START = "waiting for instance"
STATUS_WORDS = {
    "queued": RemoteState.QUEUED,
    "processing": RemoteState.RUNNING,
    COLD_START: RemoteState.QUEUED,
    "completed": RemoteState.COMPLETED,
    "error": RemoteState.FAILED,
}

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


# -- request ------------------------------------------------------------------


def build_request(
    spec: JobSpec,
    indexes: list[int] | None = None,
    credential_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``POST /v1/completions`` body for the prompts at ``indexes`` (all by default)."""
    if not spec.question.strip():
        raise SpecError(QUESTION_REQUIRED, "question")
    prompts = list(spec.prompts) if indexes is None else [spec.prompts[i] for i in indexes]
    body: dict[str, Any] = {"model": spec.model, "question": spec.question, "list_inputs": prompts}
    if spec.system_prompt:
        body["system_prompt"] = spec.system_prompt
    if spec.max_tokens is not None:
        body["max_tokens"] = spec.max_tokens
    body.update(storage_settings(credential_options or {}, spec.options))
    if spec.output_schema not in (None, {}):
        body["structured_output"] = json.dumps(to_json_schema(spec.output_schema))
    return body


def storage_settings(credential: Mapping[str, Any], job: Mapping[str, Any]) -> dict[str, Any]:
    """Storage fields: the job's options win over the credential's; blank means unset."""
    settings: dict[str, Any] = {}
    for name in STORAGE_OPTIONS:
        value = job.get(name)
        if _unset(value):
            value = credential.get(name)
        if _unset(value):
            continue
        if name != "return_output" and not isinstance(value, str):
            raise SpecError(f"The MyMagic option {name!r} must be text.", "options")
        settings[name] = value
    # The document's default is false, which would leave the dashboard with no outputs.
    settings["return_output"] = _boolean(settings.get("return_output", True))
    return settings


def to_json_schema(schema: Any) -> dict[str, Any]:
    """``structured_output`` wants JSON Schema; a Lamini-style flat map is converted."""
    if isinstance(schema, dict) and _is_json_schema(schema):
        return schema
    if not isinstance(schema, dict) or not schema:
        raise SpecError(
            "output_schema must be a JSON Schema object or a map of field names to "
            "str, int, float or bool.",
            "output_schema",
        )
    properties: dict[str, Any] = {}
    for name, kind in schema.items():
        json_type = FLAT_TYPES.get(kind.strip().lower()) if isinstance(kind, str) else None
        if json_type is None:
            raise SpecError(
                f"output_schema field {name!r} has type {kind!r}: use str, int, float or "
                "bool, or give a JSON Schema object.",
                "output_schema",
            )
        properties[name] = {"type": json_type}
    return {"type": "object", "properties": properties, "required": list(properties)}


def _is_json_schema(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    # {"type": "str"} is a flat map with a field called "type", not a schema.
    if isinstance(kind, str) and kind in JSON_SCHEMA_TYPES:
        return True
    if isinstance(kind, list):
        return True
    return isinstance(schema.get("properties"), dict) or bool(JSON_SCHEMA_MARKERS & schema.keys())


def _unset(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise SpecError(
        f"The MyMagic option 'return_output' must be true or false, not {value!r}.", "options"
    )


# -- answers ------------------------------------------------------------------


def parse_submit(body: dict[str, Any]) -> str:
    """The remote id from a submit answer: ``job_id``, or ``task_id`` (older protocol)."""
    for key in ("job_id", "task_id"):
        value = body.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()
    raise ProviderError(
        f"MyMagic accepted the request but sent no job_id: {shorten(json.dumps(body), 200)}",
        kind=ErrorKind.PROTOCOL,
    )


def parse_status(remote_id: str, body: dict[str, Any], expected: int | None = None) -> RemoteStatus:
    """One ``/v1/job_status`` answer; ``expected`` is the number of inputs, when known.

    A ValueError says the answer has no status word at all.
    """
    word = body.get("status")
    if not isinstance(word, str) or not word.strip():
        raise ValueError("the answer has no 'status'")
    key = " ".join(word.split()).lower()
    # An undocumented word most likely means "still working"; the job deadline bounds it.
    state = STATUS_WORDS.get(key, RemoteState.RUNNING)
    if state is RemoteState.COMPLETED:
        result = body.get("result")
        outputs = parse_result(result, expected)
        raw = result if outputs is None else None
        return RemoteStatus(remote_id, state, word, outputs=outputs, raw_result=raw)
    if state is RemoteState.FAILED:
        error = body.get("error")
        text = str(error) if error else "MyMagic reported an error without a message."
        return RemoteStatus(remote_id, state, word, error=text)
    return RemoteStatus(remote_id, state, word, cold_start=key == COLD_START)


def parse_result(result: Any, expected: int | None = None) -> list[Any] | None:
    """One output per input, or None when ``result`` has a shape we cannot trust.

    Items are kept as given: JSON strings from structured output are parsed and
    validated by the dashboard, which knows the schema.
    """
    held = result
    if isinstance(result, dict):
        held = next((result[key] for key in RESULT_KEYS if key in result), None)
    if isinstance(held, str):
        return [held] if expected in (None, 1) else None
    if not isinstance(held, list) or not held:
        return None
    if expected is not None and len(held) != expected:
        return None
    return list(held)


# -- adapter ------------------------------------------------------------------


class MyMagicProvider(Provider):
    slug = "mymagic"
    label = "MyMagic"
    default_base_url = "https://fastapi.mymagic.ai"
    kind = "async"
    poll_batch_size = 1
    # Jobs are batch work that often waits minutes for an instance: no need to hurry.
    poll_interval = 2.0
    documented_models = (
        "llama3_70b",
        "llama2_70b",
        "llama2_7b",
        "codellama_70b",
        "mixtral_8x7",
        "mistral_7b",
    )
    # The document's "Supported Models" is the whole list.
    documents_model_list = True
    supported_fields = frozenset({"question", "system_prompt", "max_tokens", "output_schema"})
    option_names = STORAGE_OPTIONS
    # No error codes of the status call are documented, so an unknown id proves
    # nothing about the key: the check submits a one-input, one-token job.
    connection_check_model = "llama2_7b"

    def validate(self, spec: JobSpec) -> None:
        super().validate(spec)
        build_request(spec, credential_options=self.options)

    def units(self, spec: JobSpec) -> list[list[int]]:
        # The whole list goes in one remote job: that is what MyMagic is for.
        return [list(range(len(spec.prompts)))] if spec.prompts else []

    @redacted
    def submit(self, spec: JobSpec, indexes: list[int]) -> str:
        super().validate(spec)
        body = build_request(spec, indexes, self.options)
        response = self.request("POST", "/v1/completions", json=body)
        return parse_submit(self.json(response))

    def probe_connection(self, model: str) -> str:
        spec = JobSpec(model=model, prompts=["OK"], question=CONNECTION_CHECK_PROMPT, max_tokens=1)
        remote_id = self.submit(spec, [0])
        return f"MyMagic accepted a one-input test job on {model} (job {remote_id}, not tracked)."

    @redacted
    def poll(
        self, remote_ids: list[str], expected: Mapping[str, int] | None = None
    ) -> dict[str, RemoteStatus | ProviderError]:
        """``expected`` (remote id -> number of inputs) lets a result of the wrong
        length be kept as ``raw_result`` instead of being taken as outputs."""
        counts = expected or {}
        return {rid: self._poll_one(rid, counts.get(rid)) for rid in remote_ids}

    def _poll_one(self, remote_id: str, expected: int | None) -> RemoteStatus | ProviderError:
        try:
            response = self.request("GET", f"/v1/job_status/{quote(remote_id, safe='')}")
            body = self.json(response)
        except ProviderError as exc:
            return exc
        try:
            return parse_status(remote_id, body, expected)
        except ValueError as exc:
            return ProviderError(
                f"MyMagic sent a job status without a status word ({exc}): "
                f"{shorten(json.dumps(body), 120)}",
                kind=ErrorKind.PROTOCOL,
                status_code=response.status_code,
            )
