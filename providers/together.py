"""Together's legacy synchronous REST API.

What this adapter relies on from Together's protocol:

* One call, ``POST {base_url}/inference``, default base URL
  ``https://api.together.xyz``. Auth header ``Authorization: Bearer <key>``.
* Request: a JSON object with ``model`` and ``prompt`` (one prompt per
  request), plus ``max_tokens``, ``temperature``, ``top_p``, ``top_k`` and
  ``repetition_penalty``, each sent only when the job sets it.
* Answer: ``{"status": "finished", ..., "output": {"choices": [{"text": ...,
  "finish_reason": ..., "index": 0}], ...}}``; the output is
  ``output.choices[0].text``. Another ``status`` word without ``output``, or
  any other shape, is a PROTOCOL error. The answer reports no token usage.
* Errors: the HTTP status says what happened (401/403 auth, 429 rate limit
  with ``Retry-After``, 5xx); the body's ``error``/``message`` is quoted,
  redacted.
* Retries: a request creates nothing at Together, so the dashboard may retry
  5xx, timeouts and 429s (``ProviderError.retryable``) a bounded number of
  times.
* Connection check: the document names no free call, so it is the
  document's own one-token request (``max_tokens: 1``) on
  ``connection_check_model``: billed.

``/inference`` is Together's legacy endpoint; its successor is the
OpenAI-compatible API, which the ``openai`` adapter speaks.
"""

from __future__ import annotations

from typing import Any

from .base import (
    CONNECTION_CHECK_PROMPT,
    ChunkCallback,
    ErrorKind,
    JobSpec,
    Provider,
    ProviderError,
    redacted,
)

PARAMS = ("max_tokens", "temperature", "top_p", "top_k", "repetition_penalty")


def build_request(spec: JobSpec, prompt: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": spec.model, "prompt": prompt}
    for name in PARAMS:
        value = getattr(spec, name)
        if value is not None:
            body[name] = value
    return body


def parse_response(body: dict[str, Any]) -> str:
    """The first choice's text; a ValueError says what is missing."""
    output = body.get("output")
    if not isinstance(output, dict):
        status = body.get("status")
        if status and status != "finished":
            raise ValueError(f"the answer's status is {status!r}, not 'finished'")
        raise ValueError("the answer has no 'output' object")
    choices = output.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError("the answer has no 'output.choices'")
    text = choices[0].get("text")
    if not isinstance(text, str):
        raise ValueError("the first choice has no 'text'")
    return text


class TogetherProvider(Provider):
    slug = "together"
    label = "Together"
    default_base_url = "https://api.together.xyz"
    kind = "sync"
    supported_fields = frozenset(PARAMS)
    documented_models = ("togethercomputer/RedPajama-INCITE-7B-Instruct",)
    # The document names no free call: the check is its own one-token example.
    connection_check_model = documented_models[0]

    @redacted
    def run(
        self, spec: JobSpec, indexes: list[int], on_chunk: ChunkCallback | None = None
    ) -> list[Any]:
        (index,) = indexes
        response = self.request("POST", "/inference", json=build_request(spec, spec.prompts[index]))
        body = self.json(response)
        try:
            return [parse_response(body)]
        except ValueError as exc:
            raise ProviderError(
                f"Together sent an answer without text: {exc}", kind=ErrorKind.PROTOCOL
            ) from None

    def probe_connection(self, model: str) -> str:
        spec = JobSpec(model=model, prompts=[CONNECTION_CHECK_PROMPT], max_tokens=1)
        self.run(spec, [0])
        return f"Together answered a one-token request to {model}."
