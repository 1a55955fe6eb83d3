"""Lamini's ``POST /v1/completions``, as :mod:`providers.lamini` describes it.

A string prompt gets one answer, a list gets a list. ``out_type`` (or
``output_type``, as newer servers call it) maps fields to str, int, float or
bool, "string" included. Errors are ``{"detail": ...}``; a model name
containing "unknown" is not found (HTTP 594, Lamini's own status).
"""

from __future__ import annotations

import hashlib
from typing import Any

from .base import Request, Response, Simulator, completion_text

TYPES = {"str", "string", "int", "float", "bool"}
MODEL_NOT_FOUND = 594


class LaminiSimulator(Simulator):
    name = "lamini"

    def setup_routes(self) -> None:
        self.route("POST", "/v1/completions", self.completions)

    def unauthorized(self) -> Response:
        return Response(401, {"detail": "Invalid token"})

    def not_found(self, request: Request) -> Response:
        return Response(404, {"detail": "Not Found"})

    def completions(self, request: Request) -> Response:
        try:
            body = request.json()
        except ValueError:
            return _invalid("Body is not valid JSON")
        if not isinstance(body, dict):
            return _invalid("Body must be a JSON object")
        model, prompt = body.get("model_name"), body.get("prompt")
        if not isinstance(model, str) or not model:
            return _invalid("'model_name' is required")
        if "unknown" in model:
            return Response(MODEL_NOT_FOUND, {"detail": "Model not found"})
        if not _is_prompt(prompt):
            return _invalid("'prompt' must be a string or a non-empty list of strings")
        out_type = body.get("out_type", body.get("output_type"))
        if out_type is not None and not _is_out_type(out_type):
            return _invalid("out_type must map field names to str, int, float or bool")
        max_tokens = body.get("max_tokens")
        limit = max_tokens if isinstance(max_tokens, int) else None
        with self.lock:
            self.submissions += 1
        if isinstance(prompt, str):
            return Response(200, answer(model, prompt, out_type, limit))
        return Response(200, [answer(model, p, out_type, limit) for p in prompt])


def answer(model: str, prompt: str, out_type: dict[str, str] | None, limit: int | None) -> Any:
    if out_type is None:
        return completion_text(model, prompt, limit).strip()
    return {name: value(model, prompt, name, kind, limit) for name, kind in out_type.items()}


def value(model: str, prompt: str, name: str, kind: str, limit: int | None) -> Any:
    """A deterministic value of the field's type."""
    number = int(hashlib.sha256(f"{model}\n{prompt}\n{name}".encode()).hexdigest()[:8], 16)
    if kind == "int":
        return number % 100
    if kind == "float":
        return round((number % 10000) / 100, 2)
    if kind == "bool":
        return number % 2 == 0
    return completion_text(model, f"{name}: {prompt}", limit).strip()


def _is_prompt(prompt: Any) -> bool:
    if isinstance(prompt, str):
        return True
    return isinstance(prompt, list) and bool(prompt) and all(isinstance(p, str) for p in prompt)


def _is_out_type(out_type: Any) -> bool:
    return (
        isinstance(out_type, dict)
        and bool(out_type)
        and all(isinstance(k, str) and v in TYPES for k, v in out_type.items())
    )


def _invalid(detail: str) -> Response:
    return Response(422, {"detail": detail})
