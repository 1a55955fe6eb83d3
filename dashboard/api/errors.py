"""Every failure as DESIGN's one shape: ``{"error": "<readable message>",
"fields": {<field>: [messages]}}``, whatever raised it (our own ApiError,
ninja's validation and HTTP errors, Django's 404/403/413, or a bug).

One handler per error class, installed on the API by :func:`install`, so a
handler only raises and never builds an error answer itself."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse
from ninja.errors import AuthenticationError, HttpError, ValidationError

if TYPE_CHECKING:
    from ninja import NinjaAPI

logger = logging.getLogger("dashboard.api")

UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="api"'}


class ApiError(Exception):
    """An answer other than success: status, readable message, per-field messages."""

    def __init__(
        self,
        status: int,
        message: str,
        fields: Mapping[str, list[str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = dict(fields or {})
        self.headers = dict(headers or {})


def invalid(fields: Mapping[str, list[str]]) -> ApiError:
    """A 400 naming every problem; errors of no one field (``__all__``) lead the message."""
    fields = dict(fields)
    general = fields.pop("__all__", [])
    parts = [*general, *(f"{name}: {messages[0]}" for name, messages in fields.items())]
    return ApiError(400, "Invalid input: " + "; ".join(parts), fields)


class FieldErrors:
    """Collects every field's problems so one 400 names them all."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def add(self, field: str, *messages: str) -> None:
        self.errors.setdefault(field, []).extend(messages)

    def merge(self, errors: Mapping[str, Iterable[str]]) -> None:
        for field, messages in errors.items():
            self.add(field, *messages)

    def __bool__(self) -> bool:
        return bool(self.errors)

    def raise_if_any(self) -> None:
        if self.errors:
            raise invalid(self.errors)


# --- pydantic's complaints, in the API's words ----------------------------------------

#: pydantic error type -> message; the rest keep pydantic's own (already readable).
MESSAGES = {
    "missing": "This field is required.",
    "string_type": "Must be a string.",
    "int_type": "Must be an integer.",
    "int_parsing": "Must be a whole number.",
    "int_from_float": "Must be a whole number.",
    "float_type": "Must be a number.",
    "float_parsing": "Must be a number.",
    "finite_number": "Must be a finite number (not NaN or Infinity).",
    "bool_type": "Must be true or false.",
    "bool_parsing": "Must be true or false.",
    "dict_type": "Must be a JSON object.",
    "model_type": "Must be a JSON object.",
    "model_attributes_type": "Must be a JSON object.",
    "list_type": "Must be a list.",
}


def field_errors(errors: Iterable[Mapping[str, Any]]) -> tuple[dict[str, list[str]], list[str]]:
    """ninja's validation errors as (per-field messages, messages of no one field).

    A location is (source, parameter, …): a query or path parameter is its own
    field; a body's field is the first name inside the body, so a problem deep
    in ``prompts[3]`` is reported on ``prompts``."""
    fields: dict[str, list[str]] = {}
    general: list[str] = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        source, rest = (loc[0], loc[1:]) if loc else ("", [])
        if source == "body":
            rest = rest[1:]  # the handler's parameter name, not a field of the body
        message = _message(error)
        if rest:
            fields.setdefault(rest[0], []).append(message)
        elif error.get("type") == "missing":
            general.append("The body must be a JSON object; it is empty.")
        else:
            general.append(f"The body {message[0].lower()}{message[1:]}")
    return fields, general


def _message(error: Mapping[str, Any]) -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        expected = error.get("expected") or []
        return "Unknown field; " + (
            f"expected one of {', '.join(expected)}." if expected else "this call takes none."
        )
    message = MESSAGES.get(kind) or str(error.get("msg") or "Invalid value.")
    return message if message.endswith(".") else message + "."


# --- the handlers ------------------------------------------------------------------------


def error_response(
    api: NinjaAPI,
    request: HttpRequest,
    status: int,
    message: str,
    fields: Mapping[str, list[str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> HttpResponse:
    response = api.create_response(
        request, {"error": message, "fields": dict(fields or {})}, status=status
    )
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def install(api: NinjaAPI) -> None:
    def on_api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
        return error_response(api, request, exc.status, exc.message, exc.fields, exc.headers)

    def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
        fields, general = field_errors(exc.errors)
        return on_api_error(request, invalid({"__all__": general, **fields}))

    def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        # ninja wraps what the body parser raises: answer with the parser's own words.
        if isinstance(exc.__cause__, ApiError):
            return on_api_error(request, exc.__cause__)
        headers = UNAUTHORIZED if isinstance(exc, AuthenticationError) else None
        return error_response(api, request, exc.status_code, str(exc), headers=headers)

    def on_not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
        return error_response(api, request, 404, "No such object in your teams.")

    def on_permission_denied(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
        return error_response(api, request, 403, str(exc) or "You may not do this.")

    def on_too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
        return error_response(api, request, 413, "The request body is too large.")

    def on_bug(request: HttpRequest, exc: Exception) -> HttpResponse:
        # A bug, not bad input; still JSON, so a script can parse every answer.
        logger.exception("API %s %s failed", request.method, request.path)
        return error_response(api, request, 500, "Internal error; it has been logged.")

    api.add_exception_handler(ApiError, on_api_error)
    api.add_exception_handler(ValidationError, on_validation_error)
    api.add_exception_handler(HttpError, on_http_error)
    api.add_exception_handler(Http404, on_not_found)
    api.add_exception_handler(PermissionDenied, on_permission_denied)
    api.add_exception_handler(RequestDataTooBig, on_too_big)
    api.add_exception_handler(Exception, on_bug)
