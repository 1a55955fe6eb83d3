"""What goes over the wire: the JSON the API reads (strict) and writes (markup-safe).

Reading refuses what the database or a provider would choke on later, where
the client can still be told which field: NUL characters (PostgreSQL rejects
them in text), NaN and Infinity (not JSON; PostgreSQL's jsonb refuses them
too), and nesting deep enough to exhaust the recursion limit on the way out.
"""

from __future__ import annotations

import json
import math
from typing import Any

from django.http import HttpRequest
from django.utils.datastructures import MultiValueDict
from ninja.parser import Parser
from ninja.renderers import JSONRenderer
from ninja.responses import NinjaJSONEncoder

from dashboard.jobs.spec import NUL_MESSAGE

from .errors import ApiError, invalid

#: Deeper bodies are refused: nothing the API takes nests anywhere near this.
MAX_DEPTH = 64


class MarkupSafeEncoder(NinjaJSONEncoder):
    """Model output is untrusted: "<", ">" and "&" go out as \\u escapes, so no
    answer holds markup even if something renders it as HTML."""

    def encode(self, o: Any) -> str:
        return (
            super()
            .encode(o)
            .replace("<", "\\u003c")
            .replace(">", "\\u003e")
            .replace("&", "\\u0026")
        )


class Renderer(JSONRenderer):
    encoder_class = MarkupSafeEncoder


class StrictJsonParser(Parser):
    def parse_body(self, request: HttpRequest) -> dict[str, Any] | None:
        """The body as a JSON object. ``null`` is no body, as the schema ninja
        writes for an optional body says (an empty body never reaches here)."""
        try:
            data = json.loads(
                request.body, parse_constant=_refuse_constant, parse_float=_finite_float
            )
        except (ValueError, RecursionError) as exc:
            raise ApiError(400, f"The body is not valid JSON: {_short(exc)}") from None
        if data is None:
            return None
        if not isinstance(data, dict):
            raise ApiError(400, f"The body must be a JSON object, not {json_type(data)}.")
        problems: dict[str, list[str]] = {}
        for key, value in data.items():
            problem = _problem(key) or _problem(value)
            if problem:
                problems[key.replace("\x00", "")] = [problem]
        if problems:
            raise invalid(problems)
        return data

    def parse_querydict(
        self, data: MultiValueDict, list_fields: list[str], request: HttpRequest
    ) -> dict[str, Any]:
        """Query parameters; an empty value means the parameter is not set, as
        when an HTML form sends an empty field."""
        nul = [key for key, values in data.lists() if _has_nul([key, *values])]
        if nul:
            raise invalid({key.replace("\x00", ""): [NUL_MESSAGE] for key in nul})
        result: dict[str, Any] = {}
        for key, values in data.lists():
            given = [value for value in values if value != ""]
            if given:
                result[key] = given if key in list_fields else given[-1]
        return result


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is too large for a number")
    return value


def _short(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:119] + "…"


def _has_nul(value: Any) -> bool:
    return _problem(value) == NUL_MESSAGE


def _problem(value: Any) -> str | None:
    """What is wrong anywhere inside a JSON value, or None. Iterative, so a
    deep value cannot exhaust the stack here."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"Nested more than {MAX_DEPTH} levels deep."
        if isinstance(item, str):
            if "\x00" in item:
                return NUL_MESSAGE
        elif isinstance(item, dict):
            stack.extend((part, depth + 1) for pair in item.items() for part in pair)
        elif isinstance(item, list):
            stack.extend((part, depth + 1) for part in item)
    return None


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"
