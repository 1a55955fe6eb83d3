"""Bytez: a model lifecycle plus ``/model/run``.

What this adapter relies on from Bytez's protocol:

* Default base URL ``https://api.bytez.com``; auth header
  ``Authorization: Key <key>`` (``Key``, not ``Bearer``).
* Calls with a JSON body are POSTs, those without are GETs:
  ``GET /model/list`` (the catalog: ``[{"name", "requiredRAM",
  "benchmarked"}]``), ``POST /model/job`` ``{"model"}`` (ask Bytez to make a
  model available; repeated, its ``message`` goes from "Model is already
  queued" to "Model available", the only progress signal), ``POST
  /model/load`` ``{"model", "concurrency", "expirationPeriodSeconds"?}``,
  ``POST /model/status`` ``{"model"}`` (``status``, ``concurrency``,
  ``inferences``, ``expirationPeriodSeconds``/``Minutes``, ``expiresAt``,
  ``created``), ``GET /model/instances`` (the running models), ``POST
  /model/run`` ``{"model", "prompt", "params", "stream"}`` and ``POST
  /model/delete`` ``{"model"}``.
* ``params`` go to the model's ``generate()``: ``max_tokens`` is sent as
  ``max_new_tokens``, the sampling knobs under their own names, and a job's
  raw ``options["params"]`` first.
* A run answers ``{"output": ..., "error": null}`` (the output a string, a
  ``[{"generated_text"}]`` list or any object); with ``stream: true`` it
  answers raw text chunks, not JSON. No token usage is reported.
* Instance words (case-insensitive, ignoring spaces, dashes and
  underscores) map to instance states: running, ready -> running; started,
  starting, loading, pending, creating, provisioning, queued, deploying ->
  loading; stopped, deleted, terminated, shutdown -> stopped; expired ->
  expired; failed, error, crashed -> failed; anything else -> loading. A
  requested model is ``requested`` until its job message says "Model
  available".
* Errors: bodies are ``{"error": ...}``, quoted redacted. A run or status
  for a model with no running instance ("not loaded", "not running", ...,
  or 404) is NOT_FOUND, naming the model.
* Retries: a run creates nothing to duplicate, so 5xx, timeouts and 429s may
  be retried a bounded number of times. The reads (list, status, instances,
  and ``/model/job``, which the document says to repeat) are safe to repeat.
  A cold load takes minutes and a loaded instance is billed while it runs
  (until its expiration period passes without a run).
* Connection check: ``GET /model/list``, free (``connection_check_billed``
  is False); ``lists_models`` is True.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx

from .base import (
    ChunkCallback,
    ErrorKind,
    InstanceState,
    JobSpec,
    ModelInfo,
    Provider,
    ProviderError,
    RemoteInstance,
    SpecError,
    redacted,
    shorten,
)

#: Spec field -> key of the run's ``params``. Bytez passes ``params`` to the
#: model's Hugging Face ``generate()``, which counts new tokens as
#: ``max_new_tokens`` (its ``max_length`` would include the prompt); the
#: sampling knobs keep their names there.
PARAM_NAMES = {
    "max_tokens": "max_new_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "repetition_penalty": "repetition_penalty",
}

#: Lower-cased provider status words, without spaces, dashes or underscores.
STATE_WORDS: dict[str, InstanceState] = {
    word: state
    for state, words in (
        (InstanceState.RUNNING, "running ready"),
        (
            InstanceState.LOADING,
            "started starting loading pending creating provisioning queued deploying",
        ),
        (InstanceState.STOPPED, "stopped deleted terminated shutdown"),
        (InstanceState.EXPIRED, "expired"),
        (InstanceState.FAILED, "failed error crashed"),
    )
    for word in words.split()
}

_NOT_LOADED_WORDS = ("not loaded", "not running", "no instance", "not found", "not deployed")
_LIST_KEYS = ("instances", "models", "data")


# -- pure translation -----------------------------------------------------------


def build_params(spec: JobSpec) -> dict[str, Any]:
    """Bytez ``params``: the raw ``options["params"]`` first, then the spec's own
    fields, which win because they are what the form shows."""
    params = dict(spec.options.get("params") or {})
    for field_name, key in PARAM_NAMES.items():
        value = getattr(spec, field_name)
        if value is not None:
            params[key] = value
    return params


def build_run_request(spec: JobSpec, prompt: str) -> dict[str, Any]:
    return {
        "model": spec.model,
        "prompt": prompt,
        "params": build_params(spec),
        "stream": spec.stream,
    }


def is_not_loaded(text: str) -> bool:
    lowered = text.lower()
    return any(words in lowered for words in _NOT_LOADED_WORDS)


def not_loaded_error(model: str, detail: str, status_code: int | None = None) -> ProviderError:
    said = f" (Bytez said: {detail})" if detail else ""
    return ProviderError(
        f"Model {model} is not loaded on Bytez; load it first{said}",
        kind=ErrorKind.NOT_FOUND,
        status_code=status_code,
    )


def parse_run_response(body: dict[str, Any], model: str) -> Any:
    """The output of a non-streamed run: a string, the text of a one-item
    ``[{"generated_text": ...}]``, or whatever object the model returned."""
    error = body.get("error")
    if error:
        detail = shorten(str(error), 300)
        if is_not_loaded(detail):
            raise not_loaded_error(model, detail)
        raise ProviderError(f"Bytez could not run {model}: {detail}", kind=ErrorKind.REJECTED)
    if "output" not in body or body["output"] is None:
        raise ProviderError("Bytez sent a run answer without 'output'", kind=ErrorKind.PROTOCOL)
    output = body["output"]
    if isinstance(output, dict) and isinstance(output.get("generated_text"), str):
        return output["generated_text"]
    if (
        isinstance(output, list)
        and len(output) == 1
        and isinstance(output[0], dict)
        and isinstance(output[0].get("generated_text"), str)
    ):
        return output[0]["generated_text"]
    return output


def map_state(word: str) -> InstanceState:
    """A provider status word, case-insensitively; an unknown word is still loading."""
    key = "".join(ch for ch in word.lower() if ch not in " -_")
    return STATE_WORDS.get(key, InstanceState.LOADING)


def parse_time(value: Any) -> datetime | None:
    """ISO 8601 (``...Z`` included) or epoch seconds/milliseconds, as aware UTC."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def parse_instance(
    body: dict[str, Any], model: str = "", default_status: str = ""
) -> RemoteInstance:
    """A ``/model/status``-shaped object; missing fields stay None."""
    word = body.get("status")
    word = word if isinstance(word, str) else default_status
    expiration = _int(body.get("expirationPeriodSeconds"))
    if expiration is None and (minutes := _int(body.get("expirationPeriodMinutes"))) is not None:
        expiration = minutes * 60
    message = body.get("message")
    return RemoteInstance(
        model=str(body.get("model") or model),
        state=map_state(word),
        provider_status=word,
        message=message if isinstance(message, str) else "",
        concurrency=_int(body.get("concurrency")),
        inferences=_int(body.get("inferences")),
        expiration_seconds=expiration,
        expires_at=parse_time(body.get("expiresAt")),
        created_at=parse_time(body.get("created")),
    )


def parse_instances(body: Any) -> list[RemoteInstance]:
    """``/model/instances``: a list, or an object holding one. The document calls
    it the list of running models, so an entry without a status is running."""
    items = body
    if isinstance(body, dict):
        items = next((body[k] for k in _LIST_KEYS if isinstance(body.get(k), list)), None)
    if not isinstance(items, list):
        raise ValueError("the answer holds no list of instances")
    found = []
    for item in items:
        if isinstance(item, str) and item:
            found.append(RemoteInstance(item, InstanceState.RUNNING, ""))
        elif isinstance(item, dict) and isinstance(item.get("model"), str) and item["model"]:
            instance = parse_instance(item, default_status="RUNNING")
            if "status" not in item:
                instance = replace(instance, provider_status="")
            found.append(instance)
    return found


def parse_models(body: Any) -> list[ModelInfo]:
    items = body
    if isinstance(body, dict):
        items = next((body[k] for k in ("models", "data") if isinstance(body.get(k), list)), None)
    if not isinstance(items, list):
        raise ValueError("the answer holds no list of models")
    models = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            continue
        ram = item.get("requiredRAM")
        benchmarked = item.get("benchmarked")
        models.append(
            ModelInfo(
                name=item["name"],
                required_ram_gb=float(ram)
                if isinstance(ram, int | float) and not isinstance(ram, bool)
                else None,
                benchmarked=benchmarked if isinstance(benchmarked, bool) else None,
            )
        )
    return models


def parse_job(body: dict[str, Any], model: str) -> RemoteInstance:
    """``/model/job``: always REQUESTED; :func:`model_available` reads the message,
    the only progress signal Bytez gives."""
    if body.get("success") is False:
        detail = body.get("message") or body.get("error") or "success: false"
        raise ProviderError(
            f"Bytez refused to prepare {model}: {shorten(str(detail), 300)}",
            kind=ErrorKind.REJECTED,
        )
    message = body.get("message") if isinstance(body.get("message"), str) else ""
    return RemoteInstance(
        model=str(body.get("model") or model),
        state=InstanceState.REQUESTED,
        provider_status=message or "requested",
        message=message,
        created_at=parse_time(body.get("startTime")),
    )


def model_available(status: RemoteInstance) -> bool:
    return "model available" in status.message.lower()


# -- the adapter ----------------------------------------------------------------


class BytezProvider(Provider):
    slug = "bytez"
    label = "Bytez"
    default_base_url = "https://api.bytez.com"
    kind = "sync"
    auth_scheme = "Key"
    has_instances = True
    lists_models = True
    supports_stream = True
    supported_fields = frozenset(PARAM_NAMES)
    option_names = ("params",)
    documented_models = ("openai-community/gpt2", "EleutherAI/gpt-neo-2.7B")
    # The model list is free and needs the key.
    connection_check_billed = False

    def validate(self, spec: JobSpec) -> None:
        super().validate(spec)
        params = spec.options.get("params")
        if params is not None and not isinstance(params, dict):
            raise SpecError(
                "Bytez 'params' must be a JSON object (e.g. {\"min_length\": 30}).", "options"
            )

    @redacted
    def run(
        self, spec: JobSpec, indexes: list[int], on_chunk: ChunkCallback | None = None
    ) -> list[Any]:
        (index,) = indexes
        body = build_run_request(spec, spec.prompts[index])
        if spec.stream:
            return [self._run_streamed(spec.model, body, index, on_chunk)]
        with self._run_errors(spec.model):
            response = self.request("POST", "/model/run", json=body)
        return [parse_run_response(self.json(response), spec.model)]

    def _run_streamed(
        self, model: str, body: dict[str, Any], index: int, on_chunk: ChunkCallback | None
    ) -> str:
        chunks: list[str] = []
        try:
            with self.client.stream("POST", "/model/run", json=body) as response:
                if response.status_code >= 400:
                    self.read(response)
                    with self._run_errors(model):
                        self.raise_for_status(response)
                if response.headers.get("content-type", "").startswith("application/json"):
                    # A server that ignores ``stream`` answers the JSON shape instead.
                    self.read(response)
                    output = parse_run_response(self.json(response), model)
                    text = output if isinstance(output, str) else str(output)
                    chunks.append(text)
                    if on_chunk is not None:
                        on_chunk(index, text)
                    return text
                for text in self.capped(response.iter_text()):
                    if text:
                        chunks.append(text)
                        if on_chunk is not None:
                            on_chunk(index, text)
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, "POST", "/model/run") from None
        return "".join(chunks)

    @contextmanager
    def _run_errors(self, model: str) -> Iterator[None]:
        """A run on a model without a running instance says so, naming the model."""
        try:
            yield
        except ProviderError as exc:
            if exc.kind is ErrorKind.NOT_FOUND or (
                exc.kind is ErrorKind.REJECTED and is_not_loaded(exc.message)
            ):
                raise not_loaded_error(model, exc.detail, exc.status_code) from None
            raise

    def probe_connection(self, model: str) -> str:
        return f"Bytez listed {len(self.list_models())} models."

    # -- model lifecycle ---------------------------------------------------------

    @redacted
    def list_models(self) -> list[ModelInfo]:
        body = self.json(self.request("GET", "/model/list"), expect=(list, dict))
        return self._parse(parse_models, body, "model list")

    @redacted
    def request_model(self, model: str) -> RemoteInstance:
        body = self.json(self.request("POST", "/model/job", json={"model": model}))
        return parse_job(body, model)

    @redacted
    def load_model(
        self, model: str, *, concurrency: int = 1, expiration_seconds: int | None = None
    ) -> RemoteInstance:
        payload: dict[str, Any] = {"model": model, "concurrency": concurrency}
        if expiration_seconds is not None:
            payload["expirationPeriodSeconds"] = expiration_seconds
        body = self.json(self.request("POST", "/model/load", json=payload))
        if body.get("error"):
            raise ProviderError(
                f"Bytez could not load {model}: {shorten(str(body['error']), 300)}",
                kind=ErrorKind.REJECTED,
            )
        status = parse_instance(body, model)
        if status.concurrency is None:
            status = replace(status, concurrency=concurrency)
        return status

    @redacted
    def instance_status(self, model: str) -> RemoteInstance:
        try:
            response = self.request("POST", "/model/status", json={"model": model})
        except ProviderError as exc:
            if exc.kind is ErrorKind.NOT_FOUND or (
                exc.kind is ErrorKind.REJECTED and is_not_loaded(exc.message)
            ):
                raise self._no_instance(model, exc.detail, exc.status_code) from None
            raise
        body = self.json(response)
        if body.get("error"):
            raise self._no_instance(model, str(body["error"]))
        if not isinstance(body.get("status"), str):
            raise ProviderError(
                f"Bytez sent a status answer for {model} without 'status'", kind=ErrorKind.PROTOCOL
            )
        return parse_instance(body, model)

    @redacted
    def list_instances(self) -> list[RemoteInstance]:
        body = self.json(self.request("GET", "/model/instances"), expect=(list, dict))
        return self._parse(parse_instances, body, "instance list")

    @redacted
    def shutdown_model(self, model: str) -> None:
        self.request("POST", "/model/delete", json={"model": model})

    def _no_instance(
        self, model: str, detail: str, status_code: int | None = None
    ) -> ProviderError:
        said = f" (Bytez said: {shorten(detail, 200)})" if detail else ""
        return ProviderError(
            f"No instance of {model} is loaded on Bytez{said}",
            kind=ErrorKind.NOT_FOUND,
            status_code=status_code,
        )

    def _parse(self, parse: Any, body: Any, what: str) -> Any:
        try:
            return parse(body)
        except ValueError as exc:
            raise ProviderError(
                f"Bytez sent a {what} of an unexpected shape: {exc}", kind=ErrorKind.PROTOCOL
            ) from None
